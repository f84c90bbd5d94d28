package coordinator_test

import (
	"context"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker"
)

// recordingFFN runs the local MoE and remembers every layer's routing.
type recordingFFN struct {
	m      *model.Model
	routes map[int]model.Routing
}

func (r *recordingFFN) MoE(ctx context.Context, step uint64, l int, h, out kernels.Buffer, tokens int) error {
	rt, err := r.m.Route(l, h, tokens)
	if err != nil {
		return err
	}
	r.routes[l] = rt
	return model.LocalMoE{M: r.m}.MoE(ctx, step, l, h, out, tokens)
}

// TestMoETraffic counts the bytes each worker sends on the MoE path in one
// step and compares them with the placement's theoretical volume: Σ over
// its tokens of the distinct remote workers computing its experts × hidden
// × 4 bytes for dispatch; for combine, each computed row once to every rank
// of its token's group but the computing worker itself.
func TestMoETraffic(t *testing.T) {
	checkLeaks(t)
	for _, lt := range []struct{ n, tp, replicas int }{{4, 1, 0}, {4, 2, 8}, {6, 2, 0}} {
		local := openLocal(t, trafficDir)
		rec := &recordingFFN{m: local, routes: map[int]model.Routing{}}
		local.FFN = rec
		in := batch(t, scheduler.ModelPools(local), local.Cfg.VocabSize)
		if _, err := local.Forward(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		c := newCluster(t, trafficDir, clusterConfig{workers: lt.n, tp: lt.tp, replicas: lt.replicas})
		if _, err := c.driver.Forward(context.Background(), batch(t, c.pool, local.Cfg.VocabSize)); err != nil {
			t.Fatal(err)
		}
		hid := local.Cfg.HiddenSize
		// Token rows of the local batch, by the group that serves them.
		byGroup := make([][]int, c.layout.DP)
		row := 0
		for _, s := range in {
			g := c.driver.Group(s.ID)
			for range s.Tokens {
				byGroup[g] = append(byGroup[g], row)
				row++
			}
		}
		// Per worker: dispatch rows it sends (distinct remote computing
		// workers per token) and combine rows it sends (each computed row
		// goes to every rank of the token's group but itself).
		hidBytes := int64(hid) * 4
		wantDisp, wantComb := make([]int64, lt.n), make([]int64, lt.n)
		for w := range lt.n {
			g, r := c.layout.Group(w), c.layout.Rank(w)
			group := c.layout.GroupWorkers(g)
			share := sharding.SplitRange(len(byGroup[g]), lt.tp, r)
			for l := range local.Cfg.NumHiddenLayers {
				rt := rec.routes[l]
				var chosen [][]int
				var keys []uint64
				for _, tok := range byGroup[g][share[0]:share[1]] {
					var es []int
					for _, e := range rt.Experts[tok*rt.K : (tok+1)*rt.K] {
						es = append(es, int(e))
					}
					chosen = append(chosen, es)
					keys = append(keys, worker.RoutingKey(rt.Experts[tok*rt.K:(tok+1)*rt.K]))
				}
				for d, rows := range sharding.MoEDispatchIn(c.place, group, chosen, keys) {
					if d != w {
						wantDisp[w] += int64(rows) * hidBytes
					}
					to := lt.tp
					if c.layout.Group(d) == g {
						to-- // d is a rank of the token's group: it keeps its own copy
					}
					wantComb[d] += int64(rows*to) * hidBytes
				}
			}
		}
		var total int64
		for w := range lt.n {
			phases := map[pb.Phase]*pb.PhaseStats{}
			for _, ps := range c.driver.LastStats[w].GetPhases() {
				phases[ps.Phase] = ps
			}
			disp, comb := phases[pb.Phase_PHASE_DISPATCH], phases[pb.Phase_PHASE_COMBINE]
			if got := int64(disp.GetTensorBytesSent()); got != wantDisp[w] {
				t.Errorf("N%d T%d R%d worker %d: dispatch sent %d tensor bytes, placement implies %d", lt.n, lt.tp, lt.replicas, w, got, wantDisp[w])
			}
			if got := int64(comb.GetTensorBytesSent()); got != wantComb[w] {
				t.Errorf("N%d T%d R%d worker %d: combine sent %d tensor bytes, placement implies %d", lt.n, lt.tp, lt.replicas, w, got, wantComb[w])
			}
			if wire, tensor := disp.GetWireBytesSent(), disp.GetTensorBytesSent(); tensor > 0 && float64(wire) > 1.05*float64(tensor) {
				t.Errorf("worker %d: dispatch framing overhead %.1f%% (> 5%%): %d wire bytes for %d tensor bytes", w, 100*(float64(wire)/float64(tensor)-1), wire, tensor)
			}
			total += wantDisp[w]
		}
		if total == 0 {
			t.Errorf("N%d T%d: no MoE traffic at all; the test proves nothing", lt.n, lt.tp)
		}
		t.Logf("N%d T%d R%d: %d MoE dispatch bytes per step (f32)", lt.n, lt.tp, lt.replicas, total)
	}
}

// TestBF16Wire measures the error bf16 activations on the wire add.
func TestBF16Wire(t *testing.T) {
	checkLeaks(t)
	dir := testModels(t)[2]
	local := openLocal(t, dir)
	want, err := local.Forward(context.Background(), batch(t, scheduler.ModelPools(local), local.Cfg.VocabSize))
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, dir, clusterConfig{workers: 4, tp: 2, wire: pb.DType_DTYPE_BF16})
	got, err := c.driver.Forward(context.Background(), batch(t, c.pool, local.Cfg.VocabSize))
	if err != nil {
		t.Fatal(err)
	}
	// bf16 keeps 8 bits of mantissa (≈0.4% per element); the error grows
	// through the layers and can flip a near-tied router choice.
	worst := compareRows(t, got, want, 0.1)
	if worst < 1e-7 {
		t.Errorf("bf16 wire error %.2g is implausibly small: is the wire really bf16?", worst)
	}
	t.Logf("bf16 wire: worst per-position relative error %.3g (f32 wire: ≤ 1e-5)", worst)
}
