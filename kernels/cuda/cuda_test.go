//go:build cuda

package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/kernels/cuda"
	"github.com/moemesh/moemesh/kernels/kernelstest"
)

// The tests share one Backend on the device named by MOEMESH_CUDA_DEVICE
// (default 0).
var (
	openOnce sync.Once
	shared   *cuda.Backend
	openErr  error
)

func gpu(tb testing.TB) *cuda.Backend {
	tb.Helper()
	openOnce.Do(func() {
		dev := 0
		if s := os.Getenv("MOEMESH_CUDA_DEVICE"); s != "" {
			if dev, openErr = strconv.Atoi(s); openErr != nil {
				return
			}
		}
		shared, openErr = cuda.Open(dev)
		if openErr == nil {
			fmt.Fprintf(os.Stderr, "cuda: testing on %s\n", shared.Info())
		}
	})
	if openErr != nil {
		tb.Fatalf("opening the CUDA device: %v", openErr)
	}
	return shared
}

func TestConformance(t *testing.T) {
	be := gpu(t)
	kernelstest.Run(t, func() kernels.Backend { return be })
}

func BenchmarkConformance(b *testing.B) {
	be := gpu(b)
	kernelstest.Bench(b, func() kernels.Backend { return be })
}

// twin runs each operation on the CPU backend and on the GPU with the
// same inputs.
type twin struct {
	t   *testing.T
	cpu kernels.Backend
	gpu kernels.Backend
	rng *rand.Rand
}

// pair is one logical buffer on both backends.
type pair struct{ c, g kernels.Buffer }

func (tw *twin) alloc(dt kernels.DType, n int) pair {
	c, err := tw.cpu.Alloc(dt, n)
	if err != nil {
		tw.t.Fatal(err)
	}
	g, err := tw.gpu.Alloc(dt, n)
	if err != nil {
		tw.t.Fatal(err)
	}
	tw.t.Cleanup(func() { tw.gpu.Free(g) })
	return pair{c, g}
}

// rand returns a buffer of n values drawn from N(0, scale²); BF16 buffers
// hold the values rounded to bfloat16.
func (tw *twin) rand(dt kernels.DType, n int, scale float64) pair {
	p := tw.alloc(dt, n)
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(tw.rng.NormFloat64() * scale)
	}
	if dt == kernels.BF16 {
		bits := make([]uint16, n)
		for i, v := range vals {
			bits[i] = uint16(math.Float32bits(v) >> 16)
		}
		tw.check(tw.cpu.WriteBF16(p.c, 0, bits), tw.gpu.WriteBF16(p.g, 0, bits))
	} else {
		tw.check(tw.cpu.WriteF32(p.c, 0, vals), tw.gpu.WriteF32(p.g, 0, vals))
	}
	return p
}

// poison fills an F32 buffer with NaN so unwritten outputs show.
func (tw *twin) poison(p pair, n int) {
	nan := make([]float32, n)
	for i := range nan {
		nan[i] = float32(math.NaN())
	}
	tw.check(tw.cpu.WriteF32(p.c, 0, nan), tw.gpu.WriteF32(p.g, 0, nan))
}

func (tw *twin) view(p pair, off, n int) pair {
	return pair{tw.cpu.View(p.c, off, n), tw.gpu.View(p.g, off, n)}
}

func (tw *twin) check(errs ...error) {
	tw.t.Helper()
	for _, err := range errs {
		if err != nil {
			tw.t.Fatal(err)
		}
	}
}

// compare reads n elements of p from both backends and fails when
// ‖gpu − cpu‖ / ‖cpu‖ exceeds tol or any element is NaN on one side only.
func (tw *twin) compare(what string, p pair, n int, tol float64) {
	tw.t.Helper()
	c, g := make([]float32, n), make([]float32, n)
	tw.check(tw.cpu.ReadF32(p.c, 0, c), tw.gpu.ReadF32(p.g, 0, g))
	var diff, ref float64
	for i := range c {
		if math.IsNaN(float64(c[i])) != math.IsNaN(float64(g[i])) {
			tw.t.Fatalf("%s: element %d: gpu %g, cpu %g", what, i, g[i], c[i])
		}
		d := float64(g[i]) - float64(c[i])
		diff += d * d
		ref += float64(c[i]) * float64(c[i])
	}
	rel := math.Sqrt(diff / math.Max(ref, 1e-300))
	if rel > tol || math.IsNaN(rel) {
		tw.t.Fatalf("%s: relative error %.3g > %.3g", what, rel, tol)
	}
	tw.t.Logf("%s: relative error %.3g", what, rel)
}

func newTwin(t *testing.T) *twin {
	return &twin{t: t, cpu: kernels.NewCPU(), gpu: gpu(t), rng: rand.New(rand.NewPCG(uint64(len(t.Name())), 7))}
}

// TestCrossCheckCPU compares the GPU with the CPU backend on random inputs
// at model-like shapes, including every MatMul path (vector GEMV, scalar
// GEMV on unaligned views, tiled) and the grouped form.
func TestCrossCheckCPU(t *testing.T) {
	t.Run("MatMul", func(t *testing.T) {
		tw := newTwin(t)
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
			for _, s := range []struct{ m, n, k, off int }{
				{1, 4096, 2048, 0}, {2, 768, 2048, 0}, {5, 2048, 768, 0}, {8, 1000, 1024, 0},
				{3, 257, 1001, 0}, {4, 300, 512, 1}, // scalar GEMV: odd k, unaligned view
				{9, 300, 512, 0}, {70, 1030, 2048, 0}, {257, 129, 77, 3}, // tiled
			} {
				x := tw.rand(kernels.F32, s.m*s.k+s.off, 1)
				w := tw.rand(dt, s.n*s.k+s.off, 0.05)
				out := tw.alloc(kernels.F32, s.m*s.n)
				tw.poison(out, s.m*s.n)
				xv, wv := tw.view(x, s.off, s.m*s.k), tw.view(w, s.off, s.n*s.k)
				tw.cpu.MatMul(out.c, xv.c, wv.c, s.m, s.n, s.k)
				tw.gpu.MatMul(out.g, xv.g, wv.g, s.m, s.n, s.k)
				tw.compare(fmt.Sprintf("MatMul %v m=%d n=%d k=%d off=%d", dt, s.m, s.n, s.k, s.off), out, s.m*s.n, 1e-5)
			}
		}
	})
	t.Run("GroupedMatMul", func(t *testing.T) {
		tw := newTwin(t)
		const n, k = 768, 2048
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
			for _, rows := range [][]int{
				{1, 0, 1, 1, 1, 1, 1, 1, 1}, // decode: one token each
				{3, 8, 0, 5, 1},
				{40, 100, 0, 7, 65}, // prefill: tiled
			} {
				off, total := make([]int, len(rows)), 0
				ws := make([]pair, len(rows))
				wc, wg := make([]kernels.Buffer, len(rows)), make([]kernels.Buffer, len(rows))
				for g, r := range rows {
					off[g], total = total, total+r
					ws[g] = tw.rand(dt, n*k, 0.05)
					wc[g], wg[g] = ws[g].c, ws[g].g
				}
				x := tw.rand(kernels.F32, total*k, 1)
				out := tw.alloc(kernels.F32, total*n)
				tw.poison(out, total*n)
				tw.cpu.(kernels.GroupedMatMul).GroupedMatMul(out.c, x.c, wc, off, rows, n, k)
				tw.gpu.(kernels.GroupedMatMul).GroupedMatMul(out.g, x.g, wg, off, rows, n, k)
				tw.compare(fmt.Sprintf("GroupedMatMul %v rows=%v", dt, rows), out, total*n, 1e-5)
			}
		}
	})
	t.Run("RMSNorm", func(t *testing.T) {
		tw := newTwin(t)
		for _, s := range []struct{ rows, dim int }{{5, 2048}, {64 * 4, 128}, {3, 4096}, {2, 3001}} {
			x := tw.rand(kernels.F32, s.rows*s.dim, 3)
			w := tw.rand(kernels.F32, s.dim, 1)
			out := tw.alloc(kernels.F32, s.rows*s.dim)
			tw.cpu.RMSNorm(out.c, x.c, w.c, s.rows, s.dim, 1e-6)
			tw.gpu.RMSNorm(out.g, x.g, w.g, s.rows, s.dim, 1e-6)
			tw.compare(fmt.Sprintf("RMSNorm rows=%d dim=%d", s.rows, s.dim), out, s.rows*s.dim, 1e-6)
		}
	})
	t.Run("RoPE", func(t *testing.T) {
		tw := newTwin(t)
		const rows, heads, hd = 7, 4, 128
		x := tw.rand(kernels.F32, rows*heads*hd, 1)
		pos := make([]int32, rows)
		for i := range pos {
			pos[i] = int32(tw.rng.IntN(40960))
		}
		tw.cpu.RoPE(x.c, rows, heads, hd, pos, 1e6)
		tw.gpu.RoPE(x.g, rows, heads, hd, pos, 1e6)
		tw.compare("RoPE", x, rows*heads*hd, 1e-6)
	})
	t.Run("SoftmaxTopK", func(t *testing.T) {
		tw := newTwin(t)
		for _, n := range []int{128, 151936} {
			const rows, k = 3, 8
			x := tw.rand(kernels.F32, rows*n, 4)
			// Top-k first, while both sides hold identical values.
			ci, gi := make([]int32, rows*k), make([]int32, rows*k)
			cv, gv := make([]float32, rows*k), make([]float32, rows*k)
			tw.check(tw.cpu.TopK(x.c, rows, n, k, ci, cv), tw.gpu.TopK(x.g, rows, n, k, gi, gv))
			for i := range ci {
				if ci[i] != gi[i] || cv[i] != gv[i] {
					t.Fatalf("TopK n=%d: rank %d: gpu (%d, %g), cpu (%d, %g)", n, i, gi[i], gv[i], ci[i], cv[i])
				}
			}
			tw.cpu.Softmax(x.c, rows, n)
			tw.gpu.Softmax(x.g, rows, n)
			tw.compare(fmt.Sprintf("Softmax n=%d", n), x, rows*n, 1e-6)
		}
	})
	t.Run("SiLUMulAdd", func(t *testing.T) {
		tw := newTwin(t)
		const n = 8*768 + 5
		g, u := tw.rand(kernels.F32, n, 3), tw.rand(kernels.F32, n, 1)
		out := tw.alloc(kernels.F32, n)
		tw.cpu.SiLUMul(out.c, g.c, u.c, n)
		tw.gpu.SiLUMul(out.g, g.g, u.g, n)
		tw.compare("SiLUMul", out, n, 1e-6)
		tw.cpu.Add(out.c, out.c, g.c, n)
		tw.gpu.Add(out.g, out.g, g.g, n)
		tw.compare("Add", out, n, 1e-7)
	})
	t.Run("EmbedGatherScatter", func(t *testing.T) {
		tw := newTwin(t)
		const vocab, dim = 1000, 2048
		table := tw.rand(kernels.BF16, vocab*dim, 1)
		ids := []int32{5, 999, 0, 5, 123}
		emb := tw.alloc(kernels.F32, len(ids)*dim)
		tw.cpu.Embed(emb.c, table.c, ids, dim)
		tw.gpu.Embed(emb.g, table.g, ids, dim)
		tw.compare("Embed", emb, len(ids)*dim, 0)
		rows := []int32{4, 0, 0, 2, 4, 1, 3, 4}
		got := tw.alloc(kernels.F32, len(rows)*dim)
		tw.cpu.Gather(got.c, emb.c, rows, dim)
		tw.gpu.Gather(got.g, emb.g, rows, dim)
		tw.compare("Gather", got, len(rows)*dim, 0)
		scale := make([]float32, len(rows))
		for i := range scale {
			scale[i] = float32(tw.rng.Float64())
		}
		tw.cpu.ScatterAdd(emb.c, got.c, rows, scale, dim)
		tw.gpu.ScatterAdd(emb.g, got.g, rows, scale, dim)
		tw.compare("ScatterAdd", emb, len(ids)*dim, 1e-6)
	})
	for _, c := range []struct {
		name    string
		headDim int
		lens    []int
		prefill bool // sequence 0 is a prefill of its whole length
		off     int  // view offset of q and out: 1 forces the generic kernel
	}{
		{"d128/prefill+decode", 128, []int{40, 500, 1030}, true, 0},
		{"d128/decode/split", 128, []int{3000, 1500}, false, 0},
		{"d128/unaligned", 128, []int{70, 600}, true, 1},
		{"d64", 64, []int{40, 300}, true, 0},
	} {
		t.Run("KVWriteAttention/"+c.name, func(t *testing.T) {
			testAttention(newTwin(t), c.headDim, c.lens, c.prefill, c.off)
		})
	}
}

// testAttention fills a paged cache for sequences of the given lengths
// through KVWrite, then attends: every sequence decodes its last position,
// except sequence 0 with prefill, which attends from all its positions.
func testAttention(tw *twin, headDim int, lens []int, prefill bool, off int) {
	p := kernels.AttnParams{Heads: 8, KVHeads: 2, HeadDim: headDim, BlockSize: 16}
	p.Scale = float32(1 / math.Sqrt(float64(p.HeadDim)))
	width := p.KVHeads * p.HeadDim
	blocks := 0
	for _, l := range lens {
		blocks += (l + p.BlockSize - 1) / p.BlockSize
	}
	perm := tw.rng.Perm(blocks) // scattered blocks
	cacheRows := blocks * p.BlockSize
	kc, vc := tw.alloc(kernels.F32, cacheRows*width), tw.alloc(kernels.F32, cacheRows*width)
	var slots []int32
	for s, l := range lens {
		tab := make([]int32, (l+p.BlockSize-1)/p.BlockSize)
		for i := range tab {
			tab[i], perm = int32(perm[0]), perm[1:]
		}
		p.BlockTables = append(p.BlockTables, tab)
		for j := range l {
			slots = append(slots, tab[j/p.BlockSize]*int32(p.BlockSize)+int32(j%p.BlockSize))
		}
		if s == 0 && prefill {
			for j := range l {
				p.SeqOf, p.Pos = append(p.SeqOf, int32(s)), append(p.Pos, int32(j))
			}
		} else {
			p.SeqOf, p.Pos = append(p.SeqOf, int32(s)), append(p.Pos, int32(l-1))
		}
	}
	k, v := tw.rand(kernels.F32, len(slots)*width, 1), tw.rand(kernels.F32, len(slots)*width, 1)
	tw.cpu.KVWrite(kc.c, vc.c, k.c, v.c, slots, width)
	tw.gpu.KVWrite(kc.g, vc.g, k.g, v.g, slots, width)
	tw.compare("KVWrite k", kc, cacheRows*width, 0)
	tw.compare("KVWrite v", vc, cacheRows*width, 0)
	n := len(p.Pos) * p.Heads * p.HeadDim
	q := tw.view(tw.rand(kernels.F32, n+off, 1), off, n)
	out := tw.view(tw.alloc(kernels.F32, n+off), off, n)
	tw.poison(out, n)
	tw.cpu.Attention(out.c, q.c, kc.c, vc.c, p)
	tw.gpu.Attention(out.g, q.g, kc.g, vc.g, p)
	tw.compare("Attention", out, n, 1e-5)
}

// Model-shaped benchmarks (Qwen3-30B-A3B, one GPU). Each reports the
// bytes it must move (GB/s) and, for matrix products, GFLOP/s. Weights and
// KV caches rotate among copies larger than the L2 together; the RMSNorm
// and Softmax inputs are small and stay cache-resident. Unlike a
// loop that stops its timer before the final Sync, these include it, so
// the numbers are device throughput, not launch rate.

// benchOp times op(i) for i in [0, b.N), Sync included; op rotates among
// input copies (see copies) so that repeated runs do not measure the L2.
func benchOp(b *testing.B, be *cuda.Backend, bytes, flops float64, op func(i int)) {
	op(0) // warm-up: module JIT and first-touch costs stay out
	if err := be.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		op(i)
	}
	if err := be.Sync(); err != nil {
		b.Fatal(err)
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(bytes/sec/1e9, "GB/s")
	if flops > 0 {
		b.ReportMetric(flops/sec/1e9, "GFLOP/s")
	}
}

// copies is how many copies of an input of the given size make a working
// set well beyond the L2 cache (50 MB on an H100, 60 MB on an H200).
func copies(bytes int) int {
	const set = 256 << 20
	return max(1, min(16, (set+bytes-1)/bytes))
}

// benchBuf allocates n elements freed when tb ends and, with rng, fills
// them with uniform values in [-1, 1) (never zeros: they can run faster).
func benchBuf(tb testing.TB, be *cuda.Backend, dt kernels.DType, n int, rng *rand.Rand) kernels.Buffer {
	buf, err := be.Alloc(dt, n)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { be.Free(buf) })
	if rng == nil {
		return buf
	}
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(int32(rng.Uint32())) * (1.0 / (1 << 31))
	}
	if dt == kernels.BF16 {
		bits := make([]uint16, n)
		for i, v := range vals {
			bits[i] = uint16(math.Float32bits(v) >> 16)
		}
		err = be.WriteBF16(buf, 0, bits)
	} else {
		err = be.WriteF32(buf, 0, vals)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return buf
}

// memo returns a function that makes a sub-benchmark's inputs on its first
// call and returns the same inputs afterwards: b.Run calls a benchmark's
// function once per b.N round, and the inputs (hundreds of MB of random
// data) must be generated once. They are freed when parent ends.
func memo[T any](parent *testing.B, mk func(tb testing.TB) T) func() T {
	var v T
	done := false
	return func() T {
		if !done {
			v, done = mk(parent), true
		}
		return v
	}
}

// BenchmarkDeviceCopy measures device-to-device copy bandwidth (bytes read
// plus bytes written), the ceiling for the memory-bound kernels.
func BenchmarkDeviceCopy(b *testing.B) {
	be := gpu(b)
	const n = 256 << 20 // 1 GiB of F32
	src := benchBuf(b, be, kernels.F32, n, nil)
	dst := benchBuf(b, be, kernels.F32, n, nil)
	benchOp(b, be, 2*4*n, 0, func(int) { be.Copy(dst, src) })
}

func BenchmarkModel(b *testing.B) {
	be := gpu(b)
	parent := b
	rng := rand.New(rand.NewPCG(3, 4))
	const hidden, vocab, moeInter, experts = 2048, 151936, 768, 8
	// Weight copies per (n, k), shared by the batch sizes of one shape.
	weights := map[[2]int]func() []kernels.Buffer{}
	for _, s := range []struct {
		name    string
		m, n, k int
	}{
		{"q_proj", 1, 4096, hidden},
		{"q_proj", 8, 4096, hidden},
		{"q_proj", 16, 4096, hidden},
		{"o_proj", 1, hidden, 4096},
		{"o_proj", 16, hidden, 4096},
		{"lm_head", 1, vocab, hidden},
		{"lm_head", 8, vocab, hidden},
		{"lm_head", 16, vocab, hidden},
		{"q_proj_prefill", 512, 4096, hidden},
	} {
		key := [2]int{s.n, s.k}
		if weights[key] == nil {
			weights[key] = memo(b, func(tb testing.TB) []kernels.Buffer {
				w := make([]kernels.Buffer, copies(2*s.n*s.k))
				for i := range w {
					w[i] = benchBuf(tb, be, kernels.BF16, s.n*s.k, rng)
				}
				return w
			})
		}
		wfn := weights[key]
		xo := memo(b, func(tb testing.TB) [2]kernels.Buffer {
			return [2]kernels.Buffer{benchBuf(tb, be, kernels.F32, s.m*s.k, rng), benchBuf(tb, be, kernels.F32, s.m*s.n, nil)}
		})
		b.Run(fmt.Sprintf("MatMul/%s/BF16/m=%d/n=%d/k=%d", s.name, s.m, s.n, s.k), func(b *testing.B) {
			w := wfn()
			x, out := xo()[0], xo()[1]
			bytes := float64(2*s.n*s.k + 4*s.m*(s.k+s.n))
			benchOp(b, be, bytes, 2*float64(s.m*s.n*s.k), func(i int) { be.MatMul(out, x, w[i%len(w)], s.m, s.n, s.k) })
		})
	}
	const groups = 128
	expertW := memo(b, func(tb testing.TB) []kernels.Buffer {
		ws := make([]kernels.Buffer, groups)
		for g := range ws {
			ws[g] = benchBuf(tb, be, kernels.BF16, moeInter*hidden, rng)
		}
		return ws
	})
	for _, tokens := range []int{1, 8, 16, 512} {
		// Each token picks 8 of 128 experts; all 128 are local here.
		rows := make([]int, groups)
		for range tokens * experts {
			rows[rng.IntN(groups)]++
		}
		off, total, used := make([]int, groups), 0, 0
		for g := range groups {
			off[g], total = total, total+rows[g]
			if rows[g] > 0 {
				used++
			}
		}
		xo := memo(b, func(tb testing.TB) [2]kernels.Buffer {
			return [2]kernels.Buffer{benchBuf(tb, be, kernels.F32, total*hidden, rng), benchBuf(tb, be, kernels.F32, total*moeInter, nil)}
		})
		b.Run(fmt.Sprintf("GroupedMatMul/experts_up/BF16/tokens=%d", tokens), func(b *testing.B) {
			ws := expertW()
			x, out := xo()[0], xo()[1]
			bytes := float64(used*2*moeInter*hidden + 4*total*(hidden+moeInter))
			// Each iteration routes to a different set of experts.
			perms := make([][]kernels.Buffer, copies(used*2*moeInter*hidden))
			for r := range perms {
				perms[r] = make([]kernels.Buffer, groups)
				for g, e := range rng.Perm(groups) {
					perms[r][g] = ws[e]
				}
			}
			benchOp(b, be, bytes, 2*float64(total*moeInter*hidden), func(i int) {
				be.GroupedMatMul(out, x, perms[i%len(perms)], off, rows, moeInter, hidden)
			})
		})
	}
	for _, s := range []struct{ batch, ctx int }{{1, 4096}, {8, 4096}, {16, 4096}, {32, 1024}} {
		type attnIn struct{ kc, vc []kernels.Buffer }
		var in func() attnIn
		b.Run(fmt.Sprintf("Attention/decode/batch=%d/ctx=%d/heads=32/kv=4/dim=128", s.batch, s.ctx), func(b *testing.B) {
			p := kernels.AttnParams{Heads: 32, KVHeads: 4, HeadDim: 128, Scale: 0.088, BlockSize: 16}
			width := p.KVHeads * p.HeadDim
			for q := range s.batch {
				tab := make([]int32, s.ctx/p.BlockSize)
				for i := range tab {
					tab[i] = int32(q*len(tab) + i)
				}
				p.BlockTables = append(p.BlockTables, tab)
				p.SeqOf, p.Pos = append(p.SeqOf, int32(q)), append(p.Pos, int32(s.ctx-1))
			}
			cache := s.batch * s.ctx * width
			if in == nil {
				in = memo(parent, func(tb testing.TB) attnIn {
					kc, vc := make([]kernels.Buffer, copies(2*4*cache)), make([]kernels.Buffer, copies(2*4*cache))
					for i := range kc {
						kc[i], vc[i] = benchBuf(tb, be, kernels.F32, cache, rng), benchBuf(tb, be, kernels.F32, cache, rng)
					}
					return attnIn{kc, vc}
				})
			}
			kc, vc := in().kc, in().vc
			q := benchBuf(b, be, kernels.F32, s.batch*p.Heads*p.HeadDim, rng)
			out := benchBuf(b, be, kernels.F32, s.batch*p.Heads*p.HeadDim, nil)
			benchOp(b, be, float64(2*4*cache), 4*float64(s.batch*s.ctx*p.Heads*p.HeadDim),
				func(i int) { be.Attention(out, q, kc[i%len(kc)], vc[i%len(vc)], p) })
		})
	}
	b.Run("RMSNorm/rows=16/dim=2048", func(b *testing.B) {
		x := benchBuf(b, be, kernels.F32, 16*hidden, rng)
		w := benchBuf(b, be, kernels.F32, hidden, rng)
		benchOp(b, be, 4*float64(2*16*hidden+hidden), 0, func(int) { be.RMSNorm(x, x, w, 16, hidden, 1e-6) })
	})
	b.Run("SiLUMul/n=16Mi", func(b *testing.B) {
		const n = 16 << 20
		g, u := benchBuf(b, be, kernels.F32, n, rng), benchBuf(b, be, kernels.F32, n, rng)
		benchOp(b, be, 3*4*n, 0, func(int) { be.SiLUMul(g, g, u, n) })
	})
	b.Run("Softmax/rows=8/n=151936", func(b *testing.B) {
		x := benchBuf(b, be, kernels.F32, 8*vocab, rng)
		benchOp(b, be, 3*4*8*vocab, 0, func(int) { be.Softmax(x, 8, vocab) })
	})
}
