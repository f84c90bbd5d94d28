package worker

import (
	"fmt"
	"math"
)

// The MoE dispatch carries, beside each token row, the experts it asks the
// receiver to compute and their router weights, in the message's aux ints:
// for every row, a count c followed by c pairs (expert id, float32 bits of
// the weight).

// appendPair appends an (id, float32 bits) pair: an expert and its weight,
// or a sampling candidate and its logit.
func appendPair(aux []int32, expert int32, w float32) []int32 {
	return append(aux, expert, int32(math.Float32bits(w)))
}

// decodeRouting parses the routing of rows dispatched rows and groups it by
// expert: rows[e] lists the row indices that asked for expert e, weights[e]
// their weights. Every expert must exist and be hosted here, appear at most
// once per row (at most topK per row), and every weight must be a finite
// number in [0, 1]; the aux data must end with the last row.
func decodeRouting(aux []int32, nrows, experts, topK int, hosted func(int) bool) (rows [][]int32, weights [][]float32, err error) {
	rows = make([][]int32, experts)
	weights = make([][]float32, experts)
	a := aux
	for r := range nrows {
		if len(a) == 0 {
			return nil, nil, fmt.Errorf("%w: routing data ends at row %d of %d", ErrProtocol, r, nrows)
		}
		c := int(a[0])
		if c <= 0 || c > topK || len(a) < 1+2*c {
			return nil, nil, fmt.Errorf("%w: row %d names %d experts (allowed 1..%d, %d ints left)", ErrProtocol, r, c, topK, len(a)-1)
		}
		for j := range c {
			e := int(a[1+2*j])
			w := math.Float32frombits(uint32(a[2+2*j]))
			if e < 0 || e >= experts || !hosted(e) {
				return nil, nil, fmt.Errorf("%w: row %d asks for expert %d, not hosted here", ErrProtocol, r, e)
			}
			if !(w >= 0 && w <= 1) {
				return nil, nil, fmt.Errorf("%w: row %d gives expert %d the weight %v", ErrProtocol, r, e, w)
			}
			if n := len(rows[e]); n > 0 && rows[e][n-1] == int32(r) {
				return nil, nil, fmt.Errorf("%w: row %d names expert %d twice", ErrProtocol, r, e)
			}
			rows[e] = append(rows[e], int32(r))
			weights[e] = append(weights[e], w)
		}
		a = a[1+2*c:]
	}
	if len(a) != 0 {
		return nil, nil, fmt.Errorf("%w: %d routing ints after the last of %d rows", ErrProtocol, len(a), nrows)
	}
	return rows, weights, nil
}

// seqCands is one rank's sampling candidates for one sequence: ids and
// their penalized logits, and, when the sequence asks for logprobs, their
// raw logits, the log-sum-exp of the rank's raw logits and its top raw
// logits.
type seqCands struct {
	ids     []int32
	vals    []float32
	raw     []float32
	lse     float64
	topIDs  []int32
	topVals []float32
}

// append encodes c: a count and (id, penalized bits) pairs; with logprobs
// then the raw bits of each candidate, the log-sum-exp as two ints (low,
// high word of its float64 bits), a count and (id, raw bits) pairs.
func (c *seqCands) append(aux []int32, withLogprobs bool) []int32 {
	aux = append(aux, int32(len(c.ids)))
	for j, id := range c.ids {
		aux = appendPair(aux, id, c.vals[j])
	}
	if !withLogprobs {
		return aux
	}
	for _, v := range c.raw {
		aux = append(aux, int32(math.Float32bits(v)))
	}
	bits := math.Float64bits(c.lse)
	aux = append(aux, int32(uint32(bits)), int32(uint32(bits>>32)), int32(len(c.topIDs)))
	for j, id := range c.topIDs {
		aux = appendPair(aux, id, c.topVals[j])
	}
	return aux
}

// decodeCandidates parses one rank's sampling candidates for len(lps)
// sequences, as seqCands.append wrote them: lps[i] >= 0 says sequence i
// carries logprobs with at most lps[i] top entries. Ids must lie in
// [0, vocab) and be distinct within a sequence's candidates (so there are
// at most vocab of them).
func decodeCandidates(aux []int32, lps []int, vocab int) ([]seqCands, error) {
	out := make([]seqCands, len(lps))
	a := aux
	take := func(n int) ([]int32, bool) {
		if n < 0 || len(a) < n {
			return nil, false
		}
		v := a[:n]
		a = a[n:]
		return v, true
	}
	for i, lp := range lps {
		bad := fmt.Errorf("%w: sampling candidates of sequence %d are malformed", ErrProtocol, i)
		h, ok := take(1)
		if !ok || h[0] < 0 || int(h[0]) > vocab {
			return nil, bad
		}
		c := int(h[0])
		pairs, ok := take(2 * c)
		if !ok {
			return nil, bad
		}
		seen := make(map[int32]bool, c)
		sc := &out[i]
		for j := range c {
			id := pairs[2*j]
			if id < 0 || int(id) >= vocab || seen[id] {
				return nil, fmt.Errorf("%w: sampling candidate %d of sequence %d is out of range or repeated", ErrProtocol, id, i)
			}
			seen[id] = true
			sc.ids = append(sc.ids, id)
			sc.vals = append(sc.vals, math.Float32frombits(uint32(pairs[2*j+1])))
		}
		if lp < 0 {
			continue
		}
		raw, ok := take(c)
		if !ok {
			return nil, bad
		}
		for _, v := range raw {
			sc.raw = append(sc.raw, math.Float32frombits(uint32(v)))
		}
		h, ok = take(3)
		if !ok || h[2] < 0 || int(h[2]) > lp {
			return nil, bad
		}
		sc.lse = math.Float64frombits(uint64(uint32(h[0])) | uint64(uint32(h[1]))<<32)
		top, ok := take(2 * int(h[2]))
		if !ok {
			return nil, bad
		}
		for j := range int(h[2]) {
			id := top[2*j]
			if id < 0 || int(id) >= vocab {
				return nil, fmt.Errorf("%w: top logprob id %d of sequence %d is out of range", ErrProtocol, id, i)
			}
			sc.topIDs = append(sc.topIDs, id)
			sc.topVals = append(sc.topVals, math.Float32frombits(uint32(top[2*j+1])))
		}
	}
	if len(a) != 0 {
		return nil, fmt.Errorf("%w: %d candidate ints after the last sequence", ErrProtocol, len(a))
	}
	return out, nil
}
