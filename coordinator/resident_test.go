package coordinator_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker"
)

// TestResidentWeightsAreTheShare checks that every worker holds exactly its
// share of the weights as sharding.WorkerMemory computes it: its heads'
// attention slices, its experts, the replicated router and its vocabulary
// block of embed_tokens and lm_head. The f32 test model makes norms and
// matrices the same width, so the figures must agree to the byte.
func TestResidentWeightsAreTheShare(t *testing.T) {
	checkLeaks(t)
	dir := genDir
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	shape := sharding.ModelShape{
		Layers: cfg.NumHiddenLayers, Hidden: cfg.HiddenSize, Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads,
		HeadDim: cfg.HeadDim, Experts: cfg.NumExperts, TopK: cfg.NumExpertsPerTok, MoEIntermediate: cfg.MoeIntermediateSize,
		Intermediate: cfg.IntermediateSize, Vocab: cfg.VocabSize, BytesPerParam: 4,
	}
	whole := int64(0)
	for _, lt := range []struct{ n, tp, replicas int }{{1, 1, 0}, {4, 2, 0}, {8, 8, 16}, {6, 2, 6}} {
		t.Run(fmt.Sprintf("N%d_T%d_R%d", lt.n, lt.tp, lt.replicas), func(t *testing.T) {
			layout, _ := sharding.NewLayout(lt.n, lt.tp)
			pl, err := sharding.PlaceExperts(cfg.NumExperts, lt.n, lt.replicas, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			addrs := make([]string, lt.n)
			var servers []*worker.Server
			for w := range lt.n {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				s := worker.Serve(lis, worker.Config{Log: quietLog})
				servers = append(servers, s)
				addrs[w] = s.Addr()
			}
			defer func() {
				for _, s := range servers {
					s.Stop(time.Second)
				}
			}()
			d, err := coordinator.Dial(addrs)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			resp, err := d.Load(context.Background(), coordinator.LoadSpec{
				ModelDir: dir, Layout: layout, Placement: pl, Layers: cfg.NumHiddenLayers, Vocab: cfg.VocabSize,
				PeerAddrs: addrs, WireDType: pb.DType_DTYPE_F32, KVBlocks: 4, BlockSize: 4,
			})
			if err != nil {
				t.Fatal(err)
			}
			var sum int64
			for w, r := range resp {
				want := sharding.WorkerMemory(shape, layout, pl, w, 0).Weights
				if got := int64(r.ResidentWeightBytes); got != want {
					t.Errorf("worker %d holds %d weight bytes, its share is %d", w, got, want)
				}
				sum += int64(r.ResidentWeightBytes)
			}
			if lt.n == 1 {
				whole = sum
			} else if whole > 0 && sum/int64(lt.n) >= whole {
				t.Errorf("mean per worker %d bytes is not below the whole model's %d", sum/int64(lt.n), whole)
			}
		})
	}
}
