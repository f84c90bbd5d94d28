package sampling

import "math"

// Constants of expNeg's Cody–Waite range reduction: ln2Hi has its low bits
// zero, so k*ln2Hi is exact for every k expNeg can produce.
const (
	ln2Hi  = 6.93147180369123816490e-01
	ln2Lo  = 1.90821492927058770002e-10
	log2e  = 1.44269504088896338700e+00
	expMin = -708.0 // below this, expNeg returns 0 rather than a subnormal
)

// expNeg returns e**x for x <= 0 with a relative error below 1e-15, and 0
// for x < -708 (including -Inf). Unlike math.Exp, which has assembly
// implementations on some architectures, it gives bit-identical results on
// every platform: each product is rounded by an explicit conversion, so no
// compiler may fuse it into a multiply-add.
//
// The reference is e**x = 2**k * e**r with k = round(x/ln 2) and
// |r| <= ln(2)/2, where e**r is its Taylor polynomial of degree 13
// (truncation error below 5e-18).
func expNeg(x float64) float64 {
	if !(x >= expMin) { // also catches NaN
		return 0
	}
	k := math.Floor(float64(x*log2e) + 0.5)
	r := x - float64(k*ln2Hi)
	r -= float64(k * ln2Lo)
	p := 1.0 / 6227020800 // 1/13!
	for _, c := range expCoeffs {
		p = float64(p*r) + c
	}
	// k >= -1021, so 2**k is a normal float64 and the product is exact.
	return float64(p * math.Float64frombits(uint64(int64(k)+1023)<<52))
}

// expCoeffs are 1/n! for n = 12 down to 0, the Horner coefficients of
// expNeg's polynomial after its leading 1/13!.
var expCoeffs = [...]float64{
	1.0 / 479001600,
	1.0 / 39916800,
	1.0 / 3628800,
	1.0 / 362880,
	1.0 / 40320,
	1.0 / 5040,
	1.0 / 720,
	1.0 / 120,
	1.0 / 24,
	1.0 / 6,
	1.0 / 2,
	1,
	1,
}
