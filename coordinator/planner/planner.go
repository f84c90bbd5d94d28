// Package planner chooses the parallel layout and the expert placement of a
// cluster from the workers that registered: which workers serve (and at
// which index), which wait as spares, and how the experts are spread. It is
// pure: no I/O, the same input gives the same plan, so the leader can
// re-plan after a failure and every test can check plans with tables.
package planner

import (
	"errors"
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/sharding"
)

// Sentinel errors of the planner.
var (
	// ErrNotEnough: too few workers for the requested layout.
	ErrNotEnough = errors.New("planner: not enough workers")
	// ErrNoFit: no layout fits the workers' memory.
	ErrNoFit = errors.New("planner: no layout fits")
)

// Worker is a candidate worker.
type Worker struct {
	ID string
	// MemoryBytes is what the worker may use for weights and KV cache; 0
	// means unknown (not checked).
	MemoryBytes uint64
}

// Options are the operator's wishes.
type Options struct {
	// Workers is the layout size wanted; 0 means every candidate.
	Workers int
	// TP is the tensor-parallel size wanted (1 when 0). After a failure the
	// planner may shrink it when the survivors cannot form a group of TP.
	TP int
	// ExpertReplicas are extra expert copies per MoE layer.
	ExpertReplicas int
	// SpareSlots are free expert slots per worker and MoE layer kept for
	// a rebalance's replicas: counted in each worker's memory.
	SpareSlots int
	// KVTokens is the KV cache size of each attention group, in tokens.
	KVTokens int
	// Epoch is the placement epoch to give the plan.
	Epoch uint64
}

// Plan is a layout with its members.
type Plan struct {
	Layout sharding.Layout
	// Members is indexed by worker index.
	Members []Worker
	// Spares are the candidates outside the layout.
	Spares    []Worker
	Placement *sharding.Placement
	// Memory is each member's estimate (sharding's memory model).
	Memory []sharding.MemoryEstimate
}

// IDs returns the member ids in index order.
func (p Plan) IDs() []string {
	out := make([]string, len(p.Members))
	for i, m := range p.Members {
		out[i] = m.ID
	}
	return out
}

// Shape converts a checkpoint's config into sharding's model shape. Weights
// take the checkpoint's dtype in memory (f32 checkpoints 4 bytes a
// parameter, bf16 and f16 2).
func Shape(cfg *model.Config) sharding.ModelShape {
	bpp := 2
	if cfg.TorchDType == "float32" || cfg.TorchDType == "" {
		bpp = 4
	}
	return sharding.ModelShape{
		Layers: cfg.NumHiddenLayers, Hidden: cfg.HiddenSize, Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads,
		HeadDim: cfg.HeadDim, Experts: cfg.NumExperts, TopK: cfg.NumExpertsPerTok, MoEIntermediate: cfg.MoeIntermediateSize,
		Intermediate: cfg.IntermediateSize, Vocab: cfg.VocabSize, BytesPerParam: bpp,
		DecoderSparseStep: cfg.DecoderSparseStep, MLPOnlyLayers: cfg.MlpOnlyLayers, TieEmbeddings: cfg.TieWordEmbeddings,
	}
}

// Initial plans a first layout from candidates (sorted by id so the plan
// does not depend on registration order): the first o.Workers serve, the
// rest are spares. Fewer candidates than o.Workers is ErrNotEnough: the
// leader waits for more to register.
func Initial(cfg *model.Config, candidates []Worker, o Options) (Plan, error) {
	c := slices.Clone(candidates)
	slices.SortFunc(c, func(a, b Worker) int { return compareID(a.ID, b.ID) })
	n := o.Workers
	if n == 0 {
		n = len(c)
	}
	if len(c) < n || n == 0 {
		return Plan{}, fmt.Errorf("%w: %d registered, the layout needs %d", ErrNotEnough, len(c), max(n, 1))
	}
	return build(cfg, c[:n], c[n:], max(o.TP, 1), o)
}

// Replan plans the layout after members of prev died. Survivors keep their
// worker index when a spare can take each dead member's place (so only the
// spares load anything). With too few spares the layout shrinks to the
// largest that fits the survivors and the spares: the most workers, then
// the TP size closest to the previous one, that divide the heads and fit
// every worker's memory. dead names the members that are gone; spares are
// the live candidates outside prev, in the order to use them.
func Replan(cfg *model.Config, prev Plan, dead map[string]bool, spares []Worker, o Options) (Plan, error) {
	var alive []Worker
	for _, m := range prev.Members {
		if !dead[m.ID] {
			alive = append(alive, m)
		}
	}
	spares = slices.DeleteFunc(slices.Clone(spares), func(w Worker) bool { return dead[w.ID] })
	slices.SortFunc(spares, func(a, b Worker) int { return compareID(a.ID, b.ID) })
	if lost := len(prev.Members) - len(alive); lost <= len(spares) {
		members := slices.Clone(prev.Members)
		next := 0
		for i, m := range members {
			if dead[m.ID] {
				members[i] = spares[next]
				next++
			}
		}
		return build(cfg, members, spares[next:], prev.Layout.TP, o)
	}
	pool := append(alive, spares...)
	var errs []error
	for n := len(pool); n >= 1; n-- {
		for _, tp := range tpOrder(prev.Layout.TP) {
			if n%tp != 0 {
				continue
			}
			p, err := build(cfg, pool[:n], pool[n:], tp, o)
			if err == nil {
				return p, nil
			}
			errs = append(errs, err)
		}
	}
	return Plan{}, fmt.Errorf("%w: %d survivors: %w", ErrNoFit, len(pool), errors.Join(errs...))
}

// tpOrder lists TP sizes to try: the previous one, then smaller ones.
func tpOrder(prev int) []int {
	var out []int
	for tp := max(prev, 1); tp >= 1; tp-- {
		out = append(out, tp)
	}
	return out
}

func build(cfg *model.Config, members, spares []Worker, tp int, o Options) (Plan, error) {
	layout, err := sharding.NewLayout(len(members), tp)
	if err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrNoFit, err)
	}
	if _, err := sharding.SplitHeads(cfg.NumAttentionHeads, cfg.NumKeyValueHeads, tp); err != nil {
		return Plan{}, fmt.Errorf("%w: tp %d: %w", ErrNoFit, tp, err)
	}
	if cfg.NumExperts == 0 {
		return Plan{}, fmt.Errorf("%w: a dense model (no experts) runs on one process only", ErrNoFit)
	}
	pl, err := sharding.PlaceExperts(cfg.NumExperts, layout.Workers, min(o.ExpertReplicas, cfg.NumExperts*(layout.Workers-1)), 0, nil)
	if err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrNoFit, err)
	}
	pl.Epoch = o.Epoch
	mem, err := sharding.PlanMemory(Shape(cfg), layout, pl, max(o.KVTokens, 1))
	if err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrNoFit, err)
	}
	sh := Shape(cfg)
	spare := int64(o.SpareSlots) * int64(sh.MoELayers()) * sh.ExpertParams() * int64(sh.BytesPerParam)
	for i, m := range members {
		if m.MemoryBytes > 0 && uint64(mem[i].Total+spare) > m.MemoryBytes {
			return Plan{}, fmt.Errorf("%w: %d workers × tp %d: worker %s needs %d bytes (%d of them for %d spare expert slots per layer), has %d",
				ErrNoFit, layout.Workers, tp, m.ID, mem[i].Total+spare, spare, o.SpareSlots, m.MemoryBytes)
		}
	}
	return Plan{Layout: layout, Members: slices.Clone(members), Spares: slices.Clone(spares), Placement: pl, Memory: mem}, nil
}

// compareID orders ids with numeric suffixes naturally (w2 before w10).
func compareID(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
