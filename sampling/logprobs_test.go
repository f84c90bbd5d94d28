package sampling_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/sampling"
)

// TestLogSumExp checks LogSumExp against the direct float64 formula
// log Σ e^l, and a split vocabulary's CombineLogSumExp against the whole.
func TestLogSumExp(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := range 100 {
		n := 1 + r.IntN(2000)
		l := make([]float32, n)
		for i := range l {
			l[i] = float32(math.Round(r.NormFloat64()*12) / 4) // ties
			if r.IntN(50) == 0 {
				l[i] = float32(math.Inf(-1))
			}
		}
		var s float64
		for _, v := range l {
			s += math.Exp(float64(v))
		}
		want := math.Log(s)
		got := sampling.LogSumExp(l)
		if math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) && !(math.IsInf(want, -1) && math.IsInf(got, -1)) {
			t.Fatalf("trial %d: LogSumExp = %v, want %v", trial, got, want)
		}
		var parts []float64
		var ids []int32
		var vals []float32
		per := 1 + r.IntN(n)
		for lo := 0; lo < n; lo += per {
			hi := min(n, lo+per)
			parts = append(parts, sampling.LogSumExp(l[lo:hi]))
			i, v := sampling.TopLogits(l[lo:hi], lo, 5)
			ids, vals = append(ids, i...), append(vals, v...)
		}
		if c := sampling.CombineLogSumExp(parts); math.Abs(c-got) > 1e-12*math.Max(1, math.Abs(got)) {
			t.Fatalf("trial %d: CombineLogSumExp = %v, whole %v", trial, c, got)
		}
		// The merged per-slice top 5 is the whole vocabulary's top 5:
		// decreasing logit, ties to the lowest id.
		wantIDs := make([]int32, n)
		for i := range wantIDs {
			wantIDs[i] = int32(i)
		}
		slices.SortStableFunc(wantIDs, func(a, b int32) int {
			switch {
			case l[a] > l[b]:
				return -1
			case l[a] < l[b]:
				return 1
			}
			return 0
		})
		wantIDs = wantIDs[:min(5, n)]
		gotIDs, gotVals := sampling.MergeTop(ids, vals, 5)
		whole, _ := sampling.TopLogits(l, 0, 5)
		if !slices.Equal(gotIDs, wantIDs) || !slices.Equal(whole, wantIDs) {
			t.Fatalf("trial %d: top ids merged %v, whole %v, want %v", trial, gotIDs, whole, wantIDs)
		}
		for i, id := range gotIDs {
			if gotVals[i] != l[id] {
				t.Fatalf("trial %d: top value of %d = %v, want %v", trial, id, gotVals[i], l[id])
			}
		}
	}
	if got := sampling.LogSumExp([]float32{float32(math.NaN()), float32(math.Inf(-1))}); !math.IsInf(got, -1) {
		t.Errorf("LogSumExp of NaN and -Inf = %v, want -Inf", got)
	}
}
