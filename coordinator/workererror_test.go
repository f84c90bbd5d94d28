package coordinator

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// TestAllRootCause: all() blames the worker at the root of a failure, not
// the workers cancelled because of it. A worker given cancelled here waits
// for the cancellation the first failure causes and then fails with it.
func TestAllRootCause(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "connection error: desc = \"error reading from server: EOF\"")
	lost := func(peer int) error {
		return status.Error(codes.Aborted, fmt.Sprintf("worker: layer 1: collective: peer lost: worker %d: EOF", peer))
	}
	const cancelled = "cancelled"
	type want struct {
		Worker, Reporter int
		Unreachable      bool
		Code             codes.Code
	}
	for _, tc := range []struct {
		name string
		errs []any // per worker: nil, an error, or cancelled
		want *want
	}{
		{"all succeed", []any{nil, nil, nil}, nil},
		{"dead worker's own connection", []any{unavailable, cancelled, cancelled}, &want{0, 0, true, codes.Unavailable}},
		{"peer loss reported before the dead worker's call fails", []any{cancelled, cancelled, lost(0)}, &want{0, 2, true, codes.Aborted}},
		{"peer loss and the dead worker's connection", []any{unavailable, lost(0), cancelled}, &want{0, 0, true, codes.Unavailable}},
		{"peer loss while sending", []any{cancelled, status.Error(codes.Aborted, "collective: peer lost: sending to worker 2: broken pipe"), cancelled}, &want{2, 1, true, codes.Aborted}},
		{"load cannot connect to a peer", []any{status.Error(codes.Unavailable, "worker: connecting to peers: collective: peer lost: connecting to worker 1: refused"), nil, nil}, &want{1, 0, true, codes.Unavailable}},
		{"cascade: most workers name the dead one", []any{lost(1), cancelled, lost(1), lost(2)}, &want{1, 0, true, codes.Aborted}},
		{"named and unreachable beats most named", []any{lost(1), cancelled, unavailable, lost(2), lost(1)}, &want{2, 2, true, codes.Unavailable}},
		{"peer index out of range ignored", []any{cancelled, lost(7), cancelled}, &want{1, 1, false, codes.Aborted}},
		{"protocol violation", []any{cancelled, status.Error(codes.Aborted, "collective: protocol violation: wrong step"), cancelled}, &want{1, 1, false, codes.Aborted}},
		{"bad argument", []any{cancelled, cancelled, status.Error(codes.InvalidArgument, "bad block table")}, &want{2, 2, false, codes.InvalidArgument}},
		{"only cancellations", []any{status.Error(codes.Canceled, "x"), nil, context.Canceled}, &want{0, 0, false, codes.Canceled}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Driver{}
			for w := range tc.errs {
				c, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", 4321+w), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				d.conns = append(d.conns, c)
				d.clients = append(d.clients, pb.NewWorkerServiceClient(c))
			}
			defer d.Close()
			err := d.all(context.Background(), func(ctx context.Context, w int) error {
				switch e := tc.errs[w].(type) {
				case string:
					<-ctx.Done()
					return status.FromContextError(ctx.Err()).Err()
				case error:
					return e
				}
				return nil
			})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("all() = %v, want nil", err)
				}
				return
			}
			var we *WorkerError
			if !errors.As(err, &we) {
				t.Fatalf("all() = %v, not a *WorkerError", err)
			}
			got := &want{we.Worker, we.Reporter, we.Unreachable, status.Code(err)}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("all() = %v (-want +got):\n%s", err, diff)
			}
			if wantAddr := fmt.Sprintf("127.0.0.1:%d", 4321+tc.want.Worker); we.Addr != wantAddr {
				t.Errorf("address %q, want %q", we.Addr, wantAddr)
			}
		})
	}
}
