//go:build !noasm

package kernels

import "golang.org/x/sys/cpu"

// useBF16DP selects the VDPBF16PS kernels of dpbf16_amd64.s; without
// AVX512_BF16 the pure-Go kernels of dpbf16_generic.go give the same
// results, slowly.
var useBF16DP = useAVX512 && cpu.X86.HasAVX512BF16

// BF16DotNative reports whether the bf16 compute path (ComputeBF16) runs
// on AVX512_BF16 instructions; without them it runs a pure-Go emulation
// many times slower than the f32 path.
func BF16DotNative() bool { return useBF16DP }

//go:noescape
func dot1x4DPAVX512(out *[4]float32, x, w *uint16, ldw, n int)

//go:noescape
func dot4x4DPAVX512(out *[16]float32, x *uint16, ldx int, w *uint16, ldw, n int)

//go:noescape
func roundBF16AVX512(dst *uint16, src *float32, n int)

// roundRowsBF16 stores bf16RNE(src[i]) in dst[i], by VCVTNEPS2BF16 where
// the processor has it.
func roundRowsBF16(dst []uint16, src []float32) {
	dst = dst[:len(src)]
	h := len(src) &^ 15
	if !useBF16DP || h == 0 {
		roundRowsBF16Go(dst, src)
		return
	}
	roundBF16AVX512(&dst[0], &src[0], h)
	roundRowsBF16Go(dst[h:], src[h:])
}

// dot1x4DP is dot1x4DPGo, with the whole blocks in assembly.
func dot1x4DP(out *[4]float32, x, w []uint16, ldw, k int) {
	if !useBF16DP {
		dot1x4DPGo(out, x, w, ldw, k)
		return
	}
	_ = x[k-1]
	_ = w[3*ldw+k-1]
	h := k &^ (dpBlock - 1)
	if h == 0 {
		*out = [4]float32{}
	} else {
		dot1x4DPAVX512(out, &x[0], &w[0], ldw, h)
	}
	if h < k {
		for j := range 4 {
			out[j] = dpTail(out[j], x, w[j*ldw:], h, k)
		}
	}
}

// dot4x4DP is dot4x4DPGo, with the whole blocks in assembly.
func dot4x4DP(out *[16]float32, x []uint16, ldx int, w []uint16, ldw, k int) {
	if !useBF16DP {
		dot4x4DPGo(out, x, ldx, w, ldw, k)
		return
	}
	_ = x[3*ldx+k-1]
	_ = w[3*ldw+k-1]
	h := k &^ (dpBlock - 1)
	if h == 0 {
		*out = [16]float32{}
	} else {
		dot4x4DPAVX512(out, &x[0], ldx, &w[0], ldw, h)
	}
	if h < k {
		for i := range 4 {
			for j := range 4 {
				out[4*i+j] = dpTail(out[4*i+j], x[i*ldx:], w[j*ldw:], h, k)
			}
		}
	}
}
