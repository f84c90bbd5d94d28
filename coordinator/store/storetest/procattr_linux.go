package storetest

import "syscall"

// procAttr makes the kernel kill etcd when the test process dies, so a
// crashed or timed-out test leaves no etcd behind.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
