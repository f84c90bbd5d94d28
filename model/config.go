package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Model types accepted in config.json.
const (
	ModelTypeQwen3MoE = "qwen3_moe" // Qwen3MoeForCausalLM: Qwen3-30B-A3B, Qwen3-235B-A22B.
	ModelTypeQwen3    = "qwen3"     // Qwen3ForCausalLM: the dense models.
)

// ConfigFile is the name of the model configuration inside a checkpoint directory.
const ConfigFile = "config.json"

// ErrBadConfig is wrapped by every error ParseConfig, LoadConfig and
// Config.Validate return for a configuration moemesh cannot serve.
var ErrBadConfig = errors.New("model: bad config")

// ConfigError describes one rejected field of config.json. It wraps ErrBadConfig.
type ConfigError struct {
	Field  string // JSON name of the offending field, e.g. "num_key_value_heads"; empty for the document as a whole.
	Reason string // What is wrong and what is allowed.
}

func (e *ConfigError) Error() string { return "model: config.json: " + e.Reason }

// Unwrap makes errors.Is(err, ErrBadConfig) hold.
func (e *ConfigError) Unwrap() error { return ErrBadConfig }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Config is a Hugging Face config.json for Qwen3 (dense, model_type "qwen3")
// or Qwen3-MoE (model_type "qwen3_moe"). Field tags are the Hugging Face names.
// Fields the forward pass does not use (initializer_range, use_cache, ...) are
// ignored on parse and not written back by Marshal.
type Config struct {
	ModelType     string   `json:"model_type"`
	Architectures []string `json:"architectures,omitempty"`

	VocabSize         int `json:"vocab_size"`
	HiddenSize        int `json:"hidden_size"`
	NumHiddenLayers   int `json:"num_hidden_layers"`
	NumAttentionHeads int `json:"num_attention_heads"`
	// NumKeyValueHeads defaults to NumAttentionHeads when absent.
	NumKeyValueHeads int `json:"num_key_value_heads"`
	// HeadDim defaults to HiddenSize / NumAttentionHeads when absent. In
	// Qwen3 it is usually set and heads × head_dim ≠ hidden_size.
	HeadDim int `json:"head_dim"`

	// IntermediateSize is the hidden width of a dense SwiGLU MLP.
	IntermediateSize int `json:"intermediate_size"`
	// MoeIntermediateSize is the hidden width of one expert.
	MoeIntermediateSize int `json:"moe_intermediate_size,omitempty"`
	// NumExperts is 0 for dense models.
	NumExperts       int `json:"num_experts,omitempty"`
	NumExpertsPerTok int `json:"num_experts_per_tok,omitempty"`
	// DecoderSparseStep: layer i is MoE when (i+1) % DecoderSparseStep == 0
	// (see IsMoELayer). Defaults to 1.
	DecoderSparseStep int `json:"decoder_sparse_step,omitempty"`
	// MlpOnlyLayers lists layer indices that use a dense MLP even in a MoE model.
	MlpOnlyLayers []int `json:"mlp_only_layers,omitempty"`
	// NormTopkProb renormalises the top-k router weights to sum to 1.
	NormTopkProb bool `json:"norm_topk_prob,omitempty"`

	TieWordEmbeddings     bool    `json:"tie_word_embeddings"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	RopeTheta             float64 `json:"rope_theta"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`
	// RopeScaling is kept verbatim (see ParseRopeScaling and Rope); Validate
	// accepts null/absent, rope_type "default" and "yarn".
	RopeScaling json.RawMessage `json:"rope_scaling,omitempty"`

	// QuantizationConfig is kept verbatim; see ParseQuantConfig. Validate
	// accepts null/absent and block-wise fp8 (e4m3, dynamic activations).
	QuantizationConfig json.RawMessage `json:"quantization_config,omitempty"`

	// HiddenAct must be "silu" (the default when absent).
	HiddenAct string `json:"hidden_act,omitempty"`
	// AttentionBias must be false: Qwen3 has no q/k/v/o bias.
	AttentionBias bool `json:"attention_bias"`
	// UseSlidingWindow must be false.
	UseSlidingWindow bool `json:"use_sliding_window"`

	// TorchDType is the checkpoint's weight type: "bfloat16", "float16",
	// "float32" or empty. Newer files name it "dtype"; both are read.
	TorchDType string `json:"torch_dtype,omitempty"`

	BOSTokenID int `json:"bos_token_id"`
	// EOSTokenID is the first of EOSTokenIDs. Hugging Face writes
	// eos_token_id either as one integer or as a list; EOSTokenIDs holds
	// all of them. Marshal writes an integer when there is one id.
	EOSTokenID  int   `json:"-"`
	EOSTokenIDs []int `json:"-"`
}

// configJSON is Config without its methods, so encoding/json can be used
// inside Config's own MarshalJSON/UnmarshalJSON.
type configJSON Config

// maxConfigSize bounds every size and count in a config, far above any real
// model, so that products of sizes cannot overflow downstream.
const maxConfigSize = 1 << 24

// Sentinel defaults used to detect absent fields.
const absent = math.MinInt

// UnmarshalJSON decodes a Hugging Face config.json, applying the Hugging
// Face defaults for absent fields. It does not validate; see Validate.
func (c *Config) UnmarshalJSON(data []byte) error {
	aux := struct {
		*configJSON
		EOS   json.RawMessage `json:"eos_token_id"`
		BOS   json.RawMessage `json:"bos_token_id"`
		DType string          `json:"dtype"`
	}{configJSON: (*configJSON)(c)}
	*c = Config{
		NumKeyValueHeads:      absent,
		HeadDim:               absent,
		DecoderSparseStep:     1,
		RMSNormEps:            1e-6,
		RopeTheta:             10000,
		MaxPositionEmbeddings: 32768,
		HiddenAct:             "silu",
	}
	if err := json.Unmarshal(data, &aux); err != nil {
		return jsonConfigErr(err)
	}
	if c.NumKeyValueHeads == absent {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.HeadDim == absent {
		c.HeadDim = 0
		if c.NumAttentionHeads > 0 {
			c.HeadDim = c.HiddenSize / c.NumAttentionHeads
		}
	}
	if c.TorchDType == "" {
		c.TorchDType = aux.DType
	}
	if bytes.Equal(bytes.TrimSpace(c.RopeScaling), []byte("null")) {
		c.RopeScaling = nil
	}
	if bytes.Equal(bytes.TrimSpace(c.QuantizationConfig), []byte("null")) {
		c.QuantizationConfig = nil
	}
	bos, err := tokenIDs("bos_token_id", aux.BOS)
	if err != nil {
		return err
	}
	switch len(bos) {
	case 0:
	case 1:
		c.BOSTokenID = bos[0]
	default:
		return configErr("bos_token_id", "bos_token_id must be one integer, got %d", len(bos))
	}
	if c.EOSTokenIDs, err = tokenIDs("eos_token_id", aux.EOS); err != nil {
		return err
	}
	if len(c.EOSTokenIDs) > 0 {
		c.EOSTokenID = c.EOSTokenIDs[0]
	}
	return nil
}

// tokenIDs decodes an integer, a list of integers, or null/absent.
func tokenIDs(field string, raw json.RawMessage) ([]int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, configErr(field, "%s must be an integer or a list of integers, got %s", field, abbrev(raw))
	}
	return many, nil
}

// jsonConfigErr turns an encoding/json error into a ConfigError naming the field.
func jsonConfigErr(err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return err
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := strings.TrimPrefix(te.Field, "configJSON.")
		return configErr(field, "%s must be %s, got a JSON %s", field, goTypeWord(te.Type.Kind().String()), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return configErr("", "invalid JSON at byte %d: %v", se.Offset, err)
	}
	return configErr("", "invalid JSON: %v", err)
}

func goTypeWord(kind string) string {
	switch kind {
	case "int", "int64":
		return "an integer"
	case "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "slice":
		return "a list"
	}
	return "a " + kind
}

func abbrev(b []byte) string {
	const n = 40
	if len(b) > n {
		return strconv.Quote(string(b[:n]) + "...")
	}
	return string(b)
}

// MarshalJSON writes the Hugging Face field names. eos_token_id is an
// integer when there is one id and a list otherwise.
func (c *Config) MarshalJSON() ([]byte, error) {
	aux := struct {
		*configJSON
		EOS any `json:"eos_token_id"`
	}{configJSON: (*configJSON)(c)}
	switch {
	case len(c.EOSTokenIDs) > 1:
		aux.EOS = c.EOSTokenIDs
	case len(c.EOSTokenIDs) == 1:
		aux.EOS = c.EOSTokenIDs[0]
	default:
		aux.EOS = c.EOSTokenID
	}
	return json.Marshal(aux)
}

// Marshal returns c as indented config.json text ending in a newline.
func (c *Config) Marshal() ([]byte, error) {
	raw, err := c.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// ParseConfig decodes and validates a config.json document. Absent fields
// take the Hugging Face defaults (head_dim = hidden_size/num_attention_heads,
// num_key_value_heads = num_attention_heads, decoder_sparse_step = 1,
// rms_norm_eps = 1e-6, rope_theta = 10000, max_position_embeddings = 32768).
// Errors wrap ErrBadConfig and are *ConfigError.
func ParseConfig(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, configErr("", "empty document")
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, jsonConfigErr(err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadConfig reads and validates dir/config.json.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Validate reports the first field that moemesh cannot serve. The error is a
// *ConfigError wrapping ErrBadConfig and names the field and what is allowed.
func (c *Config) Validate() error {
	switch c.ModelType {
	case ModelTypeQwen3MoE, ModelTypeQwen3:
	default:
		return configErr("model_type", "model_type %q not supported; allowed: %s, %s", c.ModelType, ModelTypeQwen3MoE, ModelTypeQwen3)
	}
	moe := c.ModelType == ModelTypeQwen3MoE

	for _, f := range []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize},
		{"hidden_size", c.HiddenSize},
		{"num_hidden_layers", c.NumHiddenLayers},
		{"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads},
		{"head_dim", c.HeadDim},
		{"max_position_embeddings", c.MaxPositionEmbeddings},
	} {
		if f.v <= 0 {
			return configErr(f.name, "%s (%d) must be positive", f.name, f.v)
		}
		if f.v > maxConfigSize {
			return configErr(f.name, "%s (%d) must be at most %d", f.name, f.v, maxConfigSize)
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"intermediate_size", c.IntermediateSize},
		{"moe_intermediate_size", c.MoeIntermediateSize},
		{"num_experts", c.NumExperts},
		{"num_experts_per_tok", c.NumExpertsPerTok},
		{"decoder_sparse_step", c.DecoderSparseStep},
	} {
		if f.v > maxConfigSize {
			return configErr(f.name, "%s (%d) must be at most %d", f.name, f.v, maxConfigSize)
		}
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return configErr("num_attention_heads", "num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if c.HeadDim%2 != 0 {
		return configErr("head_dim", "head_dim (%d) must be even for rotary embedding", c.HeadDim)
	}
	if c.IntermediateSize < 0 {
		return configErr("intermediate_size", "intermediate_size (%d) must not be negative", c.IntermediateSize)
	}

	if moe {
		if c.NumExperts <= 0 {
			return configErr("num_experts", "num_experts (%d) must be positive for model_type %s", c.NumExperts, ModelTypeQwen3MoE)
		}
		if c.NumExpertsPerTok <= 0 || c.NumExpertsPerTok > c.NumExperts {
			return configErr("num_experts_per_tok", "num_experts_per_tok (%d) must be in [1, num_experts (%d)]", c.NumExpertsPerTok, c.NumExperts)
		}
		if c.MoeIntermediateSize <= 0 {
			return configErr("moe_intermediate_size", "moe_intermediate_size (%d) must be positive", c.MoeIntermediateSize)
		}
		if c.DecoderSparseStep <= 0 {
			return configErr("decoder_sparse_step", "decoder_sparse_step (%d) must be positive", c.DecoderSparseStep)
		}
		seen := make(map[int]bool, len(c.MlpOnlyLayers))
		for _, l := range c.MlpOnlyLayers {
			if l < 0 || l >= c.NumHiddenLayers {
				return configErr("mlp_only_layers", "mlp_only_layers entry %d out of range [0, num_hidden_layers (%d))", l, c.NumHiddenLayers)
			}
			if seen[l] {
				return configErr("mlp_only_layers", "mlp_only_layers lists layer %d twice", l)
			}
			seen[l] = true
		}
	} else {
		if c.NumExperts != 0 || c.NumExpertsPerTok != 0 {
			return configErr("num_experts", "num_experts (%d) and num_experts_per_tok (%d) must be 0 for model_type %s; use %s for experts", c.NumExperts, c.NumExpertsPerTok, ModelTypeQwen3, ModelTypeQwen3MoE)
		}
		if len(c.MlpOnlyLayers) > 0 {
			return configErr("mlp_only_layers", "mlp_only_layers must be empty for model_type %s", ModelTypeQwen3)
		}
	}
	if c.IntermediateSize <= 0 {
		// Some layer is dense unless every layer is MoE.
		dense := -1
		switch {
		case !moe || c.DecoderSparseStep > 1:
			dense = 0 // (0+1) % step != 0 for step > 1
		case len(c.MlpOnlyLayers) > 0:
			dense = slices.Min(c.MlpOnlyLayers)
		}
		if dense >= 0 {
			return configErr("intermediate_size", "intermediate_size (%d) must be positive: layer %d uses a dense MLP", c.IntermediateSize, dense)
		}
	}

	if !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0) || c.RMSNormEps >= 1 {
		return configErr("rms_norm_eps", "rms_norm_eps (%g) must be in (0, 1)", c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return configErr("rope_theta", "rope_theta (%g) must be positive", c.RopeTheta)
	}
	if err := c.validateRope(); err != nil {
		return err
	}
	if _, err := ParseQuantConfig(c.QuantizationConfig); err != nil {
		return err
	}
	if c.HiddenAct != "silu" {
		return configErr("hidden_act", "hidden_act %q not supported; allowed: silu", c.HiddenAct)
	}
	if c.AttentionBias {
		return configErr("attention_bias", "attention_bias true not supported; allowed: false")
	}
	if c.UseSlidingWindow {
		return configErr("use_sliding_window", "use_sliding_window true not supported; allowed: false")
	}
	switch c.TorchDType {
	case "", "bfloat16", "float16", "float32":
	default:
		return configErr("torch_dtype", "torch_dtype %q not supported; allowed: bfloat16, float16, float32", c.TorchDType)
	}
	if c.BOSTokenID < 0 {
		return configErr("bos_token_id", "bos_token_id (%d) must not be negative", c.BOSTokenID)
	}
	if len(c.EOSTokenIDs) > 0 && c.EOSTokenID != c.EOSTokenIDs[0] {
		return configErr("eos_token_id", "EOSTokenID (%d) must equal EOSTokenIDs[0] (%d)", c.EOSTokenID, c.EOSTokenIDs[0])
	}
	if c.EOSTokenID < 0 || slices.ContainsFunc(c.EOSTokenIDs, func(id int) bool { return id < 0 }) {
		return configErr("eos_token_id", "eos_token_id %v must not be negative", c.eosList())
	}
	return nil
}

func (c *Config) eosList() []int {
	if len(c.EOSTokenIDs) > 0 {
		return c.EOSTokenIDs
	}
	return []int{c.EOSTokenID}
}

// IsMoELayer reports whether decoder layer i (0-based) uses the sparse MoE
// block: num_experts > 0, i is not in mlp_only_layers, and
// (i+1) % decoder_sparse_step == 0. Other layers use a dense SwiGLU MLP of
// intermediate_size. It is false for i outside [0, num_hidden_layers).
func (c *Config) IsMoELayer(i int) bool {
	if i < 0 || i >= c.NumHiddenLayers || c.NumExperts <= 0 || c.DecoderSparseStep <= 0 {
		return false
	}
	if slices.Contains(c.MlpOnlyLayers, i) {
		return false
	}
	return (i+1)%c.DecoderSparseStep == 0
}
