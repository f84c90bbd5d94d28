package main

import (
	"encoding/json"
	"testing"

	"github.com/moemesh/moemesh/model"
)

// TestActiveWeightBytes checks the per-token weight bytes of a two-layer
// model (one dense layer, one MoE layer with top-2 of 8 experts) in bf16,
// in FP8 with Qwen's modules_to_not_convert, and with one more projection
// left in bf16. The expected sums are written out tensor by tensor.
func TestActiveWeightBytes(t *testing.T) {
	base := func() *model.Config {
		return &model.Config{HiddenSize: 256, HeadDim: 64, NumAttentionHeads: 4, NumKeyValueHeads: 2,
			NumHiddenLayers: 2, IntermediateSize: 320, MoeIntermediateSize: 96, NumExperts: 8,
			NumExpertsPerTok: 2, DecoderSparseStep: 1, MlpOnlyLayers: []int{0}, VocabSize: 1000,
			TorchDType: "bfloat16"}
	}
	fp8 := func(skip ...string) *model.Config {
		c := base()
		q, err := json.Marshal(model.QuantConfig{QuantMethod: "fp8", Fmt: "e4m3", ActivationScheme: "dynamic",
			WeightBlockSize: []int{128, 128}, ModulesToNotConvert: append([]string{"lm_head", "model.layers.1.mlp.gate"}, skip...)})
		if err != nil {
			t.Fatal(err)
		}
		c.QuantizationConfig = q
		return c
	}
	const (
		// Parameters of each tensor.
		qo, kv   = 256 * 256, 128 * 256 // q and o; k and v
		norms    = 2*256 + 2*64         // per layer
		dense    = 320 * 256            // one of gate/up/down, layer 0
		router   = 8 * 256
		expert   = 96 * 256 // one of gate/up/down of one expert
		headTail = 1000*256 + 256 + 256
		// Float32 scales in 128×128 blocks.
		attnScales   = 4 + 2 + 2 + 4 // q [256,256], k, v [128,256], o
		denseScales  = 6 + 6 + 6     // [320,256] ×2, [256,320]
		expertScales = 2 + 2 + 2     // [96,256] ×2, [256,96]
	)
	var bf16 int64 = 2 * (2*(2*qo+2*kv+norms) + 3*dense + router + 2*3*expert + headTail)
	const fp8Attn = 2*qo + 2*kv + 4*attnScales
	var fp8Want int64 = 2*fp8Attn + 2*2*norms + (3*dense + 4*denseScales) + 2*router + 2*(3*expert+4*expertScales) + 2*headTail
	for _, tc := range []struct {
		name string
		cfg  *model.Config
		want int64
	}{
		{"bf16", base(), bf16},
		{"f32", func() *model.Config { c := base(); c.TorchDType = "float32"; return c }(), 2 * bf16},
		{"fp8", fp8(), fp8Want},
		{"fp8, q_proj of layer 1 not converted", fp8("model.layers.1.self_attn.q_proj"), fp8Want - (qo + 4*4) + 2*qo},
	} {
		if got := ActiveWeightBytes(tc.cfg); got != tc.want {
			t.Errorf("%s: ActiveWeightBytes = %d, want %d", tc.name, got, tc.want)
		}
	}
}
