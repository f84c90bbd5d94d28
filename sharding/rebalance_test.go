package sharding

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// refImbalance recomputes Imbalance from Owners, independently of
// WorkerLoads: each expert's load split evenly over its owners.
func refImbalance(layers []*Placement, load [][]float64) (float64, []float64) {
	var sumMax, sumMean float64
	per := make([]float64, len(layers))
	for l, p := range layers {
		wl := make([]float64, p.Workers)
		total := 0.0
		for e, o := range p.Owners {
			total += load[l][e]
			for _, w := range o {
				wl[w] += load[l][e] / float64(len(o))
			}
		}
		top, mean := slices.Max(wl), total/float64(p.Workers)
		per[l] = 1
		if mean > 0 {
			per[l] = top / mean
		}
		sumMax += top
		sumMean += mean
	}
	if sumMean == 0 {
		return 1, per
	}
	return sumMax / sumMean, per
}

// checkRebalancePlan verifies every promise Rebalance makes about plan.
func checkRebalancePlan(t testing.TB, cur []*Placement, load [][]float64, o RebalanceOptions, plan *RebalancePlan) {
	t.Helper()
	if len(plan.Layers) != len(cur) {
		t.Fatalf("%d layers in the plan, want %d", len(plan.Layers), len(cur))
	}
	vacate := map[int]bool{}
	for _, w := range o.Vacate {
		vacate[w] = true
	}
	// Replay the moves on a copy of cur; the result must be the plan.
	held := make([][][]bool, len(cur))
	for l, p := range cur {
		held[l] = make([][]bool, p.Workers)
		for w := range held[l] {
			held[l][w] = make([]bool, p.Experts)
			for _, e := range p.Slots[w] {
				held[l][w][e] = true
			}
		}
	}
	loads := 0
	for i, m := range plan.Moves {
		if i > 0 {
			a := plan.Moves[i-1]
			if !slices.IsSortedFunc([]Move{a, m}, func(x, y Move) int {
				return cmpMoves(x, y)
			}) || a == m {
				t.Errorf("moves %d and %d out of order: %+v, %+v", i-1, i, a, m)
			}
		}
		if m.Layer < 0 || m.Layer >= len(cur) || m.Expert < 0 || m.Expert >= cur[0].Experts ||
			(m.From < 0 && m.To < 0) || m.From >= cur[0].Workers || m.To >= cur[0].Workers {
			t.Fatalf("move %+v out of range", m)
		}
		if m.From >= 0 {
			if !cur[m.Layer].Hosts(m.From, m.Expert) || plan.Layers[m.Layer].Hosts(m.From, m.Expert) {
				t.Errorf("move %+v: worker %d should hold the expert before and not after", m, m.From)
			}
			held[m.Layer][m.From][m.Expert] = false
		}
		if m.To >= 0 {
			if cur[m.Layer].Hosts(m.To, m.Expert) || !plan.Layers[m.Layer].Hosts(m.To, m.Expert) {
				t.Errorf("move %+v: worker %d should hold the expert after and not before", m, m.To)
			}
			held[m.Layer][m.To][m.Expert] = true
			loads++
		}
	}
	for l, p := range plan.Layers {
		if err := p.Validate(); err != nil {
			t.Fatalf("layer %d: Validate() = %v", l, err)
		}
		if p.Workers != cur[l].Workers || p.Experts != cur[l].Experts || p.Epoch != cur[l].Epoch {
			t.Errorf("layer %d: %d workers, %d experts, epoch %d; want %d, %d, %d",
				l, p.Workers, p.Experts, p.Epoch, cur[l].Workers, cur[l].Experts, cur[l].Epoch)
		}
		for w, s := range p.Slots {
			if len(s) > o.SlotsPerWorker {
				t.Errorf("layer %d worker %d holds %d experts, more than %d slots", l, w, len(s), o.SlotsPerWorker)
			}
			if vacate[w] && len(s) > 0 {
				t.Errorf("layer %d: drained worker %d still holds %v", l, w, s)
			}
			for e := range p.Experts {
				if held[l][w][e] != p.Hosts(w, e) {
					t.Errorf("layer %d: replaying the moves gives worker %d expert %d = %v, the plan %v",
						l, w, e, held[l][w][e], p.Hosts(w, e))
				}
			}
		}
	}
	if plan.Loads != loads || plan.Bytes != int64(loads)*o.ExpertBytes {
		t.Errorf("Loads = %d, Bytes = %d; the moves load %d copies, %d bytes", plan.Loads, plan.Bytes, loads, int64(loads)*o.ExpertBytes)
	}
	if o.MaxMoves > 0 && plan.Loads > o.MaxMoves {
		t.Errorf("Loads = %d, more than MaxMoves = %d", plan.Loads, o.MaxMoves)
	}
	before, layerBefore := refImbalance(cur, load)
	after, layerAfter := refImbalance(plan.Layers, load)
	approx := cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a)) })
	if diff := cmp.Diff([]float64{before, after}, []float64{plan.Before, plan.After}, approx); diff != "" {
		t.Errorf("Before, After (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([][]float64{layerBefore, layerAfter}, [][]float64{plan.LayerBefore, plan.LayerAfter}, approx); diff != "" {
		t.Errorf("LayerBefore, LayerAfter (-want +got):\n%s", diff)
	}
	if len(o.Vacate) == 0 && plan.After > plan.Before*(1+1e-9) {
		t.Errorf("After = %v worse than Before = %v", plan.After, plan.Before)
	}
}

func cmpMoves(x, y Move) int {
	for _, d := range [][2]int{{x.Layer, y.Layer}, {x.Expert, y.Expert}, {x.From, y.From}, {x.To, y.To}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// layersOf returns n references to p.
func layersOf(p *Placement, n int) []*Placement { return slices.Repeat([]*Placement{p}, n) }

func mustPlace(t testing.TB, experts, workers int) *Placement {
	t.Helper()
	p, err := PlaceExperts(experts, workers, 0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRebalanceSmall checks hand-worked plans. The cases use 2 or 3 workers
// so that each step can be followed by hand (comments give the loads).
func TestRebalanceSmall(t *testing.T) {
	two := mustPlace(t, 4, 2)   // worker 0: {0, 2}, worker 1: {1, 3}
	three := mustPlace(t, 6, 3) // {0, 3}, {1, 4}, {2, 5}
	// A replica of expert 1 on worker 2 that a drain of worker 2 can drop.
	replicated := NewPlacement(6, [][]int{{0, 3}, {1, 4}, {1, 2, 5}})
	for _, tc := range []struct {
		name      string
		cur       *Placement
		load      []float64
		o         RebalanceOptions
		wantSlots [][]int
		wantMoves []Move
		before    float64
		after     float64
	}{
		{
			name: "no load, nothing moves", cur: two, load: []float64{0, 0, 0, 0},
			o:         RebalanceOptions{SlotsPerWorker: 3},
			wantSlots: [][]int{{0, 2}, {1, 3}}, before: 1, after: 1,
		},
		{
			name: "equal load, nothing moves", cur: three, load: []float64{5, 5, 5, 5, 5, 5},
			o:         RebalanceOptions{SlotsPerWorker: 4},
			wantSlots: [][]int{{0, 3}, {1, 4}, {2, 5}}, before: 1, after: 1,
		},
		{
			// Loads 10 and 2. A replica of expert 0 on worker 1 gives 4+2
			// and 4+1+1; moving expert 2 instead would give 8 and 4.
			name: "a hot expert gets a replica in a spare slot", cur: two, load: []float64{8, 1, 2, 1},
			o:         RebalanceOptions{SlotsPerWorker: 3, ExpertBytes: 100},
			wantSlots: [][]int{{0, 2}, {0, 1, 3}},
			wantMoves: []Move{{Expert: 0, From: -1, To: 1}},
			before:    10.0 / 6, after: 1,
		},
		{
			// Loads 10 and 2: a replica of expert 0 gives 4.5+1 and
			// 4.5+1+1; a replica of expert 1 on worker 0 then gives 6 and 6.
			name: "two replicas", cur: two, load: []float64{9, 1, 1, 1},
			o:         RebalanceOptions{SlotsPerWorker: 3},
			wantSlots: [][]int{{0, 1, 2}, {0, 1, 3}},
			wantMoves: []Move{{Expert: 0, From: -1, To: 1}, {Expert: 1, From: -1, To: 0}},
			before:    10.0 / 6, after: 1,
		},
		{
			name: "MaxMoves 1 makes exactly one load", cur: two, load: []float64{9, 1, 1, 1},
			o:         RebalanceOptions{SlotsPerWorker: 3, MaxMoves: 1},
			wantSlots: [][]int{{0, 2}, {0, 1, 3}},
			wantMoves: []Move{{Expert: 0, From: -1, To: 1}},
			before:    10.0 / 6, after: 6.5 / 6,
		},
		{
			// Loads 9 and 1 and no spare slot: swapping expert 0 with
			// expert 1 gives 1 and 9, with expert 3 gives 0 and 10, and
			// expert 2 carries nothing. Nothing helps, nothing moves.
			name: "full workers, one dominant expert", cur: two, load: []float64{9, 1, 0, 0},
			o:         RebalanceOptions{SlotsPerWorker: 2},
			wantSlots: [][]int{{0, 2}, {1, 3}}, before: 9.0 / 5, after: 9.0 / 5,
		},
		{
			// Loads 7 and 3 with full workers: swapping expert 0 (4)
			// with expert 3 (2) gives 5 and 5, as does swapping expert 2
			// (3) with expert 1 (1); the lower expert id is tried first.
			name: "full workers swap", cur: two, load: []float64{4, 1, 3, 2},
			o:         RebalanceOptions{SlotsPerWorker: 2},
			wantSlots: [][]int{{2, 3}, {0, 1}},
			wantMoves: []Move{{Expert: 0, From: 0, To: 1}, {Expert: 3, From: 1, To: 0}},
			before:    7.0 / 5, after: 1,
		},
		{
			// Experts 2 and 5 live only on worker 2: each goes to the
			// least-loaded worker with a free slot (worker 0 on the tie,
			// then worker 1). Nothing else helps once 3 and 3 remain.
			name: "drain", cur: three, load: []float64{1, 1, 1, 1, 1, 1},
			o:         RebalanceOptions{SlotsPerWorker: 3, Vacate: []int{2}, ExpertBytes: 7},
			wantSlots: [][]int{{0, 2, 3}, {1, 4, 5}, nil},
			wantMoves: []Move{{Expert: 2, From: 2, To: 0}, {Expert: 5, From: 2, To: 1}},
			before:    1, after: 1.5,
		},
		{
			// Worker 2's copy of expert 1 is dropped for free; experts 2
			// and 5 load as above.
			name: "drain drops a replica", cur: replicated, load: []float64{1, 1, 1, 1, 1, 1},
			o:         RebalanceOptions{SlotsPerWorker: 3, Vacate: []int{2, 2}, MaxMoves: 2},
			wantSlots: [][]int{{0, 2, 3}, {1, 4, 5}, nil},
			wantMoves: []Move{{Expert: 1, From: 2, To: -1}, {Expert: 2, From: 2, To: 0}, {Expert: 5, From: 2, To: 1}},
			before:    2.5 / 2, after: 1.5,
		},
		{
			// Every remaining slot is taken, so a replica of expert 1
			// (on worker 0: loads 1.5 and 1.5 tie, the lower id goes)
			// makes room for expert 2.
			name: "drain into full workers", cur: NewPlacement(4, [][]int{{0, 1}, {1, 3}, {2}}), load: []float64{1, 1, 1, 1},
			o:         RebalanceOptions{SlotsPerWorker: 2, Vacate: []int{2}},
			wantSlots: [][]int{{0, 2}, {1, 3}, nil},
			wantMoves: []Move{{Expert: 1, From: 0, To: -1}, {Expert: 2, From: 2, To: 0}},
			before:    1.5 / (4.0 / 3), after: 2 / (4.0 / 3),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := []*Placement{tc.cur}
			load := [][]float64{tc.load}
			plan, err := Rebalance(cur, load, tc.o)
			if err != nil {
				t.Fatalf("Rebalance = %v", err)
			}
			checkRebalancePlan(t, cur, load, tc.o, plan)
			if diff := cmp.Diff(tc.wantSlots, plan.Layers[0].Slots); diff != "" {
				t.Errorf("Slots (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantMoves, plan.Moves); diff != "" {
				t.Errorf("Moves (-want +got):\n%s", diff)
			}
			if wantBytes := int64(len(tc.wantMoves)) * tc.o.ExpertBytes; plan.Bytes > wantBytes {
				t.Errorf("Bytes = %d, want at most %d", plan.Bytes, wantBytes)
			}
			approx := cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-9 })
			if diff := cmp.Diff([]float64{tc.before, tc.after}, []float64{plan.Before, plan.After}, approx); diff != "" {
				t.Errorf("Before, After (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRebalanceBudgetAcrossLayers gives one move to two layers: it goes to
// the layer whose busiest worker it lowers most.
func TestRebalanceBudgetAcrossLayers(t *testing.T) {
	two := mustPlace(t, 4, 2)
	cur := layersOf(two, 2)
	load := [][]float64{{3, 1, 1, 1}, {9, 1, 1, 1}} // busiest workers 4 and 10
	plan, err := Rebalance(cur, load, RebalanceOptions{SlotsPerWorker: 3, MaxMoves: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkRebalancePlan(t, cur, load, RebalanceOptions{SlotsPerWorker: 3, MaxMoves: 1}, plan)
	if diff := cmp.Diff([]Move{{Layer: 1, Expert: 0, From: -1, To: 1}}, plan.Moves); diff != "" {
		t.Errorf("Moves (-want +got):\n%s", diff)
	}
}

func TestRebalanceInvalid(t *testing.T) {
	p := mustPlace(t, 4, 2)
	broken := &Placement{Workers: 2, Experts: 4, Slots: [][]int{{0, 2}, {1, 3}}, Owners: [][]int{{0}, {1}, {0}, {0}}}
	other := mustPlace(t, 4, 4)
	ok := [][]float64{{1, 1, 1, 1}}
	for _, tc := range []struct {
		name string
		cur  []*Placement
		load [][]float64
		o    RebalanceOptions
		want error
	}{
		{"no layers", nil, nil, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"load rows", []*Placement{p}, [][]float64{{1, 1, 1, 1}, {1, 1, 1, 1}}, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"nil layer", []*Placement{nil}, ok, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"inconsistent layer", []*Placement{broken}, ok, RebalanceOptions{SlotsPerWorker: 3}, ErrInconsistent},
		{"shapes differ", []*Placement{p, other}, [][]float64{{1, 1, 1, 1}, {1, 1, 1, 1}}, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"short load", []*Placement{p}, [][]float64{{1, 1, 1}}, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"NaN load", []*Placement{p}, [][]float64{{1, math.NaN(), 1, 1}}, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"negative load", []*Placement{p}, [][]float64{{1, 1, -1, 1}}, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"infinite load", []*Placement{p}, [][]float64{{math.Inf(1), 1, 1, 1}}, RebalanceOptions{SlotsPerWorker: 3}, ErrInvalid},
		{"no slots", []*Placement{p}, ok, RebalanceOptions{}, ErrInvalid},
		{"negative MaxMoves", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 3, MaxMoves: -1}, ErrInvalid},
		{"negative ExpertBytes", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 3, ExpertBytes: -1}, ErrInvalid},
		{"huge ExpertBytes", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 3, ExpertBytes: math.MaxInt64 / 2}, ErrInvalid},
		{"NaN MinGain", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 3, MinGain: math.NaN()}, ErrInvalid},
		{"Vacate negative", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 3, Vacate: []int{-1}}, ErrInvalid},
		{"Vacate past the end", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 3, Vacate: []int{2}}, ErrInvalid},
		{"fewer slots than used", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 1}, ErrCapacity},
		{"drain leaves too few slots", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 3, Vacate: []int{1}}, ErrCapacity},
		{"drain everything", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 4, Vacate: []int{0, 1}}, ErrCapacity},
		{"drain over MaxMoves", []*Placement{p}, ok, RebalanceOptions{SlotsPerWorker: 4, Vacate: []int{1}, MaxMoves: 1}, ErrCapacity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := Rebalance(tc.cur, tc.load, tc.o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Rebalance = %+v, %v; want an error wrapping %v", plan, err, tc.want)
			}
		})
	}
	// The drain that fails with MaxMoves 1 fits with MaxMoves 2.
	o := RebalanceOptions{SlotsPerWorker: 4, Vacate: []int{1}, MaxMoves: 2}
	plan, err := Rebalance([]*Placement{p}, ok, o)
	if err != nil {
		t.Fatalf("drain with MaxMoves 2: %v", err)
	}
	checkRebalancePlan(t, []*Placement{p}, ok, o, plan)
}

func TestImbalance(t *testing.T) {
	p := mustPlace(t, 4, 2) // {0, 2}, {1, 3}
	rep := NewPlacement(4, [][]int{{0, 2}, {0, 1, 3}})
	nan := math.NaN()
	for _, tc := range []struct {
		name     string
		layers   []*Placement
		load     [][]float64
		overall  float64
		perLayer []float64
	}{
		{"none", nil, nil, 1, []float64{}},
		{"no load", []*Placement{p}, [][]float64{{0, 0, 0, 0}}, 1, []float64{1}},
		{"skewed", []*Placement{p}, [][]float64{{3, 1, 1, 1}}, 4.0 / 3, []float64{4.0 / 3}},
		// Layer 0: loads 4 and 2 (mean 3); layer 1: 3+1 and 3+1+1 (mean 4.5).
		{"two layers", []*Placement{p, rep}, [][]float64{{3, 1, 1, 1}, {6, 1, 1, 1}}, (4 + 5) / (3 + 4.5), []float64{4.0 / 3, 5 / 4.5}},
		{"bad shape", []*Placement{p, nil}, [][]float64{{1, 1, 1, 1}, {1}}, nan, []float64{1, nan}},
		{"missing load", []*Placement{p}, nil, nan, []float64{nan}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			overall, per := Imbalance(tc.layers, tc.load)
			approx := cmp.Comparer(func(a, b float64) bool {
				return math.Abs(a-b) < 1e-12 || (math.IsNaN(a) && math.IsNaN(b))
			})
			if diff := cmp.Diff(append([]float64{tc.overall}, tc.perLayer...), append([]float64{overall}, per...), approx); diff != "" {
				t.Errorf("overall, per layer (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzRebalance checks the invariants of plans on small random shapes: the
// layers validate, respect the slot bound and the drain, the moves are the
// difference between cur and the plan, Loads stays within MaxMoves, and
// errors are the documented sentinels for the documented reasons.
func FuzzRebalance(f *testing.F) {
	f.Add(uint64(1), uint8(8), uint8(3), uint8(2), uint8(1), uint8(0), uint8(0), uint8(2))
	f.Add(uint64(2), uint8(16), uint8(4), uint8(0), uint8(2), uint8(3), uint8(1), uint8(3))
	f.Add(uint64(3), uint8(5), uint8(6), uint8(4), uint8(0), uint8(1), uint8(5), uint8(1))
	f.Add(uint64(4), uint8(30), uint8(7), uint8(9), uint8(3), uint8(10), uint8(64), uint8(4))
	f.Fuzz(func(t *testing.T, seed uint64, experts, workers, extra, slack, maxMoves, vacateMask, layers uint8) {
		e, w, nl := 1+int(experts%40), 1+int(workers%9), 1+int(layers%4)
		x := int(extra) % (e*(w-1) + 1)
		rng := rand.New(rand.NewPCG(seed, 7))
		cur := make([]*Placement, nl)
		load := make([][]float64, nl)
		for l := range cur {
			load[l] = make([]float64, e)
			for i := range load[l] {
				switch rng.IntN(4) {
				case 0: // idle expert
				case 1:
					load[l][i] = float64(rng.IntN(4)) // small ties
				default:
					load[l][i] = math.Exp(2 * rng.NormFloat64())
				}
			}
			var pl []float64
			if rng.IntN(2) == 0 {
				pl = load[l]
			}
			p, err := PlaceExperts(e, w, x, 0, pl)
			if err != nil {
				t.Fatalf("PlaceExperts(%d, %d, %d) = %v", e, w, x, err)
			}
			p.Epoch = uint64(l)
			cur[l] = p
		}
		used := 0
		for _, p := range cur {
			for _, s := range p.Slots {
				used = max(used, len(s))
			}
		}
		o := RebalanceOptions{SlotsPerWorker: used + int(slack%4), MaxMoves: int(maxMoves % 12), ExpertBytes: 1000}
		for i := range w {
			if vacateMask&(1<<i) != 0 {
				o.Vacate = append(o.Vacate, i)
			}
		}
		plan, err := Rebalance(cur, load, o)
		remaining := w - len(o.Vacate)
		if remaining*o.SlotsPerWorker < e {
			if !errors.Is(err, ErrCapacity) {
				t.Fatalf("%d experts in %d × %d slots: err = %v, want ErrCapacity", e, remaining, o.SlotsPerWorker, err)
			}
			return
		}
		orphans := 0
		for _, p := range cur {
			for _, owners := range p.Owners {
				if !slices.ContainsFunc(owners, func(w int) bool { return !slices.Contains(o.Vacate, w) }) {
					orphans++
				}
			}
		}
		if o.MaxMoves > 0 && orphans > o.MaxMoves {
			if !errors.Is(err, ErrCapacity) {
				t.Fatalf("a drain of %d loads under MaxMoves %d: err = %v, want ErrCapacity", orphans, o.MaxMoves, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Rebalance = %v", err)
		}
		checkRebalancePlan(t, cur, load, o, plan)
		again, err := Rebalance(cur, load, o)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(plan, again); diff != "" {
			t.Fatalf("second plan differs (-first +second):\n%s", diff)
		}
	})
}
