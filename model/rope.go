package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// ErrContext reports a sequence longer than the model's context (see Config.ContextLength).
var ErrContext = errors.New("model: beyond the context length")

// ErrBackend reports a backend that lacks an operation the model needs.
var ErrBackend = errors.New("model: backend cannot run this model")

// Rope types accepted in rope_scaling (its "rope_type" key, or the legacy "type").
const (
	RopeTypeDefault = "default" // plain RoPE, the same as no rope_scaling
	RopeTypeYaRN    = "yarn"    // YaRN (Peng et al. 2023) as Hugging Face transformers computes it
)

// RopeScaling is a parsed rope_scaling object of config.json. Pointer
// fields are nil when the key is absent or null.
type RopeScaling struct {
	// Type is rope_type, or the legacy type key when rope_type is absent.
	Type string
	// Factor is the context extension factor (≥ 1). When absent it is
	// max_position_embeddings / original_max_position_embeddings.
	Factor *float64
	// OriginalMaxPositionEmbeddings is the pre-training context; absent
	// means max_position_embeddings.
	OriginalMaxPositionEmbeddings *int
	// AttentionFactor multiplies cos and sin; absent means
	// 0.1·mscale·ln(factor) + 1 (see Rope).
	AttentionFactor *float64
	// BetaFast and BetaSlow bound the correction range in rotations; absent
	// or 0 means 32 and 1.
	BetaFast, BetaSlow *float64
	// Mscale and MscaleAllDim (DeepSeek's form) set the default
	// attention factor to get_mscale(factor, mscale)/get_mscale(factor, mscale_all_dim).
	Mscale, MscaleAllDim *float64
	// Truncate floors and ceils the correction range; absent means true.
	Truncate *bool
}

// ParseRopeScaling decodes a rope_scaling object. A null or absent object
// returns (nil, nil). It checks the JSON types only; Config.Validate checks
// the values.
func ParseRopeScaling(raw json.RawMessage) (*RopeScaling, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var aux struct {
		RopeType  *string  `json:"rope_type"`
		Type      *string  `json:"type"`
		Factor    *float64 `json:"factor"`
		Orig      *float64 `json:"original_max_position_embeddings"`
		AttnFac   *float64 `json:"attention_factor"`
		BetaFast  *float64 `json:"beta_fast"`
		BetaSlow  *float64 `json:"beta_slow"`
		Mscale    *float64 `json:"mscale"`
		MscaleAll *float64 `json:"mscale_all_dim"`
		Truncate  *bool    `json:"truncate"`
	}
	if err := json.Unmarshal(raw, &aux); err != nil {
		if te, ok := err.(*json.UnmarshalTypeError); ok {
			f := "rope_scaling"
			if te.Field != "" {
				f += "." + te.Field
			}
			return nil, configErr(f, "%s must be %s, got a JSON %s", f, goTypeWord(te.Type.Kind().String()), te.Value)
		}
		return nil, configErr("rope_scaling", "rope_scaling must be an object or null, got %s", abbrev(raw))
	}
	rs := &RopeScaling{Factor: aux.Factor, AttentionFactor: aux.AttnFac, BetaFast: aux.BetaFast, BetaSlow: aux.BetaSlow,
		Mscale: aux.Mscale, MscaleAllDim: aux.MscaleAll, Truncate: aux.Truncate}
	switch {
	case aux.RopeType != nil:
		rs.Type = *aux.RopeType
	case aux.Type != nil:
		rs.Type = *aux.Type
	default:
		return nil, configErr("rope_scaling.rope_type", "rope_scaling has no rope_type (or type) key; supported: %s, %s", RopeTypeDefault, RopeTypeYaRN)
	}
	if aux.Orig != nil {
		o := *aux.Orig
		if o != math.Trunc(o) || o <= 0 || o > maxConfigSize {
			return nil, configErr("rope_scaling.original_max_position_embeddings", "rope_scaling.original_max_position_embeddings (%g) must be an integer in [1, %d]", o, maxConfigSize)
		}
		n := int(o)
		rs.OriginalMaxPositionEmbeddings = &n
	}
	return rs, nil
}

// validateRope checks rope_scaling against the rest of the config.
func (c *Config) validateRope() error {
	rs, err := ParseRopeScaling(c.RopeScaling)
	if err != nil || rs == nil {
		return err
	}
	switch rs.Type {
	case RopeTypeDefault:
		return nil
	case RopeTypeYaRN:
	default:
		return configErr("rope_scaling.rope_type", "rope_scaling type %q not supported; supported: %s, %s", rs.Type, RopeTypeDefault, RopeTypeYaRN)
	}
	finite := func(field string, v *float64, lo float64, what string) error {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0) || *v < lo) {
			return configErr("rope_scaling."+field, "rope_scaling.%s (%g) must be %s", field, *v, what)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    *float64
		lo   float64
		what string
	}{
		{"factor", rs.Factor, 1, "a number ≥ 1"},
		{"attention_factor", rs.AttentionFactor, 0, "a non-negative number"},
		{"beta_fast", rs.BetaFast, 0, "a non-negative number"},
		{"beta_slow", rs.BetaSlow, 0, "a non-negative number"},
		{"mscale", rs.Mscale, 0, "a non-negative number"},
		{"mscale_all_dim", rs.MscaleAllDim, 0, "a non-negative number"},
	} {
		if err := finite(f.name, f.v, f.lo, f.what); err != nil {
			return err
		}
	}
	if rs.Factor == nil && rs.OriginalMaxPositionEmbeddings == nil {
		return configErr("rope_scaling.factor", "rope_scaling yarn needs factor (or original_max_position_embeddings to derive it from max_position_embeddings)")
	}
	p := c.Rope()
	if p.Factor < 1 || math.IsInf(p.Factor, 0) {
		return configErr("rope_scaling.factor", "rope_scaling factor (%g, derived) must be ≥ 1", p.Factor)
	}
	if p.BetaFast <= p.BetaSlow {
		return configErr("rope_scaling.beta_fast", "rope_scaling.beta_fast (%g) must exceed beta_slow (%g)", p.BetaFast, p.BetaSlow)
	}
	return nil
}

// RopeParams is what the forward pass needs to rotate queries and keys.
type RopeParams struct {
	// Type is RopeTypeDefault or RopeTypeYaRN.
	Type string
	// InvFreq[j] is the angle per position of pair (j, j+head_dim/2), j in [0, head_dim/2).
	InvFreq []float64
	// AttentionFactor multiplies cos and sin (1 for plain RoPE), so it
	// multiplies the attention logits by its square.
	AttentionFactor float64

	// YaRN's inputs after defaults, and the correction range [Low, High]
	// in pairs; zero for plain RoPE.
	Factor             float64
	OriginalMaxPos     int
	BetaFast, BetaSlow float64
	Low, High          float64
}

// Plain reports whether the rotation is plain RoPE with theta = rope_theta.
func (p RopeParams) Plain() bool { return p.Type == RopeTypeDefault }

// Rope returns the rotary embedding parameters of a validated config, as
// Hugging Face transformers' modeling_rope_utils computes them
// (_compute_default_rope_parameters, _compute_yarn_parameters):
//
//	extrap[j] = rope_theta^(−2j/d), interp[j] = extrap[j] / factor
//	low, high = correction range of beta_fast, beta_slow rotations over
//	            original_max_position_embeddings (floored/ceiled when truncate),
//	            clamped to [0, d−1]
//	ramp[j]   = clamp((j − low) / (high − low), 0, 1)
//	inv_freq  = interp·ramp + extrap·(1 − ramp)
//	attention_factor = 0.1·ln(factor) + 1 by default
//
// The explicit factor is used; only without one is it
// max_position_embeddings / original_max_position_embeddings.
func (c *Config) Rope() RopeParams {
	d := c.HeadDim
	half := d / 2
	extrap := make([]float64, half)
	for j := range extrap {
		extrap[j] = math.Pow(c.RopeTheta, -float64(2*j)/float64(d))
	}
	rs, err := ParseRopeScaling(c.RopeScaling)
	if err != nil || rs == nil || rs.Type != RopeTypeYaRN {
		return RopeParams{Type: RopeTypeDefault, InvFreq: extrap, AttentionFactor: 1}
	}
	p := RopeParams{Type: RopeTypeYaRN, OriginalMaxPos: c.MaxPositionEmbeddings, BetaFast: 32, BetaSlow: 1}
	if rs.OriginalMaxPositionEmbeddings != nil {
		p.OriginalMaxPos = *rs.OriginalMaxPositionEmbeddings
	}
	if rs.Factor != nil {
		p.Factor = *rs.Factor
	} else {
		p.Factor = float64(c.MaxPositionEmbeddings) / float64(p.OriginalMaxPos)
	}
	if rs.BetaFast != nil && *rs.BetaFast != 0 { // transformers: `get("beta_fast") or 32`
		p.BetaFast = *rs.BetaFast
	}
	if rs.BetaSlow != nil && *rs.BetaSlow != 0 {
		p.BetaSlow = *rs.BetaSlow
	}
	mscale := func(scale, m float64) float64 {
		if scale <= 1 {
			return 1
		}
		return 0.1*m*math.Log(scale) + 1
	}
	switch {
	case rs.AttentionFactor != nil:
		p.AttentionFactor = *rs.AttentionFactor
	case rs.Mscale != nil && rs.MscaleAllDim != nil && *rs.Mscale != 0 && *rs.MscaleAllDim != 0:
		p.AttentionFactor = mscale(p.Factor, *rs.Mscale) / mscale(p.Factor, *rs.MscaleAllDim)
	default:
		p.AttentionFactor = mscale(p.Factor, 1)
	}
	corrDim := func(rot float64) float64 {
		return float64(d) * math.Log(float64(p.OriginalMaxPos)/(rot*2*math.Pi)) / (2 * math.Log(c.RopeTheta))
	}
	low, high := corrDim(p.BetaFast), corrDim(p.BetaSlow)
	if rs.Truncate == nil || *rs.Truncate {
		low, high = math.Floor(low), math.Ceil(high)
	}
	p.Low, p.High = max(low, 0), min(high, float64(d-1))
	lo, hi := p.Low, p.High
	if lo == hi {
		hi += 0.001 // transformers: prevent a singularity
	}
	p.InvFreq = make([]float64, half)
	for j := range p.InvFreq {
		ramp := min(max((float64(j)-lo)/(hi-lo), 0), 1)
		p.InvFreq[j] = extrap[j]/p.Factor*ramp + extrap[j]*(1-ramp)
	}
	return p
}

// ContextLength is the longest sequence the model takes:
// max_position_embeddings, or with YaRN factor × original_max_position_embeddings
// when that is larger (Qwen's recipe keeps max_position_embeddings at
// 40,960 and sets factor 4 over 32,768 for 131,072).
func (c *Config) ContextLength() int {
	n := c.MaxPositionEmbeddings
	if p := c.Rope(); !p.Plain() {
		ext := p.Factor * float64(p.OriginalMaxPos)
		if ext > float64(n) && ext <= maxConfigSize*64 {
			n = int(ext)
		}
	}
	return n
}

// String names the rotation for messages, e.g. "yarn factor 4 over 64".
func (p RopeParams) String() string {
	if p.Plain() {
		return "rope"
	}
	return fmt.Sprintf("yarn factor %g over %d", p.Factor, p.OriginalMaxPos)
}
