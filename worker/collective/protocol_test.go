package collective

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// f32Tensor encodes values as an F32 tensor of shape [len(v)].
func f32Tensor(v ...float32) *moemeshv1.Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return &moemeshv1.Tensor{Dtype: F32, Shape: []int64{int64(len(v))}, Data: b}
}

// TestProtocolViolations drives worker 0 by hand against a real worker 1
// running an all-reduce of 8 elements (it expects 4 from worker 0 in round
// 0), and checks each kind of bad frame fails the operation with
// ErrProtocol.
func TestProtocolViolations(t *testing.T) {
	tag := Tag{Step: 5, Layer: 3, Phase: attn}
	good := func() *moemeshv1.Frame {
		return &moemeshv1.Frame{Step: 5, Layer: 3, Phase: attn, SrcWorker: 0, DstWorker: 1, Payload: f32Tensor(1, 2, 3, 4)}
	}
	tests := []struct {
		name   string
		frames func() []*moemeshv1.Frame
	}{
		{"older step", func() []*moemeshv1.Frame { f := good(); f.Step = 4; return []*moemeshv1.Frame{f} }},
		{"newer step", func() []*moemeshv1.Frame { f := good(); f.Step = 6; return []*moemeshv1.Frame{f} }},
		{"wrong layer", func() []*moemeshv1.Frame { f := good(); f.Layer = 2; return []*moemeshv1.Frame{f} }},
		{"wrong phase", func() []*moemeshv1.Frame {
			f := good()
			f.Phase = moemeshv1.Phase_PHASE_COMBINE
			return []*moemeshv1.Frame{f}
		}},
		{"wrong round", func() []*moemeshv1.Frame { f := good(); f.Round = 1; return []*moemeshv1.Frame{f} }},
		{"no phase", func() []*moemeshv1.Frame { f := good(); f.Phase = 0; return []*moemeshv1.Frame{f} }},
		{"wrong size", func() []*moemeshv1.Frame { f := good(); f.Payload = f32Tensor(1, 2, 3); return []*moemeshv1.Frame{f} }},
		{"missing tensor", func() []*moemeshv1.Frame { f := good(); f.Payload = nil; return []*moemeshv1.Frame{f} }},
		{"data shorter than shape", func() []*moemeshv1.Frame {
			f := good()
			f.Payload.Data = f.Payload.Data[:12]
			return []*moemeshv1.Frame{f}
		}},
		{"unknown dtype", func() []*moemeshv1.Frame { f := good(); f.Payload.Dtype = 9; return []*moemeshv1.Frame{f} }},
		{"negative dimension", func() []*moemeshv1.Frame { f := good(); f.Payload.Shape = []int64{-4}; return []*moemeshv1.Frame{f} }},
		{"unexpected sender", func() []*moemeshv1.Frame { f := good(); f.SrcWorker = 2; return []*moemeshv1.Frame{f} }},
		{"wrong receiver", func() []*moemeshv1.Frame { f := good(); f.DstWorker = 2; return []*moemeshv1.Frame{f} }},
		{"chunk without start", func() []*moemeshv1.Frame { f := good(); f.Seq, f.Chunks = 1, 2; return []*moemeshv1.Frame{f} }},
		{"interleaved chunks", func() []*moemeshv1.Frame {
			a, b := good(), good()
			a.Chunks, b.Chunks = 2, 2
			a.Payload.Data, b.Payload.Data = a.Payload.Data[:8], b.Payload.Data[8:]
			b.Seq, b.Layer = 1, 2
			return []*moemeshv1.Frame{a, b}
		}},
		{"chunks overflow the shape", func() []*moemeshv1.Frame {
			a, b := good(), good()
			a.Chunks, b.Chunks, b.Seq = 2, 2, 1
			return []*moemeshv1.Frame{a, b}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lis := listen(t)
			addrs := []string{"worker-0.invalid:1", lis.Addr().String(), ""}
			c := testConfig()
			c.Self, c.Addrs, c.Epoch, c.Listener = 1, addrs, 3, lis
			var m *Mesh
			var err error
			var wg sync.WaitGroup
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				m, err = NewMesh(ctx, c)
			})
			fake := dialFake(t, addrs[1], 3, 0, 1, 3)
			wg.Wait()
			if err != nil {
				t.Fatalf("NewMesh: %v", err)
			}
			defer m.Close()
			for _, f := range tc.frames() {
				if err := fake.stream.Send(f); err != nil {
					t.Fatalf("Send: %v", err)
				}
			}
			start := time.Now()
			err = m.AllReduceSum(context.Background(), tag, []int{0, 1}, make([]float32, 8))
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("protocol violation noticed after %v", d)
			}
		})
	}
}

// TestFakePeerCompletes checks the hand-driven peer speaks the protocol as
// docs/wire.md describes it: two rounds, the reduce-scatter to the chunk
// owners and then the summed chunks.
func TestFakePeerCompletes(t *testing.T) {
	lis := listen(t)
	addrs := []string{"worker-0.invalid:1", lis.Addr().String()}
	c := testConfig()
	c.Self, c.Addrs, c.Epoch, c.Listener = 1, addrs, 3, lis
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
	tag := Tag{Step: 1, Layer: 0, Phase: attn}
	data := []float32{1, 2, 3, 4}
	done := make(chan error, 1)
	go func() { done <- m.AllReduceSum(context.Background(), tag, []int{0, 1}, data) }()
	// Worker 0 owns [0, 2), worker 1 owns [2, 4). Worker 0's data: 10 20 30 40.
	if err := fake.stream.Send(&moemeshv1.Frame{Step: 1, Phase: attn, SrcWorker: 0, DstWorker: 1, Payload: f32Tensor(30, 40)}); err != nil {
		t.Fatal(err)
	}
	f, err := fake.stream.Recv() // round 0 from worker 1: its values for chunk 0
	if err != nil || f.GetRound() != 0 || len(f.GetPayload().GetData()) != 8 {
		t.Fatalf("round 0 frame %v, %v", f, err)
	}
	if err := fake.stream.Send(&moemeshv1.Frame{Step: 1, Phase: attn, SrcWorker: 0, DstWorker: 1, Round: 1, Payload: f32Tensor(11, 22)}); err != nil {
		t.Fatal(err)
	}
	f, err = fake.stream.Recv() // round 1: worker 1's summed chunk
	if err != nil || f.GetRound() != 1 {
		t.Fatalf("round 1 frame %v, %v", f, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []float32{11, 22, 33, 44}
	for i := range want {
		if data[i] != want[i] {
			t.Fatalf("data = %v, want %v", data, want)
		}
	}
}

// frameCounter is a grpc stats.Handler that sums the wire length of the
// Frames sent through it.
type frameCounter struct {
	mu   sync.Mutex
	sent int64
}

func (c *frameCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *frameCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *frameCounter) HandleConn(context.Context, stats.ConnStats) {}
func (c *frameCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if p, ok := s.(*stats.OutPayload); ok {
		if _, ok := p.Payload.(*moemeshv1.Frame); ok {
			c.mu.Lock()
			c.sent += int64(p.WireLength)
			c.mu.Unlock()
		}
	}
}

func TestWireBytesMatchGRPC(t *testing.T) {
	counter := &frameCounter{}
	meshes := newCluster(t, 3, func(_ int, c *MeshConfig) {
		c.MaxChunkBytes = 1024
		c.ServerOptions = []grpc.ServerOption{grpc.StatsHandler(counter)}
		c.DialOptions = append(DefaultDialOptions(), grpc.WithStatsHandler(counter))
	})
	group := []int{0, 1, 2}
	checkAllReduce(t, meshes, group, 3000, Tag{Step: 1, Phase: attn}, 1e-6)
	var ours, recv, tensor uint64
	for _, m := range meshes {
		s := m.Stats().Total()
		ours += s.WireBytesSent
		recv += s.WireBytesRecv
		tensor += s.TensorBytesSent
	}
	counter.mu.Lock()
	theirs := counter.sent
	counter.mu.Unlock()
	if ours != uint64(theirs) || recv != ours {
		t.Fatalf("wire bytes: counted sent %d, received %d; grpc stats.Handler saw %d", ours, recv, theirs)
	}
	// Reduce-scatter and all-gather each move (T-1)/T of the vector per member.
	if want := uint64(3 * 2 * 2 * 1000 * 4); tensor != want {
		t.Fatalf("tensor bytes %d, want %d", tensor, want)
	}
}

func TestSharedServiceEpochs(t *testing.T) {
	const n = 3
	svcs := make([]*Service, n)
	srvs := make([]*grpc.Server, n)
	addrs := make([]string, n)
	var serving sync.WaitGroup
	for i := range n {
		lis := listen(t)
		addrs[i] = lis.Addr().String()
		svcs[i], srvs[i] = NewService(), grpc.NewServer()
		svcs[i].Register(srvs[i])
		serving.Go(func() { _ = srvs[i].Serve(lis) })
	}
	defer func() {
		for _, s := range srvs {
			s.Stop()
		}
		serving.Wait()
	}()
	// Two generations side by side on the same servers.
	byEpoch := map[uint64][]*Mesh{}
	for _, epoch := range []uint64{1, 2} {
		meshes := make([]*Mesh, n)
		errs := runAll(workers(n), func(w int) error {
			c := testConfig()
			c.Self, c.Addrs, c.Epoch, c.Service = w, addrs, epoch, svcs[w]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			meshes[w], err = NewMesh(ctx, c)
			return err
		})
		for w, err := range errs {
			if err != nil {
				t.Fatalf("epoch %d worker %d: %v", epoch, w, err)
			}
		}
		byEpoch[epoch] = meshes
	}
	defer func() {
		for _, ms := range byEpoch {
			for _, m := range ms {
				m.Close()
			}
		}
	}()
	checkAllReduce(t, byEpoch[1], workers(n), 50, Tag{Step: 1, Phase: attn}, 1e-6)
	checkAllReduce(t, byEpoch[2], workers(n), 50, Tag{Step: 1, Phase: attn}, 1e-6)
	// Closing one generation leaves the other intact.
	for _, m := range byEpoch[1] {
		m.Close()
	}
	checkAllReduce(t, byEpoch[2], workers(n), 50, Tag{Step: 2, Phase: attn}, 1e-6)
}

func TestHelloMismatch(t *testing.T) {
	lis0, lis1 := listen(t), listen(t)
	addrs := []string{lis0.Addr().String(), lis1.Addr().String()}
	c1 := testConfig()
	c1.Self, c1.Addrs, c1.Listener, c1.WireDType = 1, addrs, lis1, BF16
	ctx1, cancel1 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		m, err := NewMesh(ctx1, c1)
		if m != nil {
			m.Close()
		}
		done <- err
	}()
	c0 := testConfig()
	c0.Self, c0.Addrs, c0.Listener = 0, addrs, lis0
	ctx0, cancel0 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel0()
	m, err := NewMesh(ctx0, c0)
	if err == nil {
		m.Close()
		t.Fatal("NewMesh joined a peer with another wire dtype")
	}
	if !errors.Is(err, ErrPeerLost) || ctx0.Err() != nil {
		t.Fatalf("err = %v, want an immediate ErrPeerLost", err)
	}
	cancel1()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("worker 1: err = %v, want context.Canceled", err)
	}
}

func TestConfigValidation(t *testing.T) {
	lis := listen(t)
	defer lis.Close()
	base := func() MeshConfig {
		c := testConfig()
		c.Self, c.Addrs, c.Listener = 0, []string{"a", "b"}, lis
		return c
	}
	tests := []struct {
		name string
		mod  func(c *MeshConfig)
	}{
		{"no addresses", func(c *MeshConfig) { c.Addrs = nil }},
		{"self out of range", func(c *MeshConfig) { c.Self = 2 }},
		{"neither listener nor service", func(c *MeshConfig) { c.Listener = nil }},
		{"both listener and service", func(c *MeshConfig) { c.Service = NewService() }},
		{"bad dtype", func(c *MeshConfig) { c.WireDType = 0 }},
		{"chunk too small", func(c *MeshConfig) { c.MaxChunkBytes = 16 }},
		{"chunk not a multiple of 4", func(c *MeshConfig) { c.MaxChunkBytes = 1026 }},
		{"chunk too large", func(c *MeshConfig) { c.MaxChunkBytes = 8 << 20 }},
		{"no pending room", func(c *MeshConfig) { c.MaxPendingMessages = 0 }},
		{"negative timeout", func(c *MeshConfig) { c.Timeout = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			if _, err := NewMesh(context.Background(), c); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}
