package synth

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/moemesh/moemesh/model"
)

// QwenOriginalContext is Qwen3's pre-training context, the
// original_max_position_embeddings of its YaRN recipe (factor 4 over
// 32,768 for 131,072 positions, max_position_embeddings left at 40,960).
const QwenOriginalContext = 32768

// YaRN is the rope_scaling a generated checkpoint gets:
// {"rope_type": "yarn", "factor": Factor, "original_max_position_embeddings": Original}.
type YaRN struct {
	Factor float64 // ≥ 1
	// Original is original_max_position_embeddings; 0 means
	// QwenOriginalContext, or max_position_embeddings when that is smaller.
	// The model's context is then Factor × Original when that exceeds
	// max_position_embeddings (model.Config.ContextLength).
	Original int
}

// ParseRopeScaling reads gen-model's --rope-scaling: "" or "none" for
// none, "yarn:F" for YaRN factor F over the default original context, or
// "yarn:F:N" for factor F over original_max_position_embeddings N.
func ParseRopeScaling(s string) (*YaRN, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	parts := strings.Split(s, ":")
	if parts[0] != model.RopeTypeYaRN || len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("%w rope scaling %q; allowed: none, yarn:FACTOR, yarn:FACTOR:ORIGINAL", ErrPreset, s)
	}
	f, err := strconv.ParseFloat(parts[1], 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 1 {
		return nil, fmt.Errorf("%w rope scaling %q: the factor %q must be a number ≥ 1", ErrPreset, s, parts[1])
	}
	y := &YaRN{Factor: f}
	if len(parts) == 3 {
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w rope scaling %q: original_max_position_embeddings %q must be a positive integer", ErrPreset, s, parts[2])
		}
		y.Original = n
	}
	return y, nil
}

// json is the rope_scaling object for c.
func (y *YaRN) json(c *model.Config) (json.RawMessage, error) {
	orig := y.Original
	if orig == 0 {
		orig = min(QwenOriginalContext, c.MaxPositionEmbeddings)
	}
	return json.Marshal(struct {
		RopeType string  `json:"rope_type"`
		Factor   float64 `json:"factor"`
		Original int     `json:"original_max_position_embeddings"`
	}{model.RopeTypeYaRN, y.Factor, orig})
}
