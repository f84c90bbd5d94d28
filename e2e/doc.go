// Package e2e holds the end-to-end tests of the serving path: real
// `moemesh local` and multi-coordinator clusters of moemesh processes,
// driven through the Go SDK (package client), the official OpenAI Go
// client and the moemesh command, compared with single-process runs.
// It has no non-test code.
package e2e
