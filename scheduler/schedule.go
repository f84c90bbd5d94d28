package scheduler

import (
	"fmt"
	"slices"
	"time"
)

// schedule picks the next step's work, vLLM V1's way: first the running
// sequences in admission order (each gets its pending tokens, a decode's
// one or a prefill's next chunk, as far as the token budget goes), then,
// unless a sequence was preempted, waiting sequences from the front while
// the budget, MaxSeqs and the KV pools allow. When a running sequence
// needs a block its group has not got, the group's most recently admitted
// running sequence is preempted (its blocks freed, back to the front of
// the queue, to be recomputed later); a sequence that cannot fit its group
// even alone fails with ErrKVFull. It returns the work and the number of
// preemptions.
func (st *state) schedule() ([]work, int) {
	budget := st.t.cfg.MaxBatchTokens
	var sched []work
	preemptions := 0
	for i := 0; i < len(st.running) && budget > 0; i++ {
		q := st.running[i]
		n := min(len(q.toks)-q.computed, budget)
		scheduled := true
		for {
			if st.pools[q.group].Reserve(&q.blocks, q.computed+n) == nil {
				break
			}
			v := st.victim(q.group)
			if v != i {
				st.preempt(v)
				preemptions++
				continue
			}
			scheduled = false
			if st.aloneInGroup(i) {
				p := st.pools[q.group]
				st.free(q)
				q.st.end("", fmt.Errorf("%w: %d positions do not fit %d blocks of %d", ErrKVFull, q.computed+n, p.Total(), p.BlockSize))
				st.running = slices.Delete(st.running, i, i+1)
			} else {
				st.preempt(i)
				preemptions++
			}
			i--
			break
		}
		if scheduled {
			sched = append(sched, work{q: q, n: n})
			budget -= n
		}
	}
	if preemptions > 0 {
		return sched, preemptions
	}
	for len(st.waiting) > 0 && budget > 0 && len(st.running) < st.t.cfg.MaxSeqs {
		q := st.waiting[0]
		g := st.pickGroup()
		p := st.pools[g]
		if len(q.toks) > p.Capacity() {
			st.waiting = st.waiting[1:]
			q.st.end("", fmt.Errorf("%w: %d tokens do not fit %d blocks of %d", ErrKVFull, len(q.toks), p.Total(), p.BlockSize))
			continue
		}
		n := min(len(q.toks), budget)
		if p.Reserve(&q.blocks, n) != nil {
			break // wait for running sequences to finish
		}
		q.group, q.computed = g, 0
		st.waiting = st.waiting[1:]
		st.running = append(st.running, q)
		sched = append(sched, work{q: q, n: n})
		budget -= n
		if !q.scheduled {
			q.scheduled = true
			if o := st.t.cfg.Observer; o != nil {
				o.Scheduled(time.Since(q.queued))
			}
		}
	}
	return sched, 0
}

// victim is the index of the most recently admitted running sequence of
// group g.
func (st *state) victim(g int) int {
	for j := len(st.running) - 1; j >= 0; j-- {
		if st.running[j].group == g {
			return j
		}
	}
	return -1
}

// aloneInGroup reports whether running[i] is the only running sequence of
// its group.
func (st *state) aloneInGroup(i int) bool {
	for j, q := range st.running {
		if j != i && q.group == st.running[i].group {
			return false
		}
	}
	return true
}

// preempt frees running[i]'s blocks and puts it at the front of the
// queue; it is recomputed from its tokens when admitted again.
func (st *state) preempt(i int) {
	q := st.running[i]
	st.free(q)
	st.running = slices.Delete(st.running, i, i+1)
	st.waiting = slices.Insert(st.waiting, 0, q)
}

// pickGroup is the attention group for the next admission: the one with
// the most free blocks, then the fewest running sequences, then the lowest
// index.
func (st *state) pickGroup() int {
	count := make([]int, len(st.pools))
	for _, q := range st.running {
		count[q.group]++
	}
	best := 0
	for g := 1; g < len(st.pools); g++ {
		f, bf := st.pools[g].Free(), st.pools[best].Free()
		if f > bf || (f == bf && count[g] < count[best]) {
			best = g
		}
	}
	return best
}
