package collective

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestOneRoundAllReduce: the one-round all-reduce gives, with an f32 wire,
// bitwise the two-round result on every member, and with bf16 the same
// result on every member; below and above the threshold, odd lengths
// included.
func TestOneRoundAllReduce(t *testing.T) {
	for _, dt := range []DType{F32, BF16} {
		for _, T := range []int{2, 3, 4} {
			for _, n := range []int{1, 7, 1000} {
				t.Run(fmt.Sprintf("%v/T%d/n%d", dt, T, n), func(t *testing.T) {
					in := make([][]float32, T)
					rng := rand.New(rand.NewPCG(uint64(T), uint64(n)))
					for w := range in {
						in[w] = make([]float32, n)
						for i := range in[w] {
							in[w][i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
						}
					}
					run := func(oneRound int) [][]float32 {
						meshes := newCluster(t, T, func(_ int, c *MeshConfig) { c.WireDType, c.OneRoundAllReduceBytes = dt, oneRound })
						out := make([][]float32, T)
						for w := range out {
							out[w] = append([]float32(nil), in[w]...)
						}
						for w, err := range runAll(workers(T), func(w int) error {
							return meshes[w].AllReduceSum(context.Background(), Tag{Step: 1, Phase: attn}, workers(T), out[w])
						}) {
							if err != nil {
								t.Fatalf("worker %d: %v", w, err)
							}
						}
						for w := 1; w < T; w++ {
							if diff := cmp.Diff(bitsOf(out[0]), bitsOf(out[w])); diff != "" {
								t.Fatalf("one round %d: worker %d differs from worker 0 (-want +got):\n%s", oneRound, w, diff)
							}
						}
						if s := meshes[0].Stats().Phases[attn]; s.MessagesSent == 0 {
							t.Fatalf("no all-reduce message was sent")
						}
						return out
					}
					one, two := run(1<<20), run(0)
					if dt == F32 {
						if diff := cmp.Diff(bitsOf(two[0]), bitsOf(one[0])); diff != "" {
							t.Errorf("one round differs from two rounds (-want +got):\n%s", diff)
						}
					}
					for i := range n {
						var want, mag float64
						for w := range T {
							want += float64(in[w][i])
							mag += math.Abs(float64(in[w][i]))
						}
						tol := 1e-6 * mag // f32: one rounding
						if dt == BF16 {
							tol = 2e-2 * mag // 8 bits of mantissa, rounded before and after the sum
						}
						if d := math.Abs(float64(one[0][i]) - want); d > tol {
							t.Fatalf("element %d: %v, want %v", i, one[0][i], want)
						}
					}
				})
			}
		}
	}
}

func bitsOf(x []float32) []uint32 {
	out := make([]uint32, len(x))
	for i, v := range x {
		out[i] = math.Float32bits(v)
	}
	return out
}
