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

// decodeCandidates parses one rank's sampling candidates for n sequences:
// per sequence a count c (0..k) and c pairs (token id, float32 bits).
// Ids must lie in [0, vocab) and be distinct within a sequence.
func decodeCandidates(aux []int32, n, k, vocab int) (ids [][]int32, vals [][]float32, err error) {
	ids, vals = make([][]int32, n), make([][]float32, n)
	a := aux
	for i := range n {
		if len(a) == 0 || a[0] < 0 || int(a[0]) > k || len(a) < 1+2*int(a[0]) {
			return nil, nil, fmt.Errorf("%w: sampling candidates of sequence %d are malformed", ErrProtocol, i)
		}
		c := int(a[0])
		for j := range c {
			id := a[1+2*j]
			if id < 0 || int(id) >= vocab || slices.Contains(ids[i], id) {
				return nil, nil, fmt.Errorf("%w: sampling candidate %d of sequence %d is out of range or repeated", ErrProtocol, id, i)
			}
			ids[i] = append(ids[i], id)
			vals[i] = append(vals[i], math.Float32frombits(uint32(a[2+2*j])))
		}
		a = a[1+2*c:]
	}
	if len(a) != 0 {
		return nil, nil, fmt.Errorf("%w: %d candidate ints after the last sequence", ErrProtocol, len(a))
	}
	return ids, vals, nil
}
