package kernelstest

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// guardPad is the number of guard elements on each side of an output view.
const guardPad = 19

// guardValue fills the space around views; a kernel that writes outside its
// output changes it.
const guardValue float32 = -7.0e33

// sizes are lengths that hit every remainder of the common SIMD widths.
var sizes = []int{1, 3, 7, 15, 16, 17, 33, 63, 64, 65, 127, 129}

// guarded is a view into the middle of a larger buffer whose other elements
// hold guardValue.
type guarded struct {
	be     kernels.Backend
	base   kernels.Buffer
	buf    kernels.Buffer // the view [pad, pad+n) of base
	pad, n int
	dt     kernels.DType
}

func newGuarded(t testing.TB, be kernels.Backend, dt kernels.DType, n int) *guarded {
	t.Helper()
	pad := guardPad
	base, err := be.Alloc(dt, n+2*pad)
	if err != nil {
		t.Fatalf("Alloc(%v, %d): %v", dt, n+2*pad, err)
	}
	t.Cleanup(func() { be.Free(base) })
	g := &guarded{be: be, base: base, buf: be.View(base, pad, n), pad: pad, n: n, dt: dt}
	fill := make([]float32, n+2*pad)
	for i := range fill {
		fill[i] = guardValue
	}
	switch dt {
	case kernels.F32:
		mustNil(t, be.WriteF32(base, 0, fill))
	case kernels.BF16:
		bits := make([]uint16, len(fill))
		for i, v := range fill {
			bits[i] = toBF16(v)
		}
		mustNil(t, be.WriteBF16(base, 0, bits))
	}
	return g
}

// f32Buf returns a guarded F32 view holding vals.
func f32Buf(t testing.TB, be kernels.Backend, vals []float32) *guarded {
	t.Helper()
	g := newGuarded(t, be, kernels.F32, len(vals))
	mustNil(t, be.WriteF32(g.buf, 0, vals))
	return g
}

// bf16Buf returns a guarded BF16 view holding the bits.
func bf16Buf(t testing.TB, be kernels.Backend, bits []uint16) *guarded {
	t.Helper()
	g := newGuarded(t, be, kernels.BF16, len(bits))
	mustNil(t, be.WriteBF16(g.buf, 0, bits))
	return g
}

// weights returns a buffer of n weights of type dt with values drawn from
// rng, and the values it holds widened to float64.
func weights(t testing.TB, be kernels.Backend, rng *rand.Rand, dt kernels.DType, n int) (*guarded, []float64) {
	t.Helper()
	vals := randF32(rng, n, 1)
	ref := make([]float64, n)
	if dt == kernels.BF16 {
		bits := make([]uint16, n)
		for i, v := range vals {
			bits[i] = toBF16(v)
			ref[i] = float64(fromBF16(bits[i]))
		}
		return bf16Buf(t, be, bits), ref
	}
	for i, v := range vals {
		ref[i] = float64(v)
	}
	return f32Buf(t, be, vals), ref
}

// read returns the view's contents and fails t if a guard was overwritten.
// It works on F32 buffers only.
func (g *guarded) read(t testing.TB) []float32 {
	t.Helper()
	all := make([]float32, g.n+2*g.pad)
	mustNil(t, g.be.ReadF32(g.base, 0, all))
	for i, v := range all {
		if (i < g.pad || i >= g.pad+g.n) && math.Float32bits(v) != math.Float32bits(guardValue) {
			t.Fatalf("guard element %d of %d (view [%d, %d)) overwritten: %g", i, len(all), g.pad, g.pad+g.n, v)
		}
	}
	return all[g.pad : g.pad+g.n]
}

func mustNil(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randF32(rng *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64() * scale)
	}
	return s
}

func f64(s []float32) []float64 {
	d := make([]float64, len(s))
	for i, v := range s {
		d[i] = float64(v)
	}
	return d
}

// toBF16 rounds v to the nearest bfloat16, ties to even.
func toBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// checker compares results against float64 references.
type checker struct {
	t    testing.TB
	what string
	bad  int
}

// near reports got ≉ want at element i: |got-want| must be at most
// rel·scale (or tiny), with NaN matching only NaN and infinities matching exactly.
func (c *checker) near(i int, got float32, want, scale, rel float64) {
	c.t.Helper()
	g := float64(got)
	ok := false
	switch {
	case math.IsNaN(want):
		ok = math.IsNaN(g)
	case math.IsInf(want, 0):
		ok = g == want
	default:
		// Values below the float32 normal range may flush to zero.
		ok = math.Abs(g-want) <= rel*scale || math.Abs(g-want) < 1e-37
	}
	if !ok {
		c.bad++
		if c.bad <= 5 {
			c.t.Errorf("%s[%d] = %.9g, want %.9g (tolerance %.3g)", c.what, i, got, want, rel*scale)
		}
	}
}

func (c *checker) exact(i int, got, want float32) {
	c.t.Helper()
	if math.Float32bits(got) != math.Float32bits(want) {
		c.bad++
		if c.bad <= 5 {
			c.t.Errorf("%s[%d] = %.9g, want %.9g exactly", c.what, i, got, want)
		}
	}
}

func newRand(t testing.TB) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	return rand.New(rand.NewPCG(h.Sum64(), 0x6d6f656d657368))
}

func name(parts ...any) string {
	s := ""
	for i := 0; i+1 < len(parts); i += 2 {
		if s != "" {
			s += ","
		}
		s += fmt.Sprintf("%v=%v", parts[i], parts[i+1])
	}
	return s
}
