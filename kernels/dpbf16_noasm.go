//go:build noasm || !amd64

package kernels

// useBF16DP is always false here: there are no assembly kernels.
var useBF16DP = false

// BF16DotNative reports whether the bf16 compute path (ComputeBF16) runs
// on AVX512_BF16 instructions: never in this build, which runs the pure-Go
// emulation.
func BF16DotNative() bool { return false }

// roundRowsBF16 stores bf16RNE(src[i]) in dst[i]:
//
//	for i, v := range src {
//		dst[i] = bf16RNE(v)
//	}
func roundRowsBF16(dst []uint16, src []float32) { roundRowsBF16Go(dst, src) }

// dot1x4DP dots the bfloat16 x[:k] with four bfloat16 rows of w, ldw
// elements apart, as VDPBF16PS would:
//
//	for j := range 4 {
//		out[j] = dotDPGo(x, w[j*ldw:], k)
//	}
func dot1x4DP(out *[4]float32, x, w []uint16, ldw, k int) { dot1x4DPGo(out, x, w, ldw, k) }

// dot4x4DP dots four bfloat16 rows of x with four bfloat16 rows of w:
//
//	for i := range 4 {
//		for j := range 4 {
//			out[4*i+j] = dotDPGo(x[i*ldx:], w[j*ldw:], k)
//		}
//	}
func dot4x4DP(out *[16]float32, x []uint16, ldx int, w []uint16, ldw, k int) {
	dot4x4DPGo(out, x, ldx, w, ldw, k)
}
