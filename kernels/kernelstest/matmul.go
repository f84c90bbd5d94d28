package kernelstest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// matmulTol is the error allowed for a dot product of length k, relative to
// Σ|x_i·w_i|: float32 accumulation in any order.
func matmulTol(k int) float64 { return 2e-6 * math.Sqrt(float64(k)+16) }

func refMatMul(x, w []float64, m, n, k int) (out, scale []float64) {
	out, scale = make([]float64, m*n), make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s, a float64
			for l := range k {
				p := x[i*k+l] * w[j*k+l]
				s += p
				a += math.Abs(p)
			}
			out[i*n+j], scale[i*n+j] = s, a
		}
	}
	return out, scale
}

func checkMatMul(t *testing.T, be kernels.Backend, rng *rand.Rand, dt kernels.DType, m, n, k int) {
	t.Helper()
	x := randF32(rng, m*k, 1)
	gx := f32Buf(t, be, x)
	gw, wref := weights(t, be, rng, dt, n*k)
	out := newGuarded(t, be, kernels.F32, m*n)
	be.MatMul(out.buf, gx.buf, gw.buf, m, n, k)
	want, scale := refMatMul(f64(x), wref, m, n, k)
	c := &checker{t: t, what: name("MatMul", dt, "m", m, "n", n, "k", k)}
	for i, v := range out.read(t) {
		c.near(i, v, want[i], scale[i], matmulTol(k))
	}
}

func testMatMul(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
		for _, k := range sizes {
			for _, m := range []int{1, 2, 3, 4, 5, 8, 16, 17} {
				n := sizes[rng.IntN(len(sizes))]
				checkMatMul(t, be, rng, dt, m, n, k)
			}
		}
		for _, n := range sizes {
			checkMatMul(t, be, rng, dt, 3, n, 64)
		}
	}
}

// testMatMulLarge covers the shapes that split across threads and the
// blocking over rows of x used for prefill.
func testMatMulLarge(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
		checkMatMul(t, be, rng, dt, 1, 1027, 1024)
		checkMatMul(t, be, rng, dt, 16, 259, 257)
		checkMatMul(t, be, rng, dt, 301, 13, 1030)
	}
}

func testGroupedMatMul(t *testing.T, be kernels.Backend) {
	gm, ok := be.(kernels.GroupedMatMul)
	if !ok {
		t.Skip("backend does not implement kernels.GroupedMatMul")
	}
	rng := newRand(t)
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
		for _, shape := range [][2]int{{7, 17}, {33, 64}, {129, 65}} {
			n, k := shape[0], shape[1]
			rows := []int{2, 0, 5, 1, 9}
			offs := make([]int, len(rows))
			total := 0
			for g, r := range rows {
				offs[g] = total
				total += r
			}
			x := randF32(rng, total*k, 1)
			gx := f32Buf(t, be, x)
			out := newGuarded(t, be, kernels.F32, total*n)
			ws := make([]kernels.Buffer, len(rows))
			refs := make([][]float64, len(rows))
			for g := range rows {
				gw, ref := weights(t, be, rng, dt, n*k)
				ws[g], refs[g] = gw.buf, ref
			}
			gm.GroupedMatMul(out.buf, gx.buf, ws, offs, rows, n, k)
			got := out.read(t)
			xf := f64(x)
			c := &checker{t: t, what: name("GroupedMatMul", dt, "n", n, "k", k)}
			for g, r := range rows {
				want, scale := refMatMul(xf[offs[g]*k:(offs[g]+r)*k], refs[g], r, n, k)
				for i := range want {
					c.near(offs[g]*n+i, got[offs[g]*n+i], want[i], scale[i], matmulTol(k))
				}
			}
		}
	}
}

func testHostWrapper(t *testing.T, be kernels.Backend) {
	hw, ok := be.(kernels.HostWrapper)
	if !ok {
		t.Skip("backend does not implement kernels.HostWrapper")
	}
	rng := newRand(t)
	const m, n, k = 2, 5, 33
	x := randF32(rng, m*k, 1)
	w := make([]uint16, n*k)
	wref := make([]float64, n*k)
	for i := range w {
		w[i] = toBF16(float32(rng.NormFloat64()))
		wref[i] = float64(fromBF16(w[i]))
	}
	wf := make([]float32, n*k)
	for i, v := range wref {
		wf[i] = float32(v)
	}
	out := newGuarded(t, be, kernels.F32, m*n)
	want, scale := refMatMul(f64(x), wref, m, n, k)
	for _, wb := range []kernels.Buffer{hw.WrapBF16(w), hw.WrapF32(wf)} {
		if wb.Len() != n*k {
			t.Fatalf("wrapped %v buffer has %d elements, want %d", wb.DType(), wb.Len(), n*k)
		}
		be.MatMul(out.buf, hw.WrapF32(x), wb, m, n, k)
		c := &checker{t: t, what: name("MatMul wrapped", wb.DType())}
		for i, v := range out.read(t) {
			c.near(i, v, want[i], scale[i], matmulTol(k))
		}
	}
}
