package kernels

import "math"

// The bf16 compute path (WithCompute(ComputeBF16)): x is rounded to
// bfloat16 once per matmul and dotted with bfloat16 weights pairwise, as
// AVX512_BF16's VCVTNEPS2BF16 and VDPBF16PS do. The pure-Go kernels below
// spell out those instructions' arithmetic; they are the reference for
// dpbf16_amd64.s and what the noasm build and processors without
// AVX512_BF16 run.

// dpBlock is the number of elements one VDPBF16PS of 512 bits reads from
// each operand: 16 f32 lanes of two bf16 each.
const dpBlock = 32

// bf16RNE rounds v to the nearest bfloat16, ties to even, as VCVTNEPS2BF16
// does: a subnormal input becomes a zero of its sign (the instruction
// treats it as zero), and a NaN stays a NaN, quiet.
func bf16RNE(v float32) uint16 {
	b := math.Float32bits(v)
	switch {
	case b&0x7fffffff > 0x7f800000:
		return uint16(b>>16) | 0x40
	case b&0x7f800000 == 0:
		return uint16(b>>16) & 0x8000
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// roundRowsBF16Go stores bf16RNE(src[i]) in dst[i].
func roundRowsBF16Go(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = bf16RNE(v)
	}
}

// dazBF16 widens a bfloat16 as VDPBF16PS reads it: a subnormal is zero.
func dazBF16(h uint16) float32 {
	if h&0x7f80 == 0 {
		h &= 0x8000
	}
	return bf16ToF32(h)
}

// ftz32 is v, or a zero of its sign when v is subnormal.
func ftz32(v float32) float32 {
	if b := math.Float32bits(v); b&0x7f800000 == 0 {
		return math.Float32frombits(b & 0x80000000)
	}
	return v
}

// dpBlockGo is one VDPBF16PS over 32 elements of x and w: lane i adds the
// product of elements 2i+1, then that of 2i, each step one f32 rounding
// (the product of two bf16 is exact in f32) with subnormal inputs read as
// zero and a subnormal result flushed to zero.
func dpBlockGo(acc *[16]float32, x, w []uint16) {
	x, w = x[:dpBlock], w[:dpBlock]
	for i := range acc {
		a := ftz32(acc[i])
		a = ftz32(a + dazBF16(x[2*i+1])*dazBF16(w[2*i+1]))
		a = ftz32(a + dazBF16(x[2*i])*dazBF16(w[2*i]))
		acc[i] = a
	}
}

// reduce16 folds 16 lanes as the assembly does: upper 8 onto lower 8,
// upper 4 onto lower 4, then two pairwise adds.
func reduce16(a *[16]float32) float32 {
	var b [4]float32
	for i := range b {
		b[i] = (a[i] + a[i+8]) + (a[i+4] + a[i+12])
	}
	return (b[0] + b[1]) + (b[2] + b[3])
}

// dpTail adds the elements [h, k) past the last whole block to s, in
// order, in plain f32 (the products are exact).
func dpTail(s float32, x, w []uint16, h, k int) float32 {
	x, w = x[:k], w[:k]
	for l := h; l < k; l++ {
		s += bf16ToF32(x[l]) * bf16ToF32(w[l])
	}
	return s
}

// dotDPGo is the bf16 dot product of x[:k] and w[:k]: the whole blocks by
// dpBlockGo into one accumulator, reduced, then the tail.
func dotDPGo(x, w []uint16, k int) float32 {
	var acc [16]float32
	h := k &^ (dpBlock - 1)
	for l := 0; l < h; l += dpBlock {
		dpBlockGo(&acc, x[l:], w[l:])
	}
	return dpTail(reduce16(&acc), x, w, h, k)
}

func dot1x4DPGo(out *[4]float32, x, w []uint16, ldw, k int) {
	for j := range 4 {
		out[j] = dotDPGo(x, w[j*ldw:], k)
	}
}

func dot4x4DPGo(out *[16]float32, x []uint16, ldx int, w []uint16, ldw, k int) {
	for i := range 4 {
		for j := range 4 {
			out[4*i+j] = dotDPGo(x[i*ldx:], w[j*ldw:], k)
		}
	}
}
