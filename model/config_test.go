package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readTestdata(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func qwen3MoE(mod func(*Config)) *Config {
	c := &Config{
		ModelType:             ModelTypeQwen3MoE,
		Architectures:         []string{"Qwen3MoeForCausalLM"},
		VocabSize:             151936,
		HiddenSize:            4096,
		NumHiddenLayers:       94,
		NumAttentionHeads:     64,
		NumKeyValueHeads:      4,
		HeadDim:               128,
		IntermediateSize:      12288,
		MoeIntermediateSize:   1536,
		NumExperts:            128,
		NumExpertsPerTok:      8,
		DecoderSparseStep:     1,
		NormTopkProb:          true,
		RMSNormEps:            1e-6,
		RopeTheta:             1e6,
		MaxPositionEmbeddings: 40960,
		HiddenAct:             "silu",
		TorchDType:            "bfloat16",
		BOSTokenID:            151643,
		EOSTokenID:            151645,
		EOSTokenIDs:           []int{151645},
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestParseConfigFiles(t *testing.T) {
	tests := []struct {
		name string
		file string
		want *Config
	}{
		{"Qwen3-235B-A22B", "configs/qwen3-235b-a22b.json", qwen3MoE(nil)},
		{"Qwen3-30B-A3B", "configs/qwen3-30b-a3b.json", qwen3MoE(func(c *Config) {
			c.HiddenSize, c.NumHiddenLayers, c.NumAttentionHeads = 2048, 48, 32
			c.IntermediateSize, c.MoeIntermediateSize = 6144, 768
		})},
		{"Qwen3-8B dense", "configs/qwen3-8b.json", &Config{
			ModelType: ModelTypeQwen3, Architectures: []string{"Qwen3ForCausalLM"},
			VocabSize: 151936, HiddenSize: 4096, NumHiddenLayers: 36, NumAttentionHeads: 32,
			NumKeyValueHeads: 8, HeadDim: 128, IntermediateSize: 12288, DecoderSparseStep: 1,
			RMSNormEps: 1e-6, RopeTheta: 1e6, MaxPositionEmbeddings: 40960, HiddenAct: "silu",
			TorchDType: "bfloat16", BOSTokenID: 151643, EOSTokenID: 151645, EOSTokenIDs: []int{151645},
		}},
		{"tiny-a", "tiny-a/config.json", qwen3MoE(func(c *Config) {
			c.VocabSize, c.HiddenSize, c.NumHiddenLayers = 2048, 64, 4
			c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim = 8, 2, 16
			c.IntermediateSize, c.MoeIntermediateSize = 128, 32
			c.NumExperts, c.NumExpertsPerTok = 16, 4
			c.TorchDType = "float32"
		})},
		{"tiny-c", "tiny-c/config.json", qwen3MoE(func(c *Config) {
			c.VocabSize, c.HiddenSize, c.NumHiddenLayers = 2048, 64, 6
			c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim = 12, 4, 8
			c.IntermediateSize, c.MoeIntermediateSize = 128, 32
			c.NumExperts, c.NumExpertsPerTok = 32, 8
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig(readTestdata(t, tc.file))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ParseConfig mismatch (-want +got):\n%s", diff)
			}
			dir := filepath.Dir(filepath.Join("testdata", tc.file))
			if filepath.Base(tc.file) == ConfigFile {
				loaded, err := LoadConfig(dir)
				if err != nil {
					t.Fatalf("LoadConfig: %v", err)
				}
				if diff := cmp.Diff(got, loaded); diff != "" {
					t.Errorf("LoadConfig differs from ParseConfig (-parse +load):\n%s", diff)
				}
			}
		})
	}
}

func TestIsMoELayer(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
		want []bool
	}{
		{"all sparse", qwen3MoE(func(c *Config) { c.NumHiddenLayers = 4 }), []bool{true, true, true, true}},
		{"step 2", qwen3MoE(func(c *Config) { c.NumHiddenLayers, c.DecoderSparseStep = 6, 2 }), []bool{false, true, false, true, false, true}},
		{"step 3 with mlp_only", qwen3MoE(func(c *Config) {
			c.NumHiddenLayers, c.DecoderSparseStep, c.MlpOnlyLayers = 6, 3, []int{5}
		}), []bool{false, false, true, false, false, false}},
		{"mlp_only", qwen3MoE(func(c *Config) { c.NumHiddenLayers, c.MlpOnlyLayers = 4, []int{0, 3} }), []bool{false, true, true, false}},
		{"dense model", &Config{ModelType: ModelTypeQwen3, NumHiddenLayers: 3, DecoderSparseStep: 1}, []bool{false, false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []bool
			for i := range tc.cfg.NumHiddenLayers {
				got = append(got, tc.cfg.IsMoELayer(i))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("IsMoELayer (-want +got):\n%s", diff)
			}
			for _, i := range []int{-1, tc.cfg.NumHiddenLayers} {
				if tc.cfg.IsMoELayer(i) {
					t.Errorf("IsMoELayer(%d) = true for an out-of-range layer", i)
				}
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name string
		json string
		want *Config
	}{
		{
			name: "head_dim and kv heads absent",
			json: `{"model_type":"qwen3","vocab_size":10,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":8}`,
			want: &Config{ModelType: ModelTypeQwen3, VocabSize: 10, HiddenSize: 64, NumHiddenLayers: 2,
				NumAttentionHeads: 4, NumKeyValueHeads: 4, HeadDim: 16, IntermediateSize: 8, DecoderSparseStep: 1,
				RMSNormEps: 1e-6, RopeTheta: 10000, MaxPositionEmbeddings: 32768, HiddenAct: "silu"},
		},
		{
			name: "eos list, null bos, dtype alias, null head_dim",
			json: `{"model_type":"qwen3","vocab_size":10,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
				"num_key_value_heads":2,"head_dim":null,"intermediate_size":8,"bos_token_id":null,"eos_token_id":[151645,151643],"dtype":"float16"}`,
			want: &Config{ModelType: ModelTypeQwen3, VocabSize: 10, HiddenSize: 64, NumHiddenLayers: 2,
				NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 16, IntermediateSize: 8, DecoderSparseStep: 1,
				RMSNormEps: 1e-6, RopeTheta: 10000, MaxPositionEmbeddings: 32768, HiddenAct: "silu", TorchDType: "float16",
				EOSTokenID: 151645, EOSTokenIDs: []int{151645, 151643}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.json))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// setJSON returns the tiny-a config with field replaced by value (raw JSON),
// or removed when value is "".
func setJSON(t *testing.T, field, value string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(readTestdata(t, "tiny-a/config.json"), &m); err != nil {
		t.Fatal(err)
	}
	if value == "" {
		delete(m, field)
	} else {
		m[field] = json.RawMessage(value)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseConfigRejects(t *testing.T) {
	tests := []struct {
		name      string
		field     string // field to change in tiny-a/config.json
		value     string // raw JSON; "" removes the field
		wantField string // ConfigError.Field expected
	}{
		{"llama", "model_type", `"llama"`, "model_type"},
		{"no model_type", "model_type", "", "model_type"},
		{"zero vocab", "vocab_size", `0`, "vocab_size"},
		{"negative hidden", "hidden_size", `-64`, "hidden_size"},
		{"no layers", "num_hidden_layers", "", "num_hidden_layers"},
		{"zero heads", "num_attention_heads", `0`, "num_attention_heads"},
		{"heads not multiple of kv", "num_key_value_heads", `3`, "num_attention_heads"},
		{"zero kv heads", "num_key_value_heads", `0`, "num_key_value_heads"},
		{"odd head_dim", "head_dim", `15`, "head_dim"},
		{"zero head_dim", "head_dim", `0`, "head_dim"},
		{"top-k above experts", "num_experts_per_tok", `17`, "num_experts_per_tok"},
		{"top-k zero", "num_experts_per_tok", `0`, "num_experts_per_tok"},
		{"moe without experts", "num_experts", `0`, "num_experts"},
		{"zero expert width", "moe_intermediate_size", `0`, "moe_intermediate_size"},
		{"zero sparse step", "decoder_sparse_step", `0`, "decoder_sparse_step"},
		{"mlp_only out of range", "mlp_only_layers", `[4]`, "mlp_only_layers"},
		{"mlp_only negative", "mlp_only_layers", `[-1]`, "mlp_only_layers"},
		{"mlp_only duplicate", "mlp_only_layers", `[1,1]`, "mlp_only_layers"},
		{"mlp_only needs dense width", "mlp_only_layers", `[1]`, ""},
		{"rope linear", "rope_scaling", `{"rope_type":"linear","factor":4.0}`, "rope_scaling.rope_type"},
		{"rope legacy dynamic", "rope_scaling", `{"type":"dynamic","factor":4.0}`, "rope_scaling.rope_type"},
		{"rope no type", "rope_scaling", `{"factor":4.0}`, "rope_scaling.rope_type"},
		{"yarn factor below 1", "rope_scaling", `{"rope_type":"yarn","factor":0.5}`, "rope_scaling.factor"},
		{"yarn no factor", "rope_scaling", `{"rope_type":"yarn"}`, "rope_scaling.factor"},
		{"yarn factor string", "rope_scaling", `{"rope_type":"yarn","factor":"4"}`, "rope_scaling.factor"},
		{"yarn fractional original", "rope_scaling", `{"rope_type":"yarn","factor":4,"original_max_position_embeddings":64.5}`, "rope_scaling.original_max_position_embeddings"},
		{"yarn beta order", "rope_scaling", `{"rope_type":"yarn","factor":4,"beta_fast":1,"beta_slow":2}`, "rope_scaling.beta_fast"},
		{"yarn negative attention factor", "rope_scaling", `{"rope_type":"yarn","factor":4,"attention_factor":-1}`, "rope_scaling.attention_factor"},
		{"rope_scaling scalar", "rope_scaling", `4`, "rope_scaling"},
		{"zero eps", "rms_norm_eps", `0`, "rms_norm_eps"},
		{"negative theta", "rope_theta", `-1`, "rope_theta"},
		{"gelu", "hidden_act", `"gelu"`, "hidden_act"},
		{"attention bias", "attention_bias", `true`, "attention_bias"},
		{"sliding window", "use_sliding_window", `true`, "use_sliding_window"},
		{"int8 dtype", "torch_dtype", `"int8"`, "torch_dtype"},
		{"string size", "hidden_size", `"64"`, "hidden_size"},
		{"float size", "hidden_size", `64.5`, "hidden_size"},
		{"bool as number", "norm_topk_prob", `1`, "norm_topk_prob"},
		{"object heads", "num_attention_heads", `{}`, "num_attention_heads"},
		{"mlp_only not list", "mlp_only_layers", `3`, "mlp_only_layers"},
		{"eos string", "eos_token_id", `"</s>"`, "eos_token_id"},
		{"eos negative", "eos_token_id", `-1`, "eos_token_id"},
		{"bos list", "bos_token_id", `[1,2]`, "bos_token_id"},
		{"architectures string", "architectures", `"Qwen3MoeForCausalLM"`, "architectures"},
		{"zero max positions", "max_position_embeddings", `0`, "max_position_embeddings"},
		{"huge hidden", "hidden_size", `1099511627776`, "hidden_size"},
		{"huge layer count", "num_hidden_layers", `1000000000000000000`, "num_hidden_layers"},
		{"huge expert count", "num_experts", `100000000`, "num_experts"},
		{"sparse step leaves dense layers", "decoder_sparse_step", `2`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := setJSON(t, tc.field, tc.value)
			if tc.wantField == "" {
				// The change is valid alone; without a dense MLP width it is not.
				var m map[string]json.RawMessage
				if err := json.Unmarshal(data, &m); err != nil {
					t.Fatal(err)
				}
				if _, err := ParseConfig(data); err != nil {
					t.Fatalf("ParseConfig with intermediate_size: %v", err)
				}
				m["intermediate_size"] = json.RawMessage(`0`)
				data, _ = json.Marshal(m)
				tc.wantField = "intermediate_size"
			}
			got, err := ParseConfig(data)
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("ParseConfig = %+v, %v; want error wrapping ErrBadConfig", got, err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			if ce.Field != tc.wantField {
				t.Errorf("ConfigError.Field = %q, want %q (error: %v)", ce.Field, tc.wantField, err)
			}
		})
	}
}

func TestParseConfigMalformed(t *testing.T) {
	for _, in := range []string{"", "   ", "null", "[]", "{", `{"model_type":}`, "\x00", `"qwen3_moe"`} {
		t.Run(fmt.Sprintf("%q", in), func(t *testing.T) {
			if _, err := ParseConfig([]byte(in)); !errors.Is(err, ErrBadConfig) {
				t.Errorf("ParseConfig(%q) error = %v, want ErrBadConfig", in, err)
			}
		})
	}
}

func TestConfigErrorMessages(t *testing.T) {
	// The messages are for operators; check they carry the numbers that matter.
	tests := []struct {
		name string
		cfg  *Config
		want string
	}{
		{"gqa", qwen3MoE(func(c *Config) { c.NumAttentionHeads, c.NumKeyValueHeads = 12, 5 }),
			"model: config.json: num_attention_heads (12) must be a multiple of num_key_value_heads (5)"},
		{"type", qwen3MoE(func(c *Config) { c.ModelType = "llama" }),
			`model: config.json: model_type "llama" not supported; allowed: qwen3_moe, qwen3`},
		{"longrope", qwen3MoE(func(c *Config) { c.RopeScaling = json.RawMessage(`{"type":"longrope","factor":4}`) }),
			`model: config.json: rope_scaling type "longrope" not supported; supported: default, yarn`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
	}{
		{"235B", qwen3MoE(nil)},
		{"eos list", qwen3MoE(func(c *Config) { c.EOSTokenIDs = []int{151645, 151643} })},
		{"mlp only", qwen3MoE(func(c *Config) { c.DecoderSparseStep, c.MlpOnlyLayers = 2, []int{0, 5} })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := tc.cfg.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(string(data), "}\n") {
				t.Errorf("Marshal output does not end in a newline: %q", data[len(data)-5:])
			}
			got, err := ParseConfig(data)
			if err != nil {
				t.Fatalf("ParseConfig(Marshal()): %v\n%s", err, data)
			}
			if diff := cmp.Diff(tc.cfg, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			// eos_token_id keeps the Hugging Face shape.
			var m map[string]json.RawMessage
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			wantEOS := fmt.Sprint(tc.cfg.EOSTokenIDs[0])
			if len(tc.cfg.EOSTokenIDs) > 1 {
				b, _ := json.Marshal(tc.cfg.EOSTokenIDs)
				wantEOS = string(b)
			}
			var eos bytes.Buffer
			if err := json.Compact(&eos, m["eos_token_id"]); err != nil {
				t.Fatal(err)
			}
			if got := eos.String(); got != wantEOS {
				t.Errorf("eos_token_id = %s, want %s", got, wantEOS)
			}
		})
	}
}

func TestLoadConfigMissing(t *testing.T) {
	_, err := LoadConfig(t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadConfig(empty dir) = %v, want fs.ErrNotExist", err)
	}
}

func ExampleParseConfig() {
	cfg, err := ParseConfig([]byte(`{
		"model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048,
		"num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
		"head_dim": 128, "intermediate_size": 6144, "moe_intermediate_size": 768,
		"num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true,
		"rms_norm_eps": 1e-6, "rope_theta": 1000000, "eos_token_id": 151645
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.NumAttentionHeads/cfg.NumKeyValueHeads, "query heads per KV head")
	fmt.Println("layer 0 is MoE:", cfg.IsMoELayer(0))

	_, err = ParseConfig([]byte(`{"model_type": "llama"}`))
	fmt.Println(errors.Is(err, ErrBadConfig), err)
	// Output:
	// 8 query heads per KV head
	// layer 0 is MoE: true
	// true model: config.json: model_type "llama" not supported; allowed: qwen3_moe, qwen3
}
