//go:build !noasm

package kernels

import (
	"math"

	"golang.org/x/sys/cpu"
)

// The assembly kernels in simd_amd64.s handle a multiple of 16 elements;
// the wrappers below add the remainder with math.FMA, and fall back to the
// pure-Go kernels of simd_generic.go on processors without AVX2 and FMA.
var (
	useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL
	useAVX2   = cpu.X86.HasAVX2 && cpu.X86.HasFMA
)

// Features names the instruction set the kernels use: "avx512", "avx2" or
// "generic".
func Features() string {
	switch {
	case useAVX512:
		return "avx512"
	case useAVX2:
		return "avx2"
	}
	return "generic"
}

//go:noescape
func dotF32AVX512(x, y *float32, n int) float32

//go:noescape
func dotBF16AVX512(x *float32, w *uint16, n int) float32

//go:noescape
func dot1x4F32AVX512(out *[4]float32, x, w *float32, ldw, n int)

//go:noescape
func dot1x4BF16AVX512(out *[4]float32, x *float32, w *uint16, ldw, n int)

//go:noescape
func dot4x4F32AVX512(out *[16]float32, x *float32, ldx int, w *float32, ldw, n int)

//go:noescape
func dot4x4BF16AVX512(out *[16]float32, x *float32, ldx int, w *uint16, ldw, n int)

//go:noescape
func axpyAVX512(a float32, x, y *float32, n int)

//go:noescape
func dotF32AVX2(x, y *float32, n int) float32

//go:noescape
func dotBF16AVX2(x *float32, w *uint16, n int) float32

//go:noescape
func dot1x4F32AVX2(out *[4]float32, x, w *float32, ldw, n int)

//go:noescape
func dot1x4BF16AVX2(out *[4]float32, x *float32, w *uint16, ldw, n int)

//go:noescape
func axpyAVX2(a float32, x, y *float32, n int)

func dotF32(x, y []float32) float32 {
	n := len(x)
	y = y[:n]
	h := n &^ 15
	var s float32
	switch {
	case h == 0:
	case useAVX512:
		s = dotF32AVX512(&x[0], &y[0], h)
	case useAVX2:
		s = dotF32AVX2(&x[0], &y[0], h)
	default:
		return dotF32Go(x, y)
	}
	for i := h; i < n; i++ {
		s = fma32(x[i], y[i], s)
	}
	return s
}

func dotBF16(x []float32, w []uint16) float32 {
	n := len(x)
	w = w[:n]
	h := n &^ 15
	var s float32
	switch {
	case h == 0:
	case useAVX512:
		s = dotBF16AVX512(&x[0], &w[0], h)
	case useAVX2:
		s = dotBF16AVX2(&x[0], &w[0], h)
	default:
		return dotBF16Go(x, w)
	}
	for i := h; i < n; i++ {
		s = fma32(x[i], bf16ToF32(w[i]), s)
	}
	return s
}

// fma32 returns a·b+c with one float64 rounding and one float32 rounding:
// the float32 product is exact in float64, and the result differs from a
// float32 FMA at most in rare halfway cases of the last bit.
func fma32(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}

func dot1x4F32(out *[4]float32, x, w []float32, ldw, k int) {
	_ = x[k-1]
	_ = w[3*ldw+k-1]
	h := k &^ 15
	switch {
	case h == 0:
		*out = [4]float32{}
	case useAVX512:
		dot1x4F32AVX512(out, &x[0], &w[0], ldw, h)
	case useAVX2:
		dot1x4F32AVX2(out, &x[0], &w[0], ldw, h)
	default:
		dot1x4F32Go(out, x, w, ldw, k)
		return
	}
	for j := range 4 {
		wr := w[j*ldw : j*ldw+k]
		s := out[j]
		for i := h; i < k; i++ {
			s = fma32(x[i], wr[i], s)
		}
		out[j] = s
	}
}

func dot1x4BF16(out *[4]float32, x []float32, w []uint16, ldw, k int) {
	_ = x[k-1]
	_ = w[3*ldw+k-1]
	h := k &^ 15
	switch {
	case h == 0:
		*out = [4]float32{}
	case useAVX512:
		dot1x4BF16AVX512(out, &x[0], &w[0], ldw, h)
	case useAVX2:
		dot1x4BF16AVX2(out, &x[0], &w[0], ldw, h)
	default:
		dot1x4BF16Go(out, x, w, ldw, k)
		return
	}
	for j := range 4 {
		wr := w[j*ldw : j*ldw+k]
		s := out[j]
		for i := h; i < k; i++ {
			s = fma32(x[i], bf16ToF32(wr[i]), s)
		}
		out[j] = s
	}
}

func dot4x4F32(out *[16]float32, x []float32, ldx int, w []float32, ldw, k int) {
	_ = x[3*ldx+k-1]
	_ = w[3*ldw+k-1]
	h := k &^ 15
	switch {
	case h == 0:
		*out = [16]float32{}
	case useAVX512:
		dot4x4F32AVX512(out, &x[0], ldx, &w[0], ldw, h)
	default:
		// Without AVX-512 there are too few registers for 16
		// accumulators; the four w rows stay in L1 across the x rows.
		for i := range 4 {
			dot1x4F32((*[4]float32)(out[4*i:]), x[i*ldx:], w, ldw, k)
		}
		return
	}
	for i := range 4 {
		xr := x[i*ldx : i*ldx+k]
		for j := range 4 {
			wr := w[j*ldw : j*ldw+k]
			s := out[4*i+j]
			for l := h; l < k; l++ {
				s = fma32(xr[l], wr[l], s)
			}
			out[4*i+j] = s
		}
	}
}

func dot4x4BF16(out *[16]float32, x []float32, ldx int, w []uint16, ldw, k int) {
	_ = x[3*ldx+k-1]
	_ = w[3*ldw+k-1]
	h := k &^ 15
	switch {
	case h == 0:
		*out = [16]float32{}
	case useAVX512:
		dot4x4BF16AVX512(out, &x[0], ldx, &w[0], ldw, h)
	default:
		for i := range 4 {
			dot1x4BF16((*[4]float32)(out[4*i:]), x[i*ldx:], w, ldw, k)
		}
		return
	}
	for i := range 4 {
		xr := x[i*ldx : i*ldx+k]
		for j := range 4 {
			wr := w[j*ldw : j*ldw+k]
			s := out[4*i+j]
			for l := h; l < k; l++ {
				s = fma32(xr[l], bf16ToF32(wr[l]), s)
			}
			out[4*i+j] = s
		}
	}
}

func axpy(a float32, x, y []float32) {
	n := len(y)
	x = x[:n]
	h := n &^ 15
	switch {
	case h == 0:
	case useAVX512:
		axpyAVX512(a, &x[0], &y[0], h)
	case useAVX2:
		axpyAVX2(a, &x[0], &y[0], h)
	default:
		axpyGo(a, x, y)
		return
	}
	for i := h; i < n; i++ {
		y[i] = fma32(a, x[i], y[i])
	}
}

// setFeatures limits the kernels to the named instruction set, no further
// than the processor allows; for tests.
// "avx512" keeps AVX-512 but turns off the AVX512_BF16 kernels.
func setFeatures(name string) (restore func()) {
	a512, a2, dp := useAVX512, useAVX2, useBF16DP
	switch name {
	case "avx512":
		useBF16DP = false
	case "avx2":
		useAVX512, useBF16DP = false, false
	case "generic":
		useAVX512, useAVX2, useBF16DP = false, false, false
	}
	return func() { useAVX512, useAVX2, useBF16DP = a512, a2, dp }
}

//go:noescape
func prefetchAsm(p *float32, n int)

// prefetch asks for the cache lines of s to be loaded; it has no effect
// on results.
func prefetch(s []float32) {
	if len(s) > 0 {
		prefetchAsm(&s[0], len(s))
	}
}

//go:noescape
func axpy4AVX512(a *[4]float32, x, y *float32, ldy, n int)

//go:noescape
func axpy4AVX2(a *[4]float32, x, y *float32, ldy, n int)

func axpy4(a *[4]float32, x, y []float32, ldy int) {
	n := len(x)
	if n == 0 {
		return
	}
	_ = y[3*ldy+n-1]
	h := n &^ 15
	switch {
	case h == 0:
	case useAVX512:
		axpy4AVX512(a, &x[0], &y[0], ldy, h)
	case useAVX2:
		axpy4AVX2(a, &x[0], &y[0], ldy, h)
	default:
		axpy4Go(a, x, y, ldy)
		return
	}
	for j := range 4 {
		yr := y[j*ldy : j*ldy+n]
		for i := h; i < n; i++ {
			yr[i] = fma32(a[j], x[i], yr[i])
		}
	}
}

// expConsts are the constants of expSumAVX512: the clamp keeps 2^k
// finite and the result still 0 or +Inf in float32 where it must be.
var expConsts = [12]float64{
	-200, 200, math.Log2E, math.Ln2,
	1.0 / 362880, 1.0 / 40320, 1.0 / 5040, 1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5,
}

//go:noescape
func expSumAVX512(dst, src *float32, s, m float32, c *[12]float64, n int) float64

func expSum(dst, src []float32, s, m float32) float64 {
	n := len(dst)
	src = src[:n]
	h := n &^ 7
	if !useAVX512 || h == 0 {
		return expSumGo(dst, src, s, m)
	}
	sum := expSumAVX512(&dst[0], &src[0], s, m, &expConsts, h)
	return sum + expSumGo(dst[h:], src[h:], s, m)
}

//go:noescape
func gemvBF16AVX512(out, x *float32, w *uint16, k, rows, pd int)

// gemvPrefetch is how far ahead of its four-row group gemvBF16 prefetches
// weights, beyond the group itself.
var gemvPrefetch = 8 << 10

func gemvBF16(out, x []float32, w []uint16, k int) {
	rows := len(out) &^ 3
	if !useAVX512 || k&15 != 0 || rows == 0 {
		gemvBF16Go(out, x, w, k)
		return
	}
	_ = x[k-1]
	_ = w[len(out)*k-1]
	pd := 8*k + gemvPrefetch
	r := 0
	if rows*k >= gemv2MinElems {
		// Two streams of half the rows each; a last group of four, when
		// the groups are odd, runs alone.
		if h := rows / 8 * 4; gemvStreams == 2 && h > 0 {
			gemv2BF16AVX512(&out[0], &x[0], &w[0], k, h, pd)
			r = 2 * h
		}
	}
	if r < rows {
		gemvBF16AVX512(&out[r], &x[0], &w[r*k], k, rows-r, pd)
	}
	gemvBF16Go(out[rows:], x, w[rows*k:], k)
}

// gemvStreams is how many weight streams gemvBF16 reads at once (1 or 2).
var gemvStreams = 2

// gemv2MinElems is the smallest range (in weights) read as two streams.
var gemv2MinElems = 1 << 19

// gemv2BF16AVX512 is gemvBF16AVX512 over 2·rows rows read as two streams,
// rows [0, rows) and [rows, 2·rows), four of each at a time.
func gemv2BF16AVX512(out, x *float32, w *uint16, k, rows, pd int)
