//go:build noasm || !amd64

package kernels

// dot1x4FP8 dots x[:k] with four rows of E4M3 codes, ldc bytes apart,
// each code read as fp8RawTable[c] = E4M3ToF32(c)·2⁻¹²⁰ (NaN codes
// excluded; the caller folds 2¹²⁰ and the block scales into x):
//
//	for j := range 4 {
//		for i := range k {
//			out[j] += x[i] * fp8RawTable[c[j*ldc+i]]
//		}
//	}
func dot1x4FP8(out *[4]float32, x []float32, c []byte, ldc, k int) { dot1x4FP8Go(out, x, c, ldc, k) }

// dot4x4FP8 dots four rows of x, ldx apart, with four rows of codes:
//
//	for i := range 4 {
//		dot1x4FP8(out[4*i:4*i+4], x[i*ldx:], c, ldc, k)
//	}
func dot4x4FP8(out *[16]float32, x []float32, ldx int, c []byte, ldc, k int) {
	dot4x4FP8Go(out, x, ldx, c, ldc, k)
}
