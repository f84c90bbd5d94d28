package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestFP8Widen checks the in-register E4M3 widening of every kernel on
// every instruction set against the decoding table, exhaustively: each
// of the 254 non-NaN codes in each of 32 positions (both halves of the
// AVX2 registers, every lane) of each of the four weight rows, with x
// one-hot at that position and 2¹²⁰ there (the kernels read a code as
// E4M3·2⁻¹²⁰), so the dot product is the decoded value exactly (times 1,
// 2, 4 or 8 for the x rows of the 4×4 kernel).
func TestFP8Widen(t *testing.T) {
	for _, f := range []string{"", "avx2", "generic"} {
		restore := setFeatures(f)
		t.Run(Features(), func(t *testing.T) {
			const k = 32
			for code := range 256 {
				for p := range k {
					var c [4 * k]byte
					var want [4]float32
					for j := range 4 {
						cj := byte(code + 64*j)
						if cj&0x7f == 0x7f {
							cj = 0
						}
						c[j*k+p] = cj
						want[j] = e4m3Table[cj]
					}
					var x [4 * k]float32
					for i := range 4 {
						x[i*k+p] = float32(math.Ldexp(1, 120+i))
					}
					var o4 [4]float32
					var o16 [16]float32
					dot1x4FP8(&o4, x[:], c[:], k, k)
					dot4x4FP8(&o16, x[:], k, c[:], k, k)
					for j := range 4 {
						if o4[j] != want[j] {
							t.Fatalf("code %#02x at %d in row %d: dot1x4 %g, want %g", c[j*k+p], p, j, o4[j], want[j])
						}
						for i := range 4 {
							if w := want[j] * float32(int(1)<<i); o16[4*i+j] != w {
								t.Fatalf("code %#02x at %d in row %d, x row %d: dot4x4 %g, want %g", c[j*k+p], p, j, i, o16[4*i+j], w)
							}
						}
					}
				}
			}
		})
		restore()
	}
}

// TestFP8Kernels checks the FP8 dot kernels against the pure-Go reference
// on every length up to 70 and odd row strides, on every instruction set,
// and that the 1×4 and 4×4 kernels and a single row (ldc 0) agree bit for
// bit, as do the AVX-512 and AVX2 kernels.
func TestFP8Kernels(t *testing.T) {
	type res struct{ o4, o16, one []float32 }
	byFeatures := map[string][]res{}
	for _, f := range []string{"", "avx2", "generic"} {
		restore := setFeatures(f)
		name := Features()
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, 12))
			for k := 1; k <= 70; k++ {
				ldx, ldc := k+rng.IntN(5), k+rng.IntN(5)
				x := make([]float32, 3*ldx+k)
				for i := range x {
					x[i] = float32(math.Ldexp(rng.NormFloat64(), 120))
				}
				c := make([]byte, 3*ldc+k)
				for i := range c {
					for c[i] = byte(rng.IntN(256)); c[i]&0x7f == 0x7f; c[i] = byte(rng.IntN(256)) {
					}
				}
				var o4, ref4 [4]float32
				var o16 [16]float32
				dot1x4FP8(&o4, x, c, ldc, k)
				dot4x4FP8(&o16, x, ldx, c, ldc, k)
				r := res{o4: o4[:], o16: o16[:]}
				for j := range 4 {
					var one [4]float32
					dot1x4FP8(&one, x, c[j*ldc:j*ldc+k], 0, k)
					r.one = append(r.one, one[0])
					if one[0] != o4[j] || one[0] != o16[j] || one[1] != one[0] {
						t.Fatalf("k=%d row %d: single %g, 1x4 %g, 4x4 %g differ", k, j, one[0], o4[j], o16[j])
					}
				}
				for i := range 4 {
					dot1x4FP8Go(&ref4, x[i*ldx:], c, ldc, k)
					for j := range 4 {
						got, want := o16[4*i+j], ref4[j]
						var mag float64
						for l := range k {
							mag += math.Abs(float64(x[i*ldx+l]) * float64(fp8RawTable[c[j*ldc+l]]))
						}
						if d := math.Abs(float64(got - want)); d > 2e-6*math.Sqrt(float64(k))*mag {
							t.Fatalf("k=%d x row %d w row %d: %g, reference %g", k, i, j, got, want)
						}
					}
				}
				byFeatures[name] = append(byFeatures[name], r)
			}
		})
		restore()
	}
	a, b := byFeatures["avx512"], byFeatures["avx2"]
	if a == nil || b == nil {
		t.Logf("bit-identity of AVX-512 and AVX2 not checked: this processor lacks one")
		return
	}
	for i := range a {
		for j := range a[i].o16 {
			if a[i].o16[j] != b[i].o16[j] {
				t.Fatalf("k=%d: 4x4 element %d: avx512 %g, avx2 %g", i+1, j, a[i].o16[j], b[i].o16[j])
			}
		}
	}
}

// TestMatMulFP8BatchInvariant checks that a row's FP8 MatMul result does
// not depend on how many rows share the call, nor on the SIMD instruction
// set, on a slice that starts inside a block.
func TestMatMulFP8BatchInvariant(t *testing.T) {
	const m, n, k = 19, 37, 1029
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, m*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	f := FP8Matrix{Codes: make([]byte, n*k), Rows: n, Cols: k, BlockRows: 128, BlockCols: 128, RowOff: 110, ColOff: 3}
	for i := range f.Codes {
		for f.Codes[i] = byte(rng.IntN(256)); f.Codes[i]&0x7f == 0x7f; f.Codes[i] = byte(rng.IntN(256)) {
		}
	}
	f.Scales = make([]float32, f.ScaleRows()*f.ScaleCols())
	for i := range f.Scales {
		f.Scales[i] = float32(math.Exp(rng.NormFloat64()) / 448)
	}
	run := func(features string, rows int) []float32 {
		restore := setFeatures(features)
		defer restore()
		c := NewCPU()
		defer c.Close()
		w, err := c.WrapFP8(f)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, rows*n)
		c.MatMul(c.WrapF32(out), c.WrapF32(x[:rows*k]), w, rows, n, k)
		return out
	}
	want := run("", m)
	for _, features := range []string{"", "avx2"} {
		for _, rows := range []int{1, 2, 4, 5, 8} {
			got := run(features, rows)
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s, %d rows: element %d = %g, with %d rows %g", features, rows, i, got[i], m, want[i])
				}
			}
		}
	}
}
