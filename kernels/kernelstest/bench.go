package kernelstest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// Bench runs one sub-benchmark per operation at decode-like shapes. Each
// reports the bytes it must move per iteration (weights and activations
// read, outputs written) through b.SetBytes, so MB/s compares with the
// machine's memory bandwidth.
func Bench(b *testing.B, newBackend func() kernels.Backend) {
	be := newBackend()
	rng := rand.New(rand.NewPCG(1, 2))
	type mm struct {
		dt      kernels.DType
		m, n, k int
	}
	var shapes []mm
	for _, dt := range []kernels.DType{kernels.BF16, kernels.F32} {
		for _, m := range []int{1, 4, 16} {
			shapes = append(shapes,
				mm{dt, m, 1024, 1024},
				mm{dt, m, 256, 1024}, // MoE expert gate/up
				mm{dt, m, 1024, 256}, // MoE expert down
			)
		}
	}
	shapes = append(shapes,
		mm{kernels.BF16, 1, 151936, 1024}, // lm_head
		mm{kernels.BF16, 4, 151936, 1024},
		mm{kernels.BF16, 16, 151936, 1024},
		mm{kernels.BF16, 128, 1024, 1024}, // prefill
	)
	for _, s := range shapes {
		b.Run(fmt.Sprintf("MatMul/%v/m=%d/n=%d/k=%d", s.dt, s.m, s.n, s.k), func(b *testing.B) {
			x := alloc(b, be, kernels.F32, s.m*s.k, rng)
			w := alloc(b, be, s.dt, s.n*s.k, rng)
			out := alloc(b, be, kernels.F32, s.m*s.n, nil)
			b.SetBytes(int64(s.n*s.k*s.dt.Size() + 4*s.m*(s.k+s.n)))
			for b.Loop() {
				be.MatMul(out, x, w, s.m, s.n, s.k)
			}
			mustNil(b, be.Sync())
		})
	}
	if fw, ok := be.(kernels.FP8Weights); ok {
		// FP8 weights in 128×128 blocks: the shapes of the BF16 runs
		// above, and one too large for the caches.
		for _, s := range []mm{{kernels.F8E4M3, 1, 1024, 1024}, {kernels.F8E4M3, 16, 1024, 1024},
			{kernels.F8E4M3, 1, 256, 1024}, {kernels.F8E4M3, 1, 32768, 1024}, {kernels.BF16, 1, 32768, 1024}} {
			b.Run(fmt.Sprintf("MatMul/%v/m=%d/n=%d/k=%d", s.dt, s.m, s.n, s.k), func(b *testing.B) {
				x := alloc(b, be, kernels.F32, s.m*s.k, rng)
				out := alloc(b, be, kernels.F32, s.m*s.n, nil)
				var w kernels.Buffer
				wbytes := s.n * s.k * s.dt.Size()
				if s.dt == kernels.F8E4M3 {
					f, _ := randFP8(rng, s.n, s.k, 128, 128, 0, 0)
					var err error
					w, err = fw.WrapFP8(f)
					mustNil(b, err)
					wbytes = len(f.Codes) + 4*len(f.Scales)
				} else {
					w = alloc(b, be, s.dt, s.n*s.k, rng)
				}
				b.SetBytes(int64(wbytes + 4*s.m*(s.k+s.n)))
				for b.Loop() {
					be.MatMul(out, x, w, s.m, s.n, s.k)
				}
				mustNil(b, be.Sync())
			})
		}
	}
	if gm, ok := be.(kernels.GroupedMatMul); ok {
		// The experts of one MoE layer: top-8 of one token, and 16 tokens
		// spread over 64 experts.
		for _, g := range []struct{ groups, rows, n, k int }{
			{8, 1, 256, 1024}, {8, 1, 1024, 256}, {64, 2, 256, 1024},
		} {
			b.Run(fmt.Sprintf("GroupedMatMul/BF16/groups=%d/rows=%d/n=%d/k=%d", g.groups, g.rows, g.n, g.k), func(b *testing.B) {
				m := g.groups * g.rows
				x := alloc(b, be, kernels.F32, m*g.k, rng)
				out := alloc(b, be, kernels.F32, m*g.n, nil)
				ws := make([]kernels.Buffer, g.groups)
				offs, rows := make([]int, g.groups), make([]int, g.groups)
				for i := range ws {
					ws[i] = alloc(b, be, kernels.BF16, g.n*g.k, rng)
					offs[i], rows[i] = i*g.rows, g.rows
				}
				b.SetBytes(int64(g.groups*g.n*g.k*2 + 4*m*(g.k+g.n)))
				for b.Loop() {
					gm.GroupedMatMul(out, x, ws, offs, rows, g.n, g.k)
				}
				mustNil(b, be.Sync())
			})
		}
	}
	for _, rows := range []int{1, 16} {
		const dim = 1024
		b.Run(fmt.Sprintf("RMSNorm/rows=%d/dim=%d", rows, dim), func(b *testing.B) {
			x := alloc(b, be, kernels.F32, rows*dim, rng)
			w := alloc(b, be, kernels.F32, dim, rng)
			out := alloc(b, be, kernels.F32, rows*dim, nil)
			b.SetBytes(int64(4 * (2*rows*dim + dim)))
			for b.Loop() {
				be.RMSNorm(out, x, w, rows, dim, 1e-6)
			}
			mustNil(b, be.Sync())
		})
	}
	b.Run("Softmax/rows=16/n=128", func(b *testing.B) {
		x := alloc(b, be, kernels.F32, 16*128, rng)
		b.SetBytes(2 * 4 * 16 * 128)
		for b.Loop() {
			be.Softmax(x, 16, 128)
		}
		mustNil(b, be.Sync())
	})
	b.Run("SiLUMul/n=16x768", func(b *testing.B) {
		const n = 16 * 768
		g, u := alloc(b, be, kernels.F32, n, rng), alloc(b, be, kernels.F32, n, rng)
		out := alloc(b, be, kernels.F32, n, nil)
		b.SetBytes(3 * 4 * n)
		for b.Loop() {
			be.SiLUMul(out, g, u, n)
		}
		mustNil(b, be.Sync())
	})
	b.Run("RoPE/rows=16/heads=16/dim=128", func(b *testing.B) {
		x := alloc(b, be, kernels.F32, 16*16*128, rng)
		pos := make([]int32, 16)
		for i := range pos {
			pos[i] = int32(1000 + i)
		}
		b.SetBytes(2 * 4 * 16 * 16 * 128)
		for b.Loop() {
			be.RoPE(x, 16, 16, 128, pos, 1e6)
		}
		mustNil(b, be.Sync())
	})
	b.Run("TopK/rows=16/n=128/k=8", func(b *testing.B) {
		x := alloc(b, be, kernels.F32, 16*128, rng)
		idx, val := make([]int32, 16*8), make([]float32, 16*8)
		b.SetBytes(4 * 16 * 128)
		for b.Loop() {
			mustNil(b, be.TopK(x, 16, 128, 8, idx, val))
		}
	})
	b.Run("ScatterAdd/rows=128/dim=1024", func(b *testing.B) {
		const rows, dim = 128, 1024
		x := alloc(b, be, kernels.F32, rows*dim, rng)
		out := alloc(b, be, kernels.F32, 16*dim, nil)
		dst := make([]int32, rows)
		scale := make([]float32, rows)
		for i := range dst {
			dst[i], scale[i] = int32(i%16), 0.125
		}
		b.SetBytes(3 * 4 * rows * dim)
		for b.Loop() {
			be.ScatterAdd(out, x, dst, scale, dim)
		}
		mustNil(b, be.Sync())
	})
	for _, ctx := range []int{512, 4096} {
		for _, tokens := range []int{1, 16} {
			b.Run(fmt.Sprintf("Attention/tokens=%d/ctx=%d/heads=16/kv=4/dim=128", tokens, ctx), func(b *testing.B) {
				p := kernels.AttnParams{Heads: 16, KVHeads: 4, HeadDim: 128, Scale: 0.088, BlockSize: 16}
				width := p.KVHeads * p.HeadDim
				for s := range tokens {
					table := make([]int32, ctx/p.BlockSize)
					for i := range table {
						table[i] = int32(s*len(table) + i)
					}
					p.BlockTables = append(p.BlockTables, table)
					p.SeqOf = append(p.SeqOf, int32(s))
					p.Pos = append(p.Pos, int32(ctx-1))
				}
				kc := alloc(b, be, kernels.F32, tokens*ctx*width, rng)
				vc := alloc(b, be, kernels.F32, tokens*ctx*width, rng)
				q := alloc(b, be, kernels.F32, tokens*p.Heads*p.HeadDim, rng)
				out := alloc(b, be, kernels.F32, tokens*p.Heads*p.HeadDim, nil)
				b.SetBytes(int64(2 * 4 * tokens * ctx * width))
				for b.Loop() {
					be.Attention(out, q, kc, vc, p)
				}
				mustNil(b, be.Sync())
			})
		}
	}
}

// alloc returns a buffer of n elements, random when rng is not nil.
func alloc(b *testing.B, be kernels.Backend, dt kernels.DType, n int, rng *rand.Rand) kernels.Buffer {
	b.Helper()
	buf, err := be.Alloc(dt, n)
	mustNil(b, err)
	b.Cleanup(func() { be.Free(buf) })
	if rng == nil {
		return buf
	}
	vals := randF32(rng, n, 1)
	if dt == kernels.BF16 {
		bits := make([]uint16, n)
		for i, v := range vals {
			bits[i] = toBF16(v)
		}
		mustNil(b, be.WriteBF16(buf, 0, bits))
	} else {
		mustNil(b, be.WriteF32(buf, 0, vals))
	}
	return buf
}
