package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestBF16RNE checks the rounding of activations to bfloat16 against the
// float64 definition of round to nearest, ties to even, on every
// f32 pattern of a sample plus the edge cases VCVTNEPS2BF16 defines.
func TestBF16RNE(t *testing.T) {
	inf := float32(math.Inf(1))
	cases := []struct {
		in   float32
		want uint16
	}{
		{0, 0}, {float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3f80}, {-2, 0xc000},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even below
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, even above
		{math.Float32frombits(0x3f808001), 0x3f81}, // just above the tie
		{math.Float32frombits(0x3f807fff), 0x3f80}, // just below the tie
		{math.MaxFloat32, 0x7f80},                  // rounds up to +Inf
		{inf, 0x7f80}, {-inf, 0xff80},
		{math.Float32frombits(0x00000001), 0},      // subnormal: zero
		{math.Float32frombits(0x807fffff), 0x8000}, // subnormal: -0
		{math.Float32frombits(0x00800000), 0x0080}, // smallest normal
		{math.Float32frombits(0x7f800001), 0x7fc0}, // NaN with low payload stays NaN
		{math.Float32frombits(0xffc00000), 0xffc0},
	}
	for _, c := range cases {
		if got := bf16RNE(c.in); got != c.want {
			t.Errorf("bf16RNE(%#08x) = %#04x, want %#04x", math.Float32bits(c.in), got, c.want)
		}
	}
	// roundRowsBF16 (VCVTNEPS2BF16 where the processor has it) agrees
	// with bf16RNE on the cases, at every offset of a 16-lane block,
	// and on random bit patterns, NaN and subnormals included.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 15, 16, 17, 33, 1000} {
		src := make([]float32, n)
		for i := range src {
			if i%3 == 0 {
				src[i] = cases[(i/3)%len(cases)].in
			} else {
				src[i] = math.Float32frombits(rng.Uint32())
			}
		}
		dst := make([]uint16, n+1)
		dst[n] = 0x1234
		roundRowsBF16(dst[:n], src)
		for i, v := range src {
			if want := bf16RNE(v); dst[i] != want {
				t.Fatalf("n=%d: roundRowsBF16 of %#08x = %#04x, bf16RNE %#04x", n, math.Float32bits(v), dst[i], want)
			}
		}
		if dst[n] != 0x1234 {
			t.Fatalf("n=%d: roundRowsBF16 wrote past its end", n)
		}
	}
	for range 100000 {
		b := rng.Uint32()
		v := math.Float32frombits(b)
		if v != v || b&0x7f800000 == 0 || math.IsInf(float64(v), 0) {
			continue
		}
		got := float64(bf16ToF32(bf16RNE(v)))
		// The two bf16 neighbours of v (the upper one +Inf past the
		// largest finite) and the nearer one, ties to even.
		lo := float64(math.Float32frombits(b &^ 0xffff))
		ulp := math.Copysign(math.Ldexp(1, int(b>>23&0xff)-127-7), lo)
		hi := lo + ulp
		if math.Abs(hi) > math.MaxFloat32 {
			hi = math.Inf(int(math.Copysign(1, lo)))
		}
		d0, d1 := math.Abs(float64(v)-lo), math.Abs(lo+ulp-float64(v))
		want := lo
		if d1 < d0 || (d1 == d0 && (b>>16)&1 == 1) {
			want = hi
		}
		if got != want {
			t.Fatalf("bf16RNE(%#08x) = %g, want %g", b, got, want)
		}
	}
}

// TestDPKernels checks the bf16 dot kernels on every length up to 100 and
// odd row strides: against a float64 dot product of the same bf16 values,
// and the 1×4 and 4×4 kernels against the pure-Go emulation of
// VDPBF16PS, with AVX512_BF16 on and off.
func TestDPKernels(t *testing.T) {
	for _, f := range []string{"", "avx512"} {
		restore := setFeatures(f)
		t.Run(map[bool]string{true: "vdpbf16ps", false: "emulated"}[useBF16DP], func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 6))
			rbf := func(n int) []uint16 {
				s := make([]uint16, n)
				for i := range s {
					s[i] = bf16RNE(float32(rng.NormFloat64()))
				}
				return s
			}
			for k := 1; k <= 100; k++ {
				ldx, ldw := k+rng.IntN(5), k+rng.IntN(5)
				x, w := rbf(4*ldx), rbf(4*ldw)
				var o4 [4]float32
				var o16, r16 [16]float32
				dot4x4DP(&o16, x, ldx, w, ldw, k)
				dot4x4DPGo(&r16, x, ldx, w, ldw, k)
				for i := range 4 {
					dot1x4DP(&o4, x[i*ldx:], w, ldw, k)
					for j := range 4 {
						var want, scale float64
						for l := range k {
							p := float64(bf16ToF32(x[i*ldx+l])) * float64(bf16ToF32(w[j*ldw+l]))
							want += p
							scale += math.Abs(p)
						}
						got := o16[4*i+j]
						if d := math.Abs(float64(got) - want); d > 1.2e-7*math.Sqrt(float64(k))*scale {
							t.Fatalf("k=%d (%d, %d): %g, want %g", k, i, j, got, want)
						}
						if o4[j] != got {
							t.Fatalf("k=%d (%d, %d): 1x4 %g, 4x4 %g differ", k, i, j, o4[j], got)
						}
						if !dpBitExact {
							continue
						}
						if r16[4*i+j] != got {
							t.Fatalf("k=%d (%d, %d): %g, emulation %g", k, i, j, got, r16[4*i+j])
						}
					}
				}
			}
		})
		restore()
	}
}

// dpBitExact says the assembly matches dpBlockGo bit for bit.
const dpBitExact = true

// TestDPSpecials checks the assembly against the emulation bit for bit on
// the values where VDPBF16PS's rules show: subnormal inputs (read as
// zero), products and sums that underflow (flushed to zero) or overflow,
// infinities and NaN, mixed into ordinary values.
func TestDPSpecials(t *testing.T) {
	if !useBF16DP {
		t.Skip("no AVX512_BF16 kernels on this processor or build")
	}
	specials := []uint16{
		0x0001, 0x8001, 0x007f, // subnormal
		0x0080, 0x0081, 0x8080, // smallest normals: their products underflow
		0x1f80, 0x2000, 0x9f80, // 2^-64 and neighbours: products near the bottom of f32
		0x5f80, 0x7f00, 0xdf80, // large: products overflow
		0x7f80, 0xff80, 0x7fc0, // ±Inf, NaN
		0x3f80, 0xbf80, 0, 0x8000,
	}
	tiny := []uint16{0x0001, 0x8001, 0x007f, 0x0080, 0x8081, 0x1f80, 0x9fc0, 0x2000, 0x3f80, 0xbf80}
	rng := rand.New(rand.NewPCG(11, 12))
	same := func(a, b float32) bool { return a == b || (a != a && b != b) }
	for trial := range 400 {
		k := 32 * (1 + rng.IntN(4))
		x := make([]uint16, 4*k)
		w := make([]uint16, 4*k)
		// Half the trials hold only tiny values and ±1, so that
		// subnormal inputs, products and sums decide the results.
		pool := specials
		if trial%2 == 1 {
			pool = tiny
		}
		for i := range x {
			x[i] = pool[rng.IntN(len(pool))]
			w[i] = pool[rng.IntN(len(pool))]
			if trial%2 == 0 && rng.IntN(3) == 0 {
				x[i] = bf16RNE(float32(rng.NormFloat64()))
			}
		}
		var got, want [16]float32
		dot4x4DP(&got, x, k, w, k, k)
		dot4x4DPGo(&want, x, k, w, k, k)
		for i := range got {
			if !same(got[i], want[i]) {
				t.Fatalf("trial %d k=%d output %d: %g (%#08x), emulation %g (%#08x)", trial, k, i,
					got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
		}
	}
}
