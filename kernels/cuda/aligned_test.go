//go:build cuda

package cuda_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// TestAligned reaches every kernel variant and dispatch path with 16-byte
// aligned buffers (fresh allocations; kernelstest's guard offsets make
// views that only the scalar kernels take): the vector GEMV for every
// m = 1…16, the grouped GEMV for largest groups of 1…16 rows and the tiled
// kernels above, attention at head_dim 64 and 128 with several query heads
// per KV head. Each result is compared with the CPU backend and with a
// float64 reference computed here from the same inputs.
func TestAligned(t *testing.T) {
	t.Run("MatMul", func(t *testing.T) {
		tw := newTwin(t)
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
			for m := 1; m <= 17; m++ {
				// n: one column, a partial block and a partial warp pair,
				// and a model-like width; k: one vector per lane, a partial
				// unrolled step, a model-like depth.
				for _, s := range []struct{ n, k int }{{1, 256}, {17, 520}, {300, 1000}, {1030, 2048}} {
					if dt == kernels.F32 && s.k%4 != 0 || dt == kernels.BF16 && s.k%8 != 0 {
						t.Fatalf("k=%d is not a whole number of 16-byte vectors", s.k)
					}
					if m > 4 && s.n > 300 && m != 8 && m != 16 {
						continue // the large shape at the variants' edges only
					}
					what := fmt.Sprintf("MatMul %v m=%d n=%d k=%d", dt, m, s.n, s.k)
					x, xv := tw.randHost(kernels.F32, m*s.k, 1)
					w, wv := tw.randHost(dt, s.n*s.k, 0.05)
					out := tw.alloc(kernels.F32, m*s.n)
					tw.poison(out, m*s.n)
					tw.cpu.MatMul(out.c, x.c, w.c, m, s.n, s.k)
					tw.gpu.MatMul(out.g, x.g, w.g, m, s.n, s.k)
					tw.compare(what+" vs cpu", out, m*s.n, 1e-5)
					tw.compareRef(what+" vs float64", out.g, refMatMul(xv, wv, m, s.n, s.k), 1e-5)
				}
			}
		}
	})
	t.Run("GroupedMatMul", func(t *testing.T) {
		tw := newTwin(t)
		const n, k = 200, 1024
		for _, dt := range []kernels.DType{kernels.F32, kernels.BF16} {
			for _, rows := range [][]int{
				{1}, {2, 1}, {0, 3, 1}, {4, 4, 4}, {1, 0, 0, 1, 1, 1, 1, 1, 1, 1}, // M = 1…4
				{5, 2}, {8, 1, 7}, {9}, {16, 3, 11}, // M = 5…16: the m8 and m16 variants
				{17, 1}, {40, 0, 65}, // tiled
			} {
				what := fmt.Sprintf("GroupedMatMul %v rows=%v", dt, rows)
				off, total := make([]int, len(rows)), 0
				wc, wg := make([]kernels.Buffer, len(rows)), make([]kernels.Buffer, len(rows))
				wvals := make([][]float32, len(rows))
				for g, r := range rows {
					off[g], total = total, total+r
					var p pair
					p, wvals[g] = tw.randHost(dt, n*k, 0.05)
					wc[g], wg[g] = p.c, p.g
				}
				x, xv := tw.randHost(kernels.F32, total*k, 1)
				out := tw.alloc(kernels.F32, total*n)
				tw.poison(out, total*n)
				tw.cpu.(kernels.GroupedMatMul).GroupedMatMul(out.c, x.c, wc, off, rows, n, k)
				tw.gpu.(kernels.GroupedMatMul).GroupedMatMul(out.g, x.g, wg, off, rows, n, k)
				tw.compare(what+" vs cpu", out, total*n, 1e-5)
				ref := make([]float64, 0, total*n)
				for g, r := range rows {
					ref = append(ref, refMatMul(xv[off[g]*k:(off[g]+r)*k], wvals[g], r, n, k)...)
				}
				tw.compareRef(what+" vs float64", out.g, ref, 1e-5)
			}
		}
	})
	t.Run("Attention", func(t *testing.T) {
		for _, c := range []struct {
			heads, kvHeads, headDim int
			lens                    []int
			prefill                 bool
		}{
			{8, 2, 128, []int{1, 17, 300}, false}, // 4 query heads per KV head
			{32, 4, 128, []int{2000}, false},      // Qwen3-30B-A3B: 8 per KV head, split context
			{16, 16, 128, []int{40, 5}, true},     // one per KV head (MHA)
			{8, 1, 128, []int{33}, true},          // all heads on one KV head
			{16, 4, 64, []int{1, 100, 260}, false},
			{4, 2, 64, []int{50}, true},
		} {
			name := fmt.Sprintf("heads=%d/kv=%d/dim=%d/lens=%v/prefill=%v", c.heads, c.kvHeads, c.headDim, c.lens, c.prefill)
			t.Run(name, func(t *testing.T) {
				alignedAttention(newTwin(t), c.heads, c.kvHeads, c.headDim, c.lens, c.prefill)
			})
		}
	})
}

// randHost is tw.rand that also returns the values as stored (bf16
// rounded), for a float64 reference.
func (tw *twin) randHost(dt kernels.DType, n int, scale float64) (pair, []float32) {
	p := tw.alloc(dt, n)
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(tw.rng.NormFloat64() * scale)
	}
	if dt == kernels.BF16 {
		bits := make([]uint16, n)
		for i, v := range vals {
			bits[i] = uint16(math.Float32bits(v) >> 16)
			vals[i] = math.Float32frombits(uint32(bits[i]) << 16)
		}
		tw.check(tw.cpu.WriteBF16(p.c, 0, bits), tw.gpu.WriteBF16(p.g, 0, bits))
	} else {
		tw.check(tw.cpu.WriteF32(p.c, 0, vals), tw.gpu.WriteF32(p.g, 0, vals))
	}
	return p, vals
}

// compareRef reads len(ref) elements of the GPU buffer and fails when
// ‖gpu − ref‖ / ‖ref‖ exceeds tol or any element is NaN.
func (tw *twin) compareRef(what string, g kernels.Buffer, ref []float64, tol float64) {
	tw.t.Helper()
	got := make([]float32, len(ref))
	tw.check(tw.gpu.ReadF32(g, 0, got))
	var diff, norm float64
	for i, r := range ref {
		if math.IsNaN(float64(got[i])) {
			tw.t.Fatalf("%s: element %d is NaN (unwritten?), want %g", what, i, r)
		}
		d := float64(got[i]) - r
		diff += d * d
		norm += r * r
	}
	rel := math.Sqrt(diff / math.Max(norm, 1e-300))
	if rel > tol || math.IsNaN(rel) {
		tw.t.Fatalf("%s: relative error %.3g > %.3g", what, rel, tol)
	}
}

// refMatMul is out[m,n] = x[m,k]·w[n,k]ᵀ in float64.
func refMatMul(x, w []float32, m, n, k int) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for l := range k {
				s += float64(x[i*k+l]) * float64(w[j*k+l])
			}
			out[i*n+j] = s
		}
	}
	return out
}

// alignedAttention writes the KV of every position of each sequence, then
// attends from its last position (or, with prefill, sequence 0 from all
// its positions), comparing the GPU with the CPU backend and with float64.
func alignedAttention(tw *twin, heads, kvHeads, headDim int, lens []int, prefill bool) {
	p := kernels.AttnParams{Heads: heads, KVHeads: kvHeads, HeadDim: headDim, BlockSize: 16}
	p.Scale = float32(1 / math.Sqrt(float64(headDim)))
	width := kvHeads * headDim
	blocks := 0
	for _, l := range lens {
		blocks += (l + p.BlockSize - 1) / p.BlockSize
	}
	perm := tw.rng.Perm(blocks)
	cacheRows := blocks * p.BlockSize
	kc, vc := tw.alloc(kernels.F32, cacheRows*width), tw.alloc(kernels.F32, cacheRows*width)
	var slots []int32
	first := make([]int, len(lens)) // index in slots of each sequence's position 0
	for s, l := range lens {
		tab := make([]int32, (l+p.BlockSize-1)/p.BlockSize)
		for i := range tab {
			tab[i], perm = int32(perm[0]), perm[1:]
		}
		p.BlockTables = append(p.BlockTables, tab)
		first[s] = len(slots)
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
	k, kv := tw.randHost(kernels.F32, len(slots)*width, 1)
	v, vv := tw.randHost(kernels.F32, len(slots)*width, 1)
	tw.cpu.KVWrite(kc.c, vc.c, k.c, v.c, slots, width)
	tw.gpu.KVWrite(kc.g, vc.g, k.g, v.g, slots, width)
	n := len(p.Pos) * heads * headDim
	q, qv := tw.randHost(kernels.F32, n, 1)
	out := tw.alloc(kernels.F32, n)
	tw.poison(out, n)
	tw.cpu.Attention(out.c, q.c, kc.c, vc.c, p)
	tw.gpu.Attention(out.g, q.g, kc.g, vc.g, p)
	tw.compare("Attention vs cpu", out, n, 1e-5)

	ref := make([]float64, n)
	group := heads / kvHeads
	for t := range p.Pos {
		base := first[p.SeqOf[t]]
		for h := range heads {
			qh := qv[(t*heads+h)*headDim:][:headDim]
			kvOff := (h / group) * headDim
			scores := make([]float64, p.Pos[t]+1)
			mx := math.Inf(-1)
			for j := range scores {
				kr := kv[(base+j)*width+kvOff:][:headDim]
				var s float64
				for d := range headDim {
					s += float64(qh[d]) * float64(kr[d])
				}
				scores[j] = s * float64(p.Scale)
				mx = math.Max(mx, scores[j])
			}
			var sum float64
			for j := range scores {
				scores[j] = math.Exp(scores[j] - mx)
				sum += scores[j]
			}
			o := ref[(t*heads+h)*headDim:][:headDim]
			for j, w := range scores {
				vr := vv[(base+j)*width+kvOff:][:headDim]
				for d := range headDim {
					o[d] += w / sum * float64(vr[d])
				}
			}
		}
	}
	tw.compareRef("Attention vs float64", out.g, ref, 1e-5)
}
