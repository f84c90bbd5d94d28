// Package kernelstest is the conformance suite every kernels.Backend must
// pass. It drives a backend only through the kernels.Backend interface
// (and the optional interfaces it implements) and compares each operation
// with a float64 reference on odd sizes, views at offsets and guarded
// output buffers.
package kernelstest

import (
	"math"

	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// Run checks every operation of the backends newBackend returns. It calls
// newBackend once per subtest.
func Run(t *testing.T, newBackend func() kernels.Backend) {
	tests := []struct {
		name string
		fn   func(*testing.T, kernels.Backend)
	}{
		{"Buffers", testBuffers},
		{"MatMul", testMatMul},
		{"MatMulLarge", testMatMulLarge},
		{"MatMulFP8", testMatMulFP8},
		{"MatMulFP8NaN", testMatMulFP8NaN},
		{"MatMulFP8Large", testMatMulFP8Large},
		{"WrapFP8Rejects", testWrapFP8Rejects},
		{"GroupedMatMul", testGroupedMatMul},
		{"Add", testAdd},
		{"RMSNorm", testRMSNorm},
		{"RoPE", testRoPE},
		{"RoPEFreq", testRoPEFreq},
		{"Softmax", testSoftmax},
		{"SiLUMul", testSiLUMul},
		{"TopK", testTopK},
		{"Embed", testEmbed},
		{"Gather", testGather},
		{"ScatterAdd", testScatterAdd},
		{"KVWrite", testKVWrite},
		{"Attention", testAttention},
		{"AttentionReplicatedKV", testAttentionReplicated},
		{"HostWrapper", testHostWrapper},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBackend())
		})
	}
}

func testBuffers(t *testing.T, be kernels.Backend) {
	for _, n := range sizes {
		b, err := be.Alloc(kernels.F32, n)
		mustNil(t, err)
		if b.Len() != n || b.DType() != kernels.F32 {
			t.Fatalf("Alloc(F32, %d) = %v × %d", n, b.DType(), b.Len())
		}
		got := make([]float32, n)
		mustNil(t, be.ReadF32(b, 0, got))
		for i, v := range got {
			if v != 0 {
				t.Fatalf("Alloc(F32, %d)[%d] = %g, want 0", n, i, v)
			}
		}
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(i) + 0.5
		}
		mustNil(t, be.WriteF32(b, 0, vals))
		off := n / 3
		v := be.View(b, off, n-off)
		if v.Len() != n-off {
			t.Fatalf("View(%d, %d).Len() = %d", off, n-off, v.Len())
		}
		part := make([]float32, n-off)
		mustNil(t, be.ReadF32(v, 0, part))
		for i, x := range part {
			if x != vals[off+i] {
				t.Fatalf("view at %d element %d = %g, want %g", off, i, x, vals[off+i])
			}
		}
		mustNil(t, be.WriteF32(v, 0, []float32{-1}))
		one := make([]float32, 1)
		mustNil(t, be.ReadF32(b, off, one))
		if one[0] != -1 {
			t.Fatalf("write through view at %d not seen in parent: %g", off, one[0])
		}
		be.Free(v)
		be.Free(b)

		h, err := be.Alloc(kernels.BF16, n)
		mustNil(t, err)
		if h.Len() != n || h.DType() != kernels.BF16 {
			t.Fatalf("Alloc(BF16, %d) = %v × %d", n, h.DType(), h.Len())
		}
		be.Free(h)
	}
	mustNil(t, be.Sync())
}

func testAdd(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, n := range append(sizes, 4099) {
		a, b := randF32(rng, n, 1), randF32(rng, n, 1)
		ga, gb, out := f32Buf(t, be, a), f32Buf(t, be, b), newGuarded(t, be, kernels.F32, n)
		be.Add(out.buf, ga.buf, gb.buf, n)
		got := out.read(t)
		c := &checker{t: t, what: name("Add n", n)}
		for i := range got {
			c.exact(i, got[i], a[i]+b[i])
		}
		// out aliasing a.
		be.Add(ga.buf, ga.buf, gb.buf, n)
		got = ga.read(t)
		c.what = name("Add aliased n", n)
		for i := range got {
			c.exact(i, got[i], a[i]+b[i])
		}
	}
}

func testRMSNorm(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	const eps = 1e-6
	for _, dim := range append(sizes, 1024) {
		for _, rows := range []int{1, 3, 17} {
			x, w := randF32(rng, rows*dim, 3), randF32(rng, dim, 1)
			gx, gw, out := f32Buf(t, be, x), f32Buf(t, be, w), newGuarded(t, be, kernels.F32, rows*dim)
			be.RMSNorm(out.buf, gx.buf, gw.buf, rows, dim, eps)
			want := refRMSNorm(x, w, rows, dim, eps)
			c := &checker{t: t, what: name("RMSNorm rows", rows, "dim", dim)}
			for i, g := range out.read(t) {
				c.near(i, g, want[i], math.Abs(want[i]), 1e-6)
			}
			be.RMSNorm(gx.buf, gx.buf, gw.buf, rows, dim, eps)
			c.what = name("RMSNorm aliased rows", rows, "dim", dim)
			for i, g := range gx.read(t) {
				c.near(i, g, want[i], math.Abs(want[i]), 1e-6)
			}
		}
	}
}

func refRMSNorm(x, w []float32, rows, dim int, eps float64) []float64 {
	out := make([]float64, rows*dim)
	for r := range rows {
		var ss float64
		for _, v := range x[r*dim : (r+1)*dim] {
			ss += float64(v) * float64(v)
		}
		s := 1 / math.Sqrt(ss/float64(dim)+eps)
		for i := range dim {
			out[r*dim+i] = float64(x[r*dim+i]) * s * float64(w[i])
		}
	}
	return out
}

func testRoPE(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, headDim := range []int{2, 8, 18, 64, 128} {
		for _, theta := range []float64{10000, 1e6} {
			rows, heads := 5, 3
			x := randF32(rng, rows*heads*headDim, 1)
			pos := []int32{0, 1, 17, 4095, 40000}
			g := f32Buf(t, be, x)
			be.RoPE(g.buf, rows, heads, headDim, pos, theta)
			got := g.read(t)
			c := &checker{t: t, what: name("RoPE headDim", headDim, "theta", theta)}
			half := headDim / 2
			for r := range rows {
				for h := range heads {
					base := (r*heads + h) * headDim
					for j := range half {
						ang := float64(pos[r]) * math.Pow(theta, -float64(2*j)/float64(headDim))
						cs, sn := math.Cos(ang), math.Sin(ang)
						x0, x1 := float64(x[base+j]), float64(x[base+half+j])
						scale := math.Abs(x0) + math.Abs(x1)
						c.near(base+j, got[base+j], x0*cs-x1*sn, scale, 1e-6)
						c.near(base+half+j, got[base+half+j], x0*sn+x1*cs, scale, 1e-6)
					}
				}
			}
		}
	}
}

// testRoPEFreq checks FreqRoPE with YaRN-like inverse frequencies (a
// blend that no single theta gives); backends without it skip.
func testRoPEFreq(t *testing.T, be kernels.Backend) {
	fr, ok := be.(kernels.FreqRoPE)
	if !ok {
		t.Skipf("%s does not implement kernels.FreqRoPE", be.Name())
	}
	rng := newRand(t)
	for _, headDim := range []int{2, 18, 64} {
		half := headDim / 2
		inv := make([]float64, half+3) // longer than needed: only half are read
		for j := range inv {
			inv[j] = math.Pow(1e6, -float64(2*j)/float64(headDim)) / (1 + 3*float64(j)/float64(half))
		}
		rows, heads := 4, 3
		x := randF32(rng, rows*heads*headDim, 1)
		pos := []int32{0, 5, 300, 131071}
		g := f32Buf(t, be, x)
		fr.RoPEFreq(g.buf, rows, heads, headDim, pos, inv)
		got := g.read(t)
		c := &checker{t: t, what: name("RoPEFreq headDim", headDim)}
		for r := range rows {
			for h := range heads {
				base := (r*heads + h) * headDim
				for j := range half {
					ang := float64(pos[r]) * inv[j]
					cs, sn := math.Cos(ang), math.Sin(ang)
					x0, x1 := float64(x[base+j]), float64(x[base+half+j])
					scale := math.Abs(x0) + math.Abs(x1)
					c.near(base+j, got[base+j], x0*cs-x1*sn, scale, 1e-6)
					c.near(base+half+j, got[base+half+j], x0*sn+x1*cs, scale, 1e-6)
				}
			}
		}
	}
}

func testSoftmax(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, n := range append(sizes, 128, 151936) {
		rows := 3
		if n > 1000 {
			rows = 1
		}
		x := randF32(rng, rows*n, 4)
		if n > 2 {
			x[0] = 1000                  // overflows exp without the max subtraction
			x[1] = float32(math.Inf(-1)) // a masked entry
		}
		g := f32Buf(t, be, x)
		be.Softmax(g.buf, rows, n)
		got := g.read(t)
		c := &checker{t: t, what: name("Softmax n", n)}
		for r := range rows {
			row := f64(x[r*n : (r+1)*n])
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, v)
			}
			var sum float64
			for _, v := range row {
				sum += math.Exp(v - mx)
			}
			var gotSum float64
			for i, v := range row {
				want := math.Exp(v-mx) / sum
				// float32 rounding of v-mx scales the error by |v-mx|.
				c.near(r*n+i, got[r*n+i], want, want*(1+math.Min(math.Abs(v-mx), 100)), 1e-6)
				gotSum += float64(got[r*n+i])
			}
			if math.Abs(gotSum-1) > 1e-5 {
				t.Errorf("Softmax n=%d row %d sums to %g", n, r, gotSum)
			}
		}
	}
}

func testSiLUMul(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, n := range append(sizes, 3000) {
		gate, up := randF32(rng, n, 4), randF32(rng, n, 1)
		if n > 3 {
			gate[1], gate[2] = 100, -100
		}
		gg, gu, out := f32Buf(t, be, gate), f32Buf(t, be, up), newGuarded(t, be, kernels.F32, n)
		be.SiLUMul(out.buf, gg.buf, gu.buf, n)
		want := make([]float64, n)
		for i := range want {
			g := float64(gate[i])
			want[i] = g / (1 + math.Exp(-g)) * float64(up[i])
		}
		c := &checker{t: t, what: name("SiLUMul n", n)}
		for i, v := range out.read(t) {
			c.near(i, v, want[i], math.Abs(want[i]), 1e-6)
		}
		be.SiLUMul(gg.buf, gg.buf, gu.buf, n)
		c.what = name("SiLUMul aliased n", n)
		for i, v := range gg.read(t) {
			c.near(i, v, want[i], math.Abs(want[i]), 1e-6)
		}
	}
}
