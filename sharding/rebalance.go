package sharding

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// RebalanceOptions are the limits of one rebalance.
type RebalanceOptions struct {
	// SlotsPerWorker is the number of expert slots each worker has in each
	// MoE layer (hosted + spare), e.g. 128/8 + 2 = 18.
	SlotsPerWorker int
	// MaxMoves bounds the expert copies loaded onto workers by this
	// rebalance (each costs weight loading); 0 means no bound.
	MaxMoves int
	// ExpertBytes is the size of one expert's weights on one worker (the
	// cost model: bytes moved = loads × ExpertBytes).
	ExpertBytes int64
	// Vacate lists worker indices that must end with no expert (a drain);
	// may be nil. Repeated indices count once.
	Vacate []int
	// MinGain skips improvement steps that lower the overall predicted
	// imbalance by less than MinGain per copy loaded (for example 0.0005:
	// a load must buy at least 0.05 % of step time). Steps that load
	// nothing are always taken when they help. 0 takes every improvement.
	MinGain float64
}

// Move is one change of one layer's placement.
type Move struct {
	Layer  int // index into the layers passed to Rebalance
	Expert int
	From   int // worker that loses its copy; -1 when the move adds a replica
	To     int // worker that loads a copy; -1 when the move only drops a replica
}

// RebalancePlan is Rebalance's result.
type RebalancePlan struct {
	Layers []*Placement // the new placement of each layer (Epoch left as in the input)
	Moves  []Move       // in a deterministic order (layer, expert, from, to)
	Loads  int          // copies loaded (moves with To >= 0); <= MaxMoves when MaxMoves > 0
	Bytes  int64        // Loads × ExpertBytes
	// Before and After are the predicted overall imbalance (see Imbalance)
	// of the current and the new placements.
	Before, After float64
	// LayerBefore and LayerAfter are the per-layer max/mean worker loads.
	LayerBefore, LayerAfter []float64
}

// Rebalance plans new placements for the MoE layers cur (one *Placement per
// MoE layer, all with the same Workers and Experts) under loads
// load[layer][expert] (routed tokens counted in a window; any non-negative
// finite values).
//
// The plan starts from cur and keeps every copy where it is unless moving it
// helps: a copy already on a worker costs nothing, a copy loaded costs
// ExpertBytes. First the workers in Vacate are drained: a copy there whose
// expert has another copy elsewhere is dropped, and an expert held only
// there is loaded onto the least-loaded remaining worker with a free slot
// (hottest expert first; a spare replica is dropped to make room when every
// slot is taken). Then improvement steps are taken one at a time, across
// all layers, each the one that lowers its layer's busiest worker most per
// copy loaded (steps that load nothing first), until no step lowers a
// busiest worker, MaxMoves copies are loaded, or no step reaches MinGain.
// A step takes load off the busiest worker of a layer: it drops a spare
// replica there, moves a copy to a worker with a free slot, adds a replica
// (EPLB's rule: splitting the hottest copies), swaps two copies, or drops a
// spare replica on a full worker to make room for one of these. See
// docs/sharding.md for how this relates to EPLB's from-scratch placement.
//
// Every result gives each expert at least one copy, no worker two copies of
// one expert or more than SlotsPerWorker copies in a layer, and every layer
// passes Validate. The plan is a pure function of its arguments.
//
// Errors wrap ErrInvalid for malformed arguments (no layers, mismatched
// lengths or shapes, a layer that fails Validate, NaN, infinite or negative
// loads, negative options, Vacate out of range) and ErrCapacity when the
// slots cannot hold the experts: SlotsPerWorker below what a worker of cur
// already holds, fewer remaining slots than experts, or a drain that must
// load more copies than MaxMoves allows.
func Rebalance(cur []*Placement, load [][]float64, o RebalanceOptions) (*RebalancePlan, error) {
	vacate, err := checkRebalance(cur, load, o)
	if err != nil {
		return nil, err
	}
	budget := o.MaxMoves
	if budget == 0 {
		// More than any plan can load (every slot of every layer), and
		// far from overflow when steps that unload copies give some back.
		budget = math.MaxInt32
	}
	layers := make([]*layerState, len(cur))
	for l, p := range cur {
		layers[l] = newLayerState(p, load[l], o.SlotsPerWorker, vacate)
		layers[l].drain()
	}
	spent := 0
	for _, s := range layers {
		spent += s.net
	}
	if spent > budget {
		return nil, fmt.Errorf("%w: draining workers %v loads %d expert copies, more than MaxMoves = %d",
			ErrCapacity, o.Vacate, spent, o.MaxMoves)
	}
	improve(layers, load, budget-spent, o.MinGain)

	plan := &RebalancePlan{Layers: make([]*Placement, len(cur))}
	for l, s := range layers {
		plan.Layers[l] = s.placement(cur[l].Epoch)
		plan.Moves = append(plan.Moves, layerMoves(l, cur[l], plan.Layers[l])...)
	}
	for _, m := range plan.Moves {
		if m.To >= 0 {
			plan.Loads++
		}
	}
	plan.Bytes = int64(plan.Loads) * o.ExpertBytes
	plan.Before, plan.LayerBefore = Imbalance(cur, load)
	plan.After, plan.LayerAfter = Imbalance(plan.Layers, load)
	return plan, nil
}

// checkRebalance validates Rebalance's arguments and returns the vacated
// workers as a mask.
func checkRebalance(cur []*Placement, load [][]float64, o RebalanceOptions) ([]bool, error) {
	if len(cur) == 0 {
		return nil, fmt.Errorf("%w: no layers to rebalance", ErrInvalid)
	}
	if len(load) != len(cur) {
		return nil, fmt.Errorf("%w: %d load rows for %d layers", ErrInvalid, len(load), len(cur))
	}
	for l, p := range cur {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("%w: layer %d: %w", ErrInvalid, l, err)
		}
	}
	workers, experts := cur[0].Workers, cur[0].Experts
	for l, p := range cur {
		if p.Workers != workers || p.Experts != experts {
			return nil, fmt.Errorf("%w: layer %d has %d workers and %d experts, layer 0 has %d and %d",
				ErrInvalid, l, p.Workers, p.Experts, workers, experts)
		}
		if len(load[l]) != experts {
			return nil, fmt.Errorf("%w: layer %d has %d load values for %d experts", ErrInvalid, l, len(load[l]), experts)
		}
		for e, v := range load[l] {
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%w: load of layer %d expert %d is %v, want finite and >= 0", ErrInvalid, l, e, v)
			}
		}
	}
	if o.SlotsPerWorker <= 0 || o.MaxMoves < 0 || o.ExpertBytes < 0 || o.MinGain < 0 || math.IsNaN(o.MinGain) || math.IsInf(o.MinGain, 0) {
		return nil, fmt.Errorf("%w: SlotsPerWorker = %d, MaxMoves = %d, ExpertBytes = %d, MinGain = %v; want SlotsPerWorker > 0 and the others finite and >= 0",
			ErrInvalid, o.SlotsPerWorker, o.MaxMoves, o.ExpertBytes, o.MinGain)
	}
	// At most every slot of every layer is loaded; keep Bytes in range.
	if maxLoads := int64(len(cur)) * int64(workers) * int64(o.SlotsPerWorker); o.ExpertBytes > 0 && maxLoads > math.MaxInt64/o.ExpertBytes {
		return nil, fmt.Errorf("%w: ExpertBytes = %d could overflow the byte count of up to %d loads", ErrInvalid, o.ExpertBytes, maxLoads)
	}
	for l, p := range cur {
		for w, s := range p.Slots {
			if len(s) > o.SlotsPerWorker {
				return nil, fmt.Errorf("%w: layer %d worker %d already holds %d experts, more than SlotsPerWorker = %d",
					ErrCapacity, l, w, len(s), o.SlotsPerWorker)
			}
		}
	}
	vacate := make([]bool, workers)
	for _, w := range o.Vacate {
		if w < 0 || w >= workers {
			return nil, fmt.Errorf("%w: Vacate names worker %d, want [0, %d)", ErrInvalid, w, workers)
		}
		vacate[w] = true
	}
	remaining := 0
	for _, v := range vacate {
		if !v {
			remaining++
		}
	}
	if remaining*o.SlotsPerWorker < experts {
		return nil, fmt.Errorf("%w: %d experts do not fit in %d remaining workers × %d slots",
			ErrCapacity, experts, remaining, o.SlotsPerWorker)
	}
	return vacate, nil
}

// layerMoves lists the changes from a to b of layer l: for each expert, the
// workers that lose a copy are paired in ascending order with those that
// load one; the rest add or drop replicas.
func layerMoves(l int, a, b *Placement) []Move {
	var moves []Move
	for e := range a.Owners {
		var lost, gained []int
		for _, w := range a.Owners[e] {
			if !b.Hosts(w, e) {
				lost = append(lost, w)
			}
		}
		for _, w := range b.Owners[e] {
			if !a.Hosts(w, e) {
				gained = append(gained, w)
			}
		}
		for i := range max(len(lost), len(gained)) {
			m := Move{Layer: l, Expert: e, From: -1, To: -1}
			if i < len(lost) {
				m.From = lost[i]
			}
			if i < len(gained) {
				m.To = gained[i]
			}
			moves = append(moves, m)
		}
	}
	slices.SortFunc(moves, func(x, y Move) int {
		return cmp.Or(cmp.Compare(x.Layer, y.Layer), cmp.Compare(x.Expert, y.Expert),
			cmp.Compare(x.From, y.From), cmp.Compare(x.To, y.To))
	})
	return moves
}

// Imbalance is the predicted imbalance of layers under load: per layer
// max/mean of Placement.WorkerLoads (1 when a layer has no load), and
// overall Σ_l max_w / Σ_l mean_w (every layer waits for its busiest worker,
// so this is the step-time ratio; 1 when no layer has load).
//
// The mean is over all Workers, so after a drain a layer cannot score below
// Workers / (Workers − drained). A layer whose placement is nil or whose
// load does not have Experts values scores NaN, and so does the overall
// figure; Rebalance checks these shapes before it calls Imbalance.
func Imbalance(layers []*Placement, load [][]float64) (overall float64, perLayer []float64) {
	perLayer = make([]float64, len(layers))
	var sumMax, sumMean float64
	for l, p := range layers {
		if p == nil || l >= len(load) || len(load[l]) != p.Experts || len(p.Slots) != p.Workers ||
			len(p.Owners) != p.Experts || p.Workers == 0 {
			perLayer[l] = math.NaN()
			sumMax = math.NaN()
			continue
		}
		wl := p.WorkerLoads(load[l])
		var top, total float64
		for _, v := range wl {
			top = max(top, v)
			total += v
		}
		mean := total / float64(p.Workers)
		perLayer[l] = 1
		if mean > 0 {
			perLayer[l] = top / mean
		}
		sumMax += top
		sumMean += mean
	}
	if math.IsNaN(sumMax) {
		return math.NaN(), perLayer
	}
	if sumMean == 0 {
		return 1, perLayer
	}
	return sumMax / sumMean, perLayer
}
