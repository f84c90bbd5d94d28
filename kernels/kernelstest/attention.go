package kernelstest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/kernels"
)

// attnCase is a batch of tokens from several sequences over a paged cache
// whose blocks are handed out in random order.
type attnCase struct {
	p         kernels.AttnParams
	cacheRows int
	q, kc, vc []float32
}

func newAttnCase(rng *rand.Rand, heads, kvHeads, headDim, blockSize int, seqLens []int) attnCase {
	p := kernels.AttnParams{
		Heads: heads, KVHeads: kvHeads, HeadDim: headDim,
		Scale: float32(1 / math.Sqrt(float64(headDim))), BlockSize: blockSize,
	}
	nblocks := 0
	for _, l := range seqLens {
		nblocks += (l + blockSize - 1) / blockSize
	}
	nblocks += 2 // unused blocks
	perm := rng.Perm(nblocks)
	for s, l := range seqLens {
		nb := (l + blockSize - 1) / blockSize
		table := make([]int32, nb)
		for i := range table {
			table[i] = int32(perm[0])
			perm = perm[1:]
		}
		p.BlockTables = append(p.BlockTables, table)
		// The last positions (a prefill chunk or a decode step), plus a
		// few earlier ones.
		for pos := max(0, l-3); pos < l; pos++ {
			p.SeqOf, p.Pos = append(p.SeqOf, int32(s)), append(p.Pos, int32(pos))
		}
		if l > 5 {
			p.SeqOf, p.Pos = append(p.SeqOf, int32(s)), append(p.Pos, int32(rng.IntN(l-3)))
		}
	}
	rows := nblocks * blockSize
	width := kvHeads * headDim
	return attnCase{
		p: p, cacheRows: rows,
		q:  randF32(rng, len(p.SeqOf)*heads*headDim, 1),
		kc: randF32(rng, rows*width, 1),
		vc: randF32(rng, rows*width, 1),
	}
}

// ref returns the float64 attention output and, per element, Σ_p w_p·|v_p|,
// the scale of its rounding error.
func (a attnCase) ref() (out, scale []float64) {
	p := a.p
	d := p.HeadDim
	width := p.KVHeads * d
	qw := p.Heads * d
	out, scale = make([]float64, len(p.SeqOf)*qw), make([]float64, len(p.SeqOf)*qw)
	for t := range p.SeqOf {
		table := p.BlockTables[p.SeqOf[t]]
		n := int(p.Pos[t]) + 1
		for h := range p.Heads {
			kv := h / (p.Heads / p.KVHeads)
			rows := make([]int, n)
			s := make([]float64, n)
			mx := math.Inf(-1)
			for pos := range n {
				rows[pos] = int(table[pos/p.BlockSize])*p.BlockSize + pos%p.BlockSize
				var dot float64
				for i := range d {
					dot += float64(a.q[t*qw+h*d+i]) * float64(a.kc[rows[pos]*width+kv*d+i])
				}
				s[pos] = dot * float64(p.Scale)
				mx = math.Max(mx, s[pos])
			}
			var sum float64
			for pos := range s {
				s[pos] = math.Exp(s[pos] - mx)
				sum += s[pos]
			}
			for pos := range s {
				w := s[pos] / sum
				for i := range d {
					v := float64(a.vc[rows[pos]*width+kv*d+i])
					out[t*qw+h*d+i] += w * v
					scale[t*qw+h*d+i] += w * math.Abs(v)
				}
			}
		}
	}
	return out, scale
}

func (a attnCase) run(t *testing.T, be kernels.Backend) []float32 {
	t.Helper()
	q, kc, vc := f32Buf(t, be, a.q), f32Buf(t, be, a.kc), f32Buf(t, be, a.vc)
	out := newGuarded(t, be, kernels.F32, len(a.q))
	be.Attention(out.buf, q.buf, kc.buf, vc.buf, a.p)
	return out.read(t)
}

func testAttention(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	for _, hd := range [][2]int{{1, 1}, {2, 2}, {2, 1}, {4, 2}, {4, 1}, {8, 2}} {
		for _, headDim := range []int{4, 17, 64, 128} {
			for _, bs := range []int{1, 3, 16} {
				seqLens := []int{1, 2 + rng.IntN(20), 30 + rng.IntN(70)}
				a := newAttnCase(rng, hd[0], hd[1], headDim, bs, seqLens)
				got := a.run(t, be)
				want, scale := a.ref()
				c := &checker{t: t, what: name("Attention heads", hd[0], "kv", hd[1], "headDim", headDim, "block", bs)}
				// Score errors of ~1e-6·|q||k| move weights by as much;
				// allow for that on top of the accumulation error.
				for i, v := range got {
					c.near(i, v, want[i], scale[i], 2e-5)
				}
			}
		}
	}
}

// testAttentionReplicated checks that query heads find their KV head: a
// cache whose two KV heads hold the same data must give the same result as
// one KV head shared by all query heads.
func testAttentionReplicated(t *testing.T, be kernels.Backend) {
	rng := newRand(t)
	const heads, headDim = 4, 32
	one := newAttnCase(rng, heads, 1, headDim, 4, []int{9, 26})
	two := one
	two.p.KVHeads = 2
	dup := func(c []float32) []float32 {
		d := make([]float32, 0, 2*len(c))
		for r := 0; r < len(c); r += headDim {
			d = append(d, c[r:r+headDim]...)
			d = append(d, c[r:r+headDim]...)
		}
		return d
	}
	two.kc, two.vc = dup(one.kc), dup(one.vc)
	a, b := one.run(t, be), two.run(t, be)
	want, scale := one.ref()
	c := &checker{t: t, what: "Attention one KV head"}
	for i := range a {
		c.near(i, a[i], want[i], scale[i], 2e-5)
	}
	c.what = "Attention replicated KV heads"
	for i := range b {
		c.near(i, b[i], float64(a[i]), scale[i], 1e-6)
	}
}
