package serving

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/scheduler"
)

// ErrUnavailable: the service cannot serve right now (retry elsewhere or
// later).
var ErrUnavailable = errors.New("serving: unavailable")

// toStatus maps an error to its gRPC status: the one place where sentinel
// errors become codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isWrapped(err) {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, scheduler.ErrBadRequest):
		code = codes.InvalidArgument
	case errors.Is(err, scheduler.ErrKVFull):
		code = codes.ResourceExhausted
	case errors.Is(err, control.ErrNotLeader), errors.Is(err, control.ErrNotReady), errors.Is(err, scheduler.ErrStopped), errors.Is(err, scheduler.ErrClusterDown),
		errors.Is(err, ErrUnavailable), errors.Is(err, control.ErrNoLayout), errors.Is(err, control.ErrWorkerLost):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// isWrapped reports an error that is not itself a status but wraps one.
func isWrapped(err error) bool {
	_, ok := err.(interface{ GRPCStatus() *status.Status })
	return !ok
}
