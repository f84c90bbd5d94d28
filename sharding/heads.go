package sharding

import "fmt"

// RankHeads is the attention share of one tensor-parallel rank. Ranges are
// half-open [lo, hi) over global head indices.
type RankHeads struct {
	Rank    int
	QHeads  [2]int // query heads [QHeads[0], QHeads[1])
	KVHeads [2]int // KV heads read by those query heads
}

// NumQ returns the number of query heads the rank holds.
func (r RankHeads) NumQ() int { return r.QHeads[1] - r.QHeads[0] }

// NumKV returns the number of KV heads the rank holds.
func (r RankHeads) NumKV() int { return r.KVHeads[1] - r.KVHeads[0] }

// LocalKV returns the local index (0-based within the rank's KV range) of
// the KV head read by the rank's local query head i (0-based within its
// query range). It equals i / (NumQ/NumKV), so a kernel that applies GQA to
// the rank's slices with its local ratio reads the same KV head as the
// unsplit model: (QHeads[0]+i) / (H/KV) − KVHeads[0].
func (r RankHeads) LocalKV(i int) int { return i / (r.NumQ() / r.NumKV()) }

// SplitHeads splits heads query heads and kvHeads KV heads over tp
// tensor-parallel ranks. Rank r holds query heads [r·H/T, (r+1)·H/T) and the
// KV heads they read; query head h reads KV head h/(H/KV).
//
// The split is accepted when H % KV == 0, H % T == 0 and either T divides
// KV (each rank holds KV/T whole GQA groups, local ratio H/KV) or KV divides
// T (each rank holds part of one group: one KV head, replicated on the T/KV
// ranks that share it; local ratio H/T). These are exactly the splits in
// which every rank holds the same number of query heads and of KV heads, its
// query heads read a contiguous KV range, each KV head equally often, and
// local query head i reads local KV head i/(NumQ/NumKV) (see LocalKV). Any
// other split cuts a GQA group unevenly or gives ranks different shapes.
// Errors wrap ErrInvalid or ErrIndivisible.
func SplitHeads(heads, kvHeads, tp int) ([]RankHeads, error) {
	if heads <= 0 || kvHeads <= 0 || tp <= 0 {
		return nil, fmt.Errorf("%w: heads = %d, kv heads = %d, tp = %d, want all > 0",
			ErrInvalid, heads, kvHeads, tp)
	}
	if heads%kvHeads != 0 {
		return nil, fmt.Errorf("%w: %d query heads are not a multiple of %d KV heads",
			ErrIndivisible, heads, kvHeads)
	}
	if heads%tp != 0 {
		return nil, fmt.Errorf("%w: %d query heads cannot be split over %d TP ranks",
			ErrIndivisible, heads, tp)
	}
	if kvHeads%tp != 0 && tp%kvHeads != 0 {
		return nil, fmt.Errorf("%w: %d TP ranks neither divide nor are a multiple of %d KV heads, so a GQA group of %d query heads would be cut unevenly",
			ErrIndivisible, tp, kvHeads, heads/kvHeads)
	}
	q := heads / tp
	group := heads / kvHeads
	out := make([]RankHeads, tp)
	for r := range tp {
		lo, hi := r*q, (r+1)*q
		out[r] = RankHeads{
			Rank:    r,
			QHeads:  [2]int{lo, hi},
			KVHeads: [2]int{lo / group, (hi-1)/group + 1},
		}
	}
	return out, nil
}

// KVReplicas returns how many ranks of a group hold each KV head: T/KV when
// T > KV, otherwise 1. The arguments must be accepted by SplitHeads.
func KVReplicas(kvHeads, tp int) int {
	if tp > kvHeads {
		return tp / kvHeads
	}
	return 1
}
