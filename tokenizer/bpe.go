package tokenizer

import "sync"

// mergeInfo is what merging a pair of tokens gives: its rank (lower merges
// first) and the id of the merged token.
type mergeInfo struct {
	rank int32
	id   int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// bpe is a byte-level BPE model: initial symbols are single bytes, merged by
// rank as in Hugging Face's tokenizers (lowest rank first, leftmost first on
// ties).
type bpe struct {
	byteID [256]int32
	merges map[uint64]mergeInfo

	mu    sync.RWMutex
	cache map[string][]int32
}

// Words longer than maxCachedWord bytes are not cached; the cache stops
// growing at maxCacheEntries entries (like Hugging Face's, it is not evicted).
const (
	maxCachedWord   = 256
	maxCacheEntries = 1 << 16
)

type symbol struct {
	id         int32
	prev, next int32
	dead       bool
}

type mergeItem struct {
	rank, pos, id int32
}

func (a mergeItem) less(b mergeItem) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.pos < b.pos
}

// mergeHeap is a binary min-heap of candidate merges.
type mergeHeap []mergeItem

func (h *mergeHeap) push(it mergeItem) {
	*h = append(*h, it)
	q := *h
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q[i].less(q[p]) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *mergeHeap) pop() mergeItem {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q = q[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q[r].less(q[l]) {
			m = r
		}
		if !q[m].less(q[i]) {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}

type bpeScratch struct {
	syms []symbol
	heap mergeHeap
}

var scratchPool = sync.Pool{New: func() any { return new(bpeScratch) }}

// encodeWord appends the ids of word (raw bytes, not yet byte-level mapped).
func (m *bpe) encodeWord(word string, dst []int) []int {
	switch len(word) {
	case 0:
		return dst
	case 1:
		return append(dst, int(m.byteID[word[0]]))
	}
	cacheable := len(word) <= maxCachedWord
	if cacheable {
		m.mu.RLock()
		ids, ok := m.cache[word]
		m.mu.RUnlock()
		if ok {
			for _, id := range ids {
				dst = append(dst, int(id))
			}
			return dst
		}
	}
	sc := scratchPool.Get().(*bpeScratch)
	ids := m.merge(word, sc)
	for _, id := range ids {
		dst = append(dst, int(id))
	}
	if cacheable {
		own := append([]int32(nil), ids...)
		m.mu.Lock()
		if len(m.cache) < maxCacheEntries {
			m.cache[word] = own
		}
		m.mu.Unlock()
	}
	scratchPool.Put(sc)
	return dst
}

// merge runs BPE on word and returns the final ids in sc's storage.
func (m *bpe) merge(word string, sc *bpeScratch) []int32 {
	n := len(word)
	syms := sc.syms[:0]
	for i := 0; i < n; i++ {
		syms = append(syms, symbol{id: m.byteID[word[i]], prev: int32(i - 1), next: int32(i + 1)})
	}
	syms[n-1].next = -1
	h := sc.heap[:0]
	for i := 0; i < n-1; i++ {
		if mi, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			h.push(mergeItem{rank: mi.rank, pos: int32(i), id: mi.id})
		}
	}
	for len(h) > 0 {
		top := h.pop()
		s := &syms[top.pos]
		if s.dead || s.next < 0 {
			continue
		}
		right := &syms[s.next]
		if mi, ok := m.merges[pairKey(s.id, right.id)]; !ok || mi.id != top.id {
			continue // stale: one side has merged since this was queued
		}
		s.id = top.id
		right.dead = true
		s.next = right.next
		if s.next >= 0 {
			syms[s.next].prev = top.pos
		}
		if s.prev >= 0 {
			if mi, ok := m.merges[pairKey(syms[s.prev].id, s.id)]; ok {
				h.push(mergeItem{rank: mi.rank, pos: s.prev, id: mi.id})
			}
		}
		if s.next >= 0 {
			if mi, ok := m.merges[pairKey(s.id, syms[s.next].id)]; ok {
				h.push(mergeItem{rank: mi.rank, pos: top.pos, id: mi.id})
			}
		}
	}
	// Collect the surviving symbols in order.
	out := make([]int32, 0, 8)
	for i := int32(0); i >= 0; i = syms[i].next {
		out = append(out, syms[i].id)
	}
	sc.syms, sc.heap = syms, h
	return out
}
