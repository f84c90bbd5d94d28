package sharding

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// checkPlacement verifies what PlaceExperts promises for its arguments.
func checkPlacement(t *testing.T, p *Placement, experts, workers, extra, maxSlots int, load []float64) {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	if p.Experts != experts || p.Workers != workers || p.Epoch != 0 {
		t.Fatalf("placement of %d experts on %d workers, epoch %d; want %d on %d, epoch 0",
			p.Experts, p.Workers, p.Epoch, experts, workers)
	}
	total := experts + extra
	limit := maxSlots
	if limit <= 0 {
		limit = (total + workers - 1) / workers
	}
	slots := 0
	lo, hi := math.MaxInt, 0
	for _, s := range p.Slots {
		slots += len(s)
		lo, hi = min(lo, len(s)), max(hi, len(s))
	}
	if slots != total {
		t.Errorf("%d slots, want %d", slots, total)
	}
	if hi > limit {
		t.Errorf("a worker holds %d slots, limit %d", hi, limit)
	}
	copies := make([]int, experts)
	for e, o := range p.Owners {
		copies[e] = len(o)
	}
	if load == nil {
		if hi-lo > 1 {
			t.Errorf("slot counts range over [%d, %d], want a spread of at most 1", lo, hi)
		}
		if c0, c1 := slices.Min(copies), slices.Max(copies); c1-c0 > 1 {
			t.Errorf("copies per expert range over [%d, %d], want a spread of at most 1", c0, c1)
		}
		if extra == 0 {
			for e, o := range p.Owners {
				if len(o) != 1 || o[0] != e%workers {
					t.Errorf("expert %d owned by %v, want [%d]", e, o, e%workers)
				}
			}
		}
		return
	}
	// Every replica beyond the first went to an expert at least as hot per
	// replica as any expert that could still take one.
	for a := range experts {
		if copies[a] == 1 {
			continue
		}
		for b := range experts {
			if copies[b] < workers && load[a]*float64(copies[b]) < load[b]*float64(copies[a]-1) {
				t.Errorf("expert %d (load %v) has %d copies while expert %d (load %v) has %d",
					a, load[a], copies[a], b, load[b], copies[b])
			}
		}
	}
}

func TestPlaceExpertsQwen3(t *testing.T) {
	for _, shape := range []ModelShape{Qwen3_235B_A22B(), Qwen3_30B_A3B()} {
		for _, tp := range []int{1, 2, 4, 8, 16} {
			for n := tp; n <= 64; n += tp {
				name := fmt.Sprintf("%dL/N%d/T%d", shape.Layers, n, tp)
				t.Run(name, func(t *testing.T) {
					if _, err := NewLayout(n, tp); err != nil {
						t.Fatalf("NewLayout(%d, %d) = %v", n, tp, err)
					}
					p, err := PlaceExperts(shape.Experts, n, 0, 0, nil)
					if err != nil {
						t.Fatalf("PlaceExperts = %v", err)
					}
					checkPlacement(t, p, shape.Experts, n, 0, 0, nil)

					// One replica per worker, hottest first under a skewed load.
					if n > 1 {
						load := zipf(shape.Experts, 1.0)
						p, err := PlaceExperts(shape.Experts, n, n, 0, load)
						if err != nil {
							t.Fatalf("PlaceExperts with load = %v", err)
						}
						checkPlacement(t, p, shape.Experts, n, n, 0, load)
					}

					// A memory bound of floor(128/N) slots only fits when N divides 128.
					tight := shape.Experts / n
					_, err = PlaceExperts(shape.Experts, n, 0, tight, nil)
					if wantFit := shape.Experts%n == 0; (err == nil) != wantFit {
						t.Errorf("PlaceExperts(limit %d) error = %v, want fit = %v", tight, err, wantFit)
					} else if err != nil && !errors.Is(err, ErrCapacity) {
						t.Errorf("PlaceExperts(limit %d) error = %v, want ErrCapacity", tight, err)
					}
				})
			}
		}
	}
}

func TestPlaceExpertsTiny(t *testing.T) {
	tests := []struct {
		name                    string
		experts, workers, extra int
		maxSlots                int
		load                    []float64
		wantSlots               [][]int
		wantErr                 error
	}{
		{name: "16 on 3", experts: 16, workers: 3, wantSlots: [][]int{
			{0, 3, 6, 9, 12, 15}, {1, 4, 7, 10, 13}, {2, 5, 8, 11, 14}}},
		{name: "16 on 3 two replicas", experts: 16, workers: 3, extra: 2, wantSlots: [][]int{
			{0, 1, 4, 7, 10, 13}, {0, 2, 5, 8, 11, 14}, {1, 3, 6, 9, 12, 15}}},
		{name: "4 on 2 hot expert 3", experts: 4, workers: 2, extra: 1, load: []float64{1, 1, 1, 5}, wantSlots: [][]int{
			{0, 2, 3}, {1, 3}}},
		{name: "16 on 6", experts: 16, workers: 6, wantSlots: [][]int{
			{0, 6, 12}, {1, 7, 13}, {2, 8, 14}, {3, 9, 15}, {4, 10}, {5, 11}}},
		{name: "32 on 6", experts: 32, workers: 6},
		{name: "32 on 6 five replicas", experts: 32, workers: 6, extra: 5},
		{name: "32 on 6 loaded", experts: 32, workers: 6, extra: 4, load: zipf(32, 1.2)},
		{name: "16 on 3 exact limit", experts: 16, workers: 3, maxSlots: 6},
		{name: "16 on 3 limit too small", experts: 16, workers: 3, maxSlots: 5, wantErr: ErrCapacity},
		{name: "every expert everywhere", experts: 4, workers: 3, extra: 8},
		{name: "more replicas than workers", experts: 4, workers: 3, extra: 9, wantErr: ErrCapacity},
		{name: "one worker no replicas", experts: 8, workers: 1, extra: 1, wantErr: ErrCapacity},
		{name: "zero experts", experts: 0, workers: 3, wantErr: ErrInvalid},
		{name: "zero workers", experts: 4, workers: 0, wantErr: ErrInvalid},
		{name: "negative replicas", experts: 4, workers: 2, extra: -1, wantErr: ErrInvalid},
		{name: "short load", experts: 4, workers: 2, load: []float64{1, 2, 3}, wantErr: ErrInvalid},
		{name: "negative load", experts: 2, workers: 2, load: []float64{1, -1}, wantErr: ErrInvalid},
		{name: "NaN load", experts: 2, workers: 2, load: []float64{1, math.NaN()}, wantErr: ErrInvalid},
		{name: "infinite load", experts: 2, workers: 2, load: []float64{math.Inf(1), 1}, wantErr: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlaceExperts(tc.experts, tc.workers, tc.extra, tc.maxSlots, tc.load)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("PlaceExperts error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			checkPlacement(t, p, tc.experts, tc.workers, tc.extra, tc.maxSlots, tc.load)
			if tc.wantSlots != nil {
				if diff := cmp.Diff(tc.wantSlots, p.Slots); diff != "" {
					t.Errorf("Slots (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// zipf returns n loads falling off as 1/(e+1)^s, rotated so the hottest
// expert is not expert 0.
func zipf(n int, s float64) []float64 {
	load := make([]float64, n)
	for e := range load {
		load[(e*7+3)%n] = 1000 / math.Pow(float64(e+1), s)
	}
	return load
}

// TestPlaceExpertsProperties runs PlaceExperts over many argument triples and
// load shapes and checks every promise, determinism included.
func TestPlaceExpertsProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	loads := map[string]func(n int) []float64{
		"uniform": func(int) []float64 { return nil },
		"equal":   func(n int) []float64 { return slices.Repeat([]float64{3}, n) },
		"zero":    func(n int) []float64 { return make([]float64, n) },
		"zipf":    func(n int) []float64 { return zipf(n, 1.1) },
		"random": func(n int) []float64 {
			l := make([]float64, n)
			for i := range l {
				l[i] = math.Floor(rng.Float64() * 100)
			}
			return l
		},
	}
	cases := 0
	for experts := 1; experts <= 40; experts += 3 {
		for workers := 1; workers <= 13; workers++ {
			maxExtra := experts * (workers - 1)
			for _, extra := range []int{0, 1, workers - 1, workers, experts / 2, experts, maxExtra / 2, maxExtra} {
				if extra < 0 || extra > maxExtra {
					continue
				}
				total := experts + extra
				fit := (total + workers - 1) / workers
				for _, maxSlots := range []int{0, fit, fit + 2} {
					for _, lname := range []string{"uniform", "equal", "zero", "zipf", "random"} {
						load := loads[lname](experts)
						name := fmt.Sprintf("E%d/W%d/X%d/M%d/%s", experts, workers, extra, maxSlots, lname)
						p, err := PlaceExperts(experts, workers, extra, maxSlots, load)
						if err != nil {
							t.Fatalf("%s: PlaceExperts = %v", name, err)
						}
						again, _ := PlaceExperts(experts, workers, extra, maxSlots, load)
						if !reflect.DeepEqual(p, again) {
							t.Fatalf("%s: not deterministic (-first +second):\n%s", name, cmp.Diff(p, again))
						}
						t.Run(name, func(t *testing.T) {
							checkPlacement(t, p, experts, workers, extra, maxSlots, load)
							if lname == "equal" || lname == "zero" {
								counts := slotCounts(p)
								if slices.Max(counts)-slices.Min(counts) > 1 {
									t.Errorf("equal loads gave slot counts %v", counts)
								}
							}
						})
						cases++
						if total > 1 && workers > 1 {
							_, err := PlaceExperts(experts, workers, extra, fit-1, load)
							if fit-1 > 0 && (fit-1)*workers < total && !errors.Is(err, ErrCapacity) {
								t.Errorf("%s: limit %d: error = %v, want ErrCapacity", name, fit-1, err)
							}
						}
					}
				}
			}
			if _, err := PlaceExperts(experts, workers, maxExtra+1, 0, nil); !errors.Is(err, ErrCapacity) {
				t.Errorf("E%d/W%d: %d extra replicas: error = %v, want ErrCapacity", experts, workers, maxExtra+1, err)
			}
		}
	}
	t.Logf("%d placements checked", cases)
}

func slotCounts(p *Placement) []int {
	c := make([]int, p.Workers)
	for w, s := range p.Slots {
		c[w] = len(s)
	}
	return c
}

// TestPlaceExpertsLoadBalance checks that a load-aware placement spreads a
// skewed load better than the uniform one and stays within the
// list-scheduling bound: average load plus the heaviest replica.
func TestPlaceExpertsLoadBalance(t *testing.T) {
	for _, tc := range []struct {
		experts, workers, extra int
		s                       float64
	}{
		{128, 8, 0, 1.0}, {128, 8, 8, 1.0}, {128, 16, 16, 1.2}, {128, 6, 6, 0.8},
		{128, 64, 64, 1.5}, {32, 6, 4, 1.0}, {16, 3, 2, 2.0},
	} {
		t.Run(fmt.Sprintf("E%d/W%d/X%d/s%v", tc.experts, tc.workers, tc.extra, tc.s), func(t *testing.T) {
			load := zipf(tc.experts, tc.s)
			uniform, err := PlaceExperts(tc.experts, tc.workers, tc.extra, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			aware, err := PlaceExperts(tc.experts, tc.workers, tc.extra, 0, load)
			if err != nil {
				t.Fatal(err)
			}
			u, a := slices.Max(uniform.WorkerLoads(load)), slices.Max(aware.WorkerLoads(load))
			if a > u {
				t.Errorf("load-aware max worker load %.1f > uniform %.1f", a, u)
			}
			var sum, heaviest float64
			for e, l := range load {
				sum += l
				heaviest = max(heaviest, l/float64(len(aware.Owners[e])))
			}
			if bound := sum/float64(tc.workers) + heaviest; a > bound+1e-9 {
				t.Errorf("max worker load %.1f exceeds average + heaviest replica = %.1f", a, bound)
			}
		})
	}
}

// TestPlaceGreedyRepair drives placeGreedy into the case where every worker
// with a free slot already holds the next expert: expert 0 fills worker 0
// with load, experts 1-3 fill worker 1, and the second copy of expert 4 finds
// only worker 0, which holds the first. Expert 1 moves to worker 0 to make
// room.
func TestPlaceGreedyRepair(t *testing.T) {
	got := NewPlacement(5, placeGreedy([]int{1, 1, 1, 1, 2}, 2, 3, []float64{100, 1, 1, 1, 1}))
	if diff := cmp.Diff([][]int{{0, 1, 4}, {2, 3, 4}}, got.Slots); diff != "" {
		t.Errorf("Slots (-want +got):\n%s", diff)
	}
}

// TestPlaceGreedyAnyCopies checks that placeGreedy succeeds for arbitrary
// copy counts, not only the ones replicaCounts produces, whenever the slots
// fit: the repair step never runs out of options.
func TestPlaceGreedyAnyCopies(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 3000 {
		workers := 1 + rng.IntN(8)
		experts := 1 + rng.IntN(20)
		copies := make([]int, experts)
		load := make([]float64, experts)
		total := 0
		for e := range copies {
			copies[e] = 1 + rng.IntN(workers)
			load[e] = float64(rng.IntN(4)) * math.Pow(10, float64(rng.IntN(3)))
			total += copies[e]
		}
		limit := (total+workers-1)/workers + rng.IntN(2)
		p := NewPlacement(experts, placeGreedy(copies, workers, limit, load))
		if err := p.Validate(); err != nil {
			t.Fatalf("case %d: copies %v on %d workers, limit %d: %v", i, copies, workers, limit, err)
		}
		for e, c := range copies {
			if len(p.Owners[e]) != c {
				t.Fatalf("case %d: expert %d has %d copies, want %d", i, e, len(p.Owners[e]), c)
			}
		}
		for w, s := range p.Slots {
			if len(s) > limit {
				t.Fatalf("case %d: worker %d holds %d slots, limit %d", i, w, len(s), limit)
			}
		}
	}
}

func TestPlacementValidate(t *testing.T) {
	good := func() *Placement {
		p, err := PlaceExperts(4, 2, 1, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	tests := []struct {
		name   string
		mutate func(p *Placement) *Placement
	}{
		{"nil", func(*Placement) *Placement { return nil }},
		{"zero workers", func(p *Placement) *Placement { p.Workers = 0; return p }},
		{"short slots", func(p *Placement) *Placement { p.Slots = p.Slots[:1]; return p }},
		{"short owners", func(p *Placement) *Placement { p.Owners = p.Owners[:3]; return p }},
		{"expert out of range", func(p *Placement) *Placement { p.Slots[1] = append(p.Slots[1], 9); return p }},
		{"duplicate slot", func(p *Placement) *Placement {
			p.Slots[1] = append(p.Slots[1], p.Slots[1][len(p.Slots[1])-1])
			return p
		}},
		{"unsorted owners", func(p *Placement) *Placement { p.Owners[0] = []int{1, 0}; return p }},
		{"orphan expert", func(p *Placement) *Placement {
			p.Owners[3] = nil
			for w := range p.Slots {
				p.Slots[w] = slices.DeleteFunc(p.Slots[w], func(e int) bool { return e == 3 })
			}
			return p
		}},
		{"owner not hosting", func(p *Placement) *Placement { p.Owners[1] = []int{0, 1}; return p }},
		{"slot without owner", func(p *Placement) *Placement { p.Owners[0] = p.Owners[0][:1]; return p }},
		{"owner out of range", func(p *Placement) *Placement { p.Owners[2] = append(p.Owners[2], 5); return p }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.mutate(good()).Validate(); !errors.Is(err, ErrInconsistent) {
				t.Errorf("Validate() = %v, want ErrInconsistent", err)
			}
		})
	}
}

func TestOwnerAndRoute(t *testing.T) {
	p := &Placement{Workers: 3, Experts: 3,
		Slots:  [][]int{{0, 1}, {0, 2}, {0}},
		Owners: [][]int{{0, 1, 2}, {0}, {1}},
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, expert int
		key          uint64
		owner, route int
	}{
		{2, 0, 0, 0, 2}, {2, 0, 1, 1, 2}, {2, 0, 5, 2, 2}, {2, 0, 1<<64 - 1, 0, 2},
		{1, 1, 7, 0, 0}, {2, 1, 8, 0, 0}, {0, 1, 9, 0, 0},
		{0, 2, 3, 1, 1}, {1, 2, 4, 1, 1},
	}
	for _, tc := range tests {
		if got := p.Owner(tc.expert, tc.key); got != tc.owner {
			t.Errorf("Owner(%d, %d) = %d, want %d", tc.expert, tc.key, got, tc.owner)
		}
		if got := p.Route(tc.from, tc.expert, tc.key); got != tc.route {
			t.Errorf("Route(%d, %d, %d) = %d, want %d", tc.from, tc.expert, tc.key, got, tc.route)
		}
	}
	// Keys 0..n-1 visit every replica once.
	var got []int
	for k := range uint64(3) {
		got = append(got, p.Owner(0, k))
	}
	if diff := cmp.Diff([]int{0, 1, 2}, got); diff != "" {
		t.Errorf("Owner(0, 0..2) (-want +got):\n%s", diff)
	}
}
