package sharding

import (
	"cmp"
	"math"
	"slices"
)

// layerState is one MoE layer while Rebalance works on it: which worker
// holds which expert now, what cur held, and the worker loads that follow.
type layerState struct {
	workers, experts, slots int
	load                    []float64
	hold, orig              []bool // [w*experts+e]: worker w holds expert e now, in cur
	count                   []int  // copies held by each worker
	copies                  []int  // copies of each expert
	active                  []bool // worker not being drained
	wl                      []float64
	net                     int // copies held now that cur did not hold: the loads so far

	// Scratch for best: per-worker expert lists, per-expert owner lists,
	// workers by load, and the load changes of the step being evaluated.
	lists, owners [][]int
	shares        []float64 // shares[e] = share(e) while best runs
	order         []int
	delta         []float64
	stamp         []int
	gen           int
	touched       []int
}

func newLayerState(p *Placement, load []float64, slots int, vacate []bool) *layerState {
	s := &layerState{
		workers: p.Workers, experts: p.Experts, slots: slots, load: load,
		hold: make([]bool, p.Workers*p.Experts), orig: make([]bool, p.Workers*p.Experts),
		count: make([]int, p.Workers), copies: make([]int, p.Experts),
		active: make([]bool, p.Workers), wl: make([]float64, p.Workers),
		lists: make([][]int, p.Workers), owners: make([][]int, p.Experts), shares: make([]float64, p.Experts),
		order: make([]int, p.Workers), delta: make([]float64, p.Workers), stamp: make([]int, p.Workers),
	}
	for w, es := range p.Slots {
		s.active[w] = !vacate[w]
		for _, e := range es {
			s.hold[w*s.experts+e] = true
			s.orig[w*s.experts+e] = true
		}
		s.count[w] = len(es)
	}
	for e, o := range p.Owners {
		s.copies[e] = len(o)
	}
	s.recompute()
	return s
}

func (s *layerState) holds(w, e int) bool { return s.hold[w*s.experts+e] }

// fresh reports whether a copy of e on w would have to be loaded.
func (s *layerState) fresh(w, e int) int {
	if s.orig[w*s.experts+e] {
		return 0
	}
	return 1
}

func (s *layerState) add(w, e int) {
	s.hold[w*s.experts+e] = true
	s.count[w]++
	s.copies[e]++
	s.net += s.fresh(w, e)
}

func (s *layerState) remove(w, e int) {
	s.hold[w*s.experts+e] = false
	s.count[w]--
	s.copies[e]--
	s.net -= s.fresh(w, e)
}

// share is the load each copy of e carries.
func (s *layerState) share(e int) float64 { return s.load[e] / float64(s.copies[e]) }

// recompute sets the worker loads from scratch, experts in ascending order,
// so that the sums do not depend on the order of the steps.
func (s *layerState) recompute() {
	for w := range s.workers {
		s.wl[w] = 0
		for e := range s.experts {
			if s.holds(w, e) {
				s.wl[w] += s.share(e)
			}
		}
	}
}

// drain empties the workers being vacated: copies of experts that live on
// elsewhere are dropped; experts held only there are loaded, hottest first,
// onto the least-loaded remaining worker with a free slot (fewer slots, then
// lower id on ties), after dropping a spare replica when no slot is free.
func (s *layerState) drain() {
	activeCopies := func(e int) int {
		n := 0
		for w := range s.workers {
			if s.active[w] && s.holds(w, e) {
				n++
			}
		}
		return n
	}
	var orphans []int
	for e := range s.experts {
		if activeCopies(e) == 0 {
			orphans = append(orphans, e)
			continue
		}
		for w := range s.workers {
			if !s.active[w] && s.holds(w, e) {
				s.remove(w, e)
			}
		}
	}
	slices.SortStableFunc(orphans, func(a, b int) int { return cmp.Compare(s.load[b], s.load[a]) })
	for _, e := range orphans {
		s.recompute()
		to := -1
		for w := range s.workers {
			if s.active[w] && s.count[w] < s.slots && (to < 0 || s.lighter(w, to)) {
				to = w
			}
		}
		if to < 0 {
			// Every remaining slot is taken, and they outnumber the
			// experts (checkRebalance), so one holds a spare replica: drop
			// the one that carries the least load, from the lightest worker.
			dw, df := -1, -1
			for w := range s.workers {
				if !s.active[w] {
					continue
				}
				for f := range s.experts {
					if s.holds(w, f) && s.copies[f] >= 2 &&
						(dw < 0 || s.lighter(w, dw) || (w == dw && s.share(f) < s.share(df))) {
						dw, df = w, f
					}
				}
			}
			s.remove(dw, df)
			to = dw
		}
		s.add(to, e)
		for w := range s.workers {
			if !s.active[w] && s.holds(w, e) {
				s.remove(w, e)
			}
		}
	}
	s.recompute()
}

// lighter orders workers by load, then slot count, then id.
func (s *layerState) lighter(a, b int) bool {
	if s.wl[a] != s.wl[b] {
		return s.wl[a] < s.wl[b]
	}
	if s.count[a] != s.count[b] {
		return s.count[a] < s.count[b]
	}
	return a < b
}

// stepKind names the improvement steps; each takes load off the busiest
// worker m of the layer.
type stepKind uint8

const (
	stepDrop          stepKind = iota // drop m's copy of a replicated expert e
	stepMove                          // move e from m to worker to
	stepReplicate                     // add a copy of e on to
	stepSwap                          // move e from m to to and f from to to m
	stepDropMove                      // drop to's copy of replicated f, then move e from m to to
	stepDropReplicate                 // drop to's copy of replicated f, then add a copy of e on to
)

// step is one candidate improvement of a layer.
type step struct {
	kind        stepKind
	e, from, to int
	f           int
	cost        int     // change in copies loaded; <= 0 when the step loads nothing new
	gain        float64 // drop of the layer's busiest worker load
	local       float64 // the highest new load among the workers the step touches
	layer       int
}

// better reports whether step a should be taken before step b: steps that
// load nothing first (largest gain first), then the largest gain per copy
// loaded, then the lowest new load on the touched workers, then fewer loads.
func better(a, b step) bool {
	fa, fb := a.cost <= 0, b.cost <= 0
	if fa != fb {
		return fa
	}
	va, vb := a.gain, b.gain
	if !fa {
		va, vb = a.gain/float64(a.cost), b.gain/float64(b.cost)
	}
	if va != vb {
		return va > vb
	}
	if a.local != b.local {
		return a.local < b.local
	}
	return a.cost < b.cost
}

func (s *layerState) begin() {
	s.gen++
	s.touched = s.touched[:0]
}

func (s *layerState) shift(w int, d float64) {
	if s.stamp[w] != s.gen {
		s.stamp[w] = s.gen
		s.delta[w] = 0
		s.touched = append(s.touched, w)
	}
	s.delta[w] += d
}

// shiftDrop records dropping w's copy of e: w loses its share, the other
// owners split the load over one copy fewer.
func (s *layerState) shiftDrop(w, e int) {
	c := float64(s.copies[e])
	s.shift(w, -s.load[e]/c)
	for _, h := range s.owners[e] {
		if h != w {
			s.shift(h, s.load[e]/(c-1)-s.load[e]/c)
		}
	}
}

// shiftReplicate records a new copy of e on w.
func (s *layerState) shiftReplicate(w, e int) {
	c := float64(s.copies[e])
	for _, h := range s.owners[e] {
		s.shift(h, s.load[e]/(c+1)-s.load[e]/c)
	}
	s.shift(w, s.load[e]/(c+1))
}

// shifts records the load changes of st.
func (s *layerState) shifts(st step) {
	s.begin()
	switch st.kind {
	case stepDrop:
		s.shiftDrop(st.from, st.e)
	case stepMove:
		s.shift(st.from, -s.share(st.e))
		s.shift(st.to, s.share(st.e))
	case stepReplicate:
		s.shiftReplicate(st.to, st.e)
	case stepSwap:
		d := s.share(st.e) - s.share(st.f)
		s.shift(st.from, -d)
		s.shift(st.to, d)
	case stepDropMove:
		s.shiftDrop(st.to, st.f)
		s.shift(st.from, -s.share(st.e))
		s.shift(st.to, s.share(st.e))
	case stepDropReplicate:
		s.shiftDrop(st.to, st.f)
		s.shiftReplicate(st.to, st.e)
	}
}

// cost is the change in copies loaded that st makes.
func (s *layerState) cost(st step) int {
	switch st.kind {
	case stepDrop:
		return -s.fresh(st.from, st.e)
	case stepMove:
		return s.fresh(st.to, st.e) - s.fresh(st.from, st.e)
	case stepReplicate:
		return s.fresh(st.to, st.e)
	case stepSwap:
		return s.fresh(st.to, st.e) + s.fresh(st.from, st.f) - s.fresh(st.from, st.e) - s.fresh(st.to, st.f)
	case stepDropMove:
		return s.fresh(st.to, st.e) - s.fresh(st.from, st.e) - s.fresh(st.to, st.f)
	default: // stepDropReplicate
		return s.fresh(st.to, st.e) - s.fresh(st.to, st.f)
	}
}

// apply takes step st.
func (s *layerState) apply(st step) {
	switch st.kind {
	case stepDrop:
		s.remove(st.from, st.e)
	case stepMove:
		s.remove(st.from, st.e)
		s.add(st.to, st.e)
	case stepReplicate:
		s.add(st.to, st.e)
	case stepSwap:
		s.remove(st.from, st.e)
		s.remove(st.to, st.f)
		s.add(st.to, st.e)
		s.add(st.from, st.f)
	case stepDropMove:
		s.remove(st.to, st.f)
		s.remove(st.from, st.e)
		s.add(st.to, st.e)
	case stepDropReplicate:
		s.remove(st.to, st.f)
		s.add(st.to, st.e)
	}
	s.recompute()
}

// best returns the best step (see better) that lowers the busiest worker m
// below its load without raising any touched worker to it, loads at most
// maxCost copies, and, when it loads any, gains at least minGain per copy.
// Every step it returns lowers the pair (highest load, workers at it), so
// repeated steps end.
func (s *layerState) best(maxCost int, minGain float64) (step, bool) {
	for w := range s.workers {
		s.order[w] = w
		s.lists[w] = s.lists[w][:0]
	}
	for e := range s.experts {
		s.owners[e] = s.owners[e][:0]
		s.shares[e] = s.share(e)
	}
	for w := range s.workers {
		for e := range s.experts {
			if s.holds(w, e) {
				s.lists[w] = append(s.lists[w], e)
				s.owners[e] = append(s.owners[e], w)
			}
		}
	}
	slices.SortFunc(s.order, func(a, b int) int { return cmp.Or(cmp.Compare(s.wl[b], s.wl[a]), cmp.Compare(a, b)) })
	m := s.order[0]
	top := s.wl[m]
	if top <= 0 {
		return step{}, false
	}
	limit := top - top*1e-9
	var bestStep step
	found := false
	try := func(st step) {
		st.cost = s.cost(st)
		if st.cost > maxCost {
			return
		}
		var local, newMax float64
		if st.kind == stepMove || st.kind == stepSwap {
			// The common steps touch m and b only: d moves from m to b.
			d := s.shares[st.e]
			if st.kind == stepSwap {
				d -= s.shares[st.f]
			}
			if local = max(s.wl[m]+(-d), s.wl[st.to]+d); local >= limit {
				return
			}
			newMax = local
			for _, w := range s.order {
				if w != m && w != st.to {
					newMax = max(newMax, s.wl[w])
					break
				}
			}
		} else {
			s.shifts(st)
			local = math.Inf(-1)
			for _, w := range s.touched {
				local = max(local, s.wl[w]+s.delta[w])
			}
			if local >= limit {
				return
			}
			newMax = local
			for _, w := range s.order {
				if s.stamp[w] != s.gen {
					newMax = max(newMax, s.wl[w])
					break
				}
			}
		}
		st.local = local
		st.gain = max(top-newMax, 0)
		if st.cost > 0 && st.gain < minGain*float64(st.cost) {
			return
		}
		if !found || better(st, bestStep) {
			bestStep, found = st, true
		}
	}
	// The checks on wl[b] before each try are the test try makes on
	// worker b, done first because most candidates fail it.
	for _, e := range s.lists[m] {
		if s.load[e] == 0 {
			continue
		}
		se := s.shares[e]
		split := s.load[e] / float64(s.copies[e]+1) // each copy's share with one more
		if s.copies[e] >= 2 {
			try(step{kind: stepDrop, e: e, from: m})
		}
		for b := range s.workers {
			if b == m || !s.active[b] || s.holds(b, e) {
				continue
			}
			full := s.count[b] >= s.slots
			if !full {
				if s.wl[b]+se < limit {
					try(step{kind: stepMove, e: e, from: m, to: b})
				}
				if s.wl[b]+split < limit {
					try(step{kind: stepReplicate, e: e, from: m, to: b})
				}
			}
			for _, f := range s.lists[b] {
				sf := s.shares[f]
				if sf < se && s.wl[b]+se-sf < limit && !s.holds(m, f) {
					try(step{kind: stepSwap, e: e, from: m, to: b, f: f})
				}
				if full && s.copies[f] >= 2 {
					if s.wl[b]-sf+se < limit {
						try(step{kind: stepDropMove, e: e, from: m, to: b, f: f})
					}
					if s.wl[b]-sf+split < limit {
						try(step{kind: stepDropReplicate, e: e, from: m, to: b, f: f})
					}
				}
			}
		}
	}
	return bestStep, found
}

// improve takes improvement steps across layers, best first (see better),
// while a step helps, fits the remaining budget of loads and gains at least
// minGain of overall imbalance per copy loaded.
func improve(layers []*layerState, load [][]float64, budget int, minGain float64) {
	var sumMean float64
	guard := 0
	for l, s := range layers {
		for _, v := range load[l] {
			sumMean += v
		}
		guard += 16 * s.workers * s.slots
	}
	if len(layers) > 0 {
		sumMean /= float64(layers[0].workers)
	}
	if sumMean == 0 {
		return
	}
	type entry struct {
		st        step
		ok, valid bool
		maxCost   int
	}
	cache := make([]entry, len(layers))
	// guard bounds the steps in case rounding ever defeats the strict
	// decrease that ends the loop; it is far above what real loads take.
	for range guard {
		maxCost := min(budget, 2)
		pick := -1
		for l, s := range layers {
			if !cache[l].valid || cache[l].maxCost != maxCost {
				st, ok := s.best(maxCost, minGain*sumMean)
				st.layer = l
				cache[l] = entry{st: st, ok: ok, valid: true, maxCost: maxCost}
			}
			if cache[l].ok && (pick < 0 || better(cache[l].st, cache[pick].st)) {
				pick = l
			}
		}
		if pick < 0 {
			return
		}
		st := cache[pick].st
		layers[pick].apply(st)
		budget -= st.cost
		cache[pick].valid = false
	}
}

// placement returns the layer's placement.
func (s *layerState) placement(epoch uint64) *Placement {
	slots := make([][]int, s.workers)
	for w := range s.workers {
		for e := range s.experts {
			if s.holds(w, e) {
				slots[w] = append(slots[w], e)
			}
		}
	}
	p := NewPlacement(s.experts, slots)
	p.Epoch = epoch
	return p
}
