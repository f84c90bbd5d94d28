package main

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/client"
)

// Exit codes of moemeshctl; each is distinct (exitcodes_test.go) and
// documented in docs/moemeshctl.md. Scripts may rely on them.
const (
	// ExitOK: the command succeeded.
	ExitOK = 0
	// ExitFailure: any other failure (a server error of no listed kind,
	// output that could not be written).
	ExitFailure = 1
	// ExitUsage: bad flags or arguments, caught before any RPC (an
	// unknown -o, a missing WORKER, a CA file that cannot be read).
	ExitUsage = 2
	// ExitUnauthenticated: no token was given for an operation that
	// needs the admin token (nothing was sent), or the server refused
	// the token (UNAUTHENTICATED).
	ExitUnauthenticated = 3
	// ExitPermissionDenied: the token is valid but may not do this (an
	// API key where the admin token is needed, or a server with no
	// admin token): PERMISSION_DENIED.
	ExitPermissionDenied = 4
	// ExitUnavailable: no endpoint answered (every one was unreachable
	// or a standby): UNAVAILABLE.
	ExitUnavailable = 5
	// ExitNotFound: no placement is serving yet, or the worker is
	// unknown: NOT_FOUND.
	ExitNotFound = 6
	// ExitPrecondition: the cluster is not in a state to do this: the
	// plan's epoch is no longer serving, another operation runs, there
	// are no statistics yet, the others cannot hold a drained worker's
	// share: FAILED_PRECONDITION.
	ExitPrecondition = 7
	// ExitAborted: the operation started and was aborted (a worker
	// failed or died); the cluster stays on, or recovers from, the old
	// epoch: ABORTED, or a progress message with phase ABORTED.
	ExitAborted = 8
	// ExitDeclined: the operator answered anything but y at the prompt;
	// nothing was changed.
	ExitDeclined = 9
	// ExitDeadline: --timeout or --wait-timeout passed: DEADLINE_EXCEEDED.
	ExitDeadline = 10
	// ExitInvalidArgument: the server rejected an argument (a layer that
	// is not a MoE layer, a plan that does not fit): INVALID_ARGUMENT.
	ExitInvalidArgument = 11
	// ExitInterrupted: an operation's progress stream was cut after the
	// operation started (the leader was lost): it may still finish or
	// abort; `moemeshctl status` tells which.
	ExitInterrupted = 12
	// ExitCancelled: interrupted by a signal (Ctrl-C) or CANCELLED. An
	// operation already started goes on on the cluster.
	ExitCancelled = 130
)

// grpcExit maps each status code the admin API documents to its exit code.
var grpcExit = map[codes.Code]int{
	codes.Unauthenticated:    ExitUnauthenticated,
	codes.PermissionDenied:   ExitPermissionDenied,
	codes.Unavailable:        ExitUnavailable,
	codes.NotFound:           ExitNotFound,
	codes.FailedPrecondition: ExitPrecondition,
	codes.Aborted:            ExitAborted,
	codes.DeadlineExceeded:   ExitDeadline,
	codes.InvalidArgument:    ExitInvalidArgument,
	codes.Canceled:           ExitCancelled,
}

// exitCode is the exit code of a command's error.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue), errors.Is(err, client.ErrConfig):
		return ExitUsage
	case errors.Is(err, errNoToken):
		return ExitUnauthenticated
	case errors.Is(err, errDeclined):
		return ExitDeclined
	case errors.Is(err, client.ErrInterrupted):
		return ExitInterrupted
	case errors.Is(err, context.DeadlineExceeded):
		return ExitDeadline
	case errors.Is(err, context.Canceled):
		return ExitCancelled
	}
	if code, ok := grpcExit[status.Code(err)]; ok {
		return code
	}
	return ExitFailure
}
