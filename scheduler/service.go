package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/coordinator/control"
)

// Sentinel errors of the scheduler.
var (
	// ErrStopped: the term ended (leadership lost, shutdown); the error
	// also wraps the cause (control.ErrNotLeader).
	ErrStopped = errors.New("scheduler: stopped")
	// ErrKVFull: the request does not fit an attention group's KV cache
	// even alone (Service), or a pool ran out of blocks (Generate).
	ErrKVFull = errors.New("scheduler: KV cache full")
	// ErrBadRequest: a malformed request.
	ErrBadRequest = errors.New("scheduler: bad request")
	// ErrClusterDown: a step failed and the cluster could not recover.
	ErrClusterDown = errors.New("scheduler: the cluster cannot serve")
)

// Config configures a Service.
type Config struct {
	// MaxBatchTokens bounds the tokens fed per step, decodes and prefill
	// chunks together (vLLM's max_num_batched_tokens).
	MaxBatchTokens int
	// MaxSeqs bounds the sequences running at once, and so per step
	// (vLLM's max_num_seqs).
	MaxSeqs int
	// Observer, when set, receives per-step statistics and queue times.
	Observer Observer
	Log      *slog.Logger
}

// DefaultConfig returns a complete configuration.
func DefaultConfig() Config {
	return Config{
		MaxBatchTokens: 2048, // vLLM's chunked-prefill default for online serving: a long prompt delays the running decodes by at most one such chunk
		MaxSeqs:        256,  // vLLM's default: enough to fill a decode batch, few enough that one step's request stays small
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.MaxBatchTokens < 1:
		return fmt.Errorf("scheduler: MaxBatchTokens must be at least 1, got %d", c.MaxBatchTokens)
	case c.MaxSeqs < 1:
		return fmt.Errorf("scheduler: MaxSeqs must be at least 1, got %d", c.MaxSeqs)
	}
	return nil
}

// Service is the scheduler of a coordinator: the control plane's Lead
// hook starts one scheduling loop per leadership term on the term's
// Backend, and Submit hands requests to the current term. Submit and
// SetHealth are safe for concurrent use.
type Service struct {
	cfg    Config
	log    *slog.Logger
	health atomic.Pointer[func() control.Health]

	mu  sync.Mutex
	cur *term
}

var (
	_ control.Leader = (*Service)(nil)
	_ Submitter      = (*Service)(nil)
)

// New returns a Service with no term: Submit fails until Lead.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Service{cfg: cfg, log: cfg.Log}, nil
}

// SetHealth tells the Service how to tell a standby (Submit fails with
// control.ErrNotLeader) from a leader whose placement does not serve yet
// (control.ErrNotReady) while no term runs. Without it the error is
// ErrNotLeader.
func (s *Service) SetHealth(h func() control.Health) { s.health.Store(&h) }

// Lead implements control.Leader: it starts a term's scheduling loop on b.
func (s *Service) Lead(b coordinator.Backend) control.Term {
	t := newTerm(s, b)
	s.mu.Lock()
	if s.cur != nil { // the control plane stops a term before the next; be safe anyway
		old := s.cur
		s.mu.Unlock()
		old.Stop(control.ErrNotLeader)
		s.mu.Lock()
	}
	s.cur = t
	s.mu.Unlock()
	go t.loop()
	return t
}

// Submit implements Submitter: it validates r and queues it on the
// current term. The stream ends when the request finishes, fails, or ctx
// ends (the sequence is then freed).
func (s *Service) Submit(ctx context.Context, r Request) (Stream, error) {
	if err := validate(r); err != nil {
		return nil, err
	}
	s.mu.Lock()
	t := s.cur
	s.mu.Unlock()
	if t == nil {
		if h := s.health.Load(); h != nil && (*h)().Role == "leader" {
			return nil, fmt.Errorf("scheduler: %w", control.ErrNotReady)
		}
		return nil, fmt.Errorf("scheduler: %w", control.ErrNotLeader)
	}
	return t.submit(ctx, r)
}

func (s *Service) ended(t *term) {
	s.mu.Lock()
	if s.cur == t {
		s.cur = nil
	}
	s.mu.Unlock()
}

// validate checks what does not depend on the placement.
func validate(r Request) error {
	switch {
	case len(r.Prompt) == 0:
		return fmt.Errorf("%w: empty prompt", ErrBadRequest)
	case r.MaxTokens <= 0:
		return fmt.Errorf("%w: max tokens must be positive, got %d", ErrBadRequest, r.MaxTokens)
	case len(r.Generated) >= r.MaxTokens:
		return fmt.Errorf("%w: %d tokens already generated leave none of max tokens %d", ErrBadRequest, len(r.Generated), r.MaxTokens)
	case r.TopLogprobs < 0:
		return fmt.Errorf("%w: top logprobs must not be negative, got %d", ErrBadRequest, r.TopLogprobs)
	}
	if err := r.Params.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if b := r.Budget; b != nil {
		switch {
		case b.Tokens < 0:
			return fmt.Errorf("%w: thinking budget must not be negative, got %d", ErrBadRequest, b.Tokens)
		case !slices.Contains(b.Insert, b.End):
			return fmt.Errorf("%w: the thinking budget's insert must contain its end token %d", ErrBadRequest, b.End)
		}
	}
	return nil
}

// stream implements Stream. The loop pushes; readers never block it.
type stream struct {
	ctx    context.Context
	req    Request
	notify chan struct{}

	mu     sync.Mutex
	toks   []Token
	read   int
	done   bool
	finish string
	err    error
}

var _ Stream = (*stream)(nil)

func newStream(ctx context.Context, r Request) *stream {
	return &stream{ctx: ctx, req: r, notify: make(chan struct{}, 1)}
}

// Next implements Stream.
func (s *stream) Next(ctx context.Context) (toks []Token, done bool, finish string, err error) {
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
		case <-s.ctx.Done():
			// The loop ends the stream after its current step; the
			// caller learns of the cancellation at once.
			return nil, true, "", s.ctx.Err()
		}
	}
}

func (s *stream) push(t ...Token) {
	s.mu.Lock()
	s.toks = append(s.toks, t...)
	s.mu.Unlock()
	s.wake()
}

func (s *stream) end(finish string, err error) {
	s.mu.Lock()
	if !s.done {
		s.done, s.finish, s.err = true, finish, err
	}
	s.mu.Unlock()
	s.wake()
}

func (s *stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
