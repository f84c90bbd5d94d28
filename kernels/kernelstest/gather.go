package kernelstest

import (
	"cmp"
	"math"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

func testTopK(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, n := range append(sizes, 128, 151936) {
		for _, k := range []int{1, 2, 8, n} {
			if k > n || (k == n && n > 200) {
				continue
			}
			rows := 4
			x := make([]float32, rows*n)
			for i := range x {
				if rows*n < 50 || rng.IntN(3) == 0 {
					// Few distinct values: ties everywhere.
					x[i] = float32(rng.IntN(4))
				} else {
					x[i] = float32(rng.NormFloat64())
				}
			}
			g := f32Buf(t, be, x)
			idx := make([]int32, rows*k+1)
			val := make([]float32, rows*k+1)
			idx[rows*k], val[rows*k] = -99, -99
			mustNil(t, be.TopK(g.buf, rows, n, k, idx[:rows*k], val[:rows*k]))
			if idx[rows*k] != -99 || val[rows*k] != -99 {
				t.Fatalf("TopK n=%d k=%d wrote past its outputs", n, k)
			}
			for r := range rows {
				order := make([]int, n)
				for i := range order {
					order[i] = i
				}
				row := x[r*n : (r+1)*n]
				slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(row[b], row[a]) })
				for j := range k {
					if int(idx[r*k+j]) != order[j] || val[r*k+j] != row[order[j]] {
						t.Fatalf("TopK n=%d k=%d row %d rank %d = (%d, %g), want (%d, %g)",
							n, k, r, j, idx[r*k+j], val[r*k+j], order[j], row[order[j]])
					}
				}
			}
		}
	}
}

func testEmbed(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
		for _, dim := range []int{1, 7, 64, 129} {
			const vocab = 37
			table, ref := weights(t, be, rng, dt, vocab*dim)
			ids := []int32{0, 36, 5, 5, 17, 0}
			out := newGuarded(t, be, kernels.F32, len(ids)*dim)
			be.Embed(out.buf, table.buf, ids, dim)
			c := &checker{t: t, what: name("Embed", dt, "dim", dim)}
			for i, v := range out.read(t) {
				c.exact(i, v, float32(ref[int(ids[i/dim])*dim+i%dim]))
			}
		}
	}
}

func testGather(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, dim := range []int{1, 7, 64, 129} {
		const rows = 23
		x := randF32(rng, rows*dim, 1)
		gx := f32Buf(t, be, x)
		sel := []int32{22, 0, 3, 3, 11}
		out := newGuarded(t, be, kernels.F32, len(sel)*dim)
		be.Gather(out.buf, gx.buf, sel, dim)
		c := &checker{t: t, what: name("Gather dim", dim)}
		for i, v := range out.read(t) {
			c.exact(i, v, x[int(sel[i/dim])*dim+i%dim])
		}
	}
}

func testScatterAdd(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, dim := range []int{1, 7, 17, 64, 1024, 4099} {
		const rows = 9
		base := randF32(rng, rows*dim, 1)
		dst := []int32{4, 0, 4, 8, 4, 2, 0}
		scale := randF32(rng, len(dst), 1)
		x := randF32(rng, len(dst)*dim, 1)
		out, gx := f32Buf(t, be, base), f32Buf(t, be, x)
		be.ScatterAdd(out.buf, gx.buf, dst, scale, dim)
		want, mag := f64(base), make([]float64, len(base))
		for i := range mag {
			mag[i] = math.Abs(want[i])
		}
		for i, r := range dst {
			for j := range dim {
				p := float64(scale[i]) * float64(x[i*dim+j])
				want[int(r)*dim+j] += p
				mag[int(r)*dim+j] += math.Abs(p)
			}
		}
		c := &checker{t: t, what: name("ScatterAdd dim", dim)}
		for i, v := range out.read(t) {
			c.near(i, v, want[i], mag[i], 1e-6)
		}
	}
}

func testKVWrite(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, width := range []int{1, 16, 33, 256} {
		const cacheRows = 21
		kc0, vc0 := randF32(rng, cacheRows*width, 1), randF32(rng, cacheRows*width, 1)
		kc, vc := f32Buf(t, be, kc0), f32Buf(t, be, vc0)
		slots := []int32{20, 0, 7, 8, 3}
		k, v := randF32(rng, len(slots)*width, 1), randF32(rng, len(slots)*width, 1)
		gk, gv := f32Buf(t, be, k), f32Buf(t, be, v)
		be.KVWrite(kc.buf, vc.buf, gk.buf, gv.buf, slots, width)
		for i, s := range slots {
			copy(kc0[int(s)*width:(int(s)+1)*width], k[i*width:(i+1)*width])
			copy(vc0[int(s)*width:(int(s)+1)*width], v[i*width:(i+1)*width])
		}
		c := &checker{t: t, what: name("KVWrite k width", width)}
		for i, got := range kc.read(t) {
			c.exact(i, got, kc0[i])
		}
		c.what = name("KVWrite v width", width)
		for i, got := range vc.read(t) {
			c.exact(i, got, vc0[i])
		}
	}
}
