package sharding

import "fmt"

// MoEDispatch returns, for the tokens that worker holds in one MoE layer,
// how many tokens it sends to each worker (index: destination). Token i has
// top-k experts chosen[i] and key tokenKeys[i] (nil keys: the key of token i
// is i); each expert is computed on Route(worker, e, key), and a token goes
// once to each distinct destination, however many of its experts live there.
// The entry at index worker counts tokens with at least one expert computed
// locally, which cross no wire.
//
// It panics when tokenKeys is non-nil with a length other than len(chosen)
// or when an expert id is out of range.
func MoEDispatch(p *Placement, worker int, chosen [][]int, tokenKeys []uint64) []int {
	if tokenKeys != nil && len(tokenKeys) != len(chosen) {
		panic(fmt.Sprintf("sharding: %d token keys for %d tokens", len(tokenKeys), len(chosen)))
	}
	out := make([]int, p.Workers)
	seen := make([]int, p.Workers) // seen[d] == i+1: token i already counted for d
	for i, experts := range chosen {
		key := uint64(i)
		if tokenKeys != nil {
			key = tokenKeys[i]
		}
		for _, e := range experts {
			d := p.Route(worker, e, key)
			if seen[d] != i+1 {
				seen[d] = i + 1
				out[d]++
			}
		}
	}
	return out
}

// MoEDispatchIn is MoEDispatch for the batch-invariant routing the workers
// use (Placement.RouteIn): worker is a member of group, and each token's
// experts are computed by RouteIn(group, e, key) (so a token may leave the
// process even when its worker hosts a copy, when the key picks another
// member's). Arguments are as for MoEDispatch; tokenKeys is required.
func MoEDispatchIn(p *Placement, group []int, chosen [][]int, tokenKeys []uint64) []int {
	if len(tokenKeys) != len(chosen) {
		panic(fmt.Sprintf("sharding: %d token keys for %d tokens", len(tokenKeys), len(chosen)))
	}
	out := make([]int, p.Workers)
	seen := make([]int, p.Workers)
	for i, experts := range chosen {
		for _, e := range experts {
			d := p.RouteIn(group, e, tokenKeys[i])
			if seen[d] != i+1 {
				seen[d] = i + 1
				out[d]++
			}
		}
	}
	return out
}

// MoETrafficBytes returns the bytes worker sends in the dispatch of one MoE
// layer: Σ over its tokens of the number of distinct remote destinations
// (after Route) × hidden × bytesPerElem. The combine sends the same volume
// back. Arguments are as for MoEDispatch.
func MoETrafficBytes(p *Placement, worker int, chosen [][]int, tokenKeys []uint64, hidden, bytesPerElem int) int64 {
	var n int64
	for d, c := range MoEDispatch(p, worker, chosen, tokenKeys) {
		if d != worker {
			n += int64(c)
		}
	}
	return n * int64(hidden) * int64(bytesPerElem)
}
