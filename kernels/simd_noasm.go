//go:build noasm || !amd64

package kernels

// Features names the instruction set the kernels use: always "generic" here.
func Features() string { return "generic" }

// dotF32 returns the dot product of x and y[:len(x)]:
//
//	for i, v := range x {
//		s += v * y[i]
//	}
func dotF32(x, y []float32) float32 { return dotF32Go(x, y) }

// dotBF16 returns the dot product of x and the widened bfloat16 w[:len(x)]:
//
//	for i, v := range x {
//		s += v * bf16ToF32(w[i])
//	}
func dotBF16(x []float32, w []uint16) float32 { return dotBF16Go(x, w) }

// dot1x4F32 dots x[:k] with four rows of w, ldw elements apart:
//
//	for j := range 4 {
//		out[j] = dotF32(x[:k], w[j*ldw:j*ldw+k])
//	}
func dot1x4F32(out *[4]float32, x, w []float32, ldw, k int) { dot1x4F32Go(out, x, w, ldw, k) }

// dot1x4BF16 dots x[:k] with four bfloat16 rows of w, ldw elements apart:
//
//	for j := range 4 {
//		out[j] = dotBF16(x[:k], w[j*ldw:j*ldw+k])
//	}
func dot1x4BF16(out *[4]float32, x []float32, w []uint16, ldw, k int) {
	dot1x4BF16Go(out, x, w, ldw, k)
}

// dot4x4F32 dots four rows of x with four rows of w:
//
//	for i := range 4 {
//		for j := range 4 {
//			out[4*i+j] = dotF32(x[i*ldx:i*ldx+k], w[j*ldw:j*ldw+k])
//		}
//	}
func dot4x4F32(out *[16]float32, x []float32, ldx int, w []float32, ldw, k int) {
	dot4x4F32Go(out, x, ldx, w, ldw, k)
}

// dot4x4BF16 dots four rows of x with four bfloat16 rows of w:
//
//	for i := range 4 {
//		for j := range 4 {
//			out[4*i+j] = dotBF16(x[i*ldx:i*ldx+k], w[j*ldw:j*ldw+k])
//		}
//	}
func dot4x4BF16(out *[16]float32, x []float32, ldx int, w []uint16, ldw, k int) {
	dot4x4BF16Go(out, x, ldx, w, ldw, k)
}

// axpy adds a times x to y:
//
//	for i := range y {
//		y[i] += a * x[i]
//	}
func axpy(a float32, x, y []float32) { axpyGo(a, x, y) }

func setFeatures(string) (restore func()) { return func() {} }

// prefetch does nothing in the pure-Go build: Go has no prefetch hint.
func prefetch(s []float32) {}

// axpy4 adds a[j] times x to four rows of y, ldy elements apart:
//
//	for j := range 4 {
//		axpy(a[j], x, y[j*ldy:j*ldy+len(x)])
//	}
func axpy4(a *[4]float32, x, y []float32, ldy int) { axpy4Go(a, x, y, ldy) }

// expSum stores the exponentials of s·src-m, rounded to float32, in dst
// and returns their sum in float64:
//
//	for i, v := range src {
//		e := float32(math.Exp(float64(s*v - m)))
//		dst[i] = e
//		sum += float64(e)
//	}
func expSum(dst, src []float32, s, m float32) float64 { return expSumGo(dst, src, s, m) }

// gemvBF16 computes out[r] = dotBF16(x[:k], w[r*k:(r+1)*k]) for every r
// in [0, len(out)), four rows at a time:
//
//	for r := range out {
//		out[r] = dotBF16(x[:k], w[r*k:(r+1)*k])
//	}
func gemvBF16(out, x []float32, w []uint16, k int) { gemvBF16Go(out, x, w, k) }

// gemvPrefetch, gemvStreams and gemv2MinElems are unused by the pure-Go
// kernels.
var (
	gemvPrefetch  = 8 << 10
	gemvStreams   = 1
	gemv2MinElems = 0
)
