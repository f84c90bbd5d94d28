package sampling_test

import (
	"cmp"
	"math"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/sampling"
)

// vllmProbs is the exact distribution vLLM's v1 sampler draws from,
// computed independently in float64 by its definition (vllm/v1/sample/
// sampler.py, ops/topk_topp_sampler.py, ops/penalties.py):
//
//	penalties (repetition on prompt ∪ generated, then frequency × count and
//	presence on generated) → greedy below 1e-5 → logits / T → min-p on
//	softmax → top-k (ties with the k-th kept) → top-p (ascending cumulative
//	sum ≤ 1 - p dropped, the best kept) → softmax.
//
// Among tied logits vLLM's order is its GPU sort's; this reference ranks
// ties by increasing id, as the package documents.
func vllmProbs(logits []float32, p sampling.Params, prompt, generated []int) []float64 {
	n := len(logits)
	x := make([]float64, n)
	for i, v := range logits {
		x[i] = float64(v)
		if math.IsNaN(x[i]) {
			x[i] = math.Inf(-1)
		}
	}
	seen := make([]bool, n)
	count := make([]float64, n)
	for _, id := range prompt {
		seen[id] = true
	}
	for _, id := range generated {
		seen[id] = true
		count[id]++
	}
	rp := float64(p.RepetitionPenalty)
	for i := range x {
		if seen[i] {
			if x[i] > 0 {
				x[i] /= rp
			} else {
				x[i] *= rp
			}
		}
		x[i] -= float64(p.FrequencyPenalty) * count[i]
		if count[i] > 0 {
			x[i] -= float64(p.PresencePenalty)
		}
	}
	out := make([]float64, n)
	if p.Temperature < 1e-5 {
		best := 0
		for i, v := range x {
			if v > x[best] {
				best = i
			}
		}
		out[best] = 1
		return out
	}
	for i := range x {
		x[i] /= float64(p.Temperature)
	}
	ninf := math.Inf(-1)
	softmax := func(z []float64) []float64 {
		m := slices.Max(z)
		pr := make([]float64, len(z))
		var s float64
		for i, v := range z {
			pr[i] = math.Exp(v - m)
			s += pr[i]
		}
		for i := range pr {
			pr[i] /= s
		}
		return pr
	}
	// min-p
	pr := softmax(x)
	pmax := slices.Max(pr)
	for i := range x {
		if pr[i] < float64(p.MinP)*pmax {
			x[i] = ninf
		}
	}
	// top-k, ties with the k-th kept
	if p.TopK > 0 && p.TopK < n {
		s := slices.Clone(x)
		slices.SortFunc(s, func(a, b float64) int { return cmp.Compare(b, a) })
		kth := s[p.TopK-1]
		for i := range x {
			if x[i] < kth {
				x[i] = ninf
			}
		}
	}
	// top-p over what is left, ascending order (ties: higher id first, so
	// that the lower id ranks above it)
	if p.TopP < 1 {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int {
			if c := cmp.Compare(x[a], x[b]); c != 0 {
				return c
			}
			return cmp.Compare(b, a)
		})
		sorted := make([]float64, n)
		for j, i := range idx {
			sorted[j] = x[i]
		}
		ps := softmax(sorted)
		var cum float64
		for j := range n - 1 { // the last (best) is always kept
			cum += ps[j]
			if cum <= 1-float64(p.TopP) {
				x[idx[j]] = ninf
			}
		}
	}
	return softmax(x)
}

// TestFrequenciesMatchVLLM draws one token from each of many seeds and
// checks every token's frequency against vllmProbs, within five standard
// errors of the draw count (a token of probability 0 must never be drawn).
// The seeds are fixed, so the test cannot flake; the logits have ties at
// the top-k and top-p boundaries.
func TestFrequenciesMatchVLLM(t *testing.T) {
	// bf16-like logits: few distinct values, many ties.
	logits := []float32{2, 2, 1.5, 1.5, 1.5, 1, 1, 0.5, 0, 0, -1, -3}
	prompt := []int{0, 5, 10}
	generated := []int{2, 2, 7, 0}
	tests := []struct {
		name string
		p    sampling.Params
		hist bool // sample with prompt and generated
	}{
		{"T=1", sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1}, false},
		{"top-k 3 keeps the ties at 1.5", sampling.Params{Temperature: 1, TopP: 1, TopK: 3, RepetitionPenalty: 1}, false},
		{"top-k 2 keeps the two 2s", sampling.Params{Temperature: 0.8, TopP: 1, TopK: 2, RepetitionPenalty: 1}, false},
		{"top-k -1 is off", sampling.Params{Temperature: 1.3, TopP: 1, TopK: -1, RepetitionPenalty: 1}, false},
		{"top-p boundary inside a tie", sampling.Params{Temperature: 1, TopP: 0.5, RepetitionPenalty: 1}, false},
		{"top-p 0.9 with top-k 5", sampling.Params{Temperature: 0.7, TopP: 0.9, TopK: 5, RepetitionPenalty: 1}, false},
		{"min-p before top-p", sampling.Params{Temperature: 1, TopP: 0.8, MinP: 0.3, RepetitionPenalty: 1}, false},
		{"min-p, top-k and top-p", sampling.Params{Temperature: 1.5, TopP: 0.7, MinP: 0.2, TopK: 6, RepetitionPenalty: 1}, false},
		{"repetition penalty", sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1.5}, true},
		{"presence penalty", sampling.Params{Temperature: 1, TopP: 1, PresencePenalty: 0.8, RepetitionPenalty: 1}, true},
		{"frequency penalty", sampling.Params{Temperature: 1, TopP: 1, FrequencyPenalty: 0.6, RepetitionPenalty: 1}, true},
		{"negative penalties", sampling.Params{Temperature: 1, TopP: 1, FrequencyPenalty: -0.5, PresencePenalty: -0.3, RepetitionPenalty: 0.8}, true},
		{"every penalty and filter", sampling.Params{Temperature: 0.9, TopP: 0.85, MinP: 0.05, TopK: 8, FrequencyPenalty: 0.4, PresencePenalty: 0.3, RepetitionPenalty: 1.2}, true},
		{"temperature below 1e-5 is greedy", sampling.Params{Temperature: 5e-6, TopP: 0.9, TopK: 3, FrequencyPenalty: 1, RepetitionPenalty: 1}, true},
	}
	const draws = 40_000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pr, gen []int
			if tc.hist {
				pr, gen = prompt, generated
			}
			want := vllmProbs(logits, tc.p, pr, gen)
			counts := make([]int, len(logits))
			for seed := range uint64(draws) {
				p := tc.p
				p.Seed = seed
				counts[mustNew(t, p).Sample(logits, pr, gen)]++
			}
			for id, p := range want {
				got := float64(counts[id]) / draws
				tol := 5 * math.Sqrt(p*(1-p)/draws)
				if math.Abs(got-p) > tol || (p == 0) != (counts[id] == 0) {
					t.Errorf("token %d: frequency %.5f, want %.5f ± %.5f", id, got, p, tol)
				}
			}
		})
	}
}

// TestVLLMReferenceSets pins what the reference itself keeps on the test
// logits, so that a wrong reference cannot make TestFrequenciesMatchVLLM
// pass vacuously: the kept sets follow from the definitions by hand.
func TestVLLMReferenceSets(t *testing.T) {
	logits := []float32{2, 2, 1.5, 1.5, 1.5, 1, 1, 0.5, 0, 0, -1, -3}
	kept := func(p sampling.Params) []int {
		var ids []int
		for id, v := range vllmProbs(logits, p, nil, nil) {
			if v > 0 {
				ids = append(ids, id)
			}
		}
		return ids
	}
	for _, tc := range []struct {
		name string
		p    sampling.Params
		want []int
	}{
		// The 3rd best logit is 1.5, shared by ids 2-4: 5 tokens.
		{"top-k 3", sampling.Params{Temperature: 1, TopP: 1, TopK: 3}, []int{0, 1, 2, 3, 4}},
		// p(2) = e^2/Z with Z = 2e^2 + 3e^1.5 + 2e + e^.5 + 2 + e^-1 + e^-3
		// ≈ 35.15: 0.210 each for ids 0, 1, 0.127 for 2-4. Top-p 0.5 keeps
		// ids 0, 1 (0.420 above id 2 < 0.5) and id 2 (0.548 above id 3).
		{"top-p 0.5", sampling.Params{Temperature: 1, TopP: 0.5}, []int{0, 1, 2}},
		// min-p 0.3 keeps p ≥ 0.3 p_max: e^(l-2) ≥ 0.3 ⇔ l ≥ 0.796: ids 0-6
		// (mass Z' = 2e^2+3e^1.5+2e ≈ 33.65 of ≈ 35.15). Top-p 0.8 of that:
		// above id 4 lies (2e^2 + 2e^1.5)/Z' ≈ 0.705 < 0.8, above id 5
		// (2e^2+3e^1.5)/Z' ≈ 0.838 ≥ 0.8: keep ids 0-4.
		{"min-p then top-p", sampling.Params{Temperature: 1, TopP: 0.8, MinP: 0.3}, []int{0, 1, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.RepetitionPenalty = 1
			if got := kept(tc.p); !slices.Equal(got, tc.want) {
				t.Errorf("kept %v, want %v", got, tc.want)
			}
		})
	}
}
