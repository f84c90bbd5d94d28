package serving

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/scheduler"
)

func TestToStatus(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("context: %w", err) }
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{wrap(scheduler.ErrBadRequest), codes.InvalidArgument},
		{wrap(scheduler.ErrKVFull), codes.ResourceExhausted},
		{wrap(control.ErrNotLeader), codes.Unavailable},
		{wrap(control.ErrNotReady), codes.Unavailable},
		{fmt.Errorf("%w: %w", scheduler.ErrStopped, control.ErrNotLeader), codes.Unavailable},
		// A recovery that timed out is the cluster being down, not the
		// client's deadline.
		{fmt.Errorf("%w: %w", scheduler.ErrClusterDown, context.DeadlineExceeded), codes.Unavailable},
		{wrap(context.DeadlineExceeded), codes.DeadlineExceeded},
		{wrap(context.Canceled), codes.Canceled},
		{status.Error(codes.NotFound, "as it is"), codes.NotFound},
		{errors.New("anything else"), codes.Internal},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) is not nil")
	}
}
