package serving

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moemesh/moemesh/sampling"
)

// samplingOverrides are a request's sampling fields; nil is unset. It has
// the shape of sampling.Overrides, which replaces it once it lands.
type samplingOverrides struct {
	Temperature, TopP, MinP, PresencePenalty, FrequencyPenalty, RepetitionPenalty *float32
	TopK                                                                         *int
	Seed                                                                         *uint64
}

// generationConfig holds the sampling fields of a model's
// generation_config.json (nil: absent).
type generationConfig struct {
	Temperature       *float32 `json:"temperature"`
	TopP              *float32 `json:"top_p"`
	TopK              *int     `json:"top_k"`
	MinP              *float32 `json:"min_p"`
	RepetitionPenalty *float32 `json:"repetition_penalty"`
}

// loadGenerationConfig reads dir/generation_config.json; a missing file is
// an empty config.
func loadGenerationConfig(dir string) (generationConfig, error) {
	var gc generationConfig
	b, err := os.ReadFile(filepath.Join(dir, "generation_config.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return gc, nil
	}
	if err != nil {
		return gc, err
	}
	if err := json.Unmarshal(b, &gc); err != nil {
		return gc, fmt.Errorf("serving: %s/generation_config.json: %w", dir, err)
	}
	return gc, nil
}

// resolveSampling applies vLLM's defaults: a field the request leaves
// unset takes the generation config's value, else the neutral one; a
// missing seed is random.
func resolveSampling(gc generationConfig, o samplingOverrides) (sampling.Params, error) {
	pick := func(req, model *float32, neutral float32) float32 {
		if req != nil {
			return *req
		}
		if model != nil {
			return *model
		}
		return neutral
	}
	p := sampling.Params{
		Temperature:       pick(o.Temperature, gc.Temperature, 1),
		TopP:              pick(o.TopP, gc.TopP, 1),
		MinP:              pick(o.MinP, gc.MinP, 0),
		PresencePenalty:   pick(o.PresencePenalty, nil, 0),
		RepetitionPenalty: pick(o.RepetitionPenalty, gc.RepetitionPenalty, 1),
	}
	if p.Temperature < 1e-5 && p.Temperature >= 0 {
		p.Temperature = 0
	}
	switch {
	case o.TopK != nil:
		p.TopK = *o.TopK
	case gc.TopK != nil:
		p.TopK = *gc.TopK
	}
	if p.TopK == -1 {
		p.TopK = 0
	}
	if p.TopK < -1 {
		return p, fmt.Errorf("%w: top_k %d: use a positive k, or 0 or -1 for off", sampling.ErrBadParams, p.TopK)
	}
	if f := pick(o.FrequencyPenalty, nil, 0); f != 0 {
		return p, fmt.Errorf("%w: frequency_penalty %g is not supported by this sampler yet", ErrUnsupported, f)
	}
	if o.Seed != nil {
		p.Seed = *o.Seed
	} else {
		var b [8]byte
		_, _ = rand.Read(b[:])
		p.Seed = binary.LittleEndian.Uint64(b[:])
	}
	return p, p.Validate()
}
