package scheduler

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/coordinator"
)

func testState(groups, blocks, budget, seqs int) *state {
	t := &term{cfg: Config{MaxBatchTokens: budget, MaxSeqs: seqs}}
	st := &state{t: t, geo: coordinator.Geometry{Groups: groups, KVBlocks: blocks, BlockSize: 4, Vocab: 100}}
	for range groups {
		st.pools = append(st.pools, NewBlockPool(4, blocks))
	}
	return st
}

func waitingSeq(st *state, n int) *seq {
	st.nextID++
	s := newStream(context.Background(), Request{Prompt: make([]int32, n), MaxTokens: 100})
	q := &seq{st: s, id: st.nextID, toks: make([]int32, n), promptLen: n, group: -1}
	st.waiting = append(st.waiting, q)
	return q
}

// TestPickGroup: the group with the most free blocks, then the fewest
// running sequences, then the lowest index.
func TestPickGroup(t *testing.T) {
	st := testState(3, 10, 1000, 100)
	var got []int
	for _, n := range []int{8, 4, 4, 1, 1, 1} { // 2, 1, 1, 1, 1, 1 blocks
		q := waitingSeq(st, n)
		_, _ = st.schedule()
		got = append(got, q.group)
	}
	// 8 → g0 (all tie); 4 → g1 (g1, g2 have 10 free); 4 → g2; then every
	// group has 8 or 9 free: g1 and g2 have 9, g0 8 → g1 (1 seq each, lowest);
	// then g2 (9 free); then g1 and g2 have 8, g0 8: fewest sequences is g0.
	if diff := cmp.Diff([]int{0, 1, 2, 1, 2, 0}, got); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
}

// TestScheduleOrder: running sequences (decodes) first, then prefill
// chunks under the budget; a chunk short of the prompt's end does not
// sample.
func TestScheduleOrder(t *testing.T) {
	st := testState(1, 100, 10, 100)
	a := waitingSeq(st, 3)
	st.schedule()
	a.computed = 3
	a.toks = append(a.toks, 7) // sampled: one pending token
	b := waitingSeq(st, 20)
	sched, pre := st.schedule()
	if pre != 0 || len(sched) != 2 || sched[0].q != a || sched[0].n != 1 || sched[1].q != b || sched[1].n != 9 {
		t.Fatalf("schedule: %+v, %d preemptions", sched, pre)
	}
	b.computed = 9
	sched, _ = st.schedule()
	if len(sched) != 2 || sched[1].n != 9 || b.computed+sched[1].n == len(b.toks) {
		t.Fatalf("second chunk: %+v", sched)
	}
}

// TestPreemptNewest: a group out of blocks preempts its most recently
// admitted sequence, which goes to the front of the queue.
func TestPreemptNewest(t *testing.T) {
	st := testState(1, 3, 1000, 100)
	a, b := waitingSeq(st, 4), waitingSeq(st, 4)
	st.schedule()
	c := waitingSeq(st, 4)
	st.schedule() // c takes the last block
	for _, q := range []*seq{a, b, c} {
		q.computed, q.toks = 4, append(q.toks, 1) // each needs a second block
	}
	sched, pre := st.schedule()
	if pre != 2 || len(sched) != 1 || sched[0].q != a {
		t.Fatalf("schedule: %+v, %d preemptions", sched, pre)
	}
	if diff := cmp.Diff([]uint64{b.id, c.id}, []uint64{st.waiting[0].id, st.waiting[1].id}); diff != "" {
		t.Errorf("queue (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{c.id, b.id}, st.finished); diff != "" {
		t.Errorf("finished sent to the workers (-want +got):\n%s", diff)
	}
	if b.computed != 0 || b.blocks != nil {
		t.Errorf("preempted sequence keeps %d positions, blocks %v", b.computed, b.blocks)
	}
}
