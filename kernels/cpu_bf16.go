package kernels

import (
	"errors"
	"fmt"
)

// Compute is the arithmetic of matmuls with BF16 weights.
type Compute uint8

const (
	// ComputeF32 widens the bf16 weights to f32 and multiplies them with
	// f32 activations by FMA: x keeps its precision. The default.
	ComputeF32 Compute = iota
	// ComputeBF16 rounds the activations to bf16 (nearest, ties to even)
	// once per matmul and multiplies pairs of bf16 with VDPBF16PS
	// (AVX512_BF16), accumulating in f32, as llama.cpp's BF16 path does:
	// twice the multiply-adds per instruction, for the matmuls that are
	// bound by arithmetic rather than memory. It applies where x has two
	// rows or more (batched decode, prefill, the lm_head of a batch); one
	// row (decode of one sequence, a lone token at an expert) stays on
	// the f32 path, which reads the weights as fast and loses nothing.
	ComputeBF16
)

// ErrCompute is the error of ParseCompute for an unknown name.
var ErrCompute = errors.New("kernels: unknown compute type")

// String returns "f32" or "bf16".
func (c Compute) String() string {
	switch c {
	case ComputeF32:
		return "f32"
	case ComputeBF16:
		return "bf16"
	}
	return fmt.Sprintf("Compute(%d)", uint8(c))
}

// ParseCompute parses "f32" or "bf16".
func ParseCompute(s string) (Compute, error) {
	switch s {
	case "f32":
		return ComputeF32, nil
	case "bf16":
		return ComputeBF16, nil
	}
	return 0, fmt.Errorf("%w %q: want f32 or bf16", ErrCompute, s)
}

// WithCompute sets the arithmetic of matmuls with BF16 weights (see
// Compute); ComputeF32 by default. On a processor without AVX512_BF16
// (BF16DotNative false) ComputeBF16 gives the same results through a
// pure-Go emulation, many times slower.
func WithCompute(c Compute) CPUOption {
	return func(cfg *cpuConfig) { cfg.compute = c }
}

// Compute reports the arithmetic of BF16 matmuls.
func (c *CPU) Compute() Compute { return c.compute }

// useDP reports whether a BF16 matmul with m rows of x runs on the bf16
// dot kernels.
func (c *CPU) useDP(dt DType, m int) bool {
	return c.compute == ComputeBF16 && dt == BF16 && m >= 2
}

// dpX returns x rounded to bfloat16 in the CPU's scratch, converted by
// the pool's threads when it is large.
func (c *CPU) dpX(x []float32) []uint16 {
	if cap(c.xdp) < len(x) {
		c.xdp = make([]uint16, len(x))
	}
	r := c.xdp[:len(x)]
	const piece = 1 << 14
	tasks := c.pool.split((len(x)+piece-1)/piece, piece/8)
	c.pool.run(tasks, func(_, t int) {
		lo, hi := chunk(len(x), tasks, t, 16)
		roundRowsBF16(r[lo:hi], x[lo:hi])
	})
	return r
}

// matmulDPRange computes columns [lo, hi) of out[m, ldo] = x[m,k] · w[n,k]ᵀ
// with x and w in bfloat16, by the bf16 dot kernels: four weight rows at
// a time against blocks of x rows that stay in L2, four x rows at a time
// with the 4×4 kernel and the rest with the 1×4 one, which give the same
// bits. lo is a multiple of 4.
func matmulDPRange(o []float32, x, w []uint16, m, k, lo, hi, ldo int) {
	mb := m
	if m*k*2 > xBlockBytes {
		mb = max(4, xBlockBytes/(k*2)&^3)
	}
	var acc16 [16]float32
	var acc4 [4]float32
	for i0 := 0; i0 < m; i0 += mb {
		i1 := min(m, i0+mb)
		j := lo
		for ; j+4 <= hi; j += 4 {
			i := i0
			for ; i+4 <= i1; i += 4 {
				dot4x4DP(&acc16, x[i*k:], k, w[j*k:], k, k)
				for a := range 4 {
					copy(o[(i+a)*ldo+j:(i+a)*ldo+j+4], acc16[4*a:4*a+4])
				}
			}
			for ; i < i1; i++ {
				dot1x4DP(&acc4, x[i*k:], w[j*k:], k, k)
				copy(o[i*ldo+j:i*ldo+j+4], acc4[:])
			}
		}
		// The last n mod 4 columns: the 1×4 kernel with a row stride of
		// 0 reads one weight row as all four, with the same bits.
		for ; j < hi; j++ {
			for i := i0; i < i1; i++ {
				dot1x4DP(&acc4, x[i*k:], w[j*k:], 0, k)
				o[i*ldo+j] = acc4[0]
			}
		}
	}
}
