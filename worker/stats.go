package worker

import "slices"

// addTotals adds one step's routed-token counts to the totals.
func (w *Worker) addTotals(counts []uint32) {
	if len(counts) == 0 {
		return
	}
	w.cmu.Lock()
	defer w.cmu.Unlock()
	if len(w.totals) != len(counts) {
		// The first step, or another model: start over.
		w.totals = make([]uint64, len(counts))
	}
	for i, c := range counts {
		w.totals[i] += uint64(c)
	}
}

// ExpertTotals returns the tokens this worker's router sent to each
// expert since it started, layer-major [MoE layer][expert] (nil before
// its first step of a MoE model). Every token is counted by the one rank
// that routes it, so summing the workers' totals gives the cluster's
// routing. The control plane publishes windowed differences of it. Safe
// for concurrent use; the slice is the caller's.
func (w *Worker) ExpertTotals() []uint64 {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	return slices.Clone(w.totals)
}
