package sharding

import (
	"fmt"
	"math"
)

// MemoryEstimate is the memory one worker needs, in bytes. Weights use
// ModelShape.BytesPerParam per parameter and so does the KV cache.
// Activations and workspace are not counted.
type MemoryEstimate struct {
	Worker int
	// Attention: per layer the rank's column slices of q_proj
	// (NumQ·HeadDim rows), k_proj and v_proj (NumKV·HeadDim rows each,
	// replicated KV heads included), its row slice of o_proj, q_norm and
	// k_norm, input_layernorm and post_attention_layernorm.
	Attention int64
	// DenseMLP: the rank's slice SplitRange(Intermediate, TP, rank) of
	// gate_proj, up_proj and down_proj in every non-MoE layer.
	DenseMLP int64
	// Experts: len(Slots[worker]) × 3 × Hidden × MoEIntermediate per MoE layer.
	Experts int64
	// Router: mlp.gate [Experts, Hidden] of every MoE layer, replicated on
	// every worker.
	Router int64
	// Embeddings: vocab-parallel inside the TP group. The rank holds rows
	// SplitRange(Vocab, TP, rank) of embed_tokens and of lm_head (once when
	// tied) plus the final norm.
	Embeddings int64
	// Weights is the sum of the fields above.
	Weights int64
	// KVCache: K and V of the rank's KV heads, every layer, for the tokens
	// cached by its attention group.
	KVCache int64
	// Total is Weights + KVCache.
	Total int64
}

// WorkerMemory estimates the memory of worker worker under layout layout and
// placement p when its attention group caches kvTokens tokens. Every rank of
// a group stores its own KV heads for all of the group's tokens, so kvTokens
// is the group's token count, not a per-rank share.
//
// It panics when the arguments are inconsistent (see PlanMemory, which
// reports the same conditions as errors). p may be nil for a dense model.
func WorkerMemory(shape ModelShape, layout Layout, p *Placement, worker int, kvTokens int) MemoryEstimate {
	m, err := workerMemory(shape, layout, p, worker, kvTokens)
	if err != nil {
		panic(err)
	}
	return m
}

// PlanMemory returns WorkerMemory for every worker, each group caching
// kvTokens tokens. Errors wrap ErrInvalid, ErrIndivisible or ErrInconsistent
// when the shape, layout, placement and token count do not fit together.
func PlanMemory(shape ModelShape, layout Layout, p *Placement, kvTokens int) ([]MemoryEstimate, error) {
	out := make([]MemoryEstimate, layout.Workers)
	for w := range out {
		m, err := workerMemory(shape, layout, p, w, kvTokens)
		if err != nil {
			return nil, err
		}
		out[w] = m
	}
	return out, nil
}

func workerMemory(shape ModelShape, layout Layout, p *Placement, worker int, kvTokens int) (MemoryEstimate, error) {
	if err := shape.Validate(); err != nil {
		return MemoryEstimate{}, err
	}
	if err := layout.Validate(); err != nil {
		return MemoryEstimate{}, err
	}
	if worker < 0 || worker >= layout.Workers || kvTokens < 0 {
		return MemoryEstimate{}, fmt.Errorf("%w: worker %d of %d, kv tokens %d", ErrInvalid, worker, layout.Workers, kvTokens)
	}
	heads, err := SplitHeads(shape.Heads, shape.KVHeads, layout.TP)
	if err != nil {
		return MemoryEstimate{}, err
	}
	if shape.Experts > 0 || p != nil {
		if err := p.Validate(); err != nil {
			return MemoryEstimate{}, err
		}
		if p.Workers != layout.Workers || p.Experts != shape.Experts {
			return MemoryEstimate{}, fmt.Errorf("%w: placement of %d experts on %d workers for a model of %d experts on %d workers",
				ErrInconsistent, p.Experts, p.Workers, shape.Experts, layout.Workers)
		}
	}

	rank := layout.Rank(worker)
	rh := heads[rank]
	b := int64(shape.BytesPerParam)
	h := int64(shape.Hidden)
	hd := int64(shape.HeadDim)
	layers := int64(shape.Layers)
	moe := int64(shape.MoELayers())
	q := int64(rh.NumQ()) * hd
	kv := int64(rh.NumKV()) * hd

	var m MemoryEstimate
	m.Worker = worker
	m.Attention = layers * (h*q + 2*h*kv + q*h + 2*hd + 2*h) * b
	inter := SplitRange(shape.Intermediate, layout.TP, rank)
	m.DenseMLP = (layers - moe) * 3 * h * int64(inter[1]-inter[0]) * b
	if p != nil {
		m.Experts = int64(len(p.Slots[worker])) * shape.ExpertParams() * moe * b
	}
	m.Router = moe * int64(shape.Experts) * h * b
	voc := SplitRange(shape.Vocab, layout.TP, rank)
	tables := int64(2)
	if shape.TieEmbeddings {
		tables = 1
	}
	m.Embeddings = (tables*int64(voc[1]-voc[0])*h + h) * b
	m.Weights = m.Attention + m.DenseMLP + m.Experts + m.Router + m.Embeddings
	m.KVCache = int64(kvTokens) * layers * kv * 2 * b
	m.Total = m.Weights + m.KVCache
	return m, nil
}

// KVCacheBytes returns the bytes of KV cache all workers of layout hold
// together when every attention group caches tokens tokens and one cached
// value takes bytesPerValue bytes (the engine keeps K and V in float32, 4
// bytes, whatever the weights' type). Each rank stores K and V of its KV
// heads (replicas included, see SplitHeads) in every layer, so the sum is
// DP × Σ_rank tokens × Layers × 2 × NumKV(rank) × HeadDim × bytesPerValue.
// Errors wrap ErrInvalid (also for a product beyond int64) or ErrIndivisible.
func KVCacheBytes(shape ModelShape, layout Layout, tokens, bytesPerValue int) (int64, error) {
	if err := shape.Validate(); err != nil {
		return 0, err
	}
	if err := layout.Validate(); err != nil {
		return 0, err
	}
	if tokens < 0 || bytesPerValue <= 0 {
		return 0, fmt.Errorf("%w: KV cache of %d tokens at %d bytes a value", ErrInvalid, tokens, bytesPerValue)
	}
	heads, err := SplitHeads(shape.Heads, shape.KVHeads, layout.TP)
	if err != nil {
		return 0, err
	}
	var kvHeads int64 // KV heads stored by one group, replicas included
	for _, rh := range heads {
		kvHeads += int64(rh.NumKV())
	}
	perToken := int64(layout.DP) * kvHeads * int64(shape.HeadDim) * int64(shape.Layers) * 2 * int64(bytesPerValue)
	if int64(tokens) > math.MaxInt64/perToken {
		return 0, fmt.Errorf("%w: KV cache of %d tokens at %d bytes a token overflows int64", ErrInvalid, tokens, perToken)
	}
	return int64(tokens) * perToken, nil
}
