package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/coordinator/control"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// term is one leadership term's scheduling loop over one Backend.
type term struct {
	svc *Service
	b   coordinator.Backend
	cfg Config
	log *slog.Logger

	in    chan *stream
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	cause error
}

var _ control.Term = (*term)(nil)

func newTerm(s *Service, b coordinator.Backend) *term {
	return &term{svc: s, b: b, cfg: s.cfg, log: s.log, in: make(chan *stream, 1024), stop: make(chan struct{}), done: make(chan struct{})}
}

func (t *term) submit(ctx context.Context, r Request) (Stream, error) {
	s := newStream(ctx, r)
	select {
	case <-t.stop:
		return nil, t.stoppedErr()
	default:
	}
	select {
	case t.in <- s:
		// The loop ends every queued stream before it exits (closing
		// done), so a stream sent before that is always answered.
		return s, nil
	case <-t.stop:
		return nil, t.stoppedErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stop implements control.Term: running and queued requests fail with
// ErrStopped wrapping cause; it returns once the loop no longer uses the
// Backend.
func (t *term) Stop(cause error) {
	t.once.Do(func() {
		if cause == nil {
			cause = control.ErrNotLeader
		}
		t.cause = cause
		t.svc.ended(t)
		close(t.stop)
	})
	<-t.done
}

func (t *term) stoppedErr() error {
	<-t.done
	if errors.Is(t.cause, ErrStopped) {
		return t.cause
	}
	return fmt.Errorf("%w: %w", ErrStopped, t.cause)
}

// seq is a request's sequence.
type seq struct {
	st *stream
	id uint64
	// toks is the whole history: the prompt, then every generated token
	// (resumed, sampled, forced). The KV cache holds toks[:computed]; the
	// rest is fed next, in chunks of sub-slices (never copied).
	toks      []int32
	promptLen int
	computed  int
	group     int // -1 while not admitted
	blocks    Blocks
	// thinking: the thinking budget still applies (no End yet).
	thinking bool
	// decoding: the one pending token was sampled last step.
	decoding  bool
	queued    time.Time
	scheduled bool
	sampling  *pb.Sampling
}

func (q *seq) generated() int { return len(q.toks) - q.promptLen }

// work is one sequence's share of a step.
type work struct {
	q *seq
	n int // tokens fed: toks[computed : computed+n]
}

// state is the loop's; only the loop goroutine touches it.
type state struct {
	t        *term
	geo      coordinator.Geometry
	pools    []*BlockPool
	running  []*seq // in admission order
	waiting  []*seq // the front runs next
	finished []uint64
	nextID   uint64
}

func (st *state) reset() {
	st.geo = st.t.b.Geometry()
	st.pools = nil
	for range max(st.geo.Groups, 1) {
		st.pools = append(st.pools, NewBlockPool(st.geo.BlockSize, st.geo.KVBlocks))
	}
	st.finished = nil
}

func (t *term) loop() {
	defer close(t.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-t.stop:
			cancel()
		case <-t.done:
		}
	}()
	st := &state{t: t}
	st.reset()
	defer func() {
		err := t.cause
		if err == nil {
			err = ErrStopped
		} else if !errors.Is(err, ErrStopped) {
			err = fmt.Errorf("%w: %w", ErrStopped, err)
		}
		st.failAll(err)
		for {
			select {
			case s := <-t.in:
				s.end("", err)
			default:
				return
			}
		}
	}()
	for {
		if len(st.running) == 0 && len(st.waiting) == 0 {
			select {
			case s := <-t.in:
				st.enqueue(s)
			case cause := <-t.b.Alarm():
				if err := t.b.Recover(ctx, cause); err != nil && ctx.Err() == nil {
					t.log.Error("recovery failed", "err", err)
				}
				st.reset()
				continue
			case <-t.stop:
				return
			}
		}
		for more := true; more; {
			select {
			case s := <-t.in:
				st.enqueue(s)
			case <-t.stop:
				return
			default:
				more = false
			}
		}
		st.dropCancelled()
		start := time.Now()
		sched, preemptions := st.schedule()
		if len(sched) == 0 {
			continue
		}
		steps := make([]*pb.SeqStep, len(sched))
		for i, w := range sched {
			q, end := w.q, w.q.computed+w.n
			r := &q.st.req
			steps[i] = &pb.SeqStep{
				SeqId: q.id, Tokens: q.toks[q.computed:end:end], StartPos: int32(q.computed),
				BlockTable: q.blocks[:len(q.blocks):len(q.blocks)], Sampling: q.sampling,
				AttnGroup: uint32(q.group), Sample: end == len(q.toks), PromptLen: int32(q.promptLen),
				Logprobs: r.Logprobs, TopLogprobs: uint32(r.TopLogprobs),
			}
		}
		res, err := t.b.Step(ctx, steps, st.finished)
		if err == nil {
			err = checkResults(res, sched, st.geo.Vocab)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			t.log.Warn("step failed; recovering", "err", err, "running", len(st.running))
			if rerr := t.b.Recover(ctx, err); rerr != nil {
				if ctx.Err() != nil {
					return
				}
				t.log.Error("recovery failed", "err", rerr)
				st.failAll(fmt.Errorf("%w: %w", ErrClusterDown, rerr))
				st.reset()
				continue
			}
			// The KV caches are gone: every running sequence goes back to
			// the queue, in order, and is re-prefilled from its tokens.
			st.reset()
			for _, q := range st.running {
				q.blocks, q.computed, q.group, q.decoding = nil, 0, -1, false
			}
			st.waiting = append(st.running, st.waiting...)
			st.running = nil
			continue
		}
		st.finished = nil
		stats := Stats{Preemptions: preemptions}
		for _, w := range sched {
			if w.q.decoding && w.n == 1 {
				stats.GenerationTokens++
			} else {
				stats.PromptTokens += w.n
			}
			stats.GenerationTokens += st.advance(w, res)
		}
		st.running = slices.DeleteFunc(st.running, func(q *seq) bool {
			if q.st.isDone() {
				st.free(q)
				return true
			}
			return false
		})
		stats.Duration = time.Since(start)
		t.observe(st, stats)
	}
}

// enqueue turns a submitted stream into a waiting sequence.
func (st *state) enqueue(s *stream) {
	r := &s.req
	for _, ids := range [][]int32{r.Prompt, r.Generated} {
		if i := badToken(ids, st.geo.Vocab); i >= 0 {
			s.end("", fmt.Errorf("%w: token %d is outside the vocabulary of %d", ErrBadRequest, ids[i], st.geo.Vocab))
			return
		}
	}
	st.nextID++
	toks := make([]int32, 0, len(r.Prompt)+len(r.Generated)+1)
	toks = append(append(toks, r.Prompt...), r.Generated...)
	q := &seq{st: s, id: st.nextID, toks: toks, promptLen: len(r.Prompt), group: -1, queued: time.Now(),
		sampling: coordinator.SamplingProto(r.Params)}
	q.thinking = r.Budget != nil && !slices.Contains(r.Generated, r.Budget.End)
	if forced := q.force(); len(forced) > 0 {
		s.push(forced...)
		if q.generated() >= r.MaxTokens {
			s.end(FinishLength, nil)
			return
		}
	}
	st.waiting = append(st.waiting, q)
}

// force appends the thinking budget's insert when the budget is reached,
// returning the forced tokens (cut to what MaxTokens leaves).
func (q *seq) force() []Token {
	b := q.st.req.Budget
	if b == nil || !q.thinking || q.generated() < b.Tokens {
		return nil
	}
	q.thinking, q.decoding = false, false
	ins := b.Insert[:min(len(b.Insert), q.st.req.MaxTokens-q.generated())]
	q.toks = append(q.toks, ins...)
	out := make([]Token, len(ins))
	for i, id := range ins {
		out[i] = Token{ID: id, Forced: true}
	}
	return out
}

// advance records w's step; it returns the number of tokens emitted.
func (st *state) advance(w work, res map[uint64]*pb.SeqResult) int {
	q := w.q
	q.computed += w.n
	if q.computed < len(q.toks) {
		return 0 // a prefill chunk: nothing sampled
	}
	r, req := res[q.id], &q.st.req
	q.toks = append(q.toks, r.Token)
	q.decoding = true
	out := []Token{{ID: r.Token}}
	if req.Logprobs {
		out[0].Logprob = r.Logprob
		if n := min(len(r.TopIds), len(r.TopLogprobs)); n > 0 {
			out[0].TopIDs, out[0].TopLogprobs = slices.Clone(r.TopIds[:n]), slices.Clone(r.TopLogprobs[:n])
		}
	}
	finish := ""
	switch {
	case slices.Contains(req.Stop, r.Token):
		finish = FinishStop
	case q.generated() >= req.MaxTokens:
		finish = FinishLength
	default:
		if q.thinking && r.Token == req.Budget.End {
			q.thinking = false
		}
		out = append(out, q.force()...)
		if q.generated() >= req.MaxTokens {
			finish = FinishLength
		}
	}
	q.st.push(out...)
	if finish != "" {
		q.st.end(finish, nil)
	}
	return len(out)
}

// dropCancelled ends the sequences whose request context ended.
func (st *state) dropCancelled() {
	before := len(st.running) + len(st.waiting)
	defer func() {
		if len(st.running)+len(st.waiting) != before {
			st.t.observeQueues(st)
		}
	}()
	st.running = slices.DeleteFunc(st.running, func(q *seq) bool {
		if err := q.st.ctx.Err(); err != nil {
			st.free(q)
			q.st.end("", err)
			return true
		}
		return false
	})
	st.waiting = slices.DeleteFunc(st.waiting, func(q *seq) bool {
		if err := q.st.ctx.Err(); err != nil {
			q.st.end("", err)
			return true
		}
		return false
	})
}

// free returns q's blocks and tells the workers to drop it.
func (st *state) free(q *seq) {
	if q.group >= 0 && q.group < len(st.pools) {
		st.pools[q.group].Release(&q.blocks)
	}
	q.blocks, q.computed, q.group, q.decoding = nil, 0, -1, false
	st.finished = append(st.finished, q.id)
}

func (st *state) failAll(err error) {
	for _, q := range st.running {
		q.st.end("", err)
	}
	for _, q := range st.waiting {
		q.st.end("", err)
	}
	st.running, st.waiting = nil, nil
}

func (s *stream) isDone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// observeQueues reports the queues after a change that no step follows.
func (t *term) observeQueues(st *state) {
	if t.cfg.Observer == nil {
		return
	}
	s := Stats{Queues: true}
	t.queueStats(st, &s)
	t.cfg.Observer.Step(s)
}

// queueStats fills the queue lengths and the KV usage.
func (t *term) queueStats(st *state, s *Stats) {
	s.Running, s.Waiting = len(st.running), len(st.waiting)
	used, total := 0, 0
	for _, p := range st.pools {
		used += p.Total() - p.Free()
		total += p.Total()
	}
	if total > 0 {
		s.KVUsage = float64(used) / float64(total)
	}
}

// observe reports a step to the Observer.
func (t *term) observe(st *state, s Stats) {
	o := t.cfg.Observer
	if o == nil {
		return
	}
	t.queueStats(st, &s)
	ws := t.b.StepStats()
	for _, w := range ws {
		s.WorkerTime = append(s.WorkerTime, time.Duration(w.GetWallUs())*time.Microsecond)
	}
	s.ExpertTokens = expertTokens(ws, st.geo.Experts)
	o.Step(s)
}

// expertTokens sums the workers' flat [layer][expert] counts.
func expertTokens(ws []*pb.StepStats, experts int) [][]uint32 {
	if experts <= 0 {
		return nil
	}
	var sum []uint32
	for _, w := range ws {
		et := w.GetExpertTokens()
		if len(et) == 0 || len(et)%experts != 0 {
			continue
		}
		if sum == nil {
			sum = make([]uint32, len(et))
		}
		if len(et) != len(sum) {
			continue // a worker disagreeing on the model's shape: ignored
		}
		for i, v := range et {
			sum[i] += v
		}
	}
	if sum == nil {
		return nil
	}
	out := make([][]uint32, len(sum)/experts)
	for l := range out {
		out[l] = sum[l*experts : (l+1)*experts : (l+1)*experts]
	}
	return out
}

// checkResults reports a step that did not return a valid token for every
// sequence it sampled; the loop then recovers as from a failed step.
func checkResults(res map[uint64]*pb.SeqResult, sched []work, vocab int) error {
	for _, w := range sched {
		if w.q.computed+w.n < len(w.q.toks) {
			continue
		}
		r, ok := res[w.q.id]
		switch {
		case !ok:
			return fmt.Errorf("scheduler: no token for sequence %d", w.q.id)
		case r.Token < 0 || int(r.Token) >= vocab:
			return fmt.Errorf("scheduler: token %d for sequence %d is outside the vocabulary of %d", r.Token, w.q.id, vocab)
		}
	}
	return nil
}

func badToken(ids []int32, vocab int) int {
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			return i
		}
	}
	return -1
}
