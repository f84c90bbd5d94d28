package main

// Exit codes of the moemesh command; each is distinct (exitcodes_test.go).
const (
	// ExitOK: the command succeeded.
	ExitOK = 0
	// ExitFailure: the command failed while running (I/O, bad model files, peers).
	ExitFailure = 1
	// ExitUsage: bad flags, arguments or input.
	ExitUsage = 2
)
