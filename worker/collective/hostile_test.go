package collective

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Limits of the hostile-peer tests: small, so a flood reaches them fast.
const (
	hostileQueued  = 1 << 20
	hostileStall   = 300 * time.Millisecond
	hostileTimeout = 5 * time.Second
)

// hostileMesh is a mesh of three: worker 0 is a raw gRPC client driven by
// the test (to1 is its stream to worker 1), workers 1 and 2 are real.
type hostileMesh struct {
	m    []*Mesh // indexed by worker id; m[0] is nil
	to1  *fakePeer
	addr []string
	lost chan error // OnPeerLost errors of worker 1
}

func newHostileMesh(t *testing.T) *hostileMesh {
	t.Helper()
	lis := []net.Listener{nil, listen(t), listen(t)}
	h := &hostileMesh{
		m:    make([]*Mesh, 3),
		addr: []string{"worker-0.invalid:1", lis[1].Addr().String(), lis[2].Addr().String()},
		lost: make(chan error, 8),
	}
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for w := 1; w <= 2; w++ {
		c := testConfig()
		c.Self, c.Addrs, c.Epoch, c.Listener = w, h.addr, 3, lis[w]
		if w == 1 {
			c.OnPeerLost = func(_ int, err error) { h.lost <- err }
		}
		c.MaxChunkBytes = 64 << 10
		c.MaxQueuedBytes = hostileQueued
		c.MaxPendingMessages = 16
		c.StallTimeout = hostileStall
		c.Timeout = hostileTimeout
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h.m[w], errs[w] = NewMesh(ctx, c)
		})
	}
	h.to1 = dialFake(t, h.addr[1], 3, 0, 1, 3)
	dialFake(t, h.addr[2], 3, 0, 2, 3)
	wg.Wait()
	t.Cleanup(func() {
		for _, m := range h.m {
			if m != nil {
				m.Close()
			}
		}
	})
	for w, err := range errs {
		if err != nil {
			t.Fatalf("NewMesh(worker %d): %v", w, err)
		}
	}
	return h
}

// nextStepWorks runs an all-reduce between the two real workers: the
// worker keeps serving its other peers after the hostile one.
func (h *hostileMesh) nextStepWorks(t *testing.T, step uint64) {
	t.Helper()
	checkAllReduce(t, h.m, []int{1, 2}, 1000, Tag{Step: step, Phase: attn}, 1e-6)
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func bigTensor(n int) *moemeshv1.Tensor {
	return &moemeshv1.Tensor{Dtype: F32, Shape: []int64{int64(n / 4)}, Data: make([]byte, n)}
}

// TestHostilePeer drives worker 0 by hand against worker 1, which runs an
// all-reduce of 8 elements with it (expecting 4 from worker 0 in round 0,
// tag step 5 layer 3), and checks for each hostile behaviour that the
// operation fails with the named cause well within its deadline, that the
// bytes worker 1 holds for the peer stay under MaxQueuedBytes (by its own
// accounting and by the heap), and that worker 1 then serves a step with
// worker 2.
func TestHostilePeer(t *testing.T) {
	good := func() *moemeshv1.Frame {
		return &moemeshv1.Frame{Step: 5, Layer: 3, Phase: attn, SrcWorker: 0, DstWorker: 1, Payload: f32Tensor(1, 2, 3, 4)}
	}
	one := func(mod func(f *moemeshv1.Frame)) func() []*moemeshv1.Frame {
		return func() []*moemeshv1.Frame { f := good(); mod(f); return []*moemeshv1.Frame{f} }
	}
	tests := []struct {
		name   string
		frames func() []*moemeshv1.Frame
		// op, when set, replaces the all-reduce worker 1 runs.
		op    func(m *Mesh) error
		want  []error
		cause error // the error OnPeerLost must report, when set
	}{
		{name: "wrong step", frames: one(func(f *moemeshv1.Frame) { f.Step = 9 }), want: []error{ErrProtocol}},
		{name: "wrong layer", frames: one(func(f *moemeshv1.Frame) { f.Layer = 4 }), want: []error{ErrProtocol}},
		{name: "wrong phase", frames: one(func(f *moemeshv1.Frame) { f.Phase = moemeshv1.Phase_PHASE_DISPATCH }), want: []error{ErrProtocol}},
		{name: "wrong size", frames: one(func(f *moemeshv1.Frame) { f.Payload = f32Tensor(1, 2, 3, 4, 5) }), want: []error{ErrProtocol}},
		{name: "wrong sender", frames: one(func(f *moemeshv1.Frame) { f.SrcWorker = 2 }), want: []error{ErrProtocol}},
		{name: "flood of messages", frames: func() []*moemeshv1.Frame {
			var fs []*moemeshv1.Frame
			for s := range 40 {
				f := good()
				f.Step = uint64(100 + s)
				fs = append(fs, f)
			}
			return fs
		}, want: []error{ErrProtocol, ErrQueueFull}, cause: ErrQueueFull},
		{name: "flood of bytes", frames: func() []*moemeshv1.Frame {
			var fs []*moemeshv1.Frame
			for s := range 12 {
				f := good()
				f.Step, f.Payload = uint64(100+s), bigTensor(256<<10)
				fs = append(fs, f)
			}
			return fs
		}, want: []error{ErrProtocol, ErrQueueFull}, cause: ErrQueueFull},
		{name: "huge announced shape", frames: func() []*moemeshv1.Frame {
			f := good()
			f.Chunks, f.Payload.Shape = 2, []int64{1 << 28} // 1 GiB announced, 16 bytes sent
			return []*moemeshv1.Frame{f}
		}, want: []error{ErrProtocol, ErrQueueFull}, cause: ErrQueueFull},
		{name: "aux flood in one message", frames: func() []*moemeshv1.Frame {
			var fs []*moemeshv1.Frame
			for i := range 20 {
				fs = append(fs, &moemeshv1.Frame{Step: 5, Layer: 3, Phase: attn, SrcWorker: 0, DstWorker: 1,
					Seq: uint32(i), Chunks: 1 << 30, Aux: make([]int32, 16<<10)})
			}
			return fs
		}, want: []error{ErrProtocol, ErrQueueFull}, cause: ErrQueueFull},
		{name: "stall mid-message", frames: func() []*moemeshv1.Frame {
			f := good()
			f.Chunks, f.Payload.Data = 2, f.Payload.Data[:8]
			return []*moemeshv1.Frame{f}
		}, want: []error{ErrPeerLost, ErrStalled}, cause: ErrStalled},
		{name: "never reads", op: func(m *Mesh) error {
			mine := make([]float32, 1<<20) // 4 MiB: more than the stream's windows
			return m.AllGather(context.Background(), Tag{Step: 5, Layer: 3, Phase: moemeshv1.Phase_PHASE_ALLGATHER}, []int{0, 1}, mine, make([]float32, 2<<20))
		}, want: []error{ErrPeerLost, ErrStalled}, cause: ErrStalled},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileMesh(t)
			before := heapAlloc()
			if tc.frames != nil {
				for _, f := range tc.frames() {
					if err := h.to1.stream.Send(f); err != nil {
						break // worker 1 already cut the stream
					}
				}
			}
			if errors.Is(tc.cause, ErrQueueFull) && tc.frames != nil {
				// Let worker 1 take in the whole flood before the
				// operation looks at its queue: an operation already
				// waiting meets the first wrong-step frame before the
				// limit is reached, which fails it as a wrong step.
				deadline := time.Now().Add(hostileTimeout)
				for h.m[1].links[0].failure() == nil {
					if time.Now().After(deadline) {
						t.Fatalf("worker 1 accepted the flood for %v", hostileTimeout)
					}
					time.Sleep(time.Millisecond)
				}
			}
			op := tc.op
			if op == nil {
				op = func(m *Mesh) error {
					return m.AllReduceSum(context.Background(), Tag{Step: 5, Layer: 3, Phase: attn}, []int{0, 1}, make([]float32, 8))
				}
			}
			start := time.Now()
			err := op(h.m[1])
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want it to wrap %v", err, want)
				}
			}
			if d := time.Since(start); d >= hostileTimeout {
				t.Errorf("failed after %v, not before the %v operation deadline", d, hostileTimeout)
			}
			if tc.cause != nil {
				select {
				case lost := <-h.lost:
					if !errors.Is(lost, tc.cause) {
						t.Errorf("OnPeerLost(%v), want it to wrap %v", lost, tc.cause)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("OnPeerLost was not called")
				}
			}
			if q := h.m[1].QueuedBytes(); q > hostileQueued {
				t.Errorf("worker 1 holds %d bytes for the peer, more than MaxQueuedBytes %d", q, hostileQueued)
			}
			// The heap may hold a few frames in transport buffers besides
			// the queue; a missing bound would show as hundreds of MiB.
			if after := heapAlloc(); after > before+16*hostileQueued {
				t.Errorf("heap grew by %d bytes", after-before)
			}
			h.nextStepWorks(t, uint64(1000+i))
		})
	}
}

// TestHostileEpochAndIdentity: calls for another mesh epoch, or claiming a
// worker id that may not call, are refused before any frame is read, and
// the mesh of the right epoch keeps serving.
func TestHostileEpochAndIdentity(t *testing.T) {
	h := newHostileMesh(t)
	conn, err := grpc.NewClient(h.addr[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := moemeshv1.NewPeerServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hello := func(epoch uint64, from uint32) codes.Code {
		_, err := client.Hello(ctx, &moemeshv1.HelloRequest{ProtocolVersion: ProtocolVersion, MeshEpoch: epoch, FromWorker: from, ToWorker: 1, MeshSize: 3, WireDtype: F32})
		return status.Code(err)
	}
	exchange := func(epoch, from string) codes.Code {
		st, err := client.Exchange(metadata.AppendToOutgoingContext(ctx, mdEpoch, epoch, mdFrom, from))
		if err == nil {
			_, err = st.Recv()
		}
		return status.Code(err)
	}
	tests := []struct {
		name string
		got  func() codes.Code
		want codes.Code
	}{
		{"Hello for another epoch", func() codes.Code { return hello(99, 0) }, codes.Unavailable},
		{"Exchange for another epoch", func() codes.Code { return exchange("99", "0") }, codes.Unavailable},
		{"Hello from a higher worker", func() codes.Code { return hello(3, 2) }, codes.InvalidArgument},
		{"Exchange from a higher worker", func() codes.Code { return exchange("3", "2") }, codes.InvalidArgument},
		{"Exchange from an id outside the mesh", func() codes.Code { return exchange("3", "4000000000") }, codes.InvalidArgument},
		{"Exchange without metadata", func() codes.Code { return exchange("", "") }, codes.InvalidArgument},
		{"second stream for the same pair", func() codes.Code { return exchange("3", "0") }, codes.AlreadyExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.got(); got != tc.want {
				t.Fatalf("code %v, want %v", got, tc.want)
			}
		})
	}
	if lost := h.m[1].LostPeers(); len(lost) != 0 {
		t.Fatalf("worker 1 lost peers %v after refused calls", lost)
	}
	h.nextStepWorks(t, 1)
}
