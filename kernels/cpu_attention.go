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
	scratch := make([]*attnScratch, c.threads)
	c.pool.run(tasks, func(worker, tk int) {
		sc := scratch[worker]
		if sc == nil {
			sc = &attnScratch{scores: make([]float32, quad*maxLen), rows: make([]int, maxLen), token: -1}
			scratch[worker] = sc
		}
		lo, hi := chunk(units, tasks, tk, 1)
		for u := lo; u < hi; u++ {
			t, h := u*quad/p.Heads, u*quad%p.Heads
			n := int(p.Pos[t]) + 1
			if sc.token != t {
				// Cache row offsets of the token's positions, shared by
				// all its heads.
				table := p.BlockTables[p.SeqOf[t]]
				for pos := range n {
					sc.rows[pos] = (int(table[pos/p.BlockSize])*p.BlockSize + pos%p.BlockSize) * width
				}
				sc.token = t
			}
			a := attnHeads{
				rows: sc.rows[:n], d: d, kvOff: (h / group) * d,
				scale: p.Scale,
				q:     qs[t*qw+h*d : t*qw+(h+quad)*d],
				out:   o[t*qw+h*d : t*qw+(h+quad)*d],
			}
			if quad == 4 {
				a.four(ks, vs, sc.scores)
			} else {
				a.one(ks, vs, sc.scores)
			}
		}
	})
}

// attnScratch is one thread's working memory: scores, and the cache row
// offsets of the positions of the token it last worked on.
type attnScratch struct {
	scores []float32
	rows   []int
	token  int
}

// attnHeads is the attention of one token for query heads that share a
// KV head: q and out hold those heads, HeadDim apart; rows[pos] is the
// element offset of position pos's cache row.
type attnHeads struct {
	rows     []int
	d, kvOff int
	scale    float32
	q, out   []float32
}

// attnAhead is how many positions ahead the K and V rows are prefetched:
// rows of one KV head are HeadDim floats scattered KVHeads·HeadDim apart,
// too short a run for the hardware prefetchers.
const attnAhead = 4

// prefetch fetches the cache row of position pos from c (the K or V
// cache), or the first attnAhead rows when pos is 0.
func (a *attnHeads) prefetch(c []float32, pos int) {
	lo, hi := pos, pos+1
	if pos == 0 {
		hi = attnAhead
	}
	for p := lo; p < min(hi, len(a.rows)); p++ {
		r := a.rows[p] + a.kvOff
		prefetch(c[r : r+a.d])
	}
}

func (a *attnHeads) one(ks, vs, scratch []float32) {
	n, d := len(a.rows), a.d
	sc := scratch[:n]
	a.prefetch(ks, 0)
	for pos := range sc {
		a.prefetch(ks, pos+attnAhead)
		r := a.rows[pos] + a.kvOff
		sc[pos] = a.scale * dotF32(a.q, ks[r:r+d])
	}
	inv := softmaxWeights(sc)
	clear(a.out)
	a.prefetch(vs, 0)
	for pos, e := range sc {
		a.prefetch(vs, pos+attnAhead)
		r := a.rows[pos] + a.kvOff
		axpy(e*inv, vs[r:r+d], a.out)
	}
}

// four handles four query heads: scratch holds their scores, head-major.
func (a *attnHeads) four(ks, vs, scratch []float32) {
	n, d := len(a.rows), a.d
	var s4 [4]float32
	a.prefetch(ks, 0)
	for pos := range n {
		a.prefetch(ks, pos+attnAhead)
		r := a.rows[pos] + a.kvOff
		dot1x4F32(&s4, ks[r:r+d], a.q, d, d)
		for j := range 4 {
			scratch[j*n+pos] = a.scale * s4[j]
		}
	}
	var inv [4]float32
	for j := range 4 {
		inv[j] = softmaxWeights(scratch[j*n : (j+1)*n])
	}
	clear(a.out)
	a.prefetch(vs, 0)
	for pos := range n {
		a.prefetch(vs, pos+attnAhead)
		r := a.rows[pos] + a.kvOff
		for j := range 4 {
			s4[j] = scratch[j*n+pos] * inv[j]
		}
		axpy4(&s4, vs[r:r+d], a.out, d)
	}
}

// softmaxWeights replaces scores by their exponentials less the maximum,
// rounded to float32, and returns the reciprocal of their float64 sum.
func softmaxWeights(sc []float32) float32 {
	mx := float32(math.Inf(-1))
	for _, s := range sc {
		mx = max(mx, s)
	}
	return float32(1 / expSum(sc, sc, 1, mx))
}
