package model_test

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
)

// bf16ComputeLimit bounds, per fixture, the worst relative L2 error per
// position of kernels.ComputeBF16's logits against the f32 path's, one
// batch of the fixture's prompts: 1.5× what was measured (tiny-c 0.034,
// tiny-af 0.063; see TestBF16ComputeAccuracy's log and docs/kernels.md).
// The fixtures' weights are random, which makes them more sensitive to
// rounding than a trained model.
var bf16ComputeLimit = map[string]float64{"tiny-c": 0.05, "tiny-af": 0.095}

// openFixtureWith loads a fixture on a CPU backend with opts.
func openFixtureWith(t testing.TB, fixture string, opts ...kernels.CPUOption) *model.Model {
	t.Helper()
	dir := filepath.Join("testdata", fixture)
	b := kernels.NewCPU(opts...)
	m, err := model.Open(dir, b, model.OpenOptions{CloseBackend: true, BlockSize: 4, ContextTokens: 4 * goldenBlocks})
	if err != nil {
		b.Close()
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// TestBF16ComputeAccuracy runs the prompts of the bf16 fixture (tiny-c)
// and the FP8 one (tiny-af, whose bf16 tensors take the bf16 path) as one
// batch on the f32 and the bf16 compute paths, logs the worst and median
// relative L2 error per position of the bf16 path's logits against the
// f32 path's, and bounds the worst. It also checks that the bf16 dot
// products lose no more than rounding x to bf16 and multiplying in f32
// (WithBF16Activations) does: the error is that of the activations'
// rounding, not of the kernels.
func TestBF16ComputeAccuracy(t *testing.T) {
	for _, fx := range []string{"tiny-c", "tiny-af"} {
		t.Run(fx, func(t *testing.T) {
			g := loadGolden(t, fx)
			run := func(o kernels.CPUOption) [][]float32 {
				m := openFixtureWith(t, fx, o)
				pool := newKVBlocks(m)
				var in []model.SeqInput
				for i, p := range g.Prompts {
					toks := append(append([]int32{}, p.Tokens...), p.Greedy[:len(p.Greedy)-1]...)
					var blocks []int32
					pool.reserve(t, &blocks, len(toks))
					in = append(in, model.SeqInput{ID: uint64(i), Tokens: toks, Blocks: blocks, AllLogits: true})
				}
				rows, err := m.Forward(context.Background(), in)
				if err != nil {
					t.Fatal(err)
				}
				return rows
			}
			f32 := run(kernels.WithCompute(kernels.ComputeF32))
			bf := run(kernels.WithCompute(kernels.ComputeBF16))
			rx := run(kernels.WithBF16Activations())
			if len(f32) != len(bf) || len(f32) != len(rx) {
				t.Fatalf("rows of logits: %d on f32, %d on bf16, %d with rounded x", len(f32), len(bf), len(rx))
			}
			errs := make([]float64, len(f32))
			var worst, worstRX float64
			var worstPos, same int
			for r := range f32 {
				errs[r] = relL2(bf[r], f32[r])
				if errs[r] > worst {
					worst, worstPos = errs[r], r
				}
				worstRX = max(worstRX, relL2(rx[r], f32[r]))
				if argmax(bf[r]) == argmax(f32[r]) {
					same++
				}
			}
			slices.Sort(errs)
			t.Logf("%s: %d positions; relative L2 error per position vs the f32 path: worst %.3g (row %d), median %.3g; rounded x with f32 products: worst %.3g; top-1 the same at %d/%d",
				fx, len(errs), worst, worstPos, errs[len(errs)/2], worstRX, same, len(errs))
			if lim := bf16ComputeLimit[fx]; worst > lim {
				t.Errorf("%s: bf16 compute logits differ from the f32 path's by %.3g (relative L2, row %d), limit %.3g", fx, worst, worstPos, lim)
			}
			if worst > 1.25*worstRX {
				t.Errorf("%s: bf16 compute worst error %.3g, more than 1.25× that of rounded x with f32 products (%.3g)", fx, worst, worstRX)
			}
			if worst == 0 {
				t.Errorf("%s: bf16 compute gave the f32 path's logits exactly: it did not run", fx)
			}
		})
	}
}

// relL2 is ‖got−want‖₂/‖want‖₂.
func relL2(got, want []float32) float64 {
	var num, den float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if math.IsNaN(num) {
		return math.Inf(1)
	}
	return math.Sqrt(num / den)
}
