package kernels

import (
	"fmt"
	"math"
)

// Attention computes softmax(Scale · q·Kᵀ) · V for every token and query
// head over the token's visible rows of the paged cache. Scores are float32
// dot products; the softmax subtracts the maximum, sums the float32
// exponentials in float64 and scales them by the rounded reciprocal; the
// output accumulates the weighted V rows in float32 in order of position.
// Threads split the (token, head) pairs.
func (c *CPU) Attention(out, q, kc, vc Buffer, p AttnParams) {
	o, qs := f32Of(out, "Attention out"), f32Of(q, "Attention q")
	ks, vs := f32Of(kc, "Attention kc"), f32Of(vc, "Attention vc")
	if p.Heads <= 0 || p.KVHeads <= 0 || p.Heads%p.KVHeads != 0 || p.HeadDim <= 0 || p.BlockSize <= 0 {
		panic(fmt.Sprintf("kernels: Attention with %d heads, %d KV heads, head dim %d, block size %d",
			p.Heads, p.KVHeads, p.HeadDim, p.BlockSize))
	}
	tokens := len(p.SeqOf)
	if len(p.Pos) != tokens {
		panic(fmt.Sprintf("kernels: Attention with %d sequence ids and %d positions", tokens, len(p.Pos)))
	}
	d, width := p.HeadDim, p.KVHeads*p.HeadDim
	qw := p.Heads * d
	need("Attention q", len(qs), tokens*qw)
	need("Attention out", len(o), tokens*qw)
	cacheRows := min(len(ks), len(vs)) / width
	maxLen := 0
	for t := range tokens {
		s, pos := int(p.SeqOf[t]), int(p.Pos[t])
		if s < 0 || s >= len(p.BlockTables) || pos < 0 || pos/p.BlockSize >= len(p.BlockTables[s]) {
			panic(fmt.Sprintf("kernels: Attention token %d at position %d of sequence %d outside the block tables", t, pos, s))
		}
		for _, b := range p.BlockTables[s][:pos/p.BlockSize+1] {
			if b < 0 || (int(b)+1)*p.BlockSize > cacheRows {
				panic(fmt.Sprintf("kernels: Attention block %d outside a cache of %d rows", b, cacheRows))
			}
		}
		maxLen = max(maxLen, pos+1)
	}
	group := p.Heads / p.KVHeads
	pairs := tokens * p.Heads
	tasks := c.pool.split(pairs, 2*d*maxLen)
	scratch := make([][]float32, c.threads)
	c.pool.run(tasks, func(worker, tk int) {
		if scratch[worker] == nil {
			scratch[worker] = make([]float32, maxLen)
		}
		scores := scratch[worker]
		lo, hi := chunk(pairs, tasks, tk, 1)
		for pr := lo; pr < hi; pr++ {
			t, h := pr/p.Heads, pr%p.Heads
			table := p.BlockTables[p.SeqOf[t]]
			n := int(p.Pos[t]) + 1
			kvOff := (h / group) * d
			qh := qs[t*qw+h*d : t*qw+(h+1)*d]
			oh := o[t*qw+h*d : t*qw+(h+1)*d]
			sc := scores[:n]
			mx := float32(math.Inf(-1))
			for pos := range sc {
				row := int(table[pos/p.BlockSize])*p.BlockSize + pos%p.BlockSize
				s := p.Scale * dotF32(qh, ks[row*width+kvOff:row*width+kvOff+d])
				sc[pos] = s
				mx = max(mx, s)
			}
			var sum float64
			for pos, s := range sc {
				e := float32(math.Exp(float64(s - mx)))
				sc[pos] = e
				sum += float64(e)
			}
			inv := float32(1 / sum)
			clear(oh)
			for pos, e := range sc {
				row := int(table[pos/p.BlockSize])*p.BlockSize + pos%p.BlockSize
				axpy(e*inv, vs[row*width+kvOff:row*width+kvOff+d], oh)
			}
		}
	})
}
