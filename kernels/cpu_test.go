package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/kernels/kernelstest"
)

func newCPU(t testing.TB) func() kernels.Backend {
	return func() kernels.Backend {
		c := kernels.NewCPU()
		t.Cleanup(c.Close)
		return c
	}
}

func TestCPU(t *testing.T) {
	kernelstest.Run(t, newCPU(t))
}

// TestCPUThreads runs the suite with more threads than this machine may
// have, so that every operation is split across the pool.
func TestCPUThreads(t *testing.T) {
	kernelstest.Run(t, func() kernels.Backend {
		c := kernels.NewCPU(kernels.WithThreads(5))
		t.Cleanup(c.Close)
		return c
	})
}

func BenchmarkCPU(b *testing.B) {
	kernelstest.Bench(b, func() kernels.Backend {
		c := kernels.NewCPU()
		b.Cleanup(c.Close)
		return c
	})
}

// TestCPUFeatures runs the suite on each narrower instruction set this
// processor supports, so the AVX2 kernels and the pure-Go fallback are
// tested on an AVX-512 machine too.
func TestCPUFeatures(t *testing.T) {
	for _, f := range []string{"avx2", "generic"} {
		t.Run(f, func(t *testing.T) {
			restore := kernels.SetFeatures(f)
			defer restore()
			t.Logf("kernels use %s", kernels.Features())
			kernelstest.Run(t, newCPU(t))
		})
	}
}

// TestMatMulBatchInvariant checks that a row's result does not depend on
// how many rows share the call, nor on the instruction set: every kernel
// accumulates a dot product the same way.
func TestMatMulBatchInvariant(t *testing.T) {
	const m, n, k = 19, 37, 1029
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, m*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	w := make([]uint16, n*k)
	for i := range w {
		w[i] = uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
	}
	run := func(features string, rows int) []float32 {
		restore := kernels.SetFeatures(features)
		defer restore()
		c := kernels.NewCPU()
		defer c.Close()
		out := make([]float32, rows*n)
		c.MatMul(c.WrapF32(out), c.WrapF32(x[:rows*k]), c.WrapBF16(w), rows, n, k)
		return out
	}
	want := run("", m)
	for _, features := range []string{"", "avx2"} {
		for _, rows := range []int{1, 2, 5, m} {
			got := run(features, rows)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("features %q, %d rows: element %d = %g, with %d rows %g", features, rows, i, got[i], m, want[i])
				}
			}
		}
	}
}

// TestBF16Activations checks that the option multiplies BF16 weights by x
// rounded to bfloat16, and leaves F32 weights alone.
func TestBF16Activations(t *testing.T) {
	const m, n, k = 3, 5, 40
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, m*k)
	xr := make([]float32, m*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
		b := math.Float32bits(x[i])
		xr[i] = math.Float32frombits((b + 0x7fff + (b>>16)&1) &^ 0xffff)
	}
	w := make([]uint16, n*k)
	wf := make([]float32, n*k)
	for i := range w {
		w[i] = uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
		wf[i] = math.Float32frombits(uint32(w[i]) << 16)
	}
	plain, rounding := kernels.NewCPU(), kernels.NewCPU(kernels.WithBF16Activations())
	defer plain.Close()
	defer rounding.Close()
	mul := func(c *kernels.CPU, x []float32, w kernels.Buffer) []float32 {
		out := make([]float32, m*n)
		c.MatMul(c.WrapF32(out), c.WrapF32(x), w, m, n, k)
		return out
	}
	cases := []struct {
		name      string
		got, want []float32
	}{
		{"bf16", mul(rounding, x, rounding.WrapBF16(w)), mul(plain, xr, plain.WrapBF16(w))},
		{"f32", mul(rounding, x, rounding.WrapF32(wf)), mul(plain, x, plain.WrapF32(wf))},
	}
	for _, tc := range cases {
		for i := range tc.got {
			if tc.got[i] != tc.want[i] {
				t.Errorf("%s: element %d = %g, want %g", tc.name, i, tc.got[i], tc.want[i])
			}
		}
	}
	if x[0] == xr[0] && x[1] == xr[1] {
		t.Fatal("rounding changed nothing: the test proves nothing")
	}
}

// TestE4M3Values pins the FP8 decoding on values from the OCP FP8
// specification (E4M3: bias 7, max normal 448, min subnormal 2⁻⁹).
func TestE4M3Values(t *testing.T) {
	tests := []struct {
		code byte
		want float32
	}{
		{0x00, 0}, {0x80, float32(math.Copysign(0, -1))},
		{0x01, 1.0 / 512}, {0x07, 7.0 / 512}, {0x08, 1.0 / 64},
		{0x38, 1}, {0x39, 1.125}, {0x40, 2}, {0xc0, -2},
		{0x7e, 448}, {0xfe, -448}, {0x77, 240},
	}
	for _, tc := range tests {
		if got := kernels.E4M3ToF32(tc.code); got != tc.want || math.Signbit(float64(got)) != math.Signbit(float64(tc.want)) {
			t.Errorf("E4M3ToF32(%#02x) = %g, want %g", tc.code, got, tc.want)
		}
	}
	for _, nan := range []byte{0x7f, 0xff} {
		if got := kernels.E4M3ToF32(nan); !math.IsNaN(float64(got)) {
			t.Errorf("E4M3ToF32(%#02x) = %g, want NaN", nan, got)
		}
	}
}

// TestCPUBF16Compute runs the bf16 compute conformance on the VDPBF16PS
// kernels where the processor has them, on their pure-Go emulation, and
// with more threads than cores.
func TestCPUBF16Compute(t *testing.T) {
	for _, f := range []string{"", "avx512"} {
		t.Run("features="+f, func(t *testing.T) {
			restore := kernels.SetFeatures(f)
			defer restore()
			t.Logf("kernels use %s, native bf16 dot products %v", kernels.Features(), kernels.BF16DotNative())
			kernelstest.RunBF16Compute(t, func() kernels.Backend {
				c := kernels.NewCPU(kernels.WithCompute(kernels.ComputeBF16))
				t.Cleanup(c.Close)
				return c
			}, 2)
		})
	}
	kernelstest.RunBF16Compute(t, func() kernels.Backend {
		c := kernels.NewCPU(kernels.WithCompute(kernels.ComputeBF16), kernels.WithThreads(5))
		t.Cleanup(c.Close)
		return c
	}, 2)
}

// BenchmarkCompute compares the f32 and bf16 compute paths on the BF16
// matmuls of the bench preset (hidden 1024, 16 query and 4 KV heads of
// 128, experts of 256, vocabulary 151,936) at batch 16 and in a prefill
// of 128 tokens. MB/s counts multiply-adds (one per "byte").
func BenchmarkCompute(b *testing.B) {
	type shape struct {
		name    string
		m, n, k int
	}
	shapes := []shape{
		{"qkv/m=16", 16, 3072, 1024}, {"o/m=16", 16, 1024, 2048},
		{"lm_head/m=16", 16, 151936, 1024},
		{"qkv/m=128", 128, 3072, 1024}, {"expert_up/m=128", 128, 256, 1024},
		{"expert_down/m=128", 128, 1024, 256},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range shapes {
		x := make([]float32, s.m*s.k)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		w := make([]uint16, s.n*s.k)
		for i := range w {
			w[i] = uint16(math.Float32bits(float32(rng.NormFloat64()*0.05)) >> 16)
		}
		out := make([]float32, s.m*s.n)
		for _, cm := range []kernels.Compute{kernels.ComputeF32, kernels.ComputeBF16} {
			b.Run(s.name+"/compute="+cm.String(), func(b *testing.B) {
				c := kernels.NewCPU(kernels.WithCompute(cm))
				defer c.Close()
				xb, wb, ob := c.WrapF32(x), c.WrapBF16(w), c.WrapF32(out)
				b.SetBytes(int64(s.m * s.n * s.k))
				for b.Loop() {
					c.MatMul(ob, xb, wb, s.m, s.n, s.k)
				}
			})
		}
	}
}
