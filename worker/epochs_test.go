package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func health(t *testing.T, w *Worker) *pb.HealthResponse {
	t.Helper()
	h, err := w.Health(context.Background(), &pb.HealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func shapeOf(cfg *model.Config) sharding.ModelShape {
	return sharding.ModelShape{
		Layers: cfg.NumHiddenLayers, Hidden: cfg.HiddenSize, Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads,
		HeadDim: cfg.HeadDim, Experts: cfg.NumExperts, TopK: cfg.NumExpertsPerTok, MoEIntermediate: cfg.MoeIntermediateSize,
		Intermediate: cfg.IntermediateSize, Vocab: cfg.VocabSize, BytesPerParam: 4, TieEmbeddings: cfg.TieWordEmbeddings,
	}
}

// TestRebalanceWhileServing: epoch 2 (another expert placement, same
// layout and mesh) loads while steps at epoch 1 keep succeeding; Health
// answers LOADING meanwhile; then epoch 2 computes single-process logits,
// min_live_epoch=2 frees the experts only epoch 1 used (the resident bytes
// equal the memory model of epoch 2), and epoch 1 is gone.
func TestRebalanceWhileServing(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name        string
		workers, tp int
	}{
		{"2 workers, tp 1", 2, 1},
		{"2 workers, tp 2", 2, 2},
		{"3 workers, tp 1", 3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, tinyA, tc.workers, nil)
			want := localLogits(t, tinyA)
			seqs := testSeqs(t, c.cfg.VocabSize)
			members := make([]int, tc.workers)
			for i := range members {
				members[i] = i
			}
			ctx := context.Background()
			p1, p2 := uniform(c.cfg, tc.workers, 0), uniform(c.cfg, tc.workers, 1)
			if _, err := c.load(ctx, loadSpec{members: members, tp: tc.tp, place: placementProto(1, p1), meshEpoch: 1}); err != nil {
				t.Fatal(err)
			}
			step := uint64(0)
			next := func() uint64 { step++; return step }
			got, err := c.step(ctx, members, logitsRequest(next(), 1, seqs))
			if err != nil {
				t.Fatal(err)
			}
			checkLogits(t, got, seqs, want)

			// Hold every worker's epoch-2 load after it read the weights.
			release := make(chan struct{})
			var read sync.WaitGroup
			for _, m := range members {
				read.Add(1)
				c.servers[m].Worker.afterRead = func() { read.Done(); <-release }
			}
			loadErr := make(chan error, 1)
			var resp2 []*pb.LoadShardResponse
			go func() {
				var err error
				resp2, err = c.load(ctx, loadSpec{members: members, tp: tc.tp, place: placementProto(2, p2), meshEpoch: 1})
				loadErr <- err
			}()
			read.Wait()
			for _, m := range members {
				if h := health(t, c.servers[m].Worker); h.State != pb.WorkerState_WORKER_STATE_LOADING || h.PlacementEpoch != 1 {
					t.Errorf("server %d during the load: state %v epoch %d, want LOADING at epoch 1", m, h.State, h.PlacementEpoch)
				}
			}
			for range 2 {
				got, err := c.step(ctx, members, logitsRequest(next(), 1, seqs))
				if err != nil {
					t.Fatalf("step at epoch 1 during the epoch-2 load: %v", err)
				}
				checkLogits(t, got, seqs, want)
			}
			close(release)
			if err := <-loadErr; err != nil {
				t.Fatal(err)
			}
			for _, m := range members {
				c.servers[m].Worker.afterRead = nil
			}
			for w, r := range resp2 {
				if r.PlacementEpoch != 2 {
					t.Errorf("worker %d: placement_epoch %d after the load, want 2", w, r.PlacementEpoch)
				}
			}
			// Both epochs serve.
			for _, ep := range []uint64{1, 2} {
				got, err := c.step(ctx, members, logitsRequest(next(), ep, seqs))
				if err != nil {
					t.Fatalf("step at epoch %d: %v", ep, err)
				}
				checkLogits(t, got, seqs, want)
			}

			// Free epoch 1.
			layout, _ := sharding.NewLayout(tc.workers, tc.tp)
			freed, err := c.load(ctx, loadSpec{members: members, tp: tc.tp, place: placementProto(2, p2), meshEpoch: 1, minLive: 2})
			if err != nil {
				t.Fatal(err)
			}
			p2.Epoch = 2
			for w, r := range freed {
				wantBytes := sharding.WorkerMemory(shapeOf(c.cfg), layout, p2, w, 0).Weights
				if got := int64(r.ResidentWeightBytes); got != wantBytes {
					t.Errorf("worker %d holds %d weight bytes after freeing epoch 1, the memory model of epoch 2 says %d", w, got, wantBytes)
				}
				if r.ResidentWeightBytes >= resp2[w].ResidentWeightBytes {
					t.Errorf("worker %d: resident bytes %d did not drop from %d", w, r.ResidentWeightBytes, resp2[w].ResidentWeightBytes)
				}
				if h := health(t, c.servers[members[w]].Worker); h.ResidentWeightBytes != r.ResidentWeightBytes || h.State != pb.WorkerState_WORKER_STATE_SERVING || h.PlacementEpoch != 2 {
					t.Errorf("worker %d health %v, want SERVING epoch 2 with %d resident bytes", w, h, r.ResidentWeightBytes)
				}
			}
			got, err = c.step(ctx, members, logitsRequest(next(), 2, seqs))
			if err != nil {
				t.Fatal(err)
			}
			checkLogits(t, got, seqs, want)
			if _, err := c.step(ctx, members, logitsRequest(next(), 1, seqs)); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("step at the freed epoch 1: %v, want FAILED_PRECONDITION", err)
			}
			// Epochs only move forward.
			for _, ep := range []uint64{1, 2} {
				pl := p1
				if ep == 2 {
					pl = uniform(c.cfg, tc.workers, 2) // epoch 2 again, another placement
				}
				_, err := c.servers[0].Worker.LoadShard(ctx, c.request(loadSpec{members: members, tp: tc.tp, place: placementProto(ep, pl), meshEpoch: 1}, 0))
				if status.Code(err) != codes.FailedPrecondition {
					t.Errorf("LoadShard of epoch %d after epoch 2: %v, want FAILED_PRECONDITION", ep, err)
				}
			}
		})
	}
}
