package kernels

import "math"

// The pure-Go kernels below are the reference for the assembly in
// simd_amd64.s; the noasm build and processors without AVX2 and FMA use
// them directly.

// bf16ToF32 widens raw bfloat16 bits: bf16 is the upper half of an f32.
func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func dotF32Go(x, y []float32) float32 {
	var s float32
	y = y[:len(x)]
	for i, v := range x {
		s += v * y[i]
	}
	return s
}

func dotBF16Go(x []float32, w []uint16) float32 {
	var s float32
	w = w[:len(x)]
	for i, v := range x {
		s += v * bf16ToF32(w[i])
	}
	return s
}

func dot1x4F32Go(out *[4]float32, x, w []float32, ldw, k int) {
	for j := range 4 {
		out[j] = dotF32Go(x[:k], w[j*ldw:j*ldw+k])
	}
}

func dot1x4BF16Go(out *[4]float32, x []float32, w []uint16, ldw, k int) {
	for j := range 4 {
		out[j] = dotBF16Go(x[:k], w[j*ldw:j*ldw+k])
	}
}

func dot4x4F32Go(out *[16]float32, x []float32, ldx int, w []float32, ldw, k int) {
	for i := range 4 {
		for j := range 4 {
			out[4*i+j] = dotF32Go(x[i*ldx:i*ldx+k], w[j*ldw:j*ldw+k])
		}
	}
}

func dot4x4BF16Go(out *[16]float32, x []float32, ldx int, w []uint16, ldw, k int) {
	for i := range 4 {
		for j := range 4 {
			out[4*i+j] = dotBF16Go(x[i*ldx:i*ldx+k], w[j*ldw:j*ldw+k])
		}
	}
}

func axpyGo(a float32, x, y []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

func axpy4Go(a *[4]float32, x, y []float32, ldy int) {
	n := len(x)
	for j := range 4 {
		axpyGo(a[j], x, y[j*ldy:j*ldy+n])
	}
}

func expSumGo(dst, src []float32, s, m float32) float64 {
	var sum float64
	src = src[:len(dst)]
	for i, v := range src {
		e := float32(math.Exp(float64(s*v - m)))
		dst[i] = e
		sum += float64(e)
	}
	return sum
}

func gemvBF16Go(out, x []float32, w []uint16, k int) {
	r := 0
	var acc [4]float32
	for ; r+4 <= len(out); r += 4 {
		dot1x4BF16(&acc, x, w[r*k:], k, k)
		copy(out[r:r+4], acc[:])
	}
	for ; r < len(out); r++ {
		out[r] = dotBF16(x[:k], w[r*k:(r+1)*k])
	}
}
