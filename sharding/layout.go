package sharding

import "fmt"

// Layout is the parallel layout of a cluster: Workers = DP × TP. Workers
// are numbered 0..Workers-1; worker w belongs to attention group w/TP and is
// rank w%TP inside it. Expert parallelism spans all workers.
type Layout struct {
	Workers int // N
	DP      int // D: attention groups (data parallel)
	TP      int // T: tensor-parallel ranks per group
}

// NewLayout returns the layout of workers workers in groups of tp ranks. It
// fails with ErrIndivisible when tp does not divide workers.
func NewLayout(workers, tp int) (Layout, error) {
	if workers <= 0 || tp <= 0 {
		return Layout{}, fmt.Errorf("%w: workers = %d, tp = %d, want both > 0", ErrInvalid, workers, tp)
	}
	if workers%tp != 0 {
		return Layout{}, fmt.Errorf("%w: %d workers cannot form groups of %d TP ranks",
			ErrIndivisible, workers, tp)
	}
	return Layout{Workers: workers, DP: workers / tp, TP: tp}, nil
}

// Group returns the attention group of worker w.
func (l Layout) Group(w int) int { return w / l.TP }

// Rank returns the tensor-parallel rank of worker w inside its group.
func (l Layout) Rank(w int) int { return w % l.TP }

// Worker returns the worker that is rank rank of group group.
func (l Layout) Worker(group, rank int) int { return group*l.TP + rank }

// GroupWorkers returns the workers of group group, in rank order.
func (l Layout) GroupWorkers(group int) []int {
	ws := make([]int, l.TP)
	for r := range ws {
		ws[r] = l.Worker(group, r)
	}
	return ws
}

// Validate reports a layout whose fields are not positive or do not satisfy
// Workers = DP × TP.
func (l Layout) Validate() error {
	if l.Workers <= 0 || l.DP <= 0 || l.TP <= 0 || l.DP*l.TP != l.Workers {
		return fmt.Errorf("%w: layout workers = %d, dp = %d, tp = %d, want positive with workers = dp × tp",
			ErrInvalid, l.Workers, l.DP, l.TP)
	}
	return nil
}

// SplitRange returns part i of n rows split into parts blocks of
// ceil(n/parts) rows, as the half-open range [lo, hi); the last blocks are
// shorter (possibly empty) when parts does not divide n. Rank r of a TP group
// holds embedding and lm_head rows SplitRange(Vocab, TP, r) and, in a dense
// MLP layer, intermediate rows SplitRange(Intermediate, TP, r).
func SplitRange(n, parts, i int) [2]int {
	block := (n + parts - 1) / parts
	lo := min(i*block, n)
	hi := min(lo+block, n)
	return [2]int{lo, hi}
}
