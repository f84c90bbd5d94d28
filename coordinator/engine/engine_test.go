package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeCluster is a Backend whose "model" maps a sequence's whole history
// to its next token, and whose KV cache is the history itself: a step
// feeding tokens at the wrong position, or after a recovery without
// resubmitting from position 0, is an error.
type fakeCluster struct {
	mu       sync.Mutex
	geo      Geometry
	kv       map[uint64][]int32
	steps    int
	failAt   map[int]bool // step numbers that fail
	badAt    int          // a step that answers an invalid token
	recovers int
	alarm    chan error
	// gate, when set, admits one step per value received.
	gate chan struct{}
}

func newFake(geo Geometry, failAt ...int) *fakeCluster {
	f := &fakeCluster{geo: geo, kv: map[uint64][]int32{}, failAt: map[int]bool{}, alarm: make(chan error, 1)}
	for _, s := range failAt {
		f.failAt[s] = true
	}
	return f
}

var errInjected = errors.New("injected step failure")

func next(hist []int32, vocab int) int32 {
	h := uint64(1469598103934665603)
	for _, t := range hist {
		h = (h ^ uint64(t)) * 1099511628211
	}
	return int32(h % uint64(vocab))
}

func (f *fakeCluster) Geometry() Geometry  { return f.geo }
func (f *fakeCluster) Alarm() <-chan error { return f.alarm }

func (f *fakeCluster) Step(ctx context.Context, seqs []*pb.SeqStep, finished []uint64) (map[uint64]*pb.SeqResult, error) {
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
	for _, id := range finished {
		delete(f.kv, id)
	}
	if f.failAt[f.steps] {
		// Half the sequences got their tokens in before the failure: the
		// engine must not trust any of it.
		for i, s := range seqs {
			if i%2 == 0 {
				f.kv[s.SeqId] = append(f.kv[s.SeqId], s.Tokens...)
			}
		}
		return nil, errInjected
	}
	out := map[uint64]*pb.SeqResult{}
	for _, s := range seqs {
		if int(s.StartPos) != len(f.kv[s.SeqId]) {
			return nil, fmt.Errorf("sequence %d fed at %d, cache holds %d", s.SeqId, s.StartPos, len(f.kv[s.SeqId]))
		}
		if want := (int(s.StartPos) + len(s.Tokens) + f.geo.BlockSize - 1) / f.geo.BlockSize; len(s.BlockTable) < want {
			return nil, fmt.Errorf("sequence %d: %d blocks for %d positions", s.SeqId, len(s.BlockTable), int(s.StartPos)+len(s.Tokens))
		}
		f.kv[s.SeqId] = append(f.kv[s.SeqId], s.Tokens...)
		out[s.SeqId] = &pb.SeqResult{SeqId: s.SeqId, Token: next(f.kv[s.SeqId], f.geo.Vocab)}
	}
	if f.steps == f.badAt {
		out[seqs[len(seqs)-1].SeqId].Token = int32(f.geo.Vocab) // a worker gone wrong
	}
	return out, nil
}

func (f *fakeCluster) Recover(ctx context.Context, cause error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !errors.Is(cause, errInjected) && f.steps != f.badAt {
		return fmt.Errorf("unexpected failure: %w", cause)
	}
	f.recovers++
	f.kv = map[uint64][]int32{} // a new placement: every cache is empty
	return nil
}

// collect reads a stream to its end.
func collect(t *testing.T, s *Stream) ([]int32, string, error) {
	t.Helper()
	var out []int32
	for {
		toks, done, finish, err := s.Next(context.Background())
		out = append(out, toks...)
		if done {
			return out, finish, err
		}
	}
}

// run submits reqs concurrently and returns every stream's tokens.
func run(t *testing.T, b Backend, reqs []Request) [][]int32 {
	t.Helper()
	e := New(b, quiet)
	defer e.Stop(nil)
	out := make([][]int32, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := e.Submit(context.Background(), r)
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			toks, finish, err := collect(t, s)
			if err != nil || finish != FinishLength {
				t.Errorf("request %d: finish %q, err %v", i, finish, err)
			}
			out[i] = toks
		}()
	}
	wg.Wait()
	return out
}

func requests(n int) []Request {
	var out []Request
	for i := range n {
		p := make([]int32, 1+i%7)
		for j := range p {
			p[j] = int32(37*i + j)
		}
		out = append(out, Request{Prompt: p, MaxTokens: 5 + i%11, Params: sampling.Greedy()})
	}
	return out
}

// TestResubmitAfterFailures: step failures at several points give the same
// tokens as a run without any.
func TestResubmitAfterFailures(t *testing.T) {
	geo := Geometry{Groups: 2, KVBlocks: 64, BlockSize: 4, Vocab: 1000}
	reqs := requests(12)
	want := run(t, newFake(geo), reqs)
	for _, failAt := range [][]int{{1}, {2}, {3, 4}, {5, 9, 12}} {
		t.Run(fmt.Sprint(failAt), func(t *testing.T) {
			f := newFake(geo, failAt...)
			got := run(t, f, reqs)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("with failures at steps %v (-want +got):\n%s", failAt, diff)
			}
			if f.recovers == 0 {
				t.Errorf("no recovery happened")
			}
		})
	}
}

func TestStopFailsRunning(t *testing.T) {
	f := newFake(Geometry{Groups: 1, KVBlocks: 64, BlockSize: 4, Vocab: 1000})
	f.mu.Lock() // hold every step: the request stays running
	e := New(f, quiet)
	s, err := e.Submit(context.Background(), Request{Prompt: []int32{1}, MaxTokens: 10, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("lost leadership")
	go func() { time.Sleep(10 * time.Millisecond); f.mu.Unlock() }()
	e.Stop(cause)
	_, _, err = collect(t, s)
	if !errors.Is(err, ErrStopped) || !errors.Is(err, cause) {
		t.Errorf("stream after Stop: %v, want ErrStopped wrapping the cause", err)
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: []int32{1}, MaxTokens: 1, Params: sampling.Greedy()}); !errors.Is(err, ErrStopped) {
		t.Errorf("submit after Stop: %v, want ErrStopped", err)
	}
}

func TestBadRequests(t *testing.T) {
	geo := Geometry{Groups: 1, KVBlocks: 4, BlockSize: 4, Vocab: 10}
	e := New(newFake(geo), quiet)
	defer e.Stop(nil)
	for _, tc := range []struct {
		name string
		r    Request
		want error
	}{
		{"empty prompt", Request{MaxTokens: 1}, ErrBadRequest},
		{"no tokens", Request{Prompt: []int32{1}}, ErrBadRequest},
		{"bad params", Request{Prompt: []int32{1}, MaxTokens: 1, Params: sampling.Params{Temperature: -1}}, ErrBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.Submit(context.Background(), tc.r); !errors.Is(err, tc.want) {
				t.Errorf("Submit: %v, want %v", err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		r    Request
		want error
	}{
		{"token outside the vocabulary", Request{Prompt: []int32{10}, MaxTokens: 1, Params: sampling.Greedy()}, ErrBadRequest},
		{"prompt over the KV cache", Request{Prompt: make([]int32, 17), MaxTokens: 1, Params: sampling.Greedy()}, ErrKVFull},
		{"generation over the KV cache", Request{Prompt: make([]int32, 15), MaxTokens: 5, Params: sampling.Greedy()}, ErrKVFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := e.Submit(context.Background(), tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := collect(t, s); !errors.Is(err, tc.want) {
				t.Errorf("stream: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestCancelFreesBlocks: a cancelled request's blocks go back to the pool,
// so a request needing the whole cache runs after it.
func TestCancelFreesBlocks(t *testing.T) {
	geo := Geometry{Groups: 1, KVBlocks: 4, BlockSize: 4, Vocab: 1000}
	f := newFake(geo)
	f.gate = make(chan struct{})
	e := New(f, quiet)
	defer e.Stop(nil)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := e.Submit(ctx, Request{Prompt: make([]int32, 8), MaxTokens: 8, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	f.gate <- struct{}{} // one step: one token
	if _, _, _, err := s.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	go func() { // let later steps run
		for {
			select {
			case f.gate <- struct{}{}:
			case <-e.done:
				return
			}
		}
	}()
	if _, _, err := collect(t, s); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled stream: %v", err)
	}
	s2, err := e.Submit(context.Background(), Request{Prompt: make([]int32, 10), MaxTokens: 6, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	toks, finish, err := collect(t, s2)
	if err != nil || finish != FinishLength || len(toks) != 6 {
		t.Errorf("after the cancel: %d tokens, finish %q, err %v", len(toks), finish, err)
	}
}

func TestStopToken(t *testing.T) {
	geo := Geometry{Groups: 1, KVBlocks: 64, BlockSize: 4, Vocab: 1000}
	free := run(t, newFake(geo), []Request{{Prompt: []int32{1, 2}, MaxTokens: 8, Params: sampling.Greedy()}})[0]
	e := New(newFake(geo), quiet)
	defer e.Stop(nil)
	s, err := e.Submit(context.Background(), Request{Prompt: []int32{1, 2}, MaxTokens: 8, Params: sampling.Greedy(), Stop: []int32{free[3]}})
	if err != nil {
		t.Fatal(err)
	}
	toks, finish, err := collect(t, s)
	if err != nil || finish != FinishStop {
		t.Fatalf("finish %q, err %v", finish, err)
	}
	if diff := cmp.Diff(free[:4], toks); diff != "" {
		t.Errorf("tokens up to the stop id (-want +got):\n%s", diff)
	}
}

// TestInvalidTokenRecovers: a step that answers a token outside the
// vocabulary is treated as a failed step: nothing of it is kept, and the
// sequences are resubmitted.
func TestInvalidTokenRecovers(t *testing.T) {
	geo := Geometry{Groups: 2, KVBlocks: 64, BlockSize: 4, Vocab: 1000}
	reqs := requests(6)
	want := run(t, newFake(geo), reqs)
	f := newFake(geo)
	f.badAt = 3
	if diff := cmp.Diff(want, run(t, f, reqs)); diff != "" {
		t.Errorf("after an invalid token (-want +got):\n%s", diff)
	}
	if f.recovers != 1 {
		t.Errorf("%d recoveries, want 1", f.recovers)
	}
}
