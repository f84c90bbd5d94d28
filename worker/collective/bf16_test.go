package collective

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestToBF16(t *testing.T) {
	tests := []struct {
		name string
		in   uint32
		want uint16
	}{
		{"one", 0x3f800000, 0x3f80},
		{"exact", 0x40490000, 0x4049},
		{"below half rounds down", 0x3f807fff, 0x3f80},
		{"tie to even stays", 0x3f808000, 0x3f80},
		{"tie to even rounds up", 0x3f818000, 0x3f82},
		{"above half rounds up", 0x3f808001, 0x3f81},
		{"negative", 0xbf808001, 0xbf81},
		{"largest finite overflows to inf", 0x7f7fffff, 0x7f80},
		{"inf", 0x7f800000, 0x7f80},
		{"negative zero", 0x80000000, 0x8000},
		{"smallest subnormal flushes by rounding", 0x00000001, 0x0000},
		{"quiet nan", 0x7fc00000, 0x7fc0},
		{"signalling nan stays nan", 0x7f800001, 0x7fc0},
		{"negative nan with low payload", 0xff800001, 0xffc0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := toBF16(math.Float32frombits(tc.in)); got != tc.want {
				t.Fatalf("toBF16(%#08x) = %#04x, want %#04x", tc.in, got, tc.want)
			}
		})
	}
}

func TestBF16ErrorBound(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 100000 {
		x := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(60)-30)))
		y := fromBF16(toBF16(x))
		if d := math.Abs(float64(y) - float64(x)); d > math.Ldexp(math.Abs(float64(x)), -8) {
			t.Fatalf("bf16(%g) = %g: error %g above 2^-8 relative", x, y, d)
		}
		// Nearest: the neighbours are no closer.
		h := toBF16(x)
		for _, n := range []uint16{h - 1, h + 1} {
			if math.Abs(float64(fromBF16(n))-float64(x)) < math.Abs(float64(y)-float64(x)) {
				t.Fatalf("bf16(%g) = %g, but %g is closer", x, y, fromBF16(n))
			}
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := []float32{0, 1, -2.5, 3.140625, float32(math.Inf(-1)), 1e-3}
	for _, dt := range []DType{F32, BF16} {
		out := make([]float32, len(in))
		raw := encode(in, dt)
		if len(raw) != len(in)*elemSize(dt) {
			t.Fatalf("%v: %d bytes for %d values", dt, len(raw), len(in))
		}
		decode(out, raw, dt)
		for i := range in {
			if want := roundTrip(in[i], dt); math.Float32bits(out[i]) != math.Float32bits(want) {
				t.Fatalf("%v: value %d = %g, want %g", dt, i, out[i], want)
			}
		}
	}
}
