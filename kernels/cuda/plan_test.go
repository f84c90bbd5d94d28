package cuda

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGemvRows(t *testing.T) {
	for _, tc := range []struct{ m, want int }{{1, 1}, {2, 2}, {3, 4}, {4, 4}, {5, 8}, {8, 8}, {9, 16}, {16, 16}} {
		if got := gemvRows(tc.m); got != tc.want {
			t.Errorf("gemvRows(%d) = %d, want %d", tc.m, got, tc.want)
		}
	}
	if gemvMaxRows != 16 {
		t.Errorf("gemvMaxRows = %d: decode batches up to 16 must take the GEMV path", gemvMaxRows)
	}
}

// TestGemvBlocks checks that the grid covers every column exactly once:
// blocks × warps × columns per warp reaches n, one block fewer would not.
func TestGemvBlocks(t *testing.T) {
	for _, v := range []int{1, 2, 4, 8, 16} {
		for _, n := range []int{1, 7, 8, 15, 16, 17, 768, 4095, 151936} {
			per := gemvWarps * gemvCols(v)
			g := gemvBlocks(v, n)
			if g*per < n || (g-1)*per >= n {
				t.Errorf("variant m%d, n=%d: %d blocks of %d columns", v, n, g, per)
			}
		}
	}
}

func TestAttnSplits(t *testing.T) {
	tests := []struct {
		name           string
		pairs, n, sms  int
		wantSplits     int
		wantChunkAtMin int
	}{
		{"decode batch 1, long context", 32, 4096, 132, 9, attnMinChunk},
		{"decode batch 1, short context", 32, 100, 132, 1, 0},
		{"prefill: enough blocks", 512 * 32, 512, 132, 1, 0},
		{"one pair, huge context", 1, 40960, 132, 160, attnMinChunk},
		{"odd sizes", 3, 1001, 7, 3, attnMinChunk},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			splits, chunk := attnSplits(tc.pairs, tc.n, tc.sms)
			if splits != tc.wantSplits {
				t.Errorf("splits = %d, want %d", splits, tc.wantSplits)
			}
			if chunk%attnStep != 0 || chunk < tc.wantChunkAtMin {
				t.Errorf("chunk = %d: want a multiple of %d, at least %d", chunk, attnStep, tc.wantChunkAtMin)
			}
			// The splits cover [0, n) and none is empty.
			if splits*chunk < tc.n || (splits-1)*chunk >= tc.n {
				t.Errorf("%d splits of %d do not tile %d positions", splits, chunk, tc.n)
			}
		})
	}
}

func TestAttnSplitsCover(t *testing.T) {
	for pairs := 1; pairs < 300; pairs += 7 {
		for n := 1; n < 20000; n = n*3 + 1 {
			s, c := attnSplits(pairs, n, 132)
			if s < 1 || c%attnStep != 0 || s*c < n || (s-1)*c >= n {
				t.Fatalf("attnSplits(%d, %d) = %d, %d", pairs, n, s, c)
			}
		}
	}
}

// TestGroupByRow checks that adding in the grouped order gives, for every
// destination, the same sequence of additions as the serial loop.
func TestGroupByRow(t *testing.T) {
	tests := []struct {
		name                   string
		rows                   []int32
		wantDst, wantStart, wo []int32
	}{
		{"distinct", []int32{3, 1, 2}, []int32{3, 1, 2}, []int32{0, 1, 2, 3}, []int32{0, 1, 2}},
		{"repeats", []int32{4, 0, 0, 2, 4, 1, 4}, []int32{4, 0, 2, 1}, []int32{0, 3, 5, 6, 7}, []int32{0, 4, 6, 1, 2, 3, 5}},
		{"one row", []int32{7, 7, 7}, []int32{7}, []int32{0, 3}, []int32{0, 1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst, start, order := groupByRow(tc.rows)
			if d := cmp.Diff(tc.wantDst, dst); d != "" {
				t.Errorf("dst (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantStart, start); d != "" {
				t.Errorf("start (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wo, order); d != "" {
				t.Errorf("order (-want +got):\n%s", d)
			}
			serial := map[int32][]int32{}
			for i, r := range tc.rows {
				serial[r] = append(serial[r], int32(i))
			}
			for u, r := range dst {
				if d := cmp.Diff(serial[r], order[start[u]:start[u+1]]); d != "" {
					t.Errorf("row %d additions (-serial +grouped):\n%s", r, d)
				}
			}
		})
	}
}
