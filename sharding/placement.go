package sharding

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Placement maps the experts of a MoE layer onto workers. One placement
// applies to every MoE layer: worker w hosts experts Slots[w] in all of them.
//
// Slots and Owners describe the same relation from both sides and are kept
// sorted ascending; Validate checks that they agree. A Placement is a value
// to be shared read-only once built.
type Placement struct {
	// Epoch numbers placements; the planner sets it and it only moves
	// forward. PlaceExperts leaves it zero.
	Epoch   uint64
	Workers int
	Experts int
	Slots   [][]int // Slots[w]: expert ids hosted by worker w, ascending
	Owners  [][]int // Owners[e]: workers hosting expert e, ascending
}

// PlaceExperts places experts experts on workers workers, each expert at
// least once, plus extraReplicas additional replica slots.
//
// Replica counts: each extra slot goes, one at a time, to the expert with
// the highest load per replica, load[e]/copies[e], among experts with fewer
// than workers copies; ties go to the expert with fewer copies, then the
// lower id. With load nil every expert weighs the same, so extra slots go
// round-robin: expert 0, 1, 2, … .
//
// Assignment: no worker holds two copies of one expert, and no worker holds
// more than maxSlotsPerWorker slots (a value <= 0 means ceil(slots/workers),
// the tightest bound that fits). With load nil the copies, listed expert by
// expert, are dealt round-robin over the workers, so slot counts differ by at
// most one and, without replicas, expert e lives on worker e % workers. With
// a load the copies are taken hottest first (load per replica, then expert
// id) and each goes to the least-loaded worker that has a free slot and no
// copy of it yet (ties: fewer slots, then lower id); when every worker with
// a free slot already holds the expert, a colder expert is moved off a full
// worker to make room, which always succeeds.
//
// The result is a pure function of the arguments. Errors wrap ErrInvalid for
// bad arguments and ErrCapacity when the slots cannot fit: more than
// workers × maxSlotsPerWorker slots, or more extra replicas than
// experts × (workers − 1) (an expert can have at most one copy per worker).
func PlaceExperts(experts, workers, extraReplicas, maxSlotsPerWorker int, load []float64) (*Placement, error) {
	if experts <= 0 || workers <= 0 || extraReplicas < 0 {
		return nil, fmt.Errorf("%w: experts = %d, workers = %d, extra replicas = %d, want experts and workers > 0 and extra replicas >= 0",
			ErrInvalid, experts, workers, extraReplicas)
	}
	if load != nil {
		if len(load) != experts {
			return nil, fmt.Errorf("%w: %d load values for %d experts", ErrInvalid, len(load), experts)
		}
		for e, v := range load {
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%w: load of expert %d is %v, want finite and >= 0", ErrInvalid, e, v)
			}
		}
	}
	total := experts + extraReplicas
	limit := maxSlotsPerWorker
	if limit <= 0 {
		limit = (total + workers - 1) / workers
	}
	if extraReplicas > experts*(workers-1) {
		return nil, fmt.Errorf("%w: %d extra replicas exceed %d experts × (%d workers − 1) = %d, since an expert has at most one copy per worker",
			ErrCapacity, extraReplicas, experts, workers, experts*(workers-1))
	}
	if total > workers*limit {
		return nil, fmt.Errorf("%w: %d expert slots (%d experts + %d replicas) exceed %d workers × %d slots",
			ErrCapacity, total, experts, extraReplicas, workers, limit)
	}

	copies := replicaCounts(experts, workers, extraReplicas, load)
	slots := make([][]int, workers)
	if load == nil {
		i := 0
		for e, c := range copies {
			for range c {
				w := i % workers
				slots[w] = append(slots[w], e)
				i++
			}
		}
	} else {
		slots = placeGreedy(copies, workers, limit, load)
	}
	return NewPlacement(experts, slots), nil
}

// replicaCounts returns the number of copies of each expert: one each, plus
// extra slots given to the highest load per replica (see PlaceExperts).
func replicaCounts(experts, workers, extra int, load []float64) []int {
	copies := make([]int, experts)
	for e := range copies {
		copies[e] = 1
	}
	weight := func(e int) float64 {
		if load == nil {
			return 1
		}
		return load[e]
	}
	for range extra {
		best := -1
		for e := range experts {
			if copies[e] >= workers {
				continue
			}
			if best < 0 {
				best = e
				continue
			}
			// Compare weight(e)/copies[e] with weight(best)/copies[best]
			// without dividing.
			l, r := weight(e)*float64(copies[best]), weight(best)*float64(copies[e])
			if l > r || (l == r && copies[e] < copies[best]) {
				best = e
			}
		}
		copies[best]++
	}
	return copies
}

// placeGreedy assigns copies[e] copies of each expert to workers, hottest
// copy first, each to the least-loaded eligible worker (see PlaceExperts).
// The caller guarantees sum(copies) <= workers × limit and copies[e] <= workers.
func placeGreedy(copies []int, workers, limit int, load []float64) [][]int {
	type item struct {
		expert int
		weight float64 // load per replica
	}
	var items []item
	for e, c := range copies {
		for range c {
			items = append(items, item{e, load[e] / float64(c)})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := cmp.Compare(b.weight, a.weight); c != 0 {
			return c
		}
		return cmp.Compare(a.expert, b.expert)
	})
	weight := func(e int) float64 { return load[e] / float64(copies[e]) }

	slots := make([][]int, workers)
	wload := make([]float64, workers)
	hosts := func(w, e int) bool { return slices.Contains(slots[w], e) }
	// less orders workers by load, then slot count, then id.
	less := func(a, b int) bool {
		if wload[a] != wload[b] {
			return wload[a] < wload[b]
		}
		if len(slots[a]) != len(slots[b]) {
			return len(slots[a]) < len(slots[b])
		}
		return a < b
	}
	pick := func(ok func(w int) bool) int {
		best := -1
		for w := range workers {
			if ok(w) && (best < 0 || less(w, best)) {
				best = w
			}
		}
		return best
	}
	put := func(w, e int) {
		slots[w] = append(slots[w], e)
		wload[w] += weight(e)
	}
	for _, it := range items {
		e := it.expert
		w := pick(func(w int) bool { return len(slots[w]) < limit && !hosts(w, e) })
		if w >= 0 {
			put(w, e)
			continue
		}
		// Every worker with a free slot holds e, and every worker without e
		// is full. Move an expert f from a full worker w2 (without e) to a
		// worker w1 with a free slot (with e), then put e on w2. w2 holds
		// limit distinct experts and w1 at most limit−1 including e, so at
		// least two of w2's experts are missing from w1.
		w1 := pick(func(w int) bool { return len(slots[w]) < limit })
		w2 := pick(func(w int) bool { return !hosts(w, e) })
		f := -1
		for _, g := range slots[w2] {
			if hosts(w1, g) {
				continue
			}
			if f < 0 || weight(g) < weight(f) || (weight(g) == weight(f) && g < f) {
				f = g
			}
		}
		slots[w2] = slices.DeleteFunc(slots[w2], func(g int) bool { return g == f })
		wload[w2] -= weight(f)
		put(w1, f)
		put(w2, e)
	}
	return slots
}

// NewPlacement builds the placement in which worker w hosts experts
// slots[w]: it sorts each list (in place) and derives Owners. Call
// Validate on slots that did not come from this package.
func NewPlacement(experts int, slots [][]int) *Placement {
	owners := make([][]int, experts)
	for w, s := range slots {
		slices.Sort(s)
		for _, e := range s {
			owners[e] = append(owners[e], w)
		}
	}
	return &Placement{Workers: len(slots), Experts: experts, Slots: slots, Owners: owners}
}

// Validate checks that the placement is consistent: Slots has Workers
// entries and Owners has Experts entries, every id is in range, lists are
// strictly ascending (so no worker holds an expert twice), every expert has
// at least one owner, and e is in Slots[w] exactly when w is in Owners[e].
// Errors wrap ErrInconsistent.
func (p *Placement) Validate() error {
	if p == nil {
		return fmt.Errorf("%w: nil placement", ErrInconsistent)
	}
	if p.Workers <= 0 || p.Experts <= 0 || len(p.Slots) != p.Workers || len(p.Owners) != p.Experts {
		return fmt.Errorf("%w: %d workers with %d slot lists, %d experts with %d owner lists",
			ErrInconsistent, p.Workers, len(p.Slots), p.Experts, len(p.Owners))
	}
	seen := 0
	for w, s := range p.Slots {
		for i, e := range s {
			if e < 0 || e >= p.Experts {
				return fmt.Errorf("%w: worker %d hosts expert %d, want [0, %d)", ErrInconsistent, w, e, p.Experts)
			}
			if i > 0 && s[i-1] >= e {
				return fmt.Errorf("%w: slots of worker %d are not strictly ascending: %v", ErrInconsistent, w, s)
			}
			if _, ok := slices.BinarySearch(p.Owners[e], w); !ok {
				return fmt.Errorf("%w: worker %d hosts expert %d but is not among its owners %v",
					ErrInconsistent, w, e, p.Owners[e])
			}
			seen++
		}
	}
	owned := 0
	for e, o := range p.Owners {
		if len(o) == 0 {
			return fmt.Errorf("%w: expert %d has no owner", ErrInconsistent, e)
		}
		for i, w := range o {
			if w < 0 || w >= p.Workers {
				return fmt.Errorf("%w: expert %d owned by worker %d, want [0, %d)", ErrInconsistent, e, w, p.Workers)
			}
			if i > 0 && o[i-1] >= w {
				return fmt.Errorf("%w: owners of expert %d are not strictly ascending: %v", ErrInconsistent, e, o)
			}
		}
		owned += len(o)
	}
	if owned != seen {
		return fmt.Errorf("%w: %d owner entries but %d slots", ErrInconsistent, owned, seen)
	}
	return nil
}

// Hosts reports whether worker w holds a copy of expert e.
func (p *Placement) Hosts(w, e int) bool {
	_, ok := slices.BinarySearch(p.Owners[e], w)
	return ok
}

// Owner returns the replica of expert that serves the token with the given
// key: Owners[expert][key % len(Owners[expert])]. The key must be derived
// the same way on every worker (for example the token's index in the step's
// global token order), so that all ranks agree without talking. Dispatch
// uses Route, which adds the local shortcut.
func (p *Placement) Owner(expert int, key uint64) int {
	o := p.Owners[expert]
	return o[key%uint64(len(o))]
}

// Route returns the worker that computes expert for a token held by worker
// from: from itself when it hosts a copy (the token never leaves the
// process), otherwise Owner(expert, key). Dispatch and combine both use it.
func (p *Placement) Route(from, expert int, key uint64) int {
	if p.Hosts(from, expert) {
		return from
	}
	return p.Owner(expert, key)
}

// WorkerLoads returns the expected load of each worker under expert loads
// load (len Experts): each expert's load split evenly over its replicas.
func (p *Placement) WorkerLoads(load []float64) []float64 {
	out := make([]float64, p.Workers)
	for w, s := range p.Slots {
		for _, e := range s {
			out[w] += load[e] / float64(len(p.Owners[e]))
		}
	}
	return out
}
