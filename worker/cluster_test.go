package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
)

var (
	quietLog = slog.New(slog.DiscardHandler)
	tinyA    = filepath.Join("..", "model", "testdata", "tiny-a") // f32, 16 experts, 4 layers, 8/2 heads
)

const (
	testBlockSize = 4
	testKVBlocks  = 64
)

// checkLeaks fails t if goroutines started during t outlive its cleanups.
func checkLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// testCluster is a set of worker servers on loopback. Which of them form a
// mesh, and as which worker index, is up to each load.
type testCluster struct {
	t       *testing.T
	dir     string
	cfg     *model.Config
	servers []*Server
}

func newTestCluster(t *testing.T, dir string, n int, wc func(i int) Config) *testCluster {
	t.Helper()
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, dir: dir, cfg: cfg}
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conf := Config{Log: quietLog}
		if wc != nil {
			conf = wc(i)
			if conf.Log == nil {
				conf.Log = quietLog
			}
		}
		c.servers = append(c.servers, Serve(lis, conf))
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Stop(5 * time.Second)
		}
	})
	return c
}

// placementProto writes one placement per layer (all the same when layers
// has one entry).
func placementProto(epoch uint64, layers ...*sharding.Placement) *pb.Placement {
	out := &pb.Placement{Epoch: epoch}
	for l, p := range layers {
		lp := &pb.LayerPlacement{Layer: uint32(l)}
		for _, slots := range p.Slots {
			we := &pb.WorkerExperts{}
			for _, e := range slots {
				we.Experts = append(we.Experts, uint32(e))
			}
			lp.Workers = append(lp.Workers, we)
		}
		out.Layers = append(out.Layers, lp)
	}
	return out
}

// loadSpec is one LoadShard on a subset of the servers: members[i] is the
// server that becomes worker i.
type loadSpec struct {
	members   []int
	tp        int
	place     *pb.Placement
	meshEpoch uint64
	minLive   uint64
	kvBlocks  uint32
}

func (c *testCluster) request(ls loadSpec, w int) *pb.LoadShardRequest {
	addrs := make([]string, len(ls.members))
	for i, m := range ls.members {
		addrs[i] = c.servers[m].Addr()
	}
	kv := ls.kvBlocks
	if kv == 0 {
		kv = testKVBlocks
	}
	return &pb.LoadShardRequest{
		ModelDir: c.dir, WorkerIndex: uint32(w), Layout: &pb.Layout{Workers: uint32(len(ls.members)), Tp: uint32(max(ls.tp, 1))},
		Placement: ls.place, PeerAddrs: addrs, WireDtype: pb.DType_DTYPE_F32,
		KvBlocks: kv, KvBlockSize: testBlockSize, MeshEpoch: ls.meshEpoch, MinLiveEpoch: ls.minLive,
	}
}

// load runs LoadShard on every member concurrently.
func (c *testCluster) load(ctx context.Context, ls loadSpec) ([]*pb.LoadShardResponse, error) {
	out := make([]*pb.LoadShardResponse, len(ls.members))
	err := c.all(ls.members, func(w, srv int) error {
		r, err := c.servers[srv].Worker.LoadShard(ctx, c.request(ls, w))
		out[w] = r
		return err
	})
	return out, err
}

// step runs req on every member concurrently and returns the results of
// worker 0 by sequence id.
func (c *testCluster) step(ctx context.Context, members []int, req *pb.StepRequest) (map[uint64]*pb.SeqResult, error) {
	resp := make([]*pb.StepResponse, len(members))
	err := c.all(members, func(w, srv int) error {
		r, err := c.servers[srv].Worker.Step(ctx, req)
		resp[w] = r
		return err
	})
	if err != nil {
		return nil, err
	}
	out := map[uint64]*pb.SeqResult{}
	for _, r := range resp[0].GetResults() {
		out[r.SeqId] = r
	}
	return out, nil
}

func (c *testCluster) all(members []int, f func(w, srv int) error) error {
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for w, srv := range members {
		wg.Go(func() {
			if err := f(w, srv); err != nil {
				errs[w] = fmt.Errorf("worker %d (server %d): %w", w, srv, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// testBlocks hands out the testKVBlocks block ids of a test's KV caches,
// lowest first and never back (the scheduler's BlockPool does this in
// serving; a worker only stores the blocks it is told to use).
type testBlocks struct{ next int32 }

// reserve grows the block table *b to hold positions [0, n).
func (p *testBlocks) reserve(t *testing.T, b *[]int32, n int) {
	t.Helper()
	for len(*b)*testBlockSize < n {
		if p.next == testKVBlocks {
			t.Fatalf("test KV cache of %d blocks full", testKVBlocks)
		}
		*b = append(*b, p.next)
		p.next++
	}
}

// testSeqs are three sequences of lengths 1, 7 and 13, each with its own
// blocks of one pool.
func testSeqs(t *testing.T, vocab int) []model.SeqInput {
	t.Helper()
	var pool testBlocks
	var in []model.SeqInput
	for i, n := range []int{1, 7, 13} {
		var blocks []int32
		pool.reserve(t, &blocks, n)
		toks := make([]int32, n)
		for j := range toks {
			toks[j] = int32((i*131 + j*977 + 5) % vocab)
		}
		in = append(in, model.SeqInput{ID: uint64(i), Tokens: toks, Blocks: blocks, AllLogits: true})
	}
	return in
}

// logitsRequest asks for every position's logits of seqs (attention group
// ID mod groups).
func logitsRequest(step, epoch uint64, seqs []model.SeqInput) *pb.StepRequest {
	req := &pb.StepRequest{Step: step, PlacementEpoch: epoch, ReturnLogits: true}
	for _, s := range seqs {
		req.Seqs = append(req.Seqs, &pb.SeqStep{SeqId: s.ID, Tokens: s.Tokens, StartPos: int32(s.StartPos),
			BlockTable: s.Blocks, Sample: true, AllLogits: s.AllLogits})
	}
	return req
}

// localLogits is the single-process reference for testSeqs.
func localLogits(t *testing.T, dir string) [][]float32 {
	t.Helper()
	m, err := model.Open(dir, kernels.NewCPU(), model.OpenOptions{BlockSize: testBlockSize, ContextTokens: testBlockSize * testKVBlocks, CloseBackend: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rows, err := m.Forward(context.Background(), testSeqs(t, m.Cfg.VocabSize))
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkLogits compares the results of a logitsRequest with want, 1e-5
// relative per row.
func checkLogits(t *testing.T, got map[uint64]*pb.SeqResult, seqs []model.SeqInput, want [][]float32) {
	t.Helper()
	r := 0
	for _, s := range seqs {
		res, ok := got[s.ID]
		if !ok {
			t.Fatalf("no result for sequence %d", s.ID)
		}
		data := res.GetLogits().GetData()
		vocab := len(want[0])
		if len(data) != len(s.Tokens)*vocab*4 {
			t.Fatalf("sequence %d: %d logits bytes, want %d rows of %d", s.ID, len(data), len(s.Tokens), vocab)
		}
		for i := range s.Tokens {
			row := make([]float32, vocab)
			for j := range row {
				row[j] = math.Float32frombits(binary.LittleEndian.Uint32(data[(i*vocab+j)*4:]))
			}
			if e := relErr(row, want[r]); math.IsNaN(e) || e > 1e-5 {
				t.Errorf("sequence %d position %d: relative error %.3g", s.ID, i, e)
			}
			r++
		}
	}
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

// uniform places experts round-robin over workers, shifted by shift, for
// every layer.
func uniform(cfg *model.Config, workers, shift int) *sharding.Placement {
	pl := &sharding.Placement{Workers: workers, Experts: cfg.NumExperts, Slots: make([][]int, workers), Owners: make([][]int, cfg.NumExperts)}
	for e := range cfg.NumExperts {
		w := (e + shift) % workers
		pl.Slots[w] = append(pl.Slots[w], e)
		pl.Owners[e] = append(pl.Owners[e], w)
	}
	return pl
}
