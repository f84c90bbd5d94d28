package sharding

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// skewedLoads returns load[layer][expert] for the acceptance cases: "zipf"
// gives the expert of rank r (from 1) a load of 1e4 / r^s, the ranks a
// different permutation of the experts in each layer; "lognormal" draws
// 1e3 · exp(σ·N(0,1)) with σ = s. Both come from one seeded PCG, so the
// loads are the same on every run.
func skewedLoads(kind string, s float64, layers, experts int, seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(seed, 0x6d6f656d657368))
	out := make([][]float64, layers)
	for l := range out {
		out[l] = make([]float64, experts)
		switch kind {
		case "zipf":
			for r, e := range rng.Perm(experts) {
				out[l][e] = 1e4 / math.Pow(float64(r+1), s)
			}
		case "lognormal":
			for e := range out[l] {
				out[l][e] = 1e3 * math.Exp(s*rng.NormFloat64())
			}
		}
	}
	return out
}

// fromScratch places every layer anew with PlaceExperts under its load and
// then gives each new worker's set of experts to the current worker it
// overlaps most (an optimal assignment), so the count of copies to load is
// the least any relabelling of the new placement allows. With every slot
// used (extra = workers × slots − experts) PlaceExperts is EPLB's global
// policy: replicas to the highest load per replica, then the heaviest copy
// to the lightest worker with room. It returns the imbalance and the loads.
func fromScratch(t testing.TB, cur []*Placement, load [][]float64, slots int, replicate bool) (float64, int) {
	t.Helper()
	layers := make([]*Placement, len(cur))
	loads := 0
	for l, p := range cur {
		extra := 0
		if replicate {
			extra = p.Workers*slots - p.Experts
		}
		fresh, err := PlaceExperts(p.Experts, p.Workers, extra, slots, load[l])
		if err != nil {
			t.Fatal(err)
		}
		overlap := make([][]int, p.Workers) // overlap[i][w]: experts of new set i already on worker w
		for i, s := range fresh.Slots {
			overlap[i] = make([]int, p.Workers)
			for _, e := range s {
				for _, w := range p.Owners[e] {
					overlap[i][w]++
				}
			}
		}
		assign := maxAssignment(overlap)
		slotsOf := make([][]int, p.Workers)
		for i, w := range assign {
			slotsOf[w] = append([]int(nil), fresh.Slots[i]...)
			loads += len(fresh.Slots[i]) - overlap[i][w]
		}
		layers[l] = NewPlacement(p.Experts, slotsOf)
	}
	imb, _ := Imbalance(layers, load)
	return imb, loads
}

// maxAssignment returns a permutation a maximising Σ_i gain[i][a[i]] (the
// Hungarian method on the negated square matrix).
func maxAssignment(gain [][]int) []int {
	n := len(gain)
	const inf = math.MaxInt / 4
	u, v := make([]int, n+1), make([]int, n+1)
	p, way := make([]int, n+1), make([]int, n+1) // p[j]: row matched to column j
	for i := 1; i <= n; i++ {
		p[0] = i
		j0 := 0
		minv := make([]int, n+1)
		used := make([]bool, n+1)
		for j := range minv {
			minv[j] = inf
		}
		for p[j0] != 0 {
			used[j0] = true
			i0, delta, j1 := p[j0], inf, 0
			for j := 1; j <= n; j++ {
				if used[j] {
					continue
				}
				if cur := -gain[i0-1][j-1] - u[i0] - v[j]; cur < minv[j] {
					minv[j], way[j] = cur, j0
				}
				if minv[j] < delta {
					delta, j1 = minv[j], j
				}
			}
			for j := 0; j <= n; j++ {
				if used[j] {
					u[p[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
		}
		for j0 != 0 {
			j1 := way[j0]
			p[j0] = p[j1]
			j0 = j1
		}
	}
	a := make([]int, n)
	for j := 1; j <= n; j++ {
		a[p[j]-1] = j - 1
	}
	return a
}

func TestMaxAssignment(t *testing.T) {
	// The greedy choice (row 0 takes column 0, worth 5) loses to 4 + 4.
	got := maxAssignment([][]int{{5, 4, 0}, {4, 0, 0}, {0, 0, 1}})
	if diff := cmp.Diff([]int{1, 0, 2}, got); diff != "" {
		t.Errorf("assignment (-want +got):\n%s", diff)
	}
}

// TestRebalanceQwen3 is the acceptance test: Qwen3-235B-A22B's 94 MoE layers
// of 128 experts on 8, 16 and 32 workers, each with 2 spare slots per layer,
// starting from the uniform placement, under skewed loads with a different
// hot set per layer.
func TestRebalanceQwen3(t *testing.T) {
	shape := Qwen3_235B_A22B()
	expertBytes := shape.ExpertParams() * int64(shape.BytesPerParam)
	for _, workers := range []int{8, 16, 32} {
		for _, ld := range []struct {
			kind string
			s    float64
		}{{"zipf", 0.5}, {"zipf", 1.0}, {"lognormal", 1.0}} {
			name := fmt.Sprintf("W%d/%s%.1f", workers, ld.kind, ld.s)
			t.Run(name, func(t *testing.T) {
				cur := layersOf(mustPlace(t, shape.Experts, workers), shape.MoELayers())
				load := skewedLoads(ld.kind, ld.s, shape.MoELayers(), shape.Experts, uint64(workers))
				slots := shape.Experts/workers + 2
				lpt, lptLoads := fromScratch(t, cur, load, slots, false)
				eplb, eplbLoads := fromScratch(t, cur, load, slots, true)
				t.Logf("%s: from scratch without replicas (LPT) %.3f with %d loads; EPLB %.3f with %d loads",
					name, lpt, lptLoads, eplb, eplbLoads)
				options := []RebalanceOptions{{}, {MaxMoves: 50}, {MaxMoves: 200}}
				if !testing.Short() {
					// Larger budgets, for docs/sharding.md.
					options = append(options, RebalanceOptions{MaxMoves: 1000}, RebalanceOptions{MinGain: 1e-4})
				}
				for _, o := range options {
					o.SlotsPerWorker, o.ExpertBytes = slots, expertBytes
					plan, err := Rebalance(cur, load, o)
					if err != nil {
						t.Fatalf("Rebalance(MaxMoves %d) = %v", o.MaxMoves, err)
					}
					checkRebalancePlan(t, cur, load, o, plan)
					t.Logf("%s MaxMoves=%d MinGain=%g: imbalance %.3f -> %.3f, %d loads, %.1f GB",
						name, o.MaxMoves, o.MinGain, plan.Before, plan.After, plan.Loads, float64(plan.Bytes)/1e9)
					if o.MaxMoves == 0 && o.MinGain == 0 && ld.kind == "zipf" && ld.s == 0.5 {
						if plan.After > 1.10 {
							t.Errorf("imbalance %.3f after rebalancing, want <= 1.10", plan.After)
						}
						if plan.After > lpt {
							t.Errorf("imbalance %.3f after rebalancing, worse than %.3f from LPT without replicas", plan.After, lpt)
						}
					}
					// Same input, same plan: every case with a bound, and one
					// without (each unbounded plan takes most of a case's time).
					if o.MaxMoves == 200 || (o.MaxMoves == 0 && o.MinGain == 0 && workers == 32 && ld.s == 0.5) {
						again, err := Rebalance(cur, load, o)
						if err != nil {
							t.Fatal(err)
						}
						if diff := cmp.Diff(plan, again); diff != "" {
							t.Errorf("the same input gave another plan (-first +second):\n%s", diff)
						}
					}
				}
			})
		}
	}
}

// TestRebalanceDrainQwen3 drains one of 16 workers under a Zipf 0.5 load:
// its 8 experts move in every layer (752 loads); with the move bound set
// just there nothing else is loaded, and one fewer is ErrCapacity.
func TestRebalanceDrainQwen3(t *testing.T) {
	shape := Qwen3_235B_A22B()
	cur := layersOf(mustPlace(t, shape.Experts, 16), shape.MoELayers())
	load := skewedLoads("zipf", 0.5, shape.MoELayers(), shape.Experts, 3)
	drain := shape.MoELayers() * shape.Experts / 16
	for _, maxMoves := range []int{drain, 0} {
		o := RebalanceOptions{SlotsPerWorker: shape.Experts/16 + 2, Vacate: []int{5}, MaxMoves: maxMoves, ExpertBytes: 1}
		plan, err := Rebalance(cur, load, o)
		if err != nil {
			t.Fatalf("MaxMoves %d: %v", maxMoves, err)
		}
		checkRebalancePlan(t, cur, load, o, plan)
		if maxMoves > 0 && plan.Loads != drain {
			t.Errorf("MaxMoves %d: %d loads, want %d", maxMoves, plan.Loads, drain)
		}
		t.Logf("drain worker 5 of 16, MaxMoves=%d: imbalance %.3f -> %.3f (floor 16/15 = %.3f), %d loads",
			maxMoves, plan.Before, plan.After, 16.0/15, plan.Loads)
	}
	o := RebalanceOptions{SlotsPerWorker: shape.Experts/16 + 2, Vacate: []int{5}, MaxMoves: drain - 1}
	if _, err := Rebalance(cur, load, o); !errors.Is(err, ErrCapacity) {
		t.Errorf("drain with MaxMoves %d below the %d loads it needs: err = %v, want ErrCapacity", drain-1, drain, err)
	}
}

// BenchmarkRebalance235B plans Qwen3-235B-A22B on 32 workers (6 slots per
// worker per layer) under a Zipf 0.5 load, without a move bound.
func BenchmarkRebalance235B(b *testing.B) {
	shape := Qwen3_235B_A22B()
	cur := layersOf(mustPlace(b, shape.Experts, 32), shape.MoELayers())
	load := skewedLoads("zipf", 0.5, shape.MoELayers(), shape.Experts, 32)
	o := RebalanceOptions{SlotsPerWorker: shape.Experts/32 + 2}
	var plan *RebalancePlan
	for b.Loop() {
		var err error
		if plan, err = Rebalance(cur, load, o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(plan.Loads), "loads")
	b.ReportMetric(plan.After, "imbalance")
}
