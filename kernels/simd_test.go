package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestKernels checks each kernel against the pure-Go reference on every
// length up to 70 and odd row strides, on every instruction set this
// processor has, and that the dot kernels agree bit for bit with each
// other.
func TestKernels(t *testing.T) {
	for _, f := range []string{"", "avx2", "generic"} {
		restore := setFeatures(f)
		t.Run(Features(), testKernels)
		restore()
	}
}

func testKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	randf := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.NormFloat64())
		}
		return s
	}
	near := func(what string, k int, got, want float32) {
		t.Helper()
		if d := math.Abs(float64(got - want)); d > 1e-5*math.Sqrt(float64(k+1))*(1+math.Abs(float64(want))) {
			t.Fatalf("%s k=%d: %g, want %g", what, k, got, want)
		}
	}
	for k := 0; k <= 70; k++ {
		ldx, ldw := k+rng.IntN(5), k+rng.IntN(5)
		x := randf(4 * max(ldx, 1))
		wf := randf(4 * max(ldw, 1))
		wb := make([]uint16, len(wf))
		for i, v := range wf {
			wb[i] = uint16(math.Float32bits(v) >> 16)
		}
		var o4 [4]float32
		var o16 [16]float32
		if k > 0 {
			dot1x4F32(&o4, x, wf, ldw, k)
			dot4x4F32(&o16, x, ldx, wf, ldw, k)
			for j := range 4 {
				want := dotF32Go(x[:k], wf[j*ldw:j*ldw+k])
				one := dotF32(x[:k], wf[j*ldw:j*ldw+k])
				near("dotF32", k, one, want)
				if o4[j] != one || o16[j] != one {
					t.Fatalf("f32 k=%d row %d: dot %g, 1x4 %g, 4x4 %g differ", k, j, one, o4[j], o16[j])
				}
				for i := range 4 {
					near("dot4x4F32", k, o16[4*i+j], dotF32Go(x[i*ldx:i*ldx+k], wf[j*ldw:j*ldw+k]))
				}
			}
			dot1x4BF16(&o4, x, wb, ldw, k)
			dot4x4BF16(&o16, x, ldx, wb, ldw, k)
			for j := range 4 {
				want := dotBF16Go(x[:k], wb[j*ldw:j*ldw+k])
				one := dotBF16(x[:k], wb[j*ldw:j*ldw+k])
				near("dotBF16", k, one, want)
				if o4[j] != one || o16[j] != one {
					t.Fatalf("bf16 k=%d row %d: dot %g, 1x4 %g, 4x4 %g differ", k, j, one, o4[j], o16[j])
				}
				for i := range 4 {
					near("dot4x4BF16", k, o16[4*i+j], dotBF16Go(x[i*ldx:i*ldx+k], wb[j*ldw:j*ldw+k]))
				}
			}
		}

		// axpy and axpy4 leave everything past the rows they update alone.
		a := [4]float32{0.5, -1.25, 2, 3}
		y := randf(4*ldw + 1)
		want := append([]float32(nil), y...)
		for j := range 4 {
			axpyGo(a[j], x[:k], want[j*ldw:j*ldw+k])
		}
		got := append([]float32(nil), y...)
		axpy4(&a, x[:k], got, ldw)
		got2 := append([]float32(nil), y...)
		for j := range 4 {
			axpy(a[j], x[:k], got2[j*ldw:j*ldw+k])
		}
		for i := range y {
			near("axpy4", 1, got[i], want[i])
			if got[i] != got2[i] {
				t.Fatalf("k=%d element %d: axpy4 %g, axpy %g", k, i, got[i], got2[i])
			}
		}
	}
}

// TestExpSum checks the vector exponential against float32(math.Exp) on
// random and special inputs: within one float32 ulp, infinities and NaN
// exact, and the sum to 1e-12.
func TestExpSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	inf := float32(math.Inf(1))
	special := []float32{0, -0, 1, -1, 88.7, 88.8, -87, -103, -104, -150, 300, -300, inf, -inf, float32(math.NaN())}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 100, 1000} {
		src := make([]float32, n)
		for i := range src {
			switch {
			case i < len(special) && n >= 100:
				src[i] = special[i]
			default:
				src[i] = float32(rng.NormFloat64() * 30)
			}
		}
		for _, sm := range [][2]float32{{1, 0}, {-1, 0}, {1, 3.5}} {
			got := make([]float32, n)
			want := make([]float32, n)
			gs := expSum(got, src, sm[0], sm[1])
			ws := expSumGo(want, src, sm[0], sm[1])
			for i := range got {
				g, w := got[i], want[i]
				switch {
				case w != w:
					if g == g {
						t.Fatalf("n=%d exp(%g·%g-%g) = %g, want NaN", n, sm[0], src[i], sm[1], g)
					}
				case math.IsInf(float64(w), 0) || w == 0:
					if g != w {
						t.Fatalf("n=%d exp(%g·%g-%g) = %g, want %g", n, sm[0], src[i], sm[1], g, w)
					}
				default:
					if d := math.Abs(float64(g - w)); d > 1.2e-7*float64(w) {
						t.Fatalf("n=%d exp(%g·%g-%g) = %g, want %g", n, sm[0], src[i], sm[1], g, w)
					}
				}
			}
			if !(gs == ws || math.Abs(gs-ws) <= 1e-12*math.Abs(ws)) && !(math.IsNaN(gs) && math.IsNaN(ws)) {
				t.Fatalf("n=%d sum %g, want %g", n, gs, ws)
			}
		}
	}
}

// TestGEMV checks that gemvBF16 gives, bit for bit, the dot products of
// dotBF16 for every row, on row counts around the four-row groups and
// the two-stream split, with every prefetch distance down to none, one
// and two streams at any size, on every instruction set.
func TestGEMV(t *testing.T) {
	for _, f := range []string{"", "avx2", "generic"} {
		restore := setFeatures(f)
		t.Run(Features(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, 10))
			for _, k := range []int{1, 15, 16, 17, 48, 256, 1030} {
				for _, rows := range []int{1, 3, 4, 5, 8, 13, 16, 28, 64, 67} {
					x := make([]float32, k)
					for i := range x {
						x[i] = float32(rng.NormFloat64())
					}
					w := make([]uint16, rows*k+7) // guard past the rows
					for i := range w {
						w[i] = uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
					}
					for _, c := range []struct{ pd, streams int }{{0, 1}, {64, 1}, {8 << 10, 1}, {0, 2}, {64, 2}, {8 << 10, 2}, {1 << 20, 2}} {
						oldPD, oldS, oldMin := gemvPrefetch, gemvStreams, gemv2MinElems
						gemvPrefetch, gemvStreams, gemv2MinElems = c.pd, c.streams, 0
						out := make([]float32, rows+1)
						out[rows] = 42
						gemvBF16(out[:rows], x, w[:rows*k], k)
						gemvPrefetch, gemvStreams, gemv2MinElems = oldPD, oldS, oldMin
						for r := range rows {
							if want := dotBF16(x, w[r*k:(r+1)*k]); out[r] != want {
								t.Fatalf("k=%d rows=%d pd=%d streams=%d row %d: %g, want %g", k, rows, c.pd, c.streams, r, out[r], want)
							}
						}
						if out[rows] != 42 {
							t.Fatalf("k=%d rows=%d: wrote past the rows", k, rows)
						}
					}
				}
			}
		})
		restore()
	}
}
