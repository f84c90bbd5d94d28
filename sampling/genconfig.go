package sampling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
)

// GenerationConfigFile is the name of a checkpoint's generation settings
// (Hugging Face layout).
const GenerationConfigFile = "generation_config.json"

// ErrBadGenerationConfig is wrapped by every error about the contents of a
// generation_config.json.
var ErrBadGenerationConfig = errors.New("sampling: invalid generation config")

// GenerationConfig holds the sampling fields of a model's
// generation_config.json that vLLM reads as request defaults: a nil field
// was absent (or null) in the file. Other keys (eos_token_id, do_sample,
// ...) are ignored here; vLLM ignores do_sample too.
type GenerationConfig struct {
	Temperature       *float32
	TopP              *float32
	TopK              *int
	MinP              *float32
	RepetitionPenalty *float32
	// PresencePenalty and FrequencyPenalty are not Hugging Face generation
	// fields; they are read if a file has them.
	PresencePenalty  *float32
	FrequencyPenalty *float32
	// MaxNewTokens is the file's max_new_tokens (vLLM's default max_tokens);
	// Resolve does not read it.
	MaxNewTokens *int
}

// LoadGenerationConfig reads dir/generation_config.json. A missing file
// gives the empty GenerationConfig and no error (every field then takes its
// neutral value in Resolve); a file that cannot be read or parsed gives an
// error naming it.
func LoadGenerationConfig(dir string) (GenerationConfig, error) {
	path := filepath.Join(dir, GenerationConfigFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return GenerationConfig{}, nil
	}
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("sampling: %w", err)
	}
	gc, err := ParseGenerationConfig(data)
	if err != nil {
		return GenerationConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return gc, nil
}

// ParseGenerationConfig parses the contents of a generation_config.json:
// a JSON object whose sampling keys, when present and not null, are
// numbers (top_k and max_new_tokens integers). Errors wrap
// ErrBadGenerationConfig. Ranges are checked by Resolve, on the values a
// request actually uses.
func ParseGenerationConfig(data []byte) (GenerationConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return GenerationConfig{}, fmt.Errorf("%w: %w", ErrBadGenerationConfig, err)
	}
	if raw == nil {
		return GenerationConfig{}, fmt.Errorf("%w: want a JSON object, got null", ErrBadGenerationConfig)
	}
	var gc GenerationConfig
	var errs []error
	float := func(key string, dst **float32) {
		v, ok, err := number(raw, key)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok && (math.Abs(v) > math.MaxFloat32):
			errs = append(errs, fmt.Errorf("%w: %s %v is out of float32 range", ErrBadGenerationConfig, key, v))
		case ok:
			f := float32(v)
			*dst = &f
		}
	}
	integer := func(key string, dst **int) {
		v, ok, err := number(raw, key)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ok && (v != math.Trunc(v) || math.Abs(v) > 1<<31):
			errs = append(errs, fmt.Errorf("%w: %s %v is not a 32-bit integer", ErrBadGenerationConfig, key, v))
		case ok:
			n := int(v)
			*dst = &n
		}
	}
	float("temperature", &gc.Temperature)
	float("top_p", &gc.TopP)
	integer("top_k", &gc.TopK)
	float("min_p", &gc.MinP)
	float("repetition_penalty", &gc.RepetitionPenalty)
	float("presence_penalty", &gc.PresencePenalty)
	float("frequency_penalty", &gc.FrequencyPenalty)
	integer("max_new_tokens", &gc.MaxNewTokens)
	if err := errors.Join(errs...); err != nil {
		return GenerationConfig{}, err
	}
	return gc, nil
}

// number reads raw[key] as a JSON number; ok is false when it is absent or
// null.
func number(raw map[string]json.RawMessage, key string) (v float64, ok bool, err error) {
	m, present := raw[key]
	if !present || bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
		return 0, false, nil
	}
	if err := json.Unmarshal(m, &v); err != nil {
		return 0, false, fmt.Errorf("%w: %s must be a number, got %s", ErrBadGenerationConfig, key, m)
	}
	return v, true, nil
}

// Overrides are the sampling fields a request sets; nil means unset.
type Overrides struct {
	Temperature, TopP, MinP, PresencePenalty, FrequencyPenalty, RepetitionPenalty *float32
	TopK                                                                          *int
	Seed                                                                          *uint64
}

// Resolve returns the Params of a request: each field is the request's
// value when set, else the generation config's, else the neutral value
// (temperature 1, top-p 1, top-k off, min-p 0, no penalties), as vLLM
// builds its defaults. An unset seed is a fresh RandomSeed. The result is
// validated: an error wraps ErrBadParams and names every bad field.
func Resolve(gc GenerationConfig, o Overrides) (Params, error) {
	p := Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1}
	pick := func(dst *float32, req, cfg *float32) {
		switch {
		case req != nil:
			*dst = *req
		case cfg != nil:
			*dst = *cfg
		}
	}
	pick(&p.Temperature, o.Temperature, gc.Temperature)
	pick(&p.TopP, o.TopP, gc.TopP)
	pick(&p.MinP, o.MinP, gc.MinP)
	pick(&p.PresencePenalty, o.PresencePenalty, gc.PresencePenalty)
	pick(&p.FrequencyPenalty, o.FrequencyPenalty, gc.FrequencyPenalty)
	pick(&p.RepetitionPenalty, o.RepetitionPenalty, gc.RepetitionPenalty)
	switch {
	case o.TopK != nil:
		p.TopK = *o.TopK
	case gc.TopK != nil:
		p.TopK = *gc.TopK
	}
	if o.Seed != nil {
		p.Seed = *o.Seed
	} else {
		p.Seed = RandomSeed()
	}
	if err := p.Validate(); err != nil {
		return Params{}, err
	}
	return p, nil
}
