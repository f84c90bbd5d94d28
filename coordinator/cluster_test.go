package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker"
)

var quietLog = slog.New(slog.DiscardHandler)

// checkLeaks fails t if goroutines started during t outlive its cleanups.
func checkLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// cluster is an in-process cluster: N worker servers on loopback and a driver.
type cluster struct {
	servers []*worker.Server
	driver  *coordinator.Driver
	pool    scheduler.Allocator
	place   *sharding.Placement
	layers  []*sharding.Placement // per-layer placements, when used
	layout  sharding.Layout
}

type clusterConfig struct {
	workers, tp, replicas int
	wire                  pb.DType
	mesh                  func(self int, ex worker.Exchange) worker.Exchange // optional fault injection
	stepTimeout           time.Duration
	perLayerLoad          bool // a load-aware placement of its own for every layer
}

const (
	blockSize = 4
	kvBlocks  = 256
)

// newCluster starts the cluster and loads dir; everything is stopped by t.Cleanup.
func newCluster(t *testing.T, dir string, cc clusterConfig) *cluster {
	t.Helper()
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := sharding.NewLayout(cc.workers, cc.tp)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := sharding.PlaceExperts(cfg.NumExperts, cc.workers, cc.replicas, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	pl.Epoch = 1
	var layers []*sharding.Placement
	if cc.perLayerLoad {
		rng := rand.New(rand.NewPCG(uint64(cc.workers), 7))
		for range cfg.NumHiddenLayers {
			load := make([]float64, cfg.NumExperts)
			for e := range load {
				load[e] = rng.ExpFloat64() // uneven, as trained routers are
			}
			lp, err := sharding.PlaceExperts(cfg.NumExperts, cc.workers, cc.replicas, 0, load)
			if err != nil {
				t.Fatal(err)
			}
			lp.Epoch = 1
			layers = append(layers, lp)
		}
	}
	c := &cluster{place: pl, layout: layout, layers: layers}
	addrs := make([]string, cc.workers)
	for w := range cc.workers {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wc := worker.Config{WrapExchange: cc.mesh, Log: quietLog}
		s := worker.Serve(lis, wc)
		c.servers = append(c.servers, s)
		addrs[w] = s.Addr()
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Stop(5 * time.Second)
		}
	})
	d, err := coordinator.Dial(addrs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if cc.stepTimeout > 0 {
		d.StepTimeout = cc.stepTimeout
	}
	wire := cc.wire
	if wire == pb.DType_DTYPE_UNSPECIFIED {
		wire = pb.DType_DTYPE_F32
	}
	if _, err := d.Load(context.Background(), coordinator.LoadSpec{
		ModelDir: dir, Layout: layout, Placement: pl, LayerPlacements: layers, Layers: cfg.NumHiddenLayers, Vocab: cfg.VocabSize,
		PeerAddrs: addrs, WireDType: wire, KVBlocks: kvBlocks, BlockSize: blockSize, MeshEpoch: 1,
		Timeout: 30 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	c.driver = d
	c.pool = scheduler.DriverPools(d, blockSize, kvBlocks)
	return c
}

func openLocal(t *testing.T, dir string) *model.Model {
	t.Helper()
	m, err := model.Open(dir, kernels.NewCPU(), model.OpenOptions{BlockSize: blockSize, ContextTokens: blockSize * kvBlocks, CloseBackend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// batch builds three sequences of lengths 1, 7 and 13 with tokens below vocab.
func batch(t *testing.T, pool scheduler.Allocator, vocab int) []model.SeqInput {
	t.Helper()
	var in []model.SeqInput
	for i, n := range []int{1, 7, 13} {
		s := &scheduler.Seq{ID: uint64(i)}
		if err := pool.Reserve(s, n); err != nil {
			t.Fatal(err)
		}
		toks := make([]int32, n)
		for j := range toks {
			toks[j] = int32((i*131 + j*977 + 5) % vocab)
		}
		in = append(in, model.SeqInput{ID: s.ID, Tokens: toks, Blocks: s.Blocks, AllLogits: true})
	}
	return in
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

func compareRows(t *testing.T, got, want [][]float32, limit float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d logits rows, want %d", len(got), len(want))
	}
	worst := 0.0
	for i := range want {
		e := relErr(got[i], want[i])
		if math.IsNaN(e) || e > limit {
			t.Errorf("row %d: relative error %.3g > %.3g", i, e, limit)
		}
		worst = max(worst, e)
	}
	return worst
}

var testLayouts = []struct{ n, t int }{{1, 1}, {2, 1}, {2, 2}, {3, 1}, {4, 2}, {4, 4}, {6, 2}, {8, 8}}

// TestDistributedEqualsLocal checks that a cluster computes the same logits
// as one process, for every layout that fits the model's heads.
func TestDistributedEqualsLocal(t *testing.T) {
	checkLeaks(t)
	for _, dir := range testModels(t) {
		local := openLocal(t, dir)
		lpool := scheduler.ModelPools(local)
		want, err := local.Forward(context.Background(), batch(t, lpool, local.Cfg.VocabSize))
		if err != nil {
			t.Fatal(err)
		}
		for _, lt := range testLayouts {
			for _, replicas := range []int{0, 5} {
				if replicas > 0 && lt.n < 2 {
					continue
				}
				name := fmt.Sprintf("%s/N%d_T%d_R%d", filepath.Base(dir), lt.n, lt.t, replicas)
				t.Run(name, func(t *testing.T) {
					if _, err := sharding.SplitHeads(local.Cfg.NumAttentionHeads, local.Cfg.NumKeyValueHeads, lt.t); err != nil {
						t.Skipf("layout does not fit the heads (checked in TestBadLayoutFailsEarly): %v", err)
					}
					c := newCluster(t, dir, clusterConfig{workers: lt.n, tp: lt.t, replicas: replicas})
					got, err := c.driver.Forward(context.Background(), batch(t, c.pool, local.Cfg.VocabSize))
					if err != nil {
						t.Fatal(err)
					}
					worst := compareRows(t, got, want, 1e-5)
					t.Logf("worst relative error %.2g", worst)
				})
			}
		}
	}
}

// TestDistributedGreedyGeneration generates 32 tokens greedily on a
// cluster and in one process: the ids must be identical.
func TestDistributedGreedyGeneration(t *testing.T) {
	checkLeaks(t)
	dir := testModels(t)[2]
	local := openLocal(t, dir)
	reqs := func() []scheduler.GenerateRequest {
		var rs []scheduler.GenerateRequest
		for i, p := range [][]int32{{1, 2, 3}, {100, 200, 300, 400, 500}} {
			s, _ := sampling.New(sampling.Greedy())
			_ = i
			rs = append(rs, scheduler.GenerateRequest{Prompt: p, MaxTokens: 32, Sampler: s})
		}
		return rs
	}
	want, err := scheduler.Generate(context.Background(), local, scheduler.ModelPools(local), reqs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, dir, clusterConfig{workers: 4, tp: 2, replicas: 3})
	got, err := scheduler.Generate(context.Background(), c.driver, c.pool, reqs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Errorf("sequence %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

// TestBadLayoutFailsEarly: a TP size that does not divide the heads is
// refused by LoadShard with InvalidArgument before anything is loaded.
func TestBadLayoutFailsEarly(t *testing.T) {
	dir := filepath.Join("..", "model", "testdata", "tiny-c") // 12 query heads
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := worker.Serve(lis, worker.Config{Log: quietLog})
	defer s.Stop(time.Second)
	pl, _ := sharding.PlaceExperts(32, 8, 0, 0, nil)
	addrs := make([]string, 8)
	for i := range addrs {
		addrs[i] = s.Addr()
	}
	_, err = s.Worker.LoadShard(context.Background(), &pb.LoadShardRequest{
		ModelDir: dir, Layout: &pb.Layout{Workers: 8, Tp: 8}, Placement: coordinator.PlacementProto(pl, 6),
		PeerAddrs: addrs, KvBlocks: 8, KvBlockSize: 4,
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
}

// TestDistributedSampledGeneration samples on the workers (temperature,
// top-k, top-p, penalties, seeds) and must produce exactly the tokens one
// process samples; running it twice on one cluster checks that a sequence
// id reused from position 0 starts a fresh sampler.
func TestDistributedSampledGeneration(t *testing.T) {
	checkLeaks(t)
	dir := testModels(t)[2]
	local := openLocal(t, dir)
	reqs := func() []scheduler.GenerateRequest {
		var rs []scheduler.GenerateRequest
		for i, p := range [][]int32{{1, 2, 3}, {100, 200, 300, 400, 500}, {7}} {
			params := sampling.ThinkingDefaults()
			params.Seed = uint64(11 + i)
			params.RepetitionPenalty, params.PresencePenalty = 1.1, 0.5
			s, err := sampling.New(params)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, scheduler.GenerateRequest{Prompt: p, MaxTokens: 24 + 4*i, Sampler: s})
		}
		return rs
	}
	want, err := scheduler.Generate(context.Background(), local, scheduler.ModelPools(local), reqs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, dir, clusterConfig{workers: 4, tp: 2, replicas: 2})
	for round := range 2 {
		got, err := scheduler.Generate(context.Background(), c.driver, c.pool, reqs(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
				t.Errorf("round %d, sequence %d:\n got %v\nwant %v", round, i, got[i], want[i])
			}
		}
	}
}

// TestPerLayerPlacement gives every layer its own load-aware placement with
// replicas (hot experts copied, different per layer); the logits must
// still equal one process's.
func TestPerLayerPlacement(t *testing.T) {
	checkLeaks(t)
	for _, dir := range testModels(t)[1:] {
		local := openLocal(t, dir)
		want, err := local.Forward(context.Background(), batch(t, scheduler.ModelPools(local), local.Cfg.VocabSize))
		if err != nil {
			t.Fatal(err)
		}
		for _, lt := range []struct{ n, tp int }{{3, 1}, {4, 2}} {
			t.Run(fmt.Sprintf("%s/N%d_T%d", filepath.Base(dir), lt.n, lt.tp), func(t *testing.T) {
				c := newCluster(t, dir, clusterConfig{workers: lt.n, tp: lt.tp, replicas: 4, perLayerLoad: true})
				if fmt.Sprint(c.layers[0].Slots) == fmt.Sprint(c.layers[1].Slots) {
					t.Fatal("layers 0 and 1 got the same placement; the test would prove nothing")
				}
				got, err := c.driver.Forward(context.Background(), batch(t, c.pool, local.Cfg.VocabSize))
				if err != nil {
					t.Fatal(err)
				}
				compareRows(t, got, want, 1e-5)
			})
		}
	}
}
