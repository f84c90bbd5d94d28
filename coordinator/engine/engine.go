// Package engine is the coordinator's generation loop: it batches every
// running request into one step at a time, hands the steps to a Backend
// (the cluster), and when a step fails asks the Backend to recover and
// resubmits every running sequence from its tokens (prompt + generated so
// far, re-prefilled), so a worker's death delays a stream but never loses
// or changes it. Sampling happens on the workers; a sequence's sampler is a
// function of its seed and position, so a resubmitted sequence draws what
// the uninterrupted one would have.
//
// This is the minimal loop the control plane needs; chunked prefill under
// a token budget, admission by free KV blocks with preemption, and the
// serving limits belong to the scheduler.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
)

// Sentinel errors of the engine.
var (
	// ErrStopped: the engine stopped (leadership lost, shutdown).
	ErrStopped = errors.New("engine: stopped")
	// ErrKVFull: the request does not fit the KV cache even alone.
	ErrKVFull = errors.New("engine: KV cache full")
	// ErrBadRequest: a malformed request.
	ErrBadRequest = errors.New("engine: bad request")
	// ErrClusterDown: a step failed and the cluster could not recover.
	ErrClusterDown = errors.New("engine: the cluster cannot serve")
)

// Geometry is what the engine needs to know of the serving placement.
type Geometry struct {
	// Groups is the number of attention groups.
	Groups int
	// KVBlocks and BlockSize size each group's KV pool.
	KVBlocks, BlockSize int
	// Vocab is the vocabulary size (token ids are checked against it).
	Vocab int
}

// Backend runs steps on a cluster. The engine calls it from one goroutine
// only, never concurrently.
type Backend interface {
	// Geometry describes the placement steps now run on.
	Geometry() Geometry
	// Step runs one step and returns the sampled token of every sequence.
	Step(ctx context.Context, seqs []*pb.SeqStep, finished []uint64) (map[uint64]*pb.SeqResult, error)
	// Recover is called after Step failed with cause. It returns once
	// steps can run again, on a placement whose KV caches hold nothing
	// (every running sequence is resubmitted), or with an error when the
	// cluster cannot serve: the running requests then fail with it.
	Recover(ctx context.Context, cause error) error
	// Alarm delivers failures noticed outside a step (a worker declared
	// dead while the engine is idle); the engine then calls Recover.
	Alarm() <-chan error
}

// Request is one sequence to generate.
type Request struct {
	Prompt    []int32
	MaxTokens int
	Params    sampling.Params
	// Stop ends the sequence when sampled (the stop id is emitted).
	Stop []int32
}

// Finish reasons.
const (
	FinishStop   = "stop"
	FinishLength = "length"
)

// Stream is a running request. Tokens arrive on Next; the engine never
// blocks on a slow reader.
type Stream struct {
	ctx    context.Context
	req    Request
	notify chan struct{}

	mu     sync.Mutex
	toks   []int32
	read   int
	done   bool
	finish string
	err    error
}

// Next returns the tokens sampled since the last call. With none pending it
// waits; done is true once the request ended (finish then holds "stop" or
// "length", or err the failure) and no more tokens follow.
func (s *Stream) Next(ctx context.Context) (toks []int32, done bool, finish string, err error) {
	for {
		s.mu.Lock()
		toks = slices.Clone(s.toks[s.read:])
		s.read = len(s.toks)
		done, finish, err = s.done, s.finish, s.err
		s.mu.Unlock()
		if len(toks) > 0 || done {
			return toks, done, finish, err
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return nil, true, "", ctx.Err()
		}
	}
}

func (s *Stream) push(id int32) {
	s.mu.Lock()
	s.toks = append(s.toks, id)
	s.mu.Unlock()
	s.wake()
}

func (s *Stream) end(finish string, err error) {
	s.mu.Lock()
	if !s.done {
		s.done, s.finish, s.err = true, finish, err
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Engine is the generation loop. Submit is safe for concurrent use.
type Engine struct {
	b     Backend
	log   *slog.Logger
	in    chan *Stream
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	cause error
}

// New starts the loop on b; it runs until Stop.
func New(b Backend, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{b: b, log: log, in: make(chan *Stream, 1024), stop: make(chan struct{}), done: make(chan struct{})}
	go e.loop()
	return e
}

// Submit queues r. The stream ends when the request finishes, fails, or
// ctx ends (the sequence is then freed).
func (e *Engine) Submit(ctx context.Context, r Request) (*Stream, error) {
	if len(r.Prompt) == 0 {
		return nil, fmt.Errorf("%w: empty prompt", ErrBadRequest)
	}
	if r.MaxTokens <= 0 {
		return nil, fmt.Errorf("%w: max tokens must be positive, got %d", ErrBadRequest, r.MaxTokens)
	}
	if err := r.Params.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	s := &Stream{ctx: ctx, req: r, notify: make(chan struct{}, 1)}
	select {
	case <-e.stop:
		return nil, e.stoppedErr()
	default:
	}
	select {
	case e.in <- s:
		// The loop ends every queued stream before it exits (closing
		// done), so a stream sent before that is always answered.
		select {
		case <-e.done:
			return nil, e.stoppedErr()
		default:
			return s, nil
		}
	case <-e.stop:
		return nil, e.stoppedErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stop ends the loop; running and queued requests fail with cause (wrapped
// in ErrStopped when it is not one). It waits for the loop to exit.
func (e *Engine) Stop(cause error) {
	e.once.Do(func() {
		if cause == nil {
			cause = ErrStopped
		}
		e.cause = cause
		close(e.stop)
	})
	<-e.done
}

func (e *Engine) stoppedErr() error {
	<-e.done
	if errors.Is(e.cause, ErrStopped) {
		return e.cause
	}
	return fmt.Errorf("%w: %w", ErrStopped, e.cause)
}

// seq is a running sequence.
type seq struct {
	s       *Stream
	ms      model.Seq
	gen     []int32
	pending []int32
}

func (e *Engine) loop() {
	defer close(e.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-e.stop:
			cancel()
		case <-e.done:
		}
	}()
	var (
		running  []*seq
		waiting  []*Stream
		finished []uint64
		nextID   uint64
		geo      = e.b.Geometry()
		pools    = newPools(geo)
	)
	failAll := func(err error) {
		for _, q := range running {
			q.s.end("", err)
		}
		for _, s := range waiting {
			s.end("", err)
		}
		running, waiting = nil, nil
	}
	defer func() {
		err := e.cause
		if err == nil {
			err = ErrStopped
		} else if !errors.Is(err, ErrStopped) {
			err = fmt.Errorf("%w: %w", ErrStopped, err)
		}
		failAll(err)
		for {
			select {
			case s := <-e.in:
				s.end("", err)
			default:
				return
			}
		}
	}()
	for {
		if len(running) == 0 && len(waiting) == 0 {
			select {
			case s := <-e.in:
				waiting = append(waiting, s)
			case cause := <-e.b.Alarm():
				if err := e.b.Recover(ctx, cause); err != nil && ctx.Err() == nil {
					e.log.Error("recovery failed", "err", err)
				}
				geo = e.b.Geometry()
				pools = newPools(geo)
				finished = nil
				continue
			case <-e.stop:
				return
			}
		}
		for more := true; more; {
			select {
			case s := <-e.in:
				waiting = append(waiting, s)
			case <-e.stop:
				return
			default:
				more = false
			}
		}
		// Drop cancelled requests.
		running = slices.DeleteFunc(running, func(q *seq) bool {
			if err := q.s.ctx.Err(); err != nil {
				pools.release(&q.ms)
				finished = append(finished, q.ms.ID)
				q.s.end("", err)
				return true
			}
			return false
		})
		waiting = slices.DeleteFunc(waiting, func(s *Stream) bool {
			if err := s.ctx.Err(); err != nil {
				s.end("", err)
				return true
			}
			return false
		})
		// Admit waiting requests that fit.
		for len(waiting) > 0 {
			s := waiting[0]
			if bad := badToken(s.req.Prompt, geo.Vocab); bad >= 0 {
				s.end("", fmt.Errorf("%w: prompt token %d is outside the vocabulary of %d", ErrBadRequest, s.req.Prompt[bad], geo.Vocab))
				waiting = waiting[1:]
				continue
			}
			nextID++
			q := &seq{s: s, ms: model.Seq{ID: nextID}, pending: s.req.Prompt}
			if err := pools.reserve(&q.ms, len(q.pending)); err != nil {
				nextID--
				if len(running) == 0 {
					s.end("", fmt.Errorf("%w: a prompt of %d tokens does not fit %d blocks of %d", ErrKVFull, len(s.req.Prompt), geo.KVBlocks, geo.BlockSize))
					waiting = waiting[1:]
					continue
				}
				break // wait for running sequences to finish
			}
			running = append(running, q)
			waiting = waiting[1:]
		}
		if len(running) == 0 {
			continue
		}
		// Every decode needs room for one more position; a sequence that
		// cannot get it while others run waits for them (it keeps its
		// blocks); alone, it fails.
		var steps []*pb.SeqStep
		var stepped []*seq
		for _, q := range running {
			if err := pools.reserve(&q.ms, q.ms.Len+len(q.pending)); err != nil {
				if len(running) == 1 {
					q.s.end("", fmt.Errorf("%w: %d positions do not fit %d blocks of %d", ErrKVFull, q.ms.Len+len(q.pending), geo.KVBlocks, geo.BlockSize))
					pools.release(&q.ms)
					finished = append(finished, q.ms.ID)
				}
				continue
			}
			p := q.s.req.Params
			steps = append(steps, &pb.SeqStep{
				SeqId: q.ms.ID, Tokens: q.pending, StartPos: int32(q.ms.Len), BlockTable: q.ms.Blocks,
				Sampling: coordinator.SamplingProto(p), AttnGroup: uint32(pools.group(q.ms.ID)), Sample: true,
				PromptLen: int32(len(q.s.req.Prompt)),
			})
			stepped = append(stepped, q)
		}
		if len(steps) == 0 {
			continue
		}
		res, err := e.b.Step(ctx, steps, finished)
		if err == nil {
			err = checkResults(res, stepped, geo.Vocab)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("step failed; recovering", "err", err, "running", len(running))
			if rerr := e.b.Recover(ctx, err); rerr != nil {
				if ctx.Err() != nil {
					return
				}
				e.log.Error("recovery failed", "err", rerr)
				failAll(fmt.Errorf("%w: %w", ErrClusterDown, rerr))
				pools = newPools(e.b.Geometry())
				finished = nil
				continue
			}
			// The KV caches are gone: resubmit every sequence from its tokens.
			geo = e.b.Geometry()
			pools = newPools(geo)
			finished = nil
			for _, q := range running {
				q.ms = model.Seq{ID: q.ms.ID}
				// The last generated token was not fed yet: it is part of
				// the resubmitted prefill too.
				q.pending = append(slices.Clone(q.s.req.Prompt), q.gen...)
			}
			continue
		}
		finished = nil
		for _, q := range stepped {
			r := res[q.ms.ID]
			q.ms.Len += len(q.pending)
			q.gen = append(q.gen, r.Token)
			q.s.push(r.Token)
			switch {
			case slices.Contains(q.s.req.Stop, r.Token):
				q.s.end(FinishStop, nil)
			case len(q.gen) >= q.s.req.MaxTokens:
				q.s.end(FinishLength, nil)
			default:
				q.pending = []int32{r.Token}
				continue
			}
			pools.release(&q.ms)
			finished = append(finished, q.ms.ID)
		}
		running = slices.DeleteFunc(running, func(q *seq) bool {
			q.s.mu.Lock()
			defer q.s.mu.Unlock()
			return q.s.done
		})
	}
}

// checkResults reports a step that did not return a valid token for every
// sequence it ran; the engine then recovers as from a failed step.
func checkResults(res map[uint64]*pb.SeqResult, stepped []*seq, vocab int) error {
	for _, q := range stepped {
		r, ok := res[q.ms.ID]
		switch {
		case !ok:
			return fmt.Errorf("engine: no token for sequence %d", q.ms.ID)
		case r.Token < 0 || int(r.Token) >= vocab:
			return fmt.Errorf("engine: token %d for sequence %d is outside the vocabulary of %d", r.Token, q.ms.ID, vocab)
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

// pools holds one KV block pool per attention group; sequence id mod the
// number of groups picks the group.
type pools struct {
	p []*model.BlockPool
}

func newPools(g Geometry) *pools {
	out := &pools{}
	for range max(g.Groups, 1) {
		out.p = append(out.p, model.NewBlockPool(max(g.BlockSize, 1), g.KVBlocks))
	}
	return out
}

func (p *pools) group(id uint64) int               { return int(id % uint64(len(p.p))) }
func (p *pools) reserve(s *model.Seq, n int) error { return p.p[p.group(s.ID)].Reserve(s, n) }
func (p *pools) release(s *model.Seq)              { p.p[p.group(s.ID)].Release(s) }
