package sampling

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrBadParams is wrapped by every error Params.Validate returns.
var ErrBadParams = errors.New("sampling: invalid parameters")

// MaxPresencePenalty bounds the magnitude of Params.PresencePenalty and
// Params.FrequencyPenalty, as in the OpenAI API and vLLM.
const MaxPresencePenalty = 2

// MinTemperature is the smallest temperature that samples: below it
// decoding is greedy, as in vLLM (its _SAMPLING_EPS), where dividing by so
// small a temperature would only reproduce the arg max less reliably.
const MinTemperature = 1e-5

// Params says how Sample turns logits into a token. Each field documents its
// "off" value; the zero Params is not valid (TopP and RepetitionPenalty must
// be positive), so start from Greedy, ThinkingDefaults or NonThinkingDefaults.
type Params struct {
	// Temperature divides the logits before the softmax. Below
	// MinTemperature (0 included) decoding is greedy: the arg max of the
	// penalized logits, ties to the lowest id, with TopK, TopP, MinP and
	// Seed ignored. Must be finite and >= 0.
	Temperature float32

	// TopP keeps the smallest set of most likely tokens (among those min-p
	// and top-k kept) whose probability mass reaches TopP (nucleus
	// sampling). 1 turns it off. Must be in (0, 1].
	TopP float32

	// MinP drops every token whose probability is below MinP times the
	// probability of the most likely token. 0 turns it off. Must be in [0, 1].
	MinP float32

	// PresencePenalty is subtracted once from the logit of every token id
	// that occurs in the generated ids, however often it occurs (OpenAI
	// semantics; prompt ids are not penalized). 0 turns it off; negative
	// values encourage repetition. Must be in [-2, 2].
	PresencePenalty float32

	// FrequencyPenalty times the number of times a token id occurs in the
	// generated ids is subtracted from its logit (OpenAI semantics; prompt
	// ids are not penalized). 0 turns it off; negative values encourage
	// repetition. Must be in [-2, 2].
	FrequencyPenalty float32

	// RepetitionPenalty penalizes every token id that occurs in the prompt
	// or the generated ids, once per id (Hugging Face semantics): a positive
	// logit is divided by it, any other logit is multiplied by it. 1 turns it
	// off; values below 1 encourage repetition. Must be finite and > 0.
	RepetitionPenalty float32

	// TopK keeps the TopK tokens with the highest logits and every token
	// tied with the TopK-th (as Hugging Face and vLLM do). 0 and -1 (vLLM's
	// "off") turn it off, as does any value >= the vocabulary size. Must be
	// >= -1.
	TopK int

	// Seed, with the position of the token drawn, seeds the PCG generator
	// of each draw (docs/sampling.md). Equal seeds give equal token
	// sequences for equal logits; every value, 0 included, is valid.
	Seed uint64
}

// Greedy returns Params for greedy decoding: always the most likely token,
// with no penalties. The model card discourages it in thinking mode, where
// it tends to loop.
func Greedy() Params {
	return Params{
		Temperature:       0, // greedy: arg max, ties to the lowest id
		TopP:              1, // off; ignored when greedy anyway
		MinP:              0, // off
		PresencePenalty:   0, // off
		FrequencyPenalty:  0, // off
		RepetitionPenalty: 1, // off
		TopK:              0, // off
		Seed:              0, // unused when greedy
	}
}

// ThinkingDefaults returns the Qwen3 model card's settings for thinking mode
// (enable_thinking=true).
func ThinkingDefaults() Params {
	return Params{
		Temperature:       0.6,  // model card, thinking mode
		TopP:              0.95, // model card, thinking mode
		MinP:              0,    // model card: off
		PresencePenalty:   0,    // off; the card suggests up to 2 only if output loops
		FrequencyPenalty:  0,    // off
		RepetitionPenalty: 1,    // off
		TopK:              20,   // model card, thinking mode
		Seed:              0,    // callers set a per-request seed
	}
}

// NonThinkingDefaults returns the Qwen3 model card's settings for
// non-thinking mode (enable_thinking=false).
func NonThinkingDefaults() Params {
	return Params{
		Temperature:       0.7, // model card, non-thinking mode
		TopP:              0.8, // model card, non-thinking mode
		MinP:              0,   // model card: off
		PresencePenalty:   0,   // off; the card suggests up to 2 only if output loops
		FrequencyPenalty:  0,   // off
		RepetitionPenalty: 1,   // off
		TopK:              20,  // model card, non-thinking mode
		Seed:              0,   // callers set a per-request seed
	}
}

// Validate reports every out-of-range field. The returned error wraps
// ErrBadParams (test with errors.Is) and is nil when p is usable.
func (p Params) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrBadParams}, args...)...))
	}
	finite := func(x float32) bool { return !math.IsNaN(float64(x)) && !math.IsInf(float64(x), 0) }

	if !finite(p.Temperature) || p.Temperature < 0 {
		bad("temperature %v must be finite and >= 0 (below %g selects greedy decoding)", p.Temperature, MinTemperature)
	}
	if !(p.TopP > 0 && p.TopP <= 1) {
		bad("top-p %v must be in (0, 1] (1 turns it off)", p.TopP)
	}
	if !(p.MinP >= 0 && p.MinP <= 1) {
		bad("min-p %v must be in [0, 1] (0 turns it off)", p.MinP)
	}
	if !(p.PresencePenalty >= -MaxPresencePenalty && p.PresencePenalty <= MaxPresencePenalty) {
		bad("presence penalty %v must be in [-%d, %d] (0 turns it off)", p.PresencePenalty, MaxPresencePenalty, MaxPresencePenalty)
	}
	if !(p.FrequencyPenalty >= -MaxPresencePenalty && p.FrequencyPenalty <= MaxPresencePenalty) {
		bad("frequency penalty %v must be in [-%d, %d] (0 turns it off)", p.FrequencyPenalty, MaxPresencePenalty, MaxPresencePenalty)
	}
	if !finite(p.RepetitionPenalty) || p.RepetitionPenalty <= 0 {
		bad("repetition penalty %v must be finite and > 0 (1 turns it off)", p.RepetitionPenalty)
	}
	if p.TopK < -1 {
		bad("top-k %d must be >= -1 (0 or -1 turns it off)", p.TopK)
	}
	return errors.Join(errs...)
}

// IsGreedy reports whether p decodes greedily (Temperature below
// MinTemperature).
func (p Params) IsGreedy() bool { return p.Temperature < MinTemperature }

// topK reports whether top-k filters a vocabulary of n ids.
func (p Params) topK(n int) bool { return p.TopK > 0 && p.TopK < n }

// RandomSeed returns a seed drawn from the operating system's
// cryptographic random source, for a request that names none (vLLM and
// OpenAI draw fresh randomness then). It never fails: crypto/rand.Read
// does not return an error on supported platforms.
func RandomSeed() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}
