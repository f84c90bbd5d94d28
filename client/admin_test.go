package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/moemesh/moemesh/client"
	adminv1 "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
)

// fakeAdmin is an AdminService answering from canned values.
type fakeAdmin struct {
	adminv1.UnimplementedAdminServiceServer

	// code, when set, answers every RPC with it (a standby: UNAVAILABLE).
	code codes.Code
	// progress is what the operation streams send; then endErr ends them.
	progress []*adminv1.OperationProgress
	endErr   error

	mu    sync.Mutex
	calls []string
	auth  []string
}

var _ adminv1.AdminServiceServer = (*fakeAdmin)(nil)

func (f *fakeAdmin) enter(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = append(f.auth, md.Get("authorization")...)
	if f.code != codes.OK {
		return status.Errorf(f.code, "fake: configured %v", f.code)
	}
	return nil
}

func (f *fakeAdmin) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeAdmin) GetStatus(ctx context.Context, _ *adminv1.GetStatusRequest) (*adminv1.GetStatusResponse, error) {
	if err := f.enter(ctx, "GetStatus"); err != nil {
		return nil, err
	}
	return &adminv1.GetStatusResponse{Leader: "c-0", Epoch: 7}, nil
}

func (f *fakeAdmin) Uncordon(ctx context.Context, req *adminv1.UncordonRequest) (*adminv1.UncordonResponse, error) {
	if err := f.enter(ctx, "Uncordon"); err != nil {
		return nil, err
	}
	return &adminv1.UncordonResponse{WasCordoned: req.GetWorkerId() == "w-1"}, nil
}

func (f *fakeAdmin) Drain(req *adminv1.DrainRequest, srv grpc.ServerStreamingServer[adminv1.OperationProgress]) error {
	if err := f.enter(srv.Context(), "Drain"); err != nil {
		return err
	}
	for _, m := range f.progress {
		if err := srv.Send(m); err != nil {
			return err
		}
	}
	return f.endErr
}

// serveAdmin runs f on a loopback port until stop.
func serveAdmin(f *fakeAdmin) (addr string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	return lis.Addr().String(), func() { srv.Stop(); <-done }, nil
}

func startAdmin(t *testing.T, f *fakeAdmin) string {
	t.Helper()
	addr, stop, err := serveAdmin(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addr
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func dialAdmin(t *testing.T, addrs []string, opts ...client.Option) *client.AdminClient {
	t.Helper()
	c, err := client.DialAdmin(addrs, append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAdminFailover(t *testing.T) {
	standby := &fakeAdmin{code: codes.Unavailable}
	leader := &fakeAdmin{}
	c := dialAdmin(t, []string{deadAddr(t), startAdmin(t, standby), startAdmin(t, leader)}, client.WithAPIKey("tok"))
	ctx := ctxT(t)
	for i := range 2 {
		st, err := c.GetStatus(ctx, &adminv1.GetStatusRequest{})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if st.GetLeader() != "c-0" {
			t.Errorf("call %d: leader %q, want c-0", i, st.GetLeader())
		}
	}
	// The first call passed the standby once; the second went straight to
	// the leader, which saw the token both times.
	if diff := cmp.Diff([]string{"GetStatus"}, standby.Calls()); diff != "" {
		t.Errorf("standby calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"GetStatus", "GetStatus"}, leader.Calls()); diff != "" {
		t.Errorf("leader calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"Bearer tok", "Bearer tok"}, leader.auth); diff != "" {
		t.Errorf("authorization (-want +got):\n%s", diff)
	}
}

func TestAdminErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		codes []codes.Code // one fake per endpoint
		want  codes.Code
		calls []int // calls each fake saw
	}{
		{"all unavailable", []codes.Code{codes.Unavailable, codes.Unavailable}, codes.Unavailable, []int{1, 1}},
		{"not found is final", []codes.Code{codes.NotFound, codes.OK}, codes.NotFound, []int{1, 0}},
		{"permission denied is final", []codes.Code{codes.PermissionDenied, codes.OK}, codes.PermissionDenied, []int{1, 0}},
		{"unavailable then precondition", []codes.Code{codes.Unavailable, codes.FailedPrecondition}, codes.FailedPrecondition, []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fakes []*fakeAdmin
			var addrs []string
			for _, code := range tc.codes {
				f := &fakeAdmin{code: code}
				fakes = append(fakes, f)
				addrs = append(addrs, startAdmin(t, f))
			}
			c := dialAdmin(t, addrs)
			_, err := c.Uncordon(ctxT(t), &adminv1.UncordonRequest{WorkerId: "w-1"})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			for i, f := range fakes {
				if got := len(f.Calls()); got != tc.calls[i] {
					t.Errorf("endpoint %d: %d calls, want %d", i, got, tc.calls[i])
				}
			}
		})
	}
}

func progress(phases ...adminv1.Phase) []*adminv1.OperationProgress {
	var out []*adminv1.OperationProgress
	for i, p := range phases {
		out = append(out, &adminv1.OperationProgress{Kind: "drain", Phase: p, FromEpoch: 7, ToEpoch: 8,
			WorkersReady: uint32(i), WorkersTotal: 3, Worker: "w-1", Message: p.String()})
	}
	return out
}

// readAll reads a stream to its end, returning the messages and the end.
func readAll(s *client.OperationStream) ([]*adminv1.OperationProgress, error) {
	var got []*adminv1.OperationProgress
	for {
		m, err := s.Recv()
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

func TestAdminOperationStream(t *testing.T) {
	prep, sw, done, abort := adminv1.Phase_PHASE_PREPARING, adminv1.Phase_PHASE_SWITCHING, adminv1.Phase_PHASE_DONE, adminv1.Phase_PHASE_ABORTED
	for _, tc := range []struct {
		name     string
		standby  bool // an UNAVAILABLE endpoint before the leader
		progress []*adminv1.OperationProgress
		endErr   error
		wantCode codes.Code // of the end; OK means io.EOF
		wantInt  bool       // the end wraps ErrInterrupted
	}{
		{name: "done after failover", standby: true, progress: progress(prep, sw, done)},
		{name: "aborted phase", progress: progress(prep, abort), wantCode: codes.Aborted},
		{name: "aborted status", progress: progress(prep), endErr: status.Error(codes.Aborted, "w-2 died"), wantCode: codes.Aborted},
		{name: "cut before done", progress: progress(prep, sw), wantInt: true},
		{name: "unavailable after start", progress: progress(prep), endErr: status.Error(codes.Unavailable, "leader lost"), wantInt: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leader := &fakeAdmin{progress: tc.progress, endErr: tc.endErr}
			addrs := []string{startAdmin(t, leader)}
			standby := &fakeAdmin{code: codes.Unavailable}
			if tc.standby {
				addrs = append([]string{startAdmin(t, standby)}, addrs...)
			}
			c := dialAdmin(t, addrs)
			s, err := c.Drain(ctxT(t), &adminv1.DrainRequest{WorkerId: "w-1"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := readAll(s)
			if diff := cmp.Diff(tc.progress, got, protocmp.Transform()); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
			switch {
			case tc.wantInt:
				if !errors.Is(err, client.ErrInterrupted) {
					t.Errorf("end %v, want ErrInterrupted", err)
				}
			case tc.wantCode == codes.OK:
				if !errors.Is(err, io.EOF) {
					t.Errorf("end %v, want io.EOF", err)
				}
			default:
				if errors.Is(err, client.ErrInterrupted) || status.Code(err) != tc.wantCode {
					t.Errorf("end %v, want code %v", err, tc.wantCode)
				}
			}
			// Streams never move on once the operation started.
			if n := len(leader.Calls()); n != 1 {
				t.Errorf("leader saw %d calls, want 1", n)
			}
		})
	}
}

func TestAdminStreamErrorBeforeStart(t *testing.T) {
	f := &fakeAdmin{code: codes.NotFound}
	other := &fakeAdmin{progress: progress(adminv1.Phase_PHASE_DONE)}
	c := dialAdmin(t, []string{startAdmin(t, f), startAdmin(t, other)})
	if _, err := c.Drain(ctxT(t), &adminv1.DrainRequest{WorkerId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Drain: %v, want NotFound", err)
	}
	if n := len(other.Calls()); n != 0 {
		t.Errorf("second endpoint saw %d calls, want 0", n)
	}
}

func TestDialAdminConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
		opts  []client.Option
	}{
		{"no endpoint", nil, []client.Option{client.WithInsecure()}},
		{"empty endpoint", []string{"a:1", " "}, []client.Option{client.WithInsecure()}},
		{"insecure with CA", []string{"a:1"}, []client.Option{client.WithInsecure(), client.WithCAFile("ca.pem")}},
		{"missing CA file", []string{"a:1"}, []client.Option{client.WithCAFile(t.TempDir() + "/none.pem")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.DialAdmin(tc.addrs, tc.opts...)
			if !errors.Is(err, client.ErrConfig) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("DialAdmin: %v, want ErrConfig", err)
			}
		})
	}
}

func TestAdminClosed(t *testing.T) {
	c := dialAdmin(t, []string{startAdmin(t, &fakeAdmin{})})
	c.Close()
	if _, err := c.GetStatus(ctxT(t), &adminv1.GetStatusRequest{}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("GetStatus after Close: %v, want ErrClosed", err)
	}
}
