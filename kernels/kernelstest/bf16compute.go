package kernelstest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// RunBF16Compute checks MatMul and GroupedMatMul of a backend that rounds
// x to bfloat16 before multiplying it with BF16 weights whenever x (or a
// group of GroupedMatMul) has at least minRows rows (the CPU backend with
// kernels.ComputeBF16: minRows 2). The reference rounds x the same way in
// float64 (nearest, ties to even, subnormals to zero, as VCVTNEPS2BF16)
// and sums exactly; the result must be within float32 accumulation error
// of it. F32 weights and fewer rows are held to the exact reference, as in
// Run. Sizes are odd, outputs guarded, and x holds rounding ties,
// subnormals and large values besides random ones.
func RunBF16Compute(t *testing.T, newBackend func() kernels.Backend, minRows int) {
	t.Run("MatMul", func(t *testing.T) {
		be := newBackend()
		rng := newRand(t)
		for _, dt := range []kernels.DType{kernels.BF16, kernels.F32} {
			for _, k := range append(sizes, 1030) {
				for _, m := range []int{1, 2, 3, 4, 5, 8, 17} {
					n := sizes[rng.IntN(len(sizes))]
					checkMatMulRounded(t, be, rng, dt, m, n, k, minRows)
				}
			}
			for _, n := range sizes {
				checkMatMulRounded(t, be, rng, dt, 6, n, 97, minRows)
			}
			// Split across threads, and blocked over rows of x.
			checkMatMulRounded(t, be, rng, dt, 16, 259, 257, minRows)
			checkMatMulRounded(t, be, rng, dt, 301, 13, 1030, minRows)
		}
	})
	t.Run("GroupedMatMul", func(t *testing.T) {
		be := newBackend()
		gm, ok := be.(kernels.GroupedMatMul)
		if !ok {
			t.Skip("backend does not implement kernels.GroupedMatMul")
		}
		rng := newRand(t)
		for _, shape := range [][2]int{{7, 17}, {33, 64}, {129, 65}, {37, 1030}} {
			n, k := shape[0], shape[1]
			rows := []int{2, 0, 5, 1, 9, 1}
			dts := []kernels.DType{kernels.BF16, kernels.BF16, kernels.BF16, kernels.BF16, kernels.F32, kernels.BF16}
			offs := make([]int, len(rows))
			total := 0
			for g, r := range rows {
				offs[g] = total
				total += r
			}
			x := roundingX(rng, total*k)
			gx := f32Buf(t, be, x)
			out := newGuarded(t, be, kernels.F32, total*n)
			ws := make([]kernels.Buffer, len(rows))
			refs := make([][]float64, len(rows))
			for g := range rows {
				gw, ref := weights(t, be, rng, dts[g], n*k)
				ws[g], refs[g] = gw.buf, ref
			}
			gm.GroupedMatMul(out.buf, gx.buf, ws, offs, rows, n, k)
			got := out.read(t)
			c := &checker{t: t, what: name("GroupedMatMul bf16 compute n", n, "k", k)}
			for g, r := range rows {
				xr := x[offs[g]*k : (offs[g]+r)*k]
				xf := f64(xr)
				if dts[g] == kernels.BF16 && r >= minRows {
					xf = roundedF64(xr)
				}
				want, scale := refMatMul(xf, refs[g], r, n, k)
				for i := range want {
					c.near(offs[g]*n+i, got[offs[g]*n+i], want[i], scale[i], matmulTol(k))
				}
			}
		}
	})
}

func checkMatMulRounded(t *testing.T, be kernels.Backend, rng *rand.Rand, dt kernels.DType, m, n, k, minRows int) {
	t.Helper()
	x := roundingX(rng, m*k)
	gx := f32Buf(t, be, x)
	gw, wref := weights(t, be, rng, dt, n*k)
	out := newGuarded(t, be, kernels.F32, m*n)
	be.MatMul(out.buf, gx.buf, gw.buf, m, n, k)
	xf := f64(x)
	if dt == kernels.BF16 && m >= minRows {
		xf = roundedF64(x)
	}
	want, scale := refMatMul(xf, wref, m, n, k)
	c := &checker{t: t, what: name("MatMul bf16 compute", dt, "m", m, "n", n, "k", k)}
	for i, v := range out.read(t) {
		c.near(i, v, want[i], scale[i], matmulTol(k))
	}
}

// roundingX returns n random activations, one in eight of them a value
// whose rounding to bfloat16 is a tie, a subnormal, or large.
func roundingX(rng *rand.Rand, n int) []float32 {
	x := randF32(rng, n, 1)
	special := []float32{
		math.Float32frombits(0x3f808000), // 1 + 2⁻⁸: a tie, rounds down to even
		math.Float32frombits(0xbf818000), // a tie that rounds up to even
		math.Float32frombits(0x3f807fff), // just below a tie
		math.Float32frombits(0x40008001), // just above a tie
		math.Float32frombits(0x00400000), // subnormal: read as zero
		math.Float32frombits(0x807fffff), // subnormal: read as -0
		math.Float32frombits(0x00800000), // smallest normal
		3e4, -65504, 1e-30,
	}
	for i := range x {
		if rng.IntN(8) == 0 {
			x[i] = special[rng.IntN(len(special))]
		}
	}
	return x
}

// roundedF64 is x rounded to bfloat16 by the float64 definition: nearest
// multiple of 2^(e-7) for x in [2^e, 2^(e+1)), ties to the even multiple;
// subnormal inputs are zero; past the largest finite bf16 + half an ulp,
// infinity.
func roundedF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		f := float64(v)
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0) || f == 0:
			out[i] = f
		case math.Abs(f) < 0x1p-126:
			out[i] = math.Copysign(0, f)
		default:
			_, e := math.Frexp(f) // |f| in [2^(e-1), 2^e)
			ulp := math.Ldexp(1, e-1-7)
			r := math.RoundToEven(f/ulp) * ulp
			if math.Abs(r) >= 0x1p128 {
				r = math.Inf(int(math.Copysign(1, f)))
			}
			out[i] = r
		}
	}
	return out
}
