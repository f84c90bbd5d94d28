package sharding

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSplitHeads(t *testing.T) {
	tests := []struct {
		name          string
		heads, kv, tp int
		want          []RankHeads
		wantErr       error
	}{
		{"tp1", 8, 2, 1, []RankHeads{{0, [2]int{0, 8}, [2]int{0, 2}}}, nil},
		{"tp2 one group each", 8, 2, 2, []RankHeads{
			{0, [2]int{0, 4}, [2]int{0, 1}},
			{1, [2]int{4, 8}, [2]int{1, 2}},
		}, nil},
		{"tp4 kv replicated twice", 8, 2, 4, []RankHeads{
			{0, [2]int{0, 2}, [2]int{0, 1}},
			{1, [2]int{2, 4}, [2]int{0, 1}},
			{2, [2]int{4, 6}, [2]int{1, 2}},
			{3, [2]int{6, 8}, [2]int{1, 2}},
		}, nil},
		{"tp8 one query head a rank", 8, 2, 8, []RankHeads{
			{0, [2]int{0, 1}, [2]int{0, 1}}, {1, [2]int{1, 2}, [2]int{0, 1}},
			{2, [2]int{2, 3}, [2]int{0, 1}}, {3, [2]int{3, 4}, [2]int{0, 1}},
			{4, [2]int{4, 5}, [2]int{1, 2}}, {5, [2]int{5, 6}, [2]int{1, 2}},
			{6, [2]int{6, 7}, [2]int{1, 2}}, {7, [2]int{7, 8}, [2]int{1, 2}},
		}, nil},
		{"12/4 tp2", 12, 4, 2, []RankHeads{
			{0, [2]int{0, 6}, [2]int{0, 2}},
			{1, [2]int{6, 12}, [2]int{2, 4}},
		}, nil},
		{"12/4 tp4", 12, 4, 4, []RankHeads{
			{0, [2]int{0, 3}, [2]int{0, 1}}, {1, [2]int{3, 6}, [2]int{1, 2}},
			{2, [2]int{6, 9}, [2]int{2, 3}}, {3, [2]int{9, 12}, [2]int{3, 4}},
		}, nil},
		{"235B tp8", 64, 4, 8, nil, nil},
		{"12/4 tp3 cuts a group", 12, 4, 3, nil, ErrIndivisible},
		{"12/4 tp6 cuts a group", 12, 4, 6, nil, ErrIndivisible},
		{"8/2 tp3 heads", 8, 2, 3, nil, ErrIndivisible},
		{"8/2 tp16 more ranks than heads", 8, 2, 16, nil, ErrIndivisible},
		{"heads not multiple of kv", 12, 5, 1, nil, ErrIndivisible},
		{"zero tp", 8, 2, 0, nil, ErrInvalid},
		{"negative kv", 8, -2, 1, nil, ErrInvalid},
		{"zero heads", 0, 2, 1, nil, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SplitHeads(tc.heads, tc.kv, tc.tp)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("SplitHeads(%d, %d, %d) error = %v, want %v", tc.heads, tc.kv, tc.tp, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if tc.want != nil {
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("SplitHeads(%d, %d, %d) (-want +got):\n%s", tc.heads, tc.kv, tc.tp, diff)
				}
			}
			checkHeads(t, tc.heads, tc.kv, tc.tp, got)
		})
	}
}

// checkHeads verifies the invariants of an accepted split.
func checkHeads(t *testing.T, heads, kv, tp int, got []RankHeads) {
	t.Helper()
	if len(got) != tp {
		t.Fatalf("%d ranks, want %d", len(got), tp)
	}
	group := heads / kv
	held := make([]int, kv) // ranks holding each KV head
	next := 0
	for r, rh := range got {
		if rh.Rank != r || rh.QHeads[0] != next || rh.NumQ() != heads/tp {
			t.Fatalf("rank %d: %+v does not continue a contiguous cover at %d", r, rh, next)
		}
		next = rh.QHeads[1]
		for i := range rh.NumQ() {
			globalKV := (rh.QHeads[0] + i) / group
			if rh.KVHeads[0]+rh.LocalKV(i) != globalKV {
				t.Errorf("rank %d local q %d reads local kv %d = global %d, want global %d",
					r, i, rh.LocalKV(i), rh.KVHeads[0]+rh.LocalKV(i), globalKV)
			}
		}
		if rh.NumQ()%rh.NumKV() != 0 {
			t.Errorf("rank %d: %d q heads over %d kv heads", r, rh.NumQ(), rh.NumKV())
		}
		if tp <= kv && rh.NumQ()/rh.NumKV() != group {
			t.Errorf("rank %d local ratio %d, want %d", r, rh.NumQ()/rh.NumKV(), group)
		}
		for k := rh.KVHeads[0]; k < rh.KVHeads[1]; k++ {
			held[k]++
		}
	}
	if next != heads {
		t.Errorf("query heads covered up to %d, want %d", next, heads)
	}
	for k, n := range held {
		if n != KVReplicas(kv, tp) {
			t.Errorf("KV head %d held by %d ranks, want %d", k, n, KVReplicas(kv, tp))
		}
	}
}

// splittable is the definition SplitHeads must match: every rank gets the
// same number of query heads and the same number of KV heads, and the query
// heads of each rank read each of their KV heads equally often from a
// contiguous range.
func splittable(heads, kv, tp int) bool {
	if heads%kv != 0 || heads%tp != 0 {
		return false
	}
	group, q := heads/kv, heads/tp
	rankKV := -1
	for r := range tp {
		count := map[int]int{}
		lo, hi := -1, -1
		for h := r * q; h < (r+1)*q; h++ {
			k := h / group
			count[k]++
			if lo < 0 {
				lo = k
			}
			hi = k + 1
		}
		if len(count) != hi-lo || (rankKV >= 0 && len(count) != rankKV) {
			return false
		}
		rankKV = len(count)
		for _, c := range count {
			if c != q/len(count) || q%len(count) != 0 {
				return false
			}
		}
	}
	return true
}

// TestSplitHeadsExact checks over many triples that SplitHeads accepts
// exactly the splittable ones and that accepted splits keep the invariants.
func TestSplitHeadsExact(t *testing.T) {
	for heads := 1; heads <= 64; heads++ {
		for kv := 1; kv <= heads; kv++ {
			for tp := 1; tp <= 70; tp++ {
				got, err := SplitHeads(heads, kv, tp)
				want := splittable(heads, kv, tp)
				if (err == nil) != want {
					t.Fatalf("SplitHeads(%d, %d, %d) error = %v, want splittable = %v", heads, kv, tp, err, want)
				}
				if err != nil {
					if !errors.Is(err, ErrIndivisible) {
						t.Fatalf("SplitHeads(%d, %d, %d) error = %v, want ErrIndivisible", heads, kv, tp, err)
					}
					continue
				}
				t.Run(fmt.Sprintf("%d_%d_%d", heads, kv, tp), func(t *testing.T) {
					checkHeads(t, heads, kv, tp, got)
				})
			}
		}
	}
}

func TestSplitHeadsQwen3(t *testing.T) {
	for _, shape := range []ModelShape{Qwen3_235B_A22B(), Qwen3_30B_A3B()} {
		for _, tc := range []struct {
			tp, wantQ, wantKV, wantRepl int
			wantErr                     error
		}{
			{1, shape.Heads, 4, 1, nil},
			{2, shape.Heads / 2, 2, 1, nil},
			{4, shape.Heads / 4, 1, 1, nil},
			{8, shape.Heads / 8, 1, 2, nil},
			{16, shape.Heads / 16, 1, 4, nil},
			{3, 0, 0, 0, ErrIndivisible},
			{64, 0, 0, 0, map[bool]error{true: nil, false: ErrIndivisible}[shape.Heads >= 64]},
		} {
			t.Run(fmt.Sprintf("%d heads tp%d", shape.Heads, tc.tp), func(t *testing.T) {
				got, err := SplitHeads(shape.Heads, shape.KVHeads, tc.tp)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				if err != nil || tc.wantQ == 0 {
					return
				}
				for _, rh := range got {
					if rh.NumQ() != tc.wantQ || rh.NumKV() != tc.wantKV {
						t.Errorf("rank %d: %d q, %d kv heads, want %d, %d", rh.Rank, rh.NumQ(), rh.NumKV(), tc.wantQ, tc.wantKV)
					}
				}
				if got := KVReplicas(shape.KVHeads, tc.tp); got != tc.wantRepl {
					t.Errorf("KVReplicas = %d, want %d", got, tc.wantRepl)
				}
				checkHeads(t, shape.Heads, shape.KVHeads, tc.tp, got)
			})
		}
	}
}
