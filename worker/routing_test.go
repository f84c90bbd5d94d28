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
	rows, ws, err := decodeRows(enc([]int32{1, 2}, []int32{2}), 2, 4, 2, hosted)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]int32{{1, 2}, {2}}, rows); diff != "" {
		t.Errorf("experts by row (-want +got)\n%s", diff)
	}
	if diff := cmp.Diff([][]float32{{0.25, 0.25}, {0.25}}, ws); diff != "" {
		t.Errorf("weights by row (-want +got)\n%s", diff)
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
		if _, _, err := decodeRows(tc.aux, tc.rows, 4, 2, hosted); !errors.Is(err, ErrProtocol) {
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
		rows, ws, err := decodeRows(aux, nrows, 8, 4, func(e int) bool { return e%2 == 0 })
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
			return
		}
		if len(rows) != nrows || len(ws) != nrows {
			t.Fatalf("%d rows, %d weight rows for %d", len(rows), len(ws), nrows)
		}
		for r, es := range rows {
			if len(es) < 1 || len(es) > 4 || len(es) != len(ws[r]) {
				t.Fatalf("row %d: %d experts, %d weights", r, len(es), len(ws[r]))
			}
			for i, e := range es {
				if e%2 != 0 || slices.Contains(es[:i], e) {
					t.Fatalf("row %d: expert %d not hosted or repeated", r, e)
				}
				if !(ws[r][i] >= 0 && ws[r][i] <= 1) {
					t.Fatalf("weight %v", ws[r][i])
				}
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

func TestDecodeCombine(t *testing.T) {
	w := int32(math.Float32bits(0.5))
	c, err := decodeCombine([]int32{2, 5, w, 0, 1, w}, 2, true, 3, 8)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(combineRows{tokens: []int32{2, 0}, experts: []int32{5, 1}, weights: []float32{0.5, 0.5}}, c, cmp.AllowUnexported(combineRows{})); diff != "" {
		t.Errorf("by expert (-want +got)\n%s", diff)
	}
	c, err = decodeCombine([]int32{1, 0}, 2, false, 2, 8)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(combineRows{tokens: []int32{1, 0}}, c, cmp.AllowUnexported(combineRows{})); diff != "" {
		t.Errorf("by worker (-want +got)\n%s", diff)
	}
	nan := int32(math.Float32bits(float32(math.NaN())))
	for name, tc := range map[string]struct {
		aux      []int32
		rows     int
		byExpert bool
	}{
		"short":           {[]int32{0}, 2, false},
		"long":            {[]int32{0, 1, 1}, 2, false},
		"token too large": {[]int32{3}, 1, false},
		"negative token":  {[]int32{-1}, 1, false},
		"mode mismatch":   {[]int32{0}, 1, true},
		"bad expert":      {[]int32{0, 8, w}, 1, true},
		"NaN weight":      {[]int32{0, 1, nan}, 1, true},
		"weight above 1":  {[]int32{0, 1, int32(math.Float32bits(1.5))}, 1, true},
		"negative rows":   {nil, -1, false},
	} {
		if _, err := decodeCombine(tc.aux, tc.rows, tc.byExpert, 3, 8); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

// FuzzDecodeCombine: combine aux data from a peer decodes within limits or
// fails with ErrProtocol; never a panic.
func FuzzDecodeCombine(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 63}, 1, true)
	f.Add([]byte{0, 0, 0, 0}, 1, false)
	f.Fuzz(func(t *testing.T, raw []byte, nrows int, byExpert bool) {
		if nrows > 64 {
			return
		}
		aux := make([]int32, len(raw)/4)
		for i := range aux {
			aux[i] = int32(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		c, err := decodeCombine(aux, nrows, byExpert, 5, 8)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
			return
		}
		if len(c.tokens) != nrows || (byExpert && (len(c.experts) != nrows || len(c.weights) != nrows)) {
			t.Fatalf("%d rows decoded as %d tokens, %d experts", nrows, len(c.tokens), len(c.experts))
		}
		for i, tok := range c.tokens {
			if tok < 0 || tok >= 5 || (byExpert && (c.experts[i] < 0 || c.experts[i] >= 8 || !(c.weights[i] >= 0 && c.weights[i] <= 1))) {
				t.Fatalf("row %d out of range", i)
			}
		}
	})
}
