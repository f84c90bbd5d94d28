package sampling

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// pcgStream is mixed into the second PCG seed word (see drawSeed).
// Changing it changes every seeded token sequence.
const pcgStream = 0x9e3779b97f4a7c15

// Sampler draws tokens for one sequence with fixed Params. It keeps no
// random state between draws: the draw for position pos (the number of
// tokens of the sequence before the one drawn) depends only on Params.Seed
// and pos, so a Sampler recreated from a sequence's history continues it
// exactly. It is not safe for concurrent use; give each sequence its own
// Sampler.
type Sampler struct {
	p   Params
	pcg *rand.PCG // reseeded for every draw
	rng *rand.Rand

	// Scratch, grown to the vocabulary size on first use and reused.
	x     []float32 // penalized logits, NaN replaced by -Inf
	count []int32   // occurrences of each id in generated; all zero between calls
	cand  []int32   // candidate token ids
	w     []float64 // w[i] is the unnormalized probability of cand[i]
}

// New returns a Sampler for p. It returns an error wrapping ErrBadParams
// if p.Validate fails.
func New(p Params) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	pcg := rand.NewPCG(0, 0)
	return &Sampler{p: p, pcg: pcg, rng: rand.New(pcg)}, nil
}

// drawSeed returns the PCG seed words of the draw at position pos:
//
//	hi = seed
//	lo = seed ^ 0x9e3779b97f4a7c15 ^ splitmix64(pos)
//
// where splitmix64 is the SplitMix64 output function (Steele et al. 2014)
// of pos: z = pos + 0x9e3779b97f4a7c15; z = (z ^ z>>30) * 0xbf58476d1ce4e5b9;
// z = (z ^ z>>27) * 0x94d049bb133111eb; z ^ z>>31. The draw is the first
// Float64 of math/rand/v2's PCG seeded with (hi, lo).
func drawSeed(seed uint64, pos int) (hi, lo uint64) {
	return seed, seed ^ pcgStream ^ splitmix64(uint64(pos))
}

func splitmix64(x uint64) uint64 {
	z := x + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Params returns the parameters s was created with.
func (s *Sampler) Params() Params { return s.p }

// Sample returns the next token id, in [0, len(logits)), for position
// len(prompt)+len(generated).
//
// logits holds one score per vocabulary id; Sample reads it and never
// writes to it. prompt and generated are the token ids of the prompt and of
// the tokens generated so far: the repetition penalty applies to ids in
// either, the presence and frequency penalties only to ids in generated.
// Ids outside [0, len(logits)) are ignored. Sample keeps no reference to
// its arguments.
//
// With a temperature below MinTemperature the result is the arg max of the
// penalized logits, ties to the lowest id, and no random number is drawn. Otherwise exactly one is
// drawn, from the generator of (Seed, position) (see drawSeed), unless
// every logit is -Inf or NaN, in which case Sample returns 0. Sample panics
// if logits is empty.
func (s *Sampler) Sample(logits []float32, prompt, generated []int) int {
	if len(logits) == 0 {
		panic("sampling: Sample called with empty logits")
	}
	return s.sampleAt(s.penalize(logits, prompt, generated), len(prompt)+len(generated))
}

// sampleAt samples from the penalized logits x for position pos.
func (s *Sampler) sampleAt(x []float32, pos int) int {
	best := argmax(x)
	if s.p.IsGreedy() || math.IsInf(float64(x[best]), -1) {
		return best
	}
	cand, w := s.filter(x, best)
	return int(s.draw(cand, w, pos))
}

// penalize copies logits into s.x with NaN replaced by -Inf, applies the
// penalties (see applyPenalties) and returns s.x.
func (s *Sampler) penalize(logits []float32, prompt, generated []int) []float32 {
	n := len(logits)
	s.x = grow(s.x, n)
	s.count = grow(s.count, n)
	x := s.x
	for i, v := range logits {
		x[i] = clean(v)
	}
	applyPenalties(s.p, x, logits, 0, prompt, generated, s.count)
	return x
}

// applyPenalties applies the repetition, frequency and presence penalties
// of p, in that order (vLLM's), to x, the cleaned logits of ids
// [lo, lo+len(x)); raw holds the same logits before cleaning. Ids outside
// the range are ignored. count is scratch of len(x), all zero, and is left
// all zero.
//
// A penalized entry is recomputed from its original logit, so the
// repetition and presence penalties apply once per id however often it
// occurs, and the frequency penalty is multiplied by the id's count:
//
//	x = rep(l) - frequency×count - presence
//
// rounded to float32 after each operation.
func applyPenalties(p Params, x, raw []float32, lo int, prompt, generated []int, count []int32) {
	n := len(x)
	rp, pp, fp := p.RepetitionPenalty, p.PresencePenalty, p.FrequencyPenalty
	if rp != 1 {
		for _, id := range prompt {
			if j := id - lo; uint(j) < uint(n) {
				x[j] = repetition(clean(raw[j]), rp)
			}
		}
	}
	if rp == 1 && pp == 0 && fp == 0 {
		return
	}
	for _, id := range generated {
		if j := id - lo; uint(j) < uint(n) {
			count[j]++
		}
	}
	for _, id := range generated {
		j := id - lo
		if uint(j) >= uint(n) || count[j] == 0 {
			continue
		}
		v := repetition(clean(raw[j]), rp)
		v = float32(v - float32(fp*float32(count[j]))) // conversions forbid fused multiply-add
		x[j] = float32(v - pp)
		count[j] = 0
	}
}

// clean maps NaN to -Inf.
func clean(v float32) float32 {
	if v != v {
		return float32(math.Inf(-1))
	}
	return v
}

// repetition applies the Hugging Face repetition penalty to one logit.
func repetition(v, penalty float32) float32 {
	if penalty == 1 {
		return v
	}
	if v > 0 {
		return v / penalty
	}
	return float32(v * penalty) // the conversion forbids fusing with a later subtraction
}

// argmax returns the index of the largest value, ties to the lowest index.
// x holds no NaN.
func argmax(x []float32) int {
	best, bv := 0, x[0]
	for i, v := range x {
		if v > bv {
			best, bv = i, v
		}
	}
	return best
}

// filter applies temperature, min-p, top-k and top-p, in that order
// (vLLM's), to the penalized logits x, whose arg max is best and finite or
// +Inf. It returns the surviving ids and their unnormalized probabilities,
// both non-empty and aligned; the two slices alias s.cand and s.w.
//
// Min-p and top-k each keep a best-first prefix of the ranking, so they
// commute; top-p comes last and measures the mass of what both kept.
func (s *Sampler) filter(x []float32, best int) ([]int32, []float64) {
	n := len(x)
	s.cand = grow(s.cand, n)
	s.w = grow(s.w, n)
	// The best token's weight is 1, so min-p times its probability is
	// min-p itself in weight units, whatever the normalization.
	sc := scale{max: x[best], inf: math.IsInf(float64(x[best]), 1), t: float64(s.p.Temperature), minW: float64(s.p.MinP)}

	var (
		cand  []int32
		w     []float64
		total float64
	)
	if s.p.topK(n) {
		cand = s.selectTopK(x, s.p.TopK)
		w = s.w[:len(cand)]
		keep := 0
		for _, id := range cand {
			if wi := sc.weight(x[id]); sc.keeps(wi) {
				cand[keep], w[keep] = id, wi
				total += wi
				keep++
			}
		}
		cand, w = cand[:keep], w[:keep]
		if s.p.TopP < 1 {
			keep, _ := nucleus(w, float64(float64(s.p.TopP)*total))
			cand, w = cand[:keep], w[:keep]
		}
		return cand, w
	}
	// Every id whose weight underflows to 0 is left out: it can never be
	// drawn, and top-p would drop it anyway.
	var mass [massBuckets]float64
	cand, w = s.cand[:0], s.w[:0]
	for i, v := range x {
		wi := sc.weight(v)
		if !sc.keeps(wi) {
			continue
		}
		cand, w = append(cand, int32(i)), append(w, wi)
		total += wi
		mass[bucket(wi)] += wi
	}
	if s.p.TopP < 1 {
		cand, w = s.nucleusUnsorted(x, sc, cand, w, &mass, float64(float64(s.p.TopP)*total))
	}
	return cand, w
}

// scale turns a penalized logit into an unnormalized probability at
// temperature t: exp((v - max)/t), computed in float64, so the best token
// weighs exactly 1 and no scaled logit overflows. If max is +Inf, the +Inf
// tokens weigh 1 and all others 0. minW is the min-p threshold in the same
// units.
type scale struct {
	max  float32
	inf  bool
	t    float64
	minW float64
}

// keeps reports whether a token of weight w survives min-p and can be
// drawn at all (w > 0).
func (sc scale) keeps(w float64) bool { return w > 0 && w >= sc.minW }

func (sc scale) weight(v float32) float64 {
	if sc.inf {
		if v == sc.max {
			return 1
		}
		return 0
	}
	return expNeg((float64(v) - float64(sc.max)) / sc.t)
}

// nucleus returns how many leading weights top-p keeps: the shortest prefix
// whose running sum reaches limit, at least one. ok is false if the whole of
// w sums to less than limit (then keep is len(w)).
func nucleus(w []float64, limit float64) (keep int, ok bool) {
	var cum float64
	for keep < len(w) {
		cum += w[keep]
		keep++
		if cum >= limit {
			return keep, true
		}
	}
	return keep, false
}

// massBuckets is the number of weight buckets nucleusUnsorted uses; bucket
// b holds weights in [2^-(b+1), 2^-b), the last one everything smaller.
const massBuckets = 64

// bucket returns the mass bucket of a weight in (0, 1].
func bucket(w float64) int {
	e := 1022 - int(math.Float64bits(w)>>52) // w in [2^-(e+1), 2^-e)
	return min(max(e, 0), massBuckets-1)
}

// nucleusUnsorted applies top-p to candidates in id order without sorting
// all of them. mass[b] is the weight in bucket b. The buckets show how far
// down the weights the nucleus can reach; only ids in those buckets and one
// more are sorted (best first) and scanned. If rounding leaves that subset
// short of limit, it falls back to sorting every candidate. Either way the
// result is the prefix of the full sorted order that nucleus would keep.
func (s *Sampler) nucleusUnsorted(x []float32, sc scale, cand []int32, w []float64, mass *[massBuckets]float64, limit float64) ([]int32, []float64) {
	var cum float64
	last := massBuckets - 1
	for b, m := range mass {
		cum += m
		if cum >= limit {
			last = b
			break
		}
	}
	last = min(last+1, massBuckets-1)

	sub := cand[:0]
	for i, id := range cand {
		if bucket(w[i]) <= last {
			sub = append(sub, id)
		}
	}
	if keep, ok := s.sortedNucleus(x, sc, sub, w, limit); ok || len(sub) == len(cand) {
		return sub[:keep], w[:keep]
	}

	// Rebuild the full candidate list, which the compaction above overwrote.
	all := cand[:0]
	for i, v := range x {
		if sc.keeps(sc.weight(v)) {
			all = append(all, int32(i))
		}
	}
	keep, _ := s.sortedNucleus(x, sc, all, w[:len(all)], limit)
	return all[:keep], w[:keep]
}

// sortedNucleus sorts ids best first, fills w with their weights and
// returns nucleus's verdict on them.
func (s *Sampler) sortedNucleus(x []float32, sc scale, ids []int32, w []float64, limit float64) (int, bool) {
	slices.SortFunc(ids, func(a, b int32) int { return compareRank(x, a, b) })
	w = w[:len(ids)]
	for i, id := range ids {
		w[i] = sc.weight(x[id])
	}
	return nucleus(w, limit)
}

// selectTopK returns the k ids with the largest x and every id tied with
// the k-th, sorted by decreasing logit and then increasing id. -Inf entries
// are left out, so fewer than k ids may come back. It keeps a size-k
// min-heap of the best ids seen so far in s.cand (O(n log k) time, no full
// sort), then appends the ids tied with the k-th that the heap's ties to
// the lowest id left out.
func (s *Sampler) selectTopK(x []float32, k int) []int32 {
	h := s.cand[:0]
	// worse reports whether id a ranks below id b.
	worse := func(a, b int32) bool {
		return x[a] < x[b] || (x[a] == x[b] && a > b)
	}
	for i, v := range x {
		if math.IsInf(float64(v), -1) {
			continue
		}
		id := int32(i)
		if len(h) < k {
			h = append(h, id)
			for j := len(h) - 1; j > 0; { // sift up
				parent := (j - 1) / 2
				if !worse(h[j], h[parent]) {
					break
				}
				h[j], h[parent] = h[parent], h[j]
				j = parent
			}
			continue
		}
		// Ids arrive in increasing order, so an equal logit loses the tie.
		if !(v > x[h[0]]) {
			continue
		}
		h[0] = id
		for j := 0; ; { // sift down
			l, m := 2*j+1, j
			if l < len(h) && worse(h[l], h[m]) {
				m = l
			}
			if r := l + 1; r < len(h) && worse(h[r], h[m]) {
				m = r
			}
			if m == j {
				break
			}
			h[j], h[m] = h[m], h[j]
			j = m
		}
	}
	slices.SortFunc(h, func(a, b int32) int { return compareRank(x, a, b) })
	if len(h) == k {
		// Ids tied with the k-th and below it in id order all lost the
		// tie; those above it were kept.
		last := h[k-1]
		for i := int(last) + 1; i < len(x); i++ {
			if x[i] == x[last] {
				h = append(h, int32(i))
			}
		}
	}
	return h
}

// compareRank orders ids by decreasing logit, then increasing id.
func compareRank(x []float32, a, b int32) int {
	if c := cmp.Compare(x[b], x[a]); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

// draw picks cand[i] with probability w[i] / sum(w), with the random
// number of position pos.
func (s *Sampler) draw(cand []int32, w []float64, pos int) int32 {
	var total float64
	for _, wi := range w {
		total += wi
	}
	s.pcg.Seed(drawSeed(s.p.Seed, pos))
	u := float64(s.rng.Float64() * total)
	var cum float64
	last := 0
	for i, wi := range w {
		cum += wi
		if u < cum {
			return cand[i]
		}
		if wi > 0 {
			last = i
		}
	}
	return cand[last] // u rounded up to total
}

// grow returns b resliced to length n, reallocating only when its capacity
// is too small.
func grow[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}
