package worker

import (
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestDecodeRouting(t *testing.T) {
	hosted := func(e int) bool { return e != 3 }
	enc := func(rows ...[]int32) []int32 { // each row: e, e, ... with weight 0.25
		var a []int32
		for _, r := range rows {
			a = append(a, int32(len(r)))
			for _, e := range r {
				a = appendPair(a, e, 0.25)
			}
		}
		return a
	}
	rows, ws, err := decodeRouting(enc([]int32{1, 2}, []int32{2}), 2, 4, 2, hosted)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]int32{nil, {0}, {0, 1}, nil}, rows); diff != "" {
		t.Errorf("rows (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([][]float32{nil, {0.25}, {0.25, 0.25}, nil}, ws); diff != "" {
		t.Errorf("weights (-want +got)\n%s", diff)
	}
	nan := appendPair([]int32{1}, 0, float32(math.NaN()))
	for name, tc := range map[string]struct {
		aux  []int32
		rows int
	}{
		"truncated":      {enc([]int32{1, 2})[:4], 1},
		"missing row":    {enc([]int32{1}), 2},
		"trailing ints":  {append(enc([]int32{1}), 7), 1},
		"too many":       {enc([]int32{0, 1, 2}), 1},
		"zero experts":   {[]int32{0}, 1},
		"not hosted":     {enc([]int32{3}), 1},
		"out of range":   {enc([]int32{9}), 1},
		"twice in a row": {enc([]int32{1, 1}), 1},
		"NaN weight":     {nan, 1},
	} {
		if _, _, err := decodeRouting(tc.aux, tc.rows, 4, 2, hosted); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

// FuzzDecodeRouting: any aux data from a peer either decodes into rows
// that respect every limit, or fails with ErrProtocol; never a panic.
func FuzzDecodeRouting(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 128, 62}, 1)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, raw []byte, nrows int) {
		if nrows < 0 || nrows > 64 {
			return
		}
		aux := make([]int32, len(raw)/4)
		for i := range aux {
			aux[i] = int32(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		rows, ws, err := decodeRouting(aux, nrows, 8, 4, func(e int) bool { return e%2 == 0 })
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
			return
		}
		perRow := make([]int, nrows)
		for e := range rows {
			if len(rows[e]) != len(ws[e]) || (len(rows[e]) > 0 && e%2 != 0) {
				t.Fatalf("expert %d: %d rows, %d weights", e, len(rows[e]), len(ws[e]))
			}
			for i, r := range rows[e] {
				perRow[r]++
				if !(ws[e][i] >= 0 && ws[e][i] <= 1) {
					t.Fatalf("weight %v", ws[e][i])
				}
			}
		}
		for r, c := range perRow {
			if c < 1 || c > 4 {
				t.Fatalf("row %d has %d experts", r, c)
			}
		}
	})
}

// FuzzDecodeCandidates: candidate lists from a peer decode within limits
// or fail with ErrProtocol; odd sequences carry logprobs (at most 3 top).
func FuzzDecodeCandidates(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 128, 63}, 1)
	f.Fuzz(func(t *testing.T, raw []byte, n int) {
		if n < 0 || n > 16 {
			return
		}
		aux := make([]int32, len(raw)/4)
		for i := range aux {
			aux[i] = int32(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		lps := make([]int, n)
		for i := range lps {
			lps[i] = -1 + 4*(i%2)
		}
		got, err := decodeCandidates(aux, lps, 100)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
			return
		}
		for i, c := range got {
			if len(c.ids) > 100 || len(c.ids) != len(c.vals) || len(c.topIDs) > max(lps[i], 0) {
				t.Fatalf("sequence %d: %d ids, %d values, %d top", i, len(c.ids), len(c.vals), len(c.topIDs))
			}
			if lps[i] >= 0 && len(c.raw) != len(c.ids) {
				t.Fatalf("sequence %d: %d raw values for %d ids", i, len(c.raw), len(c.ids))
			}
			for _, id := range append(slices.Clone(c.ids), c.topIDs...) {
				if id < 0 || id >= 100 {
					t.Fatalf("id %d", id)
				}
			}
		}
	})
}

// TestCandidatesRoundTrip: what seqCands.append writes, decodeCandidates
// reads back exactly, with and without logprobs; a truncated message is
// ErrProtocol.
func TestCandidatesRoundTrip(t *testing.T) {
	in := []seqCands{
		{ids: []int32{7, 3}, vals: []float32{1.5, -2}},
		{ids: []int32{9}, vals: []float32{0.25}, raw: []float32{0.5}, lse: -3.0625e-7, topIDs: []int32{9, 1}, topVals: []float32{0.5, -1}},
		{},
		{raw: []float32{}, lse: math.Inf(-1)},
	}
	lps := []int{-1, 2, -1, 0}
	var aux []int32
	for i := range in {
		aux = in[i].append(aux, lps[i] >= 0)
	}
	got, err := decodeCandidates(aux, lps, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, got, cmp.AllowUnexported(seqCands{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	for cut := range len(aux) {
		if _, err := decodeCandidates(aux[:cut], lps, 10); !errors.Is(err, ErrProtocol) {
			t.Fatalf("truncated to %d ints: err = %v, want ErrProtocol", cut, err)
		}
	}
}
