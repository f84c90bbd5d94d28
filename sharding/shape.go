package sharding

import (
	"fmt"
	"slices"
)

// ModelShape holds the dimensions of a Qwen3 model that sharding decisions
// and the cost model depend on. Field names follow config.json.
type ModelShape struct {
	Layers          int // num_hidden_layers
	Hidden          int // hidden_size
	Heads           int // num_attention_heads (query heads)
	KVHeads         int // num_key_value_heads
	HeadDim         int // head_dim; Heads×HeadDim need not equal Hidden
	Experts         int // num_experts; 0 for a dense model
	TopK            int // num_experts_per_tok
	MoEIntermediate int // moe_intermediate_size (one expert's SwiGLU width)
	Intermediate    int // intermediate_size (dense SwiGLU width)
	Vocab           int // vocab_size (embedding rows)
	BytesPerParam   int // 2 for bf16, 4 for f32

	// DecoderSparseStep and MLPOnlyLayers decide which layers are MoE; see
	// IsMoELayer. A zero DecoderSparseStep is read as 1.
	DecoderSparseStep int
	MLPOnlyLayers     []int
	// TieEmbeddings reports that lm_head shares embed_tokens' weight.
	TieEmbeddings bool
}

// Qwen3_235B_A22B returns the shape of Qwen3-235B-A22B in bf16.
func Qwen3_235B_A22B() ModelShape {
	return ModelShape{
		Layers: 94, Hidden: 4096, Heads: 64, KVHeads: 4, HeadDim: 128,
		Experts: 128, TopK: 8, MoEIntermediate: 1536, Intermediate: 12288,
		Vocab: 151936, BytesPerParam: 2, DecoderSparseStep: 1,
	}
}

// Qwen3_30B_A3B returns the shape of Qwen3-30B-A3B in bf16.
func Qwen3_30B_A3B() ModelShape {
	return ModelShape{
		Layers: 48, Hidden: 2048, Heads: 32, KVHeads: 4, HeadDim: 128,
		Experts: 128, TopK: 8, MoEIntermediate: 768, Intermediate: 6144,
		Vocab: 151936, BytesPerParam: 2, DecoderSparseStep: 1,
	}
}

// Validate reports a shape with a non-positive dimension or with query heads
// that are not a multiple of the KV heads.
func (s ModelShape) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"Layers", s.Layers}, {"Hidden", s.Hidden}, {"Heads", s.Heads},
		{"KVHeads", s.KVHeads}, {"HeadDim", s.HeadDim}, {"Vocab", s.Vocab},
		{"BytesPerParam", s.BytesPerParam},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%w: model shape %s = %d, want > 0", ErrInvalid, f.name, f.v)
		}
	}
	if s.Experts < 0 || s.DecoderSparseStep < 0 {
		return fmt.Errorf("%w: model shape Experts = %d, DecoderSparseStep = %d, want >= 0",
			ErrInvalid, s.Experts, s.DecoderSparseStep)
	}
	if s.Experts > 0 && (s.TopK <= 0 || s.TopK > s.Experts || s.MoEIntermediate <= 0) {
		return fmt.Errorf("%w: model shape TopK = %d, MoEIntermediate = %d with %d experts, want 0 < TopK <= Experts and MoEIntermediate > 0",
			ErrInvalid, s.TopK, s.MoEIntermediate, s.Experts)
	}
	if s.MoELayers() < s.Layers && s.Intermediate <= 0 {
		return fmt.Errorf("%w: model shape has %d dense layers but Intermediate = %d",
			ErrInvalid, s.Layers-s.MoELayers(), s.Intermediate)
	}
	if s.Heads%s.KVHeads != 0 {
		return fmt.Errorf("%w: %d query heads are not a multiple of %d KV heads",
			ErrIndivisible, s.Heads, s.KVHeads)
	}
	return nil
}

// IsMoELayer reports whether layer i (0-based) has a sparse MoE block:
// Experts > 0, i is not in MLPOnlyLayers and (i+1) % DecoderSparseStep == 0.
// Other layers have a dense SwiGLU MLP of width Intermediate.
func (s ModelShape) IsMoELayer(i int) bool {
	step := s.DecoderSparseStep
	if step == 0 {
		step = 1
	}
	return s.Experts > 0 && !slices.Contains(s.MLPOnlyLayers, i) && (i+1)%step == 0
}

// MoELayers returns how many of the Layers layers are MoE layers.
func (s ModelShape) MoELayers() int {
	n := 0
	for i := range s.Layers {
		if s.IsMoELayer(i) {
			n++
		}
	}
	return n
}

// ExpertParams returns the parameter count of one expert in one layer:
// gate_proj and up_proj [MoEIntermediate, Hidden] and down_proj
// [Hidden, MoEIntermediate].
func (s ModelShape) ExpertParams() int64 {
	return 3 * int64(s.Hidden) * int64(s.MoEIntermediate)
}

// AttentionParams returns the parameter count of one layer's attention
// block with nothing split: q_proj, k_proj, v_proj, o_proj, q_norm, k_norm
// and the input_layernorm that feeds it.
func (s ModelShape) AttentionParams() int64 {
	q := int64(s.Heads) * int64(s.HeadDim)
	kv := int64(s.KVHeads) * int64(s.HeadDim)
	h := int64(s.Hidden)
	return h*q + 2*h*kv + q*h + 2*int64(s.HeadDim) + h
}

// Params returns the model's total parameter count.
func (s ModelShape) Params() int64 {
	h := int64(s.Hidden)
	moe := int64(s.MoELayers())
	dense := int64(s.Layers) - moe
	n := int64(s.Layers) * s.AttentionParams()
	n += int64(s.Layers) * h                                            // post_attention_layernorm
	n += moe * (int64(s.Experts)*s.ExpertParams() + int64(s.Experts)*h) // experts + router
	n += dense * 3 * h * int64(s.Intermediate)
	emb := int64(s.Vocab) * h
	if !s.TieEmbeddings {
		emb *= 2
	}
	return n + emb + h // + model.norm
}
