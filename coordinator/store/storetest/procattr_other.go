//go:build !linux

package storetest

import "syscall"

// procAttr: outside Linux there is no parent-death signal; t.Cleanup kills
// the process.
func procAttr() *syscall.SysProcAttr { return nil }
