package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/moemesh/moemesh/coordinator"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeCluster is a Backend whose "model" maps a sequence's whole history
// to its next token, and whose KV cache is the history itself: a step
// feeding tokens at the wrong position, or after a recovery or preemption
// without resubmitting from position 0, is an error. It also checks that
// no two live sequences of a group share a block.
type fakeCluster struct {
	mu       sync.Mutex
	geo      coordinator.Geometry
	kv       map[uint64][]int32
	owner    []map[int32]uint64 // per group: block → sequence
	steps    int
	failAt   map[int]bool // step numbers that fail
	badAt    int          // a step that answers an invalid token
	recovers int
	alarm    chan error
	finished []uint64
	groups   map[uint64]int // last group of each sequence
	// gate, when set, admits one step per value received.
	gate chan struct{}
	// hold, when set, keeps the steps waiting until it is closed.
	hold chan struct{}
}

// holdUntil is a Submitter that closes f.hold once n requests are queued,
// so that every request is waiting before the first step runs and the
// schedule does not depend on how fast the submitters are.
type holdUntil struct {
	scheduler.Submitter
	f    *fakeCluster
	n    int
	mu   sync.Mutex
	seen int
}

func (h *holdUntil) Submit(ctx context.Context, r scheduler.Request) (scheduler.Stream, error) {
	s, err := h.Submitter.Submit(ctx, r)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen++; h.seen == h.n {
		close(h.f.hold)
	}
	return s, err
}

func newFake(geo coordinator.Geometry, failAt ...int) *fakeCluster {
	f := &fakeCluster{geo: geo, kv: map[uint64][]int32{}, failAt: map[int]bool{}, alarm: make(chan error, 1), groups: map[uint64]int{}}
	for _, s := range failAt {
		f.failAt[s] = true
	}
	f.resetOwners()
	return f
}

func (f *fakeCluster) resetOwners() {
	f.owner = nil
	for range f.geo.Groups {
		f.owner = append(f.owner, map[int32]uint64{})
	}
}

var errInjected = errors.New("injected step failure")

func next(hist []int32, vocab int) int32 {
	h := uint64(1469598103934665603)
	for _, t := range hist {
		h = (h ^ uint64(t)) * 1099511628211
	}
	return int32(h % uint64(vocab))
}

func (f *fakeCluster) Geometry() coordinator.Geometry { return f.geo }
func (f *fakeCluster) Alarm() <-chan error            { return f.alarm }
func (f *fakeCluster) StepStats() []*pb.StepStats {
	// Two workers, each routing one token to expert (step mod experts) of
	// every layer.
	var out []*pb.StepStats
	for w := range 2 {
		et := make([]uint32, 2*max(f.geo.Experts, 1))
		et[(f.steps+w)%len(et)] = 1
		out = append(out, &pb.StepStats{WallUs: int64(1000 * (w + 1)), ExpertTokens: et})
	}
	return out
}

func (f *fakeCluster) Step(ctx context.Context, seqs []*pb.SeqStep, finished []uint64) (map[uint64]*pb.SeqResult, error) {
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steps++
	f.finished = append(f.finished, finished...)
	for _, id := range finished {
		delete(f.kv, id)
		for _, o := range f.owner {
			for b, s := range o {
				if s == id {
					delete(o, b)
				}
			}
		}
	}
	if f.failAt[f.steps] {
		// Half the sequences got their tokens in before the failure: the
		// scheduler must not trust any of it.
		for i, s := range seqs {
			if i%2 == 0 {
				f.kv[s.SeqId] = append(f.kv[s.SeqId], s.Tokens...)
			}
		}
		return nil, errInjected
	}
	out := map[uint64]*pb.SeqResult{}
	for _, s := range seqs {
		if int(s.AttnGroup) >= f.geo.Groups {
			return nil, fmt.Errorf("sequence %d in group %d of %d", s.SeqId, s.AttnGroup, f.geo.Groups)
		}
		if int(s.StartPos) != len(f.kv[s.SeqId]) {
			return nil, fmt.Errorf("sequence %d fed at %d, cache holds %d", s.SeqId, s.StartPos, len(f.kv[s.SeqId]))
		}
		if want := (int(s.StartPos) + len(s.Tokens) + f.geo.BlockSize - 1) / f.geo.BlockSize; len(s.BlockTable) < want {
			return nil, fmt.Errorf("sequence %d: %d blocks for %d positions", s.SeqId, len(s.BlockTable), int(s.StartPos)+len(s.Tokens))
		}
		for _, b := range s.BlockTable {
			if b < 0 || int(b) >= f.geo.KVBlocks {
				return nil, fmt.Errorf("sequence %d: block %d of %d", s.SeqId, b, f.geo.KVBlocks)
			}
			if o, ok := f.owner[s.AttnGroup][b]; ok && o != s.SeqId {
				return nil, fmt.Errorf("sequence %d: block %d of group %d belongs to sequence %d", s.SeqId, b, s.AttnGroup, o)
			}
			f.owner[s.AttnGroup][b] = s.SeqId
		}
		f.groups[s.SeqId] = int(s.AttnGroup)
		f.kv[s.SeqId] = append(f.kv[s.SeqId], s.Tokens...)
		tok := next(f.kv[s.SeqId], f.geo.Vocab)
		r := &pb.SeqResult{SeqId: s.SeqId, Token: tok}
		if !s.Sample {
			r.Token = -1
		}
		if s.Logprobs {
			r.Logprob = -float32(tok) / 1000
			for k := range s.TopLogprobs {
				r.TopIds = append(r.TopIds, tok+int32(k))
				r.TopLogprobs = append(r.TopLogprobs, -float32(k))
			}
		}
		out[s.SeqId] = r
	}
	if f.steps == f.badAt {
		out[seqs[len(seqs)-1].SeqId].Token = int32(f.geo.Vocab) // a worker gone wrong
	}
	return out, nil
}

func (f *fakeCluster) Recover(ctx context.Context, cause error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !errors.Is(cause, errInjected) && f.steps != f.badAt && !errors.Is(cause, errAlarm) {
		return fmt.Errorf("unexpected failure: %w", cause)
	}
	f.recovers++
	f.kv = map[uint64][]int32{} // a new placement: every cache is empty
	f.resetOwners()
	return nil
}

var errAlarm = errors.New("worker left")

// start leads a term of a new Service on b; the term stops at cleanup.
func start(t *testing.T, b coordinator.Backend, cfg scheduler.Config) *scheduler.Service {
	t.Helper()
	cfg.Log = quiet
	s, err := scheduler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	term := s.Lead(b)
	t.Cleanup(func() { term.Stop(nil) })
	return s
}

// collect reads a stream to its end.
func collect(t *testing.T, s scheduler.Stream) ([]scheduler.Token, string, error) {
	t.Helper()
	var out []scheduler.Token
	for {
		toks, done, finish, err := s.Next(context.Background())
		out = append(out, toks...)
		if done {
			return out, finish, err
		}
	}
}

func ids(toks []scheduler.Token) []int32 {
	out := make([]int32, len(toks))
	for i, t := range toks {
		out[i] = t.ID
	}
	return out
}

// run submits reqs concurrently and returns every stream's tokens.
func run(t *testing.T, sub scheduler.Submitter, reqs []scheduler.Request) [][]int32 {
	t.Helper()
	out := make([][]int32, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := sub.Submit(context.Background(), r)
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			toks, finish, err := collect(t, s)
			if err != nil || (finish != scheduler.FinishLength && finish != scheduler.FinishStop) {
				t.Errorf("request %d: finish %q, err %v", i, finish, err)
			}
			out[i] = ids(toks)
		}()
	}
	wg.Wait()
	return out
}

func fakeRequests(n int) []scheduler.Request {
	var out []scheduler.Request
	for i := range n {
		p := make([]int32, 1+i%7)
		for j := range p {
			p[j] = int32(37*i + j)
		}
		out = append(out, scheduler.Request{Prompt: p, MaxTokens: 5 + i%11, Params: sampling.Greedy()})
	}
	return out
}

// recorder is an Observer keeping every Stats.
type recorder struct {
	mu        sync.Mutex
	steps     []scheduler.Stats
	scheduled int
}

func (r *recorder) Step(s scheduler.Stats) { r.mu.Lock(); r.steps = append(r.steps, s); r.mu.Unlock() }
func (r *recorder) Scheduled(q time.Duration) {
	r.mu.Lock()
	r.scheduled++
	r.mu.Unlock()
}

func (r *recorder) preemptions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.steps {
		n += s.Preemptions
	}
	return n
}

func (r *recorder) last() scheduler.Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.steps[len(r.steps)-1]
}
