package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary stand in for the moemesh binary: the local
// cluster launcher re-executes os.Executable() as "moemesh worker ...".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(run(os.Args[1:], defaultStreams()))
	}
	os.Exit(m.Run())
}
