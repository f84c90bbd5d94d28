package kernelstest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// e4m3Ref decodes an E4M3FN code from its definition (sign, 4 exponent
// bits of bias 7, 3 mantissa bits, subnormals at exponent 0, no
// infinities, S.1111.111 NaN), written apart from the backend's table.
func e4m3Ref(c byte) float64 {
	sign := 1.0
	if c&0x80 != 0 {
		sign = -1
	}
	e, f := int(c>>3)&15, float64(c&7)
	if e == 15 && f == 7 {
		return math.NaN()
	}
	if e == 0 {
		return sign * f * math.Pow(2, -9)
	}
	return sign * (8 + f) * math.Pow(2, float64(e)-10)
}

// randFP8 returns a random FP8 matrix of the given shape and block layout
// (no NaN codes, scales spread over three decades) and its dequantized
// float64 values.
func randFP8(rng *rand.Rand, rows, cols, br, bc, roff, coff int) (kernels.FP8Matrix, []float64) {
	f := kernels.FP8Matrix{Rows: rows, Cols: cols, BlockRows: br, BlockCols: bc, RowOff: roff, ColOff: coff}
	f.Codes = make([]byte, rows*cols)
	for i := range f.Codes {
		c := byte(rng.IntN(256))
		for c&0x7f == 0x7f {
			c = byte(rng.IntN(256))
		}
		f.Codes[i] = c
	}
	f.Scales = make([]float32, f.ScaleRows()*f.ScaleCols())
	for i := range f.Scales {
		f.Scales[i] = float32(math.Pow(10, -3+2*rng.Float64()) / 448)
	}
	ref := make([]float64, rows*cols)
	sc := f.ScaleCols()
	for i := range rows {
		for j := range cols {
			s := float64(f.Scales[((roff+i)/br)*sc+(coff+j)/bc])
			ref[i*cols+j] = e4m3Ref(f.Codes[i*cols+j]) * s
		}
	}
	return f, ref
}

type fp8Shape struct{ m, n, k, br, bc, roff, coff int }

// fp8Shapes: odd sizes, blocks larger than the matrix, partial edge blocks,
// slices that start inside a block (with a group of four rows and a
// 16-element vector that straddle block edges), more rows of x than one
// pass holds, and a shape that splits across threads.
var fp8Shapes = []fp8Shape{
	{1, 1, 1, 16, 16, 0, 0},
	{1, 5, 7, 16, 16, 0, 0},
	{3, 17, 33, 16, 16, 0, 0},
	{4, 40, 64, 16, 16, 0, 0},
	{5, 64, 40, 16, 16, 0, 0},
	{1, 129, 257, 128, 128, 0, 0},
	{9, 33, 130, 128, 128, 0, 0},
	{2, 13, 11, 3, 5, 2, 4},
	{7, 19, 23, 4, 8, 1, 3},
	{17, 8, 16, 16, 16, 8, 0},
	{1, 1027, 300, 128, 128, 0, 0},
	{301, 13, 67, 16, 16, 0, 0},
	{16, 64, 256, 128, 128, 0, 0},
	{1, 45, 1030, 128, 128, 126, 5},
	{3, 41, 272, 128, 128, 102, 72},
	{6, 20, 48, 16, 32, 5, 17},
	{70, 9, 4000, 128, 128, 0, 0},
}

func testMatMulFP8(t *testing.T, be kernels.Backend) {
	fw, ok := be.(kernels.FP8Weights)
	if !ok {
		t.Skipf("%s does not implement kernels.FP8Weights", be.Name())
	}
	rng := newRand(t)
	for _, s := range fp8Shapes {
		f, wref := randFP8(rng, s.n, s.k, s.br, s.bc, s.roff, s.coff)
		w, err := fw.WrapFP8(f)
		mustNil(t, err)
		if w.DType() != kernels.F8E4M3 || w.Len() != s.n*s.k {
			t.Fatalf("WrapFP8: dtype %v len %d, want F8_E4M3 len %d", w.DType(), w.Len(), s.n*s.k)
		}
		x := randF32(rng, s.m*s.k, 1)
		gx := f32Buf(t, be, x)
		out := newGuarded(t, be, kernels.F32, s.m*s.n)
		be.MatMul(out.buf, gx.buf, w, s.m, s.n, s.k)
		want, scale := refMatMul(f64(x), wref, s.m, s.n, s.k)
		c := &checker{t: t, what: name("MatMul F8_E4M3 m", s.m, "n", s.n, "k", s.k, "block", s.br, s.bc, "off", s.roff, s.coff)}
		for i, v := range out.read(t) {
			c.near(i, v, want[i], scale[i], matmulTol(s.k))
		}
	}
	gm, ok := be.(kernels.GroupedMatMul)
	if !ok {
		return
	}
	n, k := 40, 64
	rows := []int{2, 0, 5, 1}
	var ws []kernels.Buffer
	var refs [][]float64
	var rowOff []int
	total := 0
	for range rows {
		f, ref := randFP8(rng, n, k, 16, 16, 0, 0)
		w, err := fw.WrapFP8(f)
		mustNil(t, err)
		ws, refs = append(ws, w), append(refs, ref)
	}
	for _, r := range rows {
		rowOff = append(rowOff, total)
		total += r
	}
	x := randF32(rng, total*k, 1)
	gx := f32Buf(t, be, x)
	out := newGuarded(t, be, kernels.F32, total*n)
	gm.GroupedMatMul(out.buf, gx.buf, ws, rowOff, rows, n, k)
	got := out.read(t)
	c := &checker{t: t, what: "GroupedMatMul F8_E4M3"}
	for g, r := range rows {
		want, scale := refMatMul(f64(x[rowOff[g]*k:(rowOff[g]+r)*k]), refs[g], r, n, k)
		for i := range want {
			c.near(rowOff[g]*n+i, got[rowOff[g]*n+i], want[i], scale[i], matmulTol(k))
		}
	}
}

// testWrapFP8Rejects checks that inconsistent FP8 layouts are errors, not panics.
func testWrapFP8Rejects(t *testing.T, be kernels.Backend) {
	fw, ok := be.(kernels.FP8Weights)
	if !ok {
		t.Skipf("%s does not implement kernels.FP8Weights", be.Name())
	}
	good := func() kernels.FP8Matrix {
		return kernels.FP8Matrix{Codes: make([]byte, 40*64), Scales: make([]float32, 3*4), Rows: 40, Cols: 64, BlockRows: 16, BlockCols: 16}
	}
	if _, err := fw.WrapFP8(good()); err != nil {
		t.Fatalf("WrapFP8(valid [40,64] in 16×16 blocks) = %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*kernels.FP8Matrix)
	}{
		{"short codes", func(f *kernels.FP8Matrix) { f.Codes = f.Codes[1:] }},
		{"scale grid too small", func(f *kernels.FP8Matrix) { f.Scales = f.Scales[:8] }},
		{"scale grid too large", func(f *kernels.FP8Matrix) { f.Scales = make([]float32, 16) }},
		{"zero block", func(f *kernels.FP8Matrix) { f.BlockRows = 0 }},
		{"offset outside block", func(f *kernels.FP8Matrix) { f.ColOff = 16 }},
		{"negative rows", func(f *kernels.FP8Matrix) { f.Rows = -1 }},
	} {
		f := good()
		tc.mod(&f)
		if _, err := fw.WrapFP8(f); err == nil {
			t.Errorf("%s: WrapFP8 = nil error", tc.name)
		}
	}
}

// testMatMulFP8NaN checks that the NaN codes of E4M3FN (0x7F, 0xFF) make
// exactly their output columns NaN, and that the other columns of the
// same matrix stay correct.
func testMatMulFP8NaN(t *testing.T, be kernels.Backend) {
	fw, ok := be.(kernels.FP8Weights)
	if !ok {
		t.Skipf("%s does not implement kernels.FP8Weights", be.Name())
	}
	rng := newRand(t)
	const m, n, k = 5, 9, 48
	f, wref := randFP8(rng, n, k, 16, 16, 0, 0)
	nanAt := map[int]byte{2: 0x7f, 6: 0xff}
	for r, c := range nanAt {
		f.Codes[r*k+17+r] = c
		wref[r*k+17+r] = math.NaN()
	}
	w, err := fw.WrapFP8(f)
	mustNil(t, err)
	x := randF32(rng, m*k, 1)
	gx := f32Buf(t, be, x)
	out := newGuarded(t, be, kernels.F32, m*n)
	be.MatMul(out.buf, gx.buf, w, m, n, k)
	want, scale := refMatMul(f64(x), wref, m, n, k)
	c := &checker{t: t, what: "MatMul F8_E4M3 with NaN codes"}
	for i, v := range out.read(t) {
		if _, isNaN := nanAt[i%n]; isNaN != math.IsNaN(want[i]) {
			t.Fatalf("reference element %d = %g: the test is wrong", i, want[i])
		}
		c.near(i, v, want[i], scale[i], matmulTol(k))
	}
}

// testMatMulFP8Large checks activations and scales whose products reach
// 10³⁰ (no FP8 value of a checkpoint, but a kernel that rescales x must
// not overflow on them) next to a row of x holding +Inf: that row's
// outputs are ±Inf or NaN as in the reference, the others stay exact.
func testMatMulFP8Large(t *testing.T, be kernels.Backend) {
	fw, ok := be.(kernels.FP8Weights)
	if !ok {
		t.Skipf("%s does not implement kernels.FP8Weights", be.Name())
	}
	rng := newRand(t)
	const m, n, k = 3, 10, 80
	f, _ := randFP8(rng, n, k, 16, 32, 0, 0)
	for i := range f.Scales {
		f.Scales[i] = float32(math.Pow(10, 10+5*rng.Float64()))
	}
	wref := make([]float64, n*k)
	for i := range n {
		for j := range k {
			wref[i*k+j] = e4m3Ref(f.Codes[i*k+j]) * float64(f.Scales[(i/16)*f.ScaleCols()+j/32])
		}
	}
	w, err := fw.WrapFP8(f)
	mustNil(t, err)
	x := randF32(rng, m*k, 1)
	for i := range x {
		x[i] *= 1e15
	}
	x[k+5] = float32(math.Inf(1))
	gx := f32Buf(t, be, x)
	out := newGuarded(t, be, kernels.F32, m*n)
	be.MatMul(out.buf, gx.buf, w, m, n, k)
	want, scale := refMatMul(f64(x), wref, m, n, k)
	c := &checker{t: t, what: "MatMul F8_E4M3 with products up to 1e30"}
	for i, v := range out.read(t) {
		if i/n != 1 {
			c.near(i, v, want[i], scale[i], matmulTol(k))
		} else if !math.IsInf(float64(v), 0) && !math.IsNaN(float64(v)) {
			t.Errorf("row with +Inf in x: element %d = %g, want ±Inf or NaN", i, v)
		}
	}
}
