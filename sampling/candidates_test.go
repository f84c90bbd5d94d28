package sampling

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSampleCandidatesEqualsSample splits random vocabularies (with ties,
// NaN and -Inf entries and penalized history) into 2-4 slices, merges each
// slice's TopCandidates and checks that SampleCandidates draws exactly the
// tokens Sample draws from the whole vocabulary, step after step.
func TestSampleCandidatesEqualsSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	params := []Params{
		ThinkingDefaults(), NonThinkingDefaults(), Greedy(),
		{Temperature: 1, TopK: 5, TopP: 1, RepetitionPenalty: 1.3, PresencePenalty: 0.7},
		{Temperature: 0.8, TopK: 3, TopP: 0.5, MinP: 0.2, RepetitionPenalty: 1},
		{Temperature: 0, TopK: 0, TopP: 1, RepetitionPenalty: 1.2, PresencePenalty: 1},
		{Temperature: 0.7, TopK: 4, TopP: 0.8, MinP: 0.3, RepetitionPenalty: 1.2, PresencePenalty: 0.2, FrequencyPenalty: 0.5},
		{Temperature: 5e-6, TopK: -1, TopP: 0.9, RepetitionPenalty: 1, FrequencyPenalty: -1},
	}
	for pi, p := range params {
		for trial := range 40 {
			vocab := 50 + rng.IntN(400)
			parts := 2 + rng.IntN(3)
			k := CandidateK(p, vocab)
			if k == 0 {
				t.Fatalf("params %d: CandidateK = 0", pi)
			}
			p.Seed = uint64(trial)
			full, _ := New(p)
			split, _ := New(p)
			prompt := []int{rng.IntN(vocab), rng.IntN(vocab), rng.IntN(vocab)}
			var gen []int
			for step := range 8 {
				logits := make([]float32, vocab)
				for i := range logits {
					logits[i] = float32(rng.IntN(12)) / 4 // many ties
					switch rng.IntN(40) {
					case 0:
						logits[i] = float32(math.NaN())
					case 1:
						logits[i] = float32(math.Inf(-1))
					}
				}
				want := full.Sample(logits, prompt, gen)
				var ids []int32
				var vals []float32
				per := (vocab + parts - 1) / parts
				for lo := 0; lo < vocab; lo += per {
					hi := min(vocab, lo+per)
					i, v := TopCandidates(p, logits[lo:hi], lo, prompt, gen, k)
					ids, vals = append(ids, i...), append(vals, v...)
				}
				got := split.SampleCandidates(ids, vals, len(prompt)+len(gen))
				if got != want {
					t.Fatalf("params %d trial %d step %d: SampleCandidates = %d, Sample = %d", pi, trial, step, got, want)
				}
				gen = append(gen, want)
				if len(gen) > 1 {
					gen = append(gen, gen[0]) // repeats, for the frequency penalty
				}
			}
		}
	}
}

func TestCandidateK(t *testing.T) {
	for _, tc := range []struct {
		p     Params
		vocab int
		want  int
	}{
		{ThinkingDefaults(), 1000, 20},
		{ThinkingDefaults(), 20, 0},
		{Greedy(), 1000, 1},
		{Params{Temperature: 1, TopP: 0.9, RepetitionPenalty: 1}, 1000, 0},
		{Params{Temperature: 1, TopP: 0.9, TopK: -1, RepetitionPenalty: 1}, 1000, 0},
		{Params{Temperature: 1e-6, TopP: 0.9, TopK: 20, RepetitionPenalty: 1}, 1000, 1},
	} {
		if got := CandidateK(tc.p, tc.vocab); got != tc.want {
			t.Errorf("CandidateK(%+v, %d) = %d, want %d", tc.p, tc.vocab, got, tc.want)
		}
	}
}
