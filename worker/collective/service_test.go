package collective

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

func TestHelloChecks(t *testing.T) {
	lis := listen(t)
	addrs := []string{"worker-0.invalid:1", "worker-1.invalid:1", lis.Addr().String(), ""}
	c := testConfig()
	c.Self, c.Addrs, c.Epoch, c.Listener = 2, addrs, 4, lis
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		m, err := NewMesh(ctx, c) // never completes: workers 0 and 1 are absent
		if m != nil {
			m.Close()
		}
		done <- err
	}()
	defer func() {
		cancel()
		<-done
	}()
	conn, err := grpc.NewClient(addrs[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := moemeshv1.NewPeerServiceClient(conn)
	ok := func() *moemeshv1.HelloRequest {
		return &moemeshv1.HelloRequest{ProtocolVersion: ProtocolVersion, MeshEpoch: 4, FromWorker: 0, ToWorker: 2, MeshSize: 4, WireDtype: F32}
	}
	tests := []struct {
		name   string
		mod    func(r *moemeshv1.HelloRequest)
		want   codes.Code
		reason string
	}{
		{"accepted", func(*moemeshv1.HelloRequest) {}, codes.OK, ""},
		{"unknown epoch", func(r *moemeshv1.HelloRequest) { r.MeshEpoch = 5 }, codes.Unavailable, ""},
		{"protocol version", func(r *moemeshv1.HelloRequest) { r.ProtocolVersion = 2 }, codes.FailedPrecondition, "PROTOCOL_VERSION_MISMATCH"},
		{"mesh size", func(r *moemeshv1.HelloRequest) { r.MeshSize = 3 }, codes.FailedPrecondition, "MESH_SIZE_MISMATCH"},
		{"wire dtype", func(r *moemeshv1.HelloRequest) { r.WireDtype = BF16 }, codes.FailedPrecondition, "WIRE_DTYPE_MISMATCH"},
		{"wrong address", func(r *moemeshv1.HelloRequest) { r.ToWorker = 1 }, codes.FailedPrecondition, "WRONG_WORKER"},
		{"higher id calling", func(r *moemeshv1.HelloRequest) { r.FromWorker = 3 }, codes.InvalidArgument, "UNEXPECTED_CALLER"},
		{"out of range", func(r *moemeshv1.HelloRequest) { r.FromWorker = 9 }, codes.InvalidArgument, "UNEXPECTED_CALLER"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := ok()
			tc.mod(req)
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer rcancel()
			var resp *moemeshv1.HelloResponse
			for {
				resp, err = client.Hello(rctx, req, grpc.WaitForReady(true))
				// The mesh attaches right after it starts serving.
				if tc.want == codes.Unavailable || status.Code(err) != codes.Unavailable || rctx.Err() != nil {
					break
				}
			}
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Hello: %v, want code %v", err, tc.want)
			}
			var reason string
			for _, d := range status.Convert(err).Details() {
				if info, ok := d.(*errdetails.ErrorInfo); ok {
					reason = info.GetReason()
				}
			}
			if reason != tc.reason {
				t.Errorf("ErrorInfo reason %q, want %q", reason, tc.reason)
			}
			if err == nil && resp.GetWorker() != 2 {
				t.Fatalf("Hello answered as worker %d, want 2", resp.GetWorker())
			}
		})
	}
}

func TestPendingLimit(t *testing.T) {
	lis := listen(t)
	addrs := []string{"worker-0.invalid:1", lis.Addr().String()}
	c := testConfig()
	c.Self, c.Addrs, c.Epoch, c.Listener, c.MaxPendingMessages = 1, addrs, 3, lis, 4
	var m *Mesh
	var err error
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err = NewMesh(ctx, c)
	})
	fake := dialFake(t, addrs[1], 3, 0, 1, 2)
	wg.Wait()
	if err != nil {
		t.Fatalf("NewMesh: %v", err)
	}
	defer m.Close()
	for step := range uint64(5) {
		f := &moemeshv1.Frame{Step: step, Phase: attn, SrcWorker: 0, DstWorker: 1, Payload: f32Tensor(1)}
		if err := fake.stream.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	// The fifth message overflows the queue and breaks the link.
	if _, err := fake.stream.Recv(); err == nil {
		t.Fatal("stream still open after the peer overran the pending limit")
	}
	err = m.AllReduceSum(context.Background(), Tag{Step: 9, Phase: attn}, []int{0, 1}, make([]float32, 2))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want ErrProtocol", err)
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("x: %w", ErrPeerLost), codes.Aborted},
		{fmt.Errorf("x: %w", ErrProtocol), codes.Aborted},
		{fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("x: %w", ErrClosed), codes.Unavailable},
		{fmt.Errorf("x: %w", ErrInvalid), codes.InvalidArgument},
		{context.Canceled, codes.Canceled},
		{errors.New("other"), codes.Internal},
	}
	for _, tc := range tests {
		if got := Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestStatsProto(t *testing.T) {
	s := Stats{Phases: map[Phase]PhaseStats{
		moemeshv1.Phase_PHASE_COMBINE: {TensorBytesSent: 5, WireBytesRecv: 9, MessagesSent: 1, Time: 3 * time.Millisecond},
		attn:                          {TensorBytesRecv: 7, MessagesRecv: 2, WireBytesSent: 11},
	}}
	want := []*moemeshv1.PhaseStats{
		{Phase: attn, TensorBytesReceived: 7, MessagesReceived: 2, WireBytesSent: 11},
		{Phase: moemeshv1.Phase_PHASE_COMBINE, TensorBytesSent: 5, WireBytesReceived: 9, MessagesSent: 1, TimeUs: 3000},
	}
	if diff := cmp.Diff(want, s.Proto(), protocmp.Transform()); diff != "" {
		t.Errorf("Proto (-want +got):\n%s", diff)
	}
	if got := s.Total(); got.TensorBytesSent != 5 || got.TensorBytesRecv != 7 || got.MessagesRecv != 2 {
		t.Errorf("Total = %+v", got)
	}
}
