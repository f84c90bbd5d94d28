package worker

import (
	"fmt"
	"math"
	"slices"
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

// decodeRows parses the routing of nrows dispatched rows: experts[i] and
// weights[i] are the experts row i asks for and their weights. Every expert
// must exist and be hosted here, appear at most once per row (at most topK
// per row), and every weight must be a finite number in [0, 1]; the aux
// data must end with the last row.
func decodeRows(aux []int32, nrows, experts, topK int, hosted func(int) bool) (es [][]int32, ws [][]float32, err error) {
	if nrows < 0 || nrows > len(aux) {
		return nil, nil, fmt.Errorf("%w: %d rows with %d routing ints", ErrProtocol, nrows, len(aux))
	}
	es = make([][]int32, nrows)
	ws = make([][]float32, nrows)
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
			if slices.Contains(es[r], int32(e)) {
				return nil, nil, fmt.Errorf("%w: row %d names expert %d twice", ErrProtocol, r, e)
			}
			es[r] = append(es[r], int32(e))
			ws[r] = append(ws[r], w)
		}
		a = a[1+2*c:]
	}
	if len(a) != 0 {
		return nil, nil, fmt.Errorf("%w: %d routing ints after the last of %d rows", ErrProtocol, len(a), nrows)
	}
	return es, ws, nil
}

// The MoE combine carries, beside each result row, the group token index
// it belongs to; in the layout-invariant mode also the expert and the bits
// of its router weight: (token) or (token, expert, weight) per row.

// combineRows is a decoded combine message.
type combineRows struct {
	tokens  []int32
	experts []int32   // by expert only
	weights []float32 // by expert only
}

// decodeCombine parses the aux data of a combine message of nrows rows for
// a group of tokens tokens: every token index in [0, tokens); by expert,
// every expert in [0, experts) and every weight finite in [0, 1].
func decodeCombine(aux []int32, nrows int, byExpert bool, tokens, experts int) (combineRows, error) {
	per := 1
	if byExpert {
		per = 3
	}
	if nrows < 0 || len(aux) != per*nrows {
		return combineRows{}, fmt.Errorf("%w: %d aux ints for %d rows, want %d per row", ErrProtocol, len(aux), nrows, per)
	}
	var c combineRows
	for r := range nrows {
		a := aux[r*per : (r+1)*per]
		if a[0] < 0 || int(a[0]) >= tokens {
			return combineRows{}, fmt.Errorf("%w: row %d names token %d of %d", ErrProtocol, r, a[0], tokens)
		}
		c.tokens = append(c.tokens, a[0])
		if !byExpert {
			continue
		}
		w := math.Float32frombits(uint32(a[2]))
		if a[1] < 0 || int(a[1]) >= experts || !(w >= 0 && w <= 1) {
			return combineRows{}, fmt.Errorf("%w: row %d names expert %d with weight %v", ErrProtocol, r, a[1], w)
		}
		c.experts = append(c.experts, a[1])
		c.weights = append(c.weights, w)
	}
	return c, nil
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
