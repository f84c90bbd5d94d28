//go:build !noasm

package kernels

// The FP8 kernels of fp8_amd64.s handle a multiple of 16 elements; the
// wrappers below add the remainder with math.FMA, and use the pure-Go
// kernels of cpu_fp8.go on processors without AVX2 and FMA. They follow
// the instruction-set choice of simd_amd64.go (useAVX512, useAVX2, and
// setFeatures for tests).

//go:noescape
func dot1x4FP8AVX512(out *[4]float32, x *float32, c *byte, ldc, n int)

//go:noescape
func dot4x4FP8AVX512(out *[16]float32, x *float32, ldx int, c *byte, ldc, n int)

//go:noescape
func dot1x4FP8AVX2(out *[4]float32, x *float32, c *byte, ldc, n int)

// dot1x4FP8 dots x[:k] with four rows of E4M3 codes, ldc bytes apart,
// each code read as fp8RawTable[c] = E4M3ToF32(c)·2⁻¹²⁰ (NaN codes
// excluded; the caller folds 2¹²⁰ and the block scales into x):
//
//	for j := range 4 {
//		for i := range k {
//			out[j] += x[i] * fp8RawTable[c[j*ldc+i]]
//		}
//	}
func dot1x4FP8(out *[4]float32, x []float32, c []byte, ldc, k int) {
	_ = x[k-1]
	_ = c[3*ldc+k-1]
	h := k &^ 15
	switch {
	case h == 0:
		*out = [4]float32{}
	case useAVX512:
		dot1x4FP8AVX512(out, &x[0], &c[0], ldc, h)
	case useAVX2:
		dot1x4FP8AVX2(out, &x[0], &c[0], ldc, h)
	default:
		dot1x4FP8Go(out, x, c, ldc, k)
		return
	}
	for j := range 4 {
		cr := c[j*ldc : j*ldc+k]
		s := out[j]
		for i := h; i < k; i++ {
			s = fma32(x[i], fp8RawTable[cr[i]], s)
		}
		out[j] = s
	}
}

// dot4x4FP8 dots four rows of x, ldx apart, with four rows of codes:
//
//	for i := range 4 {
//		dot1x4FP8(out[4*i:4*i+4], x[i*ldx:], c, ldc, k)
//	}
func dot4x4FP8(out *[16]float32, x []float32, ldx int, c []byte, ldc, k int) {
	_ = x[3*ldx+k-1]
	_ = c[3*ldc+k-1]
	h := k &^ 15
	switch {
	case h == 0:
		*out = [16]float32{}
	case useAVX512:
		dot4x4FP8AVX512(out, &x[0], ldx, &c[0], ldc, h)
	default:
		// Without AVX-512 there are too few registers for 16
		// accumulators; the four code rows stay in L1 across the x rows.
		for i := range 4 {
			dot1x4FP8((*[4]float32)(out[4*i:]), x[i*ldx:], c, ldc, k)
		}
		return
	}
	for i := range 4 {
		xr := x[i*ldx : i*ldx+k]
		for j := range 4 {
			cr := c[j*ldc : j*ldc+k]
			s := out[4*i+j]
			for l := h; l < k; l++ {
				s = fma32(xr[l], fp8RawTable[cr[l]], s)
			}
			out[4*i+j] = s
		}
	}
}
