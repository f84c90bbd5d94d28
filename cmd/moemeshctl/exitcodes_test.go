package main

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestExitCodesDistinct(t *testing.T) {
	codes := map[string]int{"ExitOK": ExitOK, "ExitFailure": ExitFailure, "ExitUsage": ExitUsage,
		"ExitUnauthenticated": ExitUnauthenticated, "ExitPermissionDenied": ExitPermissionDenied,
		"ExitUnavailable": ExitUnavailable, "ExitNotFound": ExitNotFound, "ExitPrecondition": ExitPrecondition,
		"ExitAborted": ExitAborted, "ExitDeclined": ExitDeclined, "ExitDeadline": ExitDeadline,
		"ExitInvalidArgument": ExitInvalidArgument, "ExitInterrupted": ExitInterrupted, "ExitCancelled": ExitCancelled}
	seen := map[int]string{}
	for name, c := range codes {
		if other, ok := seen[c]; ok {
			t.Errorf("%s and %s share exit code %d", name, other, c)
		}
		seen[c] = name
	}
}

// TestEveryDocumentedCode: each status code the admin API documents has
// its own exit code, none of them the generic failure.
func TestEveryDocumentedCode(t *testing.T) {
	documented := []codes.Code{codes.Unauthenticated, codes.PermissionDenied, codes.Unavailable,
		codes.DeadlineExceeded, codes.Canceled, codes.NotFound, codes.InvalidArgument,
		codes.FailedPrecondition, codes.Aborted}
	seen := map[int]codes.Code{}
	for _, c := range documented {
		e, ok := grpcExit[c]
		if !ok || e == ExitFailure || e == ExitOK {
			t.Errorf("%v maps to %d (mapped: %v)", c, e, ok)
		}
		if other, dup := seen[e]; dup {
			t.Errorf("%v and %v share exit code %d", c, other, e)
		}
		seen[e] = c
	}
}
