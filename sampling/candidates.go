package sampling

import (
	"math"
	"slices"
)

// CandidateK says how many candidates (plus every one tied with the last)
// each slice of a vocabulary split across workers must contribute so that
// SampleCandidates draws exactly the token Sample would draw from the
// whole vocabulary: 1 for greedy decoding, TopK when top-k is on (min-p
// and top-p then act on the top-k set alone), and 0 when the whole
// distribution is needed (top-k off or not smaller than the vocabulary).
func CandidateK(p Params, vocab int) int {
	switch {
	case p.IsGreedy():
		return 1
	case p.topK(vocab):
		return p.TopK
	}
	return 0
}

// TopCandidates returns the k best penalized logits of one vocabulary
// slice and every one tied with the k-th, logits[i] being the score of id
// lo+i: the penalties of p are applied to the ids of prompt and generated
// inside the slice (as Sample applies them), NaN counts as -Inf and -Inf
// entries are left out. ids are global ids, best first (ties by id).
// Because each slice keeps the ties with its own k-th, the union of every
// slice's candidates holds the whole vocabulary's top k with ties.
func TopCandidates(p Params, logits []float32, lo int, prompt, generated []int, k int) (ids []int32, vals []float32) {
	x := make([]float32, len(logits))
	for i, v := range logits {
		x[i] = clean(v)
	}
	applyPenalties(p, x, logits, lo, prompt, generated, make([]int32, len(logits)))
	var s Sampler
	local := s.selectTopK(x, k)
	ids = make([]int32, len(local))
	vals = make([]float32, len(local))
	for i, j := range local {
		ids[i], vals[i] = int32(lo)+j, x[j]
	}
	return ids, vals
}

// SampleCandidates draws one token for position pos (len(prompt) +
// len(generated) of the Sample call it stands for) from the union of every
// slice's TopCandidates (with k = CandidateK(s.Params(), vocab)), with the
// random number Sample would use, so that it returns the token Sample would
// return for the whole penalized vocabulary. ids need no order.
func (s *Sampler) SampleCandidates(ids []int32, vals []float32, pos int) int {
	k := max(s.p.TopK, 1)
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return int(ids[a] - ids[b]) })
	// The compact vector lists candidates by id, so Sample's ties to the
	// lower index are ties to the lower id; -Inf padding keeps it longer
	// than k, so Sample takes its top-k path as on the whole vocabulary.
	n := max(len(ids), k+1)
	compact := make([]float32, n)
	global := make([]int32, n)
	finite := false
	for i := range compact {
		compact[i] = float32(math.Inf(-1))
		if i < len(order) {
			compact[i], global[i] = vals[order[i]], ids[order[i]]
			finite = finite || !math.IsInf(float64(compact[i]), -1)
		}
	}
	if !finite {
		return 0 // as Sample when every logit is -Inf
	}
	return int(global[s.sampleAt(s.penalize(compact, nil, nil), pos)])
}
