package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker/collective"
)

// gate holds the first dispatch of a step, once armed, until released or
// until the step's context ends.
type gate struct {
	Exchange
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate() *gate { return &gate{entered: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) AllToAll(ctx context.Context, tag collective.Tag, group []int, send map[int]collective.Payload) (map[int]collective.Payload, error) {
	if g.armed.Load() {
		g.once.Do(func() { close(g.entered) })
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Exchange.AllToAll(ctx, tag, group, send)
}

// oneWorker starts a single worker whose exchange goes through g, with
// epoch 1 loaded.
func oneWorker(t *testing.T, g *gate, conf func(*Config)) *testCluster {
	t.Helper()
	c := newTestCluster(t, tinyA, 1, func(int) Config {
		cfg := Config{WrapExchange: func(_ int, ex Exchange) Exchange { g.Exchange = ex; return g }}
		if conf != nil {
			conf(&cfg)
		}
		return cfg
	})
	if _, err := c.load(context.Background(), loadSpec{members: []int{0}, place: placementProto(1, uniform(c.cfg, 1, 0)), meshEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestShutdown: with drain the step in flight completes and new steps get
// UNAVAILABLE meanwhile; without, the step in flight fails UNAVAILABLE.
// Either way the server exits and Health said DRAINING without blocking.
func TestShutdown(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name     string
		drain    bool
		stepCode codes.Code // of the step in flight
	}{
		{"drain", true, codes.OK},
		{"immediate", false, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate()
			c := oneWorker(t, g, nil)
			srv := c.servers[0]
			w := srv.Worker
			seqs := testSeqs(t, c.cfg.VocabSize)
			g.armed.Store(true)
			stepErr := make(chan error, 1)
			go func() {
				_, err := w.Step(context.Background(), logitsRequest(1, 1, seqs))
				stepErr <- err
			}()
			<-g.entered
			shutErr := make(chan error, 1)
			go func() {
				_, err := w.Shutdown(context.Background(), &pb.ShutdownRequest{Drain: tc.drain, Reason: "test"})
				shutErr <- err
			}()
			waitFor(t, "DRAINING", func() bool { return health(t, w).State == pb.WorkerState_WORKER_STATE_DRAINING })
			if _, err := w.Step(context.Background(), logitsRequest(2, 1, seqs)); status.Code(err) != codes.Unavailable {
				t.Errorf("step during the shutdown: %v, want UNAVAILABLE", err)
			}
			if _, err := w.LoadShard(context.Background(), c.request(loadSpec{members: []int{0}, place: placementProto(2, uniform(c.cfg, 1, 0)), meshEpoch: 1}, 0)); status.Code(err) != codes.Unavailable {
				t.Errorf("LoadShard during the shutdown: %v, want UNAVAILABLE", err)
			}
			if tc.drain {
				close(g.release)
			}
			if err := <-stepErr; status.Code(err) != tc.stepCode {
				t.Errorf("step in flight: %v, want %v", err, tc.stepCode)
			}
			if err := <-shutErr; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			select {
			case <-srv.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not stop after Shutdown")
			}
		})
	}
}

// TestShutdownDrainDeadline: a drain whose deadline passes before the step
// in flight ends answers DEADLINE_EXCEEDED and stops anyway.
func TestShutdownDrainDeadline(t *testing.T) {
	checkLeaks(t)
	g := newGate()
	c := oneWorker(t, g, nil)
	w := c.servers[0].Worker
	g.armed.Store(true)
	stepErr := make(chan error, 1)
	go func() {
		_, err := w.Step(context.Background(), logitsRequest(1, 1, testSeqs(t, c.cfg.VocabSize)))
		stepErr <- err
	}()
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := w.Shutdown(ctx, &pb.ShutdownRequest{Drain: true}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Shutdown: %v, want DEADLINE_EXCEEDED", err)
	}
	if err := <-stepErr; status.Code(err) != codes.Unavailable {
		t.Errorf("step in flight: %v, want UNAVAILABLE", err)
	}
	<-c.servers[0].Done()
}

// TestFence: Fence fails the step in flight (ABORTED), leaves the worker
// EMPTY, refuses the fenced epoch, and accepts a newer one.
func TestFence(t *testing.T) {
	checkLeaks(t)
	g := newGate()
	c := oneWorker(t, g, nil)
	w := c.servers[0].Worker
	seqs := testSeqs(t, c.cfg.VocabSize)
	g.armed.Store(true)
	stepErr := make(chan error, 1)
	go func() {
		_, err := w.Step(context.Background(), logitsRequest(1, 1, seqs))
		stepErr <- err
	}()
	<-g.entered
	if err := w.Fence(); err != nil {
		t.Fatal(err)
	}
	if err := <-stepErr; status.Code(err) != codes.Aborted {
		t.Errorf("step in flight: %v, want ABORTED", err)
	}
	g.armed.Store(false)
	if h := health(t, w); h.State != pb.WorkerState_WORKER_STATE_EMPTY || h.ResidentWeightBytes != 0 {
		t.Errorf("after Fence: %v, want EMPTY with nothing resident", h)
	}
	if _, err := w.Step(context.Background(), logitsRequest(2, 1, seqs)); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("step after Fence: %v, want FAILED_PRECONDITION", err)
	}
	for _, tc := range []struct {
		epoch uint64
		want  codes.Code
	}{{1, codes.FailedPrecondition}, {2, codes.OK}} {
		_, err := w.LoadShard(context.Background(), c.request(loadSpec{members: []int{0}, place: placementProto(tc.epoch, uniform(c.cfg, 1, 0)), meshEpoch: 2}, 0))
		if status.Code(err) != tc.want {
			t.Errorf("LoadShard of epoch %d after Fence: %v, want %v", tc.epoch, err, tc.want)
		}
	}
	got, err := c.step(context.Background(), []int{0}, logitsRequest(3, 2, seqs))
	if err != nil {
		t.Fatal(err)
	}
	checkLogits(t, got, seqs, localLogits(t, tinyA))
	if h := health(t, w); h.State != pb.WorkerState_WORKER_STATE_SERVING || h.PlacementEpoch != 2 || h.LastStep != 3 {
		t.Errorf("after reloading: %v, want SERVING epoch 2 last step 3", h)
	}
}

// TestKVTooLarge: a KV cache beyond the token bound or the byte budget is
// RESOURCE_EXHAUSTED before anything is allocated, and the worker keeps
// serving its epoch.
func TestKVTooLarge(t *testing.T) {
	checkLeaks(t)
	g := newGate()
	c := oneWorker(t, g, func(cfg *Config) { cfg.MaxKVBytes = 1 << 20 })
	w := c.servers[0].Worker
	for _, tc := range []struct {
		name   string
		blocks uint32
	}{
		{"beyond the token bound", 1 << 31},
		{"beyond the byte budget", 4096}, // 16384 tokens × 4 layers × 32 floats × 8 bytes = 16 MiB
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.LoadShard(context.Background(), c.request(loadSpec{members: []int{0}, place: placementProto(2, uniform(c.cfg, 1, 0)), meshEpoch: 2, kvBlocks: tc.blocks}, 0))
			if status.Code(err) != codes.ResourceExhausted {
				t.Errorf("LoadShard: %v, want RESOURCE_EXHAUSTED", err)
			}
		})
	}
	seqs := testSeqs(t, c.cfg.VocabSize)
	got, err := c.step(context.Background(), []int{0}, logitsRequest(1, 1, seqs))
	if err != nil {
		t.Fatal(err)
	}
	checkLogits(t, got, seqs, localLogits(t, tinyA))
}

// TestLayoutChange: worker 2 of 3 dies; the survivors report it through
// OnPeerLost (with the old mesh epoch and its index), load epoch 2 on a
// layout of 2 workers with a new mesh epoch, and compute single-process
// logits; the old base is freed with min_live_epoch.
func TestLayoutChange(t *testing.T) {
	checkLeaks(t)
	type lost struct {
		mesh uint64
		peer int
	}
	var mu sync.Mutex
	reports := make([][]lost, 3)
	c := newTestCluster(t, tinyA, 3, func(i int) Config {
		return Config{OnPeerLost: func(mesh uint64, peer int, err error) {
			if !errors.Is(err, collective.ErrPeerLost) {
				t.Errorf("server %d: OnPeerLost error %v does not wrap ErrPeerLost", i, err)
			}
			mu.Lock()
			defer mu.Unlock()
			reports[i] = append(reports[i], lost{mesh, peer})
		}}
	})
	ctx := context.Background()
	want := localLogits(t, tinyA)
	seqs := testSeqs(t, c.cfg.VocabSize)
	if _, err := c.load(ctx, loadSpec{members: []int{0, 1, 2}, place: placementProto(1, uniform(c.cfg, 3, 0)), meshEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	got, err := c.step(ctx, []int{0, 1, 2}, logitsRequest(1, 1, seqs))
	if err != nil {
		t.Fatal(err)
	}
	checkLogits(t, got, seqs, want)

	c.servers[2].Kill()
	waitFor(t, "OnPeerLost on the survivors", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reports[0]) > 0 && len(reports[1]) > 0
	})
	mu.Lock()
	for i := range 2 {
		if len(reports[i]) != 1 || reports[i][0] != (lost{1, 2}) {
			t.Errorf("server %d reported %v, want worker 2 lost from mesh epoch 1", i, reports[i])
		}
	}
	mu.Unlock()
	for i := range 2 {
		if h := health(t, c.servers[i].Worker); len(h.LostPeers) != 1 || h.LostPeers[0] != 2 {
			t.Errorf("server %d: lost_peers %v, want [2]", i, h.LostPeers)
		}
	}

	resp, err := c.load(ctx, loadSpec{members: []int{0, 1}, place: placementProto(2, uniform(c.cfg, 2, 0)), meshEpoch: 2, minLive: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, err = c.step(ctx, []int{0, 1}, logitsRequest(2, 2, seqs))
	if err != nil {
		t.Fatal(err)
	}
	checkLogits(t, got, seqs, want)
	layout, _ := sharding.NewLayout(2, 1)
	p2 := uniform(c.cfg, 2, 0)
	for w, r := range resp {
		if want := sharding.WorkerMemory(shapeOf(c.cfg), layout, p2, w, 0).Weights; int64(r.ResidentWeightBytes) != want {
			t.Errorf("worker %d holds %d weight bytes, epoch 2 alone needs %d", w, r.ResidentWeightBytes, want)
		}
		if h := health(t, c.servers[w].Worker); len(h.LostPeers) != 0 {
			t.Errorf("server %d: lost_peers %v after the old mesh was freed", w, h.LostPeers)
		}
	}
}
