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
	// Query heads that share a KV head are taken four at a time when the
	// group allows: each K and V row is then read once for all four.
	quad := 1
	if group%4 == 0 {
		quad = 4
	}
	units := tokens * p.Heads / quad
	tasks := c.pool.split(units, 2*quad*d*maxLen)
	scratch := make([][]float32, c.threads)
	c.pool.run(tasks, func(worker, tk int) {
		if scratch[worker] == nil {
			scratch[worker] = make([]float32, quad*maxLen)
		}
		lo, hi := chunk(units, tasks, tk, 1)
		for u := lo; u < hi; u++ {
			t, h := u*quad/p.Heads, u*quad%p.Heads
			a := attnHeads{
				table: p.BlockTables[p.SeqOf[t]], bs: p.BlockSize,
				n: int(p.Pos[t]) + 1, d: d, width: width, kvOff: (h / group) * d,
				scale: p.Scale,
				q:     qs[t*qw+h*d : t*qw+(h+quad)*d],
				out:   o[t*qw+h*d : t*qw+(h+quad)*d],
			}
			if quad == 4 {
				a.four(ks, vs, scratch[worker])
			} else {
				a.one(ks, vs, scratch[worker])
			}
		}
	})
}

// attnHeads is the attention of one token for query heads that share a
// KV head: q and out hold those heads, HeadDim apart.
type attnHeads struct {
	table        []int32
	bs, n, d     int
	width, kvOff int
	scale        float32
	q, out       []float32
}

// attnAhead is how many positions ahead the K and V rows are prefetched:
// rows of one KV head are HeadDim floats scattered KVHeads·HeadDim apart,
// too short a run for the hardware prefetchers.
const attnAhead = 4

func (a *attnHeads) row(pos int) int {
	return (int(a.table[pos/a.bs])*a.bs+pos%a.bs)*a.width + a.kvOff
}

// prefetch fetches the cache row of position pos from c ([K or V] cache),
// or the first attnAhead rows when pos is 0.
func (a *attnHeads) prefetch(c []float32, pos int) {
	lo, hi := pos, pos+1
	if pos == 0 {
		hi = attnAhead
	}
	for p := lo; p < min(hi, a.n); p++ {
		r := a.row(p)
		prefetch(c[r : r+a.d])
	}
}

func (a *attnHeads) one(ks, vs, scratch []float32) {
	sc := scratch[:a.n]
	a.prefetch(ks, 0)
	for pos := range sc {
		a.prefetch(ks, pos+attnAhead)
		r := a.row(pos)
		sc[pos] = a.scale * dotF32(a.q, ks[r:r+a.d])
	}
	inv := softmaxWeights(sc)
	clear(a.out)
	a.prefetch(vs, 0)
	for pos, e := range sc {
		a.prefetch(vs, pos+attnAhead)
		r := a.row(pos)
		axpy(e*inv, vs[r:r+a.d], a.out)
	}
}

// four handles four query heads: scratch holds their scores, position-major.
func (a *attnHeads) four(ks, vs, scratch []float32) {
	d := a.d
	var s4 [4]float32
	a.prefetch(ks, 0)
	for pos := range a.n {
		a.prefetch(ks, pos+attnAhead)
		r := a.row(pos)
		dot1x4F32(&s4, ks[r:r+d], a.q, d, d)
		for j := range 4 {
			scratch[j*a.n+pos] = a.scale * s4[j]
		}
	}
	var inv [4]float32
	for j := range 4 {
		inv[j] = softmaxWeights(scratch[j*a.n : (j+1)*a.n])
	}
	clear(a.out)
	a.prefetch(vs, 0)
	for pos := range a.n {
		a.prefetch(vs, pos+attnAhead)
		r := a.row(pos)
		v := vs[r : r+d]
		for j := range 4 {
			axpy(scratch[j*a.n+pos]*inv[j], v, a.out[j*d:(j+1)*d])
		}
	}
}

// softmaxWeights replaces scores by their exponentials less the maximum,
// rounded to float32, and returns the reciprocal of their float64 sum.
func softmaxWeights(sc []float32) float32 {
	mx := float32(math.Inf(-1))
	for _, s := range sc {
		mx = max(mx, s)
	}
	var sum float64
	for i, s := range sc {
		e := float32(math.Exp(float64(s - mx)))
		sc[i] = e
		sum += float64(e)
	}
	return float32(1 / sum)
}
