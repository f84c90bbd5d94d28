package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// spinWait is how long an idle worker polls for the next operation before
// it parks. Decoding runs hundreds of operations per token with a few
// microseconds of serial work between them; waking a parked goroutine
// costs tens of microseconds (futex and scheduler hand-off), so a worker
// that has just finished spins through those gaps.
const spinWait = 200 * time.Microsecond

// pool is a fixed set of worker goroutines that share the tasks of one
// operation with the calling goroutine. An operation is published by
// bumping a generation counter, which workers poll for spinWait after
// their last task before parking on a channel; tasks are claimed with an
// atomic counter, so uneven tasks balance themselves.
type pool struct {
	threads int
	workers []*poolWorker
	once    sync.Once
	closed  atomic.Bool

	// The job being run; written before gen is bumped, read after.
	fn      func(worker, task int)
	tasks   int64
	next    atomic.Int64
	gen     atomic.Uint64 // bumped once per job
	pending atomic.Int64  // workers that have not finished the job
	parked  atomic.Bool   // run is blocked on done
	done    chan struct{} // buffered 1
}

type poolWorker struct {
	parked atomic.Bool
	wake   chan struct{} // buffered 1: a wake-up is never lost
}

func newPool(threads int) *pool {
	p := &pool{threads: threads, workers: make([]*poolWorker, threads-1), done: make(chan struct{}, 1)}
	for i := range p.workers {
		w := &poolWorker{wake: make(chan struct{}, 1)}
		p.workers[i] = w
		go p.worker(i+1, w)
	}
	return p
}

func (p *pool) worker(id int, w *poolWorker) {
	var seen uint64
	for {
		g := p.await(w, seen)
		if p.closed.Load() {
			return
		}
		seen = g
		p.drain(id)
		if p.pending.Add(-1) == 0 && p.parked.Load() {
			select {
			case p.done <- struct{}{}:
			default:
			}
		}
	}
}

// await returns the first generation after seen, spinning for spinWait and
// then parking until run or close wakes the worker.
func (p *pool) await(w *poolWorker, seen uint64) uint64 {
	// Spinning only pays when every thread has a processor of its own.
	spin := p.threads <= runtime.GOMAXPROCS(0)
	start := time.Now()
	for i := 0; ; i++ {
		if g := p.gen.Load(); g != seen || p.closed.Load() {
			return g
		}
		if spin && (i&255 != 255 || time.Since(start) < spinWait) {
			if i&255 == 255 {
				runtime.Gosched()
			}
			continue
		}
		// Park. run bumps gen before it reads parked, and the worker sets
		// parked before it reads gen, so one of them sees the other.
		w.parked.Store(true)
		if g := p.gen.Load(); g != seen || p.closed.Load() {
			w.parked.Store(false)
			return g
		}
		<-w.wake
		w.parked.Store(false)
		start = time.Now()
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
	if len(p.workers) == 0 || tasks == 1 {
		for t := range tasks {
			fn(0, t)
		}
		return
	}
	p.fn, p.tasks = fn, int64(tasks)
	p.next.Store(0)
	p.pending.Store(int64(len(p.workers)))
	p.gen.Add(1)
	for _, w := range p.workers {
		if w.parked.Load() {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
	p.drain(0)
	p.wait()
	p.fn = nil
}

// wait returns when every worker has finished the job: it spins for
// spinWait, then parks until the last worker signals done.
func (p *pool) wait() {
	start := time.Now()
	for i := 0; p.pending.Load() != 0; i++ {
		if i&255 != 255 || time.Since(start) < spinWait {
			continue
		}
		p.parked.Store(true)
		for p.pending.Load() != 0 {
			<-p.done // a stale signal from an earlier job loops once more
		}
		p.parked.Store(false)
		return
	}
}

func (p *pool) close() {
	p.once.Do(func() {
		p.closed.Store(true)
		for _, w := range p.workers {
			select {
			case w.wake <- struct{}{}:
			default:
			}
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
