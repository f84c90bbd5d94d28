package model

import (
	"fmt"

	"github.com/moemesh/moemesh/kernels"
)

// Tensor is a 2-D weight [Rows, Cols] (a vector has Rows == 1) in backend memory.
type Tensor struct {
	Buf        kernels.Buffer
	Rows, Cols int
}

// Weights of a whole (or sharded) Qwen3 model. Field tags name the
// checkpoint tensor relative to the enclosing prefix; `split` says how a
// tensor-parallel rank takes its share:
//
//	qrows:  rows of its query heads        (q_proj: column-parallel)
//	kvrows: rows of its KV heads           (k_proj, v_proj)
//	qcols:  columns of its query heads     (o_proj: row-parallel)
//	vocab:  rows of its vocabulary block   (embed_tokens, lm_head)
//	f32:    small vector kept in float32 (norms)
type Weights struct {
	Embed  Tensor  `st:"model.embed_tokens.weight" split:"vocab"`
	Norm   Tensor  `st:"model.norm.weight" split:"f32"`
	LMHead Tensor  `st:"lm_head.weight" split:"vocab"`
	Layers []Layer `st:"model.layers.%d"`
}

// Layer is one decoder block.
type Layer struct {
	InputNorm Tensor `st:"input_layernorm.weight" split:"f32"`
	Q         Tensor `st:"self_attn.q_proj.weight" split:"qrows"`
	K         Tensor `st:"self_attn.k_proj.weight" split:"kvrows"`
	V         Tensor `st:"self_attn.v_proj.weight" split:"kvrows"`
	O         Tensor `st:"self_attn.o_proj.weight" split:"qcols"`
	QNorm     Tensor `st:"self_attn.q_norm.weight" split:"f32"`
	KNorm     Tensor `st:"self_attn.k_norm.weight" split:"f32"`
	PostNorm  Tensor `st:"post_attention_layernorm.weight" split:"f32"`

	// MoE layers: the router (replicated) and the hosted experts, indexed by
	// global expert id; experts not hosted here are nil.
	Router  *Tensor   `st:"mlp.gate.weight" moe:"true"`
	Experts []*Expert `st:"mlp.experts.%d" moe:"true"`
	// Dense layers: a SwiGLU MLP of intermediate_size.
	MLP *Expert `st:"mlp" moe:"false"`
}

// Expert is a SwiGLU MLP: down(silu(gate(h)) * up(h)).
type Expert struct {
	Gate Tensor `st:"gate_proj.weight"`
	Up   Tensor `st:"up_proj.weight"`
	Down Tensor `st:"down_proj.weight"`
}

// Shard says which part of the checkpoint a process loads. The zero value
// of the optional fields means "everything".
type Shard struct {
	// TPRank and TPSize select the attention heads of a tensor-parallel
	// rank: query heads [TPRank·H/TPSize, (TPRank+1)·H/TPSize) and the KV
	// heads they read. TPSize 0 or 1 loads all heads.
	TPRank, TPSize int
	// Experts, when non-nil, lists the expert ids hosted per MoE layer
	// (index = layer). Nil loads every expert.
	Experts [][]int
}

// VocabRange returns the rows of embed_tokens and lm_head the rank holds:
// with TPSize > 1 the vocabulary is split into blocks of ceil(V/TPSize)
// rows (the last ones shorter), as sharding.SplitRange does.
func (s Shard) VocabRange(cfg *Config) HeadRange {
	v, t := cfg.VocabSize, s.TPSize
	if t <= 1 {
		return HeadRange{0, v}
	}
	per := (v + t - 1) / t
	return HeadRange{min(v, s.TPRank*per), min(v, (s.TPRank+1)*per)}
}

// HeadRange is the half-open range of heads (or vocabulary rows) held by a rank.
type HeadRange struct{ Lo, Hi int }

// Len is the number of heads in the range.
func (r HeadRange) Len() int { return r.Hi - r.Lo }

// Heads returns the query and KV head ranges of the shard for cfg. KV heads
// are replicated when TPSize exceeds num_key_value_heads.
func (s Shard) Heads(cfg *Config) (q, kv HeadRange, err error) {
	h, kvh := cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	t := s.TPSize
	if t <= 1 {
		return HeadRange{0, h}, HeadRange{0, kvh}, nil
	}
	if s.TPRank < 0 || s.TPRank >= t {
		return q, kv, fmt.Errorf("%w: tensor-parallel rank %d out of range [0,%d)", ErrShard, s.TPRank, t)
	}
	if h%t != 0 {
		return q, kv, fmt.Errorf("%w: num_attention_heads (%d) is not divisible by the tensor-parallel size %d", ErrShard, h, t)
	}
	group := h / kvh // query heads per KV head
	per := h / t
	q = HeadRange{s.TPRank * per, (s.TPRank + 1) * per}
	if per%group != 0 && group%per != 0 {
		return q, kv, fmt.Errorf("%w: %d query heads per rank straddle KV groups of %d heads (num_attention_heads %d, num_key_value_heads %d, tp %d)", ErrShard, per, group, h, kvh, t)
	}
	kv = HeadRange{q.Lo / group, (q.Hi + group - 1) / group}
	return q, kv, nil
}
