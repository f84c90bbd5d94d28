package kernels

import (
	"sync"
	"sync/atomic"
)

// pool is a fixed set of worker goroutines that share the tasks of one
// operation with the calling goroutine. Dispatch costs one channel send per
// woken worker and one WaitGroup wait; tasks are claimed with an atomic
// counter, so uneven tasks balance themselves.
type pool struct {
	threads int
	wake    []chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	// The job being run; written before the wake-up sends, read after.
	fn    func(worker, task int)
	tasks int64
	next  atomic.Int64
}

func newPool(threads int) *pool {
	p := &pool{threads: threads, wake: make([]chan struct{}, threads-1)}
	for i := range p.wake {
		ch := make(chan struct{})
		p.wake[i] = ch
		go p.worker(i+1, ch)
	}
	return p
}

func (p *pool) worker(id int, wake <-chan struct{}) {
	for range wake {
		p.drain(id)
		p.wg.Done()
	}
}

func (p *pool) drain(id int) {
	for {
		t := p.next.Add(1) - 1
		if t >= p.tasks {
			return
		}
		p.fn(id, int(t))
	}
}

// run calls fn(worker, task) for every task in [0, tasks), spread over the
// threads; worker is in [0, threads) and no two concurrent calls share one,
// so it can index per-thread scratch space. run returns when all are done.
func (p *pool) run(tasks int, fn func(worker, task int)) {
	if tasks <= 0 {
		return
	}
	helpers := min(len(p.wake), tasks-1)
	if helpers == 0 {
		for t := range tasks {
			fn(0, t)
		}
		return
	}
	p.fn, p.tasks = fn, int64(tasks)
	p.next.Store(0)
	p.wg.Add(helpers)
	for i := range helpers {
		p.wake[i] <- struct{}{}
	}
	p.drain(0)
	p.wg.Wait()
	p.fn = nil
}

func (p *pool) close() {
	p.once.Do(func() {
		for _, ch := range p.wake {
			close(ch)
		}
	})
}

// split returns the number of tasks to cut n items into, given that one
// item costs about cost units of work: one task below a serial threshold,
// else enough tasks per thread to balance load.
func (p *pool) split(n, cost int) int {
	const serialWork = 1 << 15 // below this, waking a thread costs more than it saves
	const minTaskWork = 1 << 13
	if p.threads == 1 || n*cost < serialWork || n < 2 {
		return 1
	}
	tasks := min(n, 4*p.threads, max(1, n*cost/minTaskWork))
	return max(tasks, 1)
}

// chunk returns the half-open range of items of task t when n items are cut
// into tasks pieces, rounding boundaries to multiples of align.
func chunk(n, tasks, t, align int) (lo, hi int) {
	units := (n + align - 1) / align
	lo = units * t / tasks * align
	hi = units * (t + 1) / tasks * align
	return min(lo, n), min(hi, n)
}
