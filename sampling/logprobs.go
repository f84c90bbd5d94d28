package sampling

import (
	"math"
	"slices"
)

// LogSumExp returns log Σ exp(l) over logits in float64, NaN counting as
// -Inf; -Inf when every logit is -Inf or NaN, +Inf when one is +Inf. It is
// the normalizer of the raw log-probabilities: logprob(id) = l[id] - lse.
func LogSumExp(logits []float32) float64 {
	m := math.Inf(-1)
	for _, v := range logits {
		if f := float64(v); f > m { // NaN never compares greater
			m = f
		}
	}
	if math.IsInf(m, 0) {
		return m
	}
	var s float64
	for _, v := range logits {
		if f := float64(v); f > math.Inf(-1) {
			s += math.Exp(f - m)
		}
	}
	return m + math.Log(s)
}

// CombineLogSumExp returns the log-sum-exp of the union of disjoint slices
// whose own log-sum-exps are parts (as each rank of a vocabulary split
// computes LogSumExp of its rows).
func CombineLogSumExp(parts []float64) float64 {
	m := math.Inf(-1)
	for _, p := range parts {
		if p > m {
			m = p
		}
	}
	if math.IsInf(m, 0) {
		return m
	}
	var s float64
	for _, p := range parts {
		if p > math.Inf(-1) {
			s += math.Exp(p - m)
		}
	}
	return m + math.Log(s)
}

// TopLogits returns the n ids with the largest raw logits of logits (id
// lo+i for logits[i]), most likely first, ties to the lowest id, NaN
// ranking below every number; fewer when the slice is shorter. These are
// the ids of the top log-probabilities, as vLLM reports them from the raw
// logits (before penalties and temperature).
func TopLogits(logits []float32, lo, n int) (ids []int32, vals []float32) {
	n = min(n, len(logits))
	if n <= 0 {
		return nil, nil
	}
	x := make([]float32, len(logits))
	for i, v := range logits {
		x[i] = clean(v)
	}
	s := Sampler{cand: make([]int32, 0, n)}
	top := s.selectTopK(x, n)
	if len(top) > n {
		top = top[:n] // drop the ties past the n-th
	}
	if len(top) < n { // -Inf entries, which selectTopK leaves out, by id
		for i, v := range x {
			if len(top) == n {
				break
			}
			if math.IsInf(float64(v), -1) {
				top = append(top, int32(i))
			}
		}
	}
	ids = make([]int32, len(top))
	vals = make([]float32, len(top))
	for i, j := range top {
		ids[i], vals[i] = int32(lo)+j, x[j]
	}
	return ids, vals
}

// MergeTop merges per-slice TopLogits results into the n best overall,
// most likely first, ties to the lowest id.
func MergeTop(ids []int32, vals []float32, n int) ([]int32, []float32) {
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if vals[a] != vals[b] {
			if vals[a] > vals[b] {
				return -1
			}
			return 1
		}
		return int(ids[a]) - int(ids[b])
	})
	order = order[:min(n, len(order))]
	outIDs := make([]int32, len(order))
	outVals := make([]float32, len(order))
	for i, j := range order {
		outIDs[i], outVals[i] = ids[j], vals[j]
	}
	return outIDs, outVals
}
