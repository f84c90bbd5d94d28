package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
)

var geo2 = coordinator.Geometry{Groups: 2, KVBlocks: 64, BlockSize: 4, Vocab: 1000, Experts: 3}

// TestResubmitAfterFailures: step failures at several points give the same
// tokens as a run without any.
func TestResubmitAfterFailures(t *testing.T) {
	reqs := fakeRequests(12)
	want := run(t, start(t, newFake(geo2), scheduler.DefaultConfig()), reqs)
	for _, failAt := range [][]int{{1}, {2}, {3, 4}, {5, 9, 12}} {
		t.Run(fmt.Sprint(failAt), func(t *testing.T) {
			f := newFake(geo2, failAt...)
			got := run(t, start(t, f, scheduler.DefaultConfig()), reqs)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("with failures at steps %v (-want +got):\n%s", failAt, diff)
			}
			if f.recovers == 0 {
				t.Errorf("no recovery happened")
			}
		})
	}
}

// TestInvalidTokenRecovers: a step that answers a token outside the
// vocabulary is treated as a failed step.
func TestInvalidTokenRecovers(t *testing.T) {
	reqs := fakeRequests(6)
	want := run(t, start(t, newFake(geo2), scheduler.DefaultConfig()), reqs)
	f := newFake(geo2)
	f.badAt = 3
	if diff := cmp.Diff(want, run(t, start(t, f, scheduler.DefaultConfig()), reqs)); diff != "" {
		t.Errorf("after an invalid token (-want +got):\n%s", diff)
	}
	if f.recovers != 1 {
		t.Errorf("%d recoveries, want 1", f.recovers)
	}
}

// TestChunkedAndPreempted: tiny token budgets (chunked prefill) and a pool
// that forces preemption give the same tokens as an ample configuration.
func TestChunkedAndPreempted(t *testing.T) {
	reqs := fakeRequests(24)
	want := run(t, start(t, newFake(geo2), scheduler.DefaultConfig()), reqs)
	for _, tc := range []struct {
		name         string
		blocks       int
		tokens, seqs int
		preempt      bool
	}{
		{"budget 1", 64, 1, 256, false},
		{"budget 3", 64, 3, 256, false},
		{"2 seqs", 64, 2048, 2, false},
		{"small pool", 6, 2048, 256, true},
		{"small pool budget 5", 6, 5, 256, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := geo2
			g.KVBlocks = tc.blocks
			rec := &recorder{}
			cfg := scheduler.Config{MaxBatchTokens: tc.tokens, MaxSeqs: tc.seqs, Observer: rec}
			f := newFake(g)
			f.hold = make(chan struct{})
			got := run(t, &holdUntil{Submitter: start(t, f, cfg), f: f, n: len(reqs)}, reqs)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if p := rec.preemptions(); (p > 0) != tc.preempt {
				t.Errorf("%d preemptions, want some: %v", p, tc.preempt)
			}
			// The term may still report the last step while this reads.
			rec.mu.Lock()
			scheduled, steps := rec.scheduled, slices.Clone(rec.steps)
			rec.mu.Unlock()
			if scheduled != len(reqs) {
				t.Errorf("Scheduled called %d times for %d requests", scheduled, len(reqs))
			}
			for _, s := range steps {
				if s.PromptTokens+s.GenerationTokens == 0 || s.Running > tc.seqs {
					t.Errorf("step stats %+v", s)
				}
			}
		})
	}
}

func TestStopFailsRunning(t *testing.T) {
	f := newFake(coordinator.Geometry{Groups: 1, KVBlocks: 64, BlockSize: 4, Vocab: 1000})
	f.gate = make(chan struct{}) // no step runs: the request stays running
	s, err := scheduler.New(scheduler.Config{MaxBatchTokens: 16, MaxSeqs: 4, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	term := s.Lead(f)
	st, err := s.Submit(context.Background(), scheduler.Request{Prompt: []int32{1}, MaxTokens: 10, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	term.Stop(control.ErrNotLeader)
	_, _, err = collect(t, st)
	if !errors.Is(err, scheduler.ErrStopped) || !errors.Is(err, control.ErrNotLeader) {
		t.Errorf("stream after Stop: %v, want ErrStopped wrapping ErrNotLeader", err)
	}
	if _, err := s.Submit(context.Background(), scheduler.Request{Prompt: []int32{1}, MaxTokens: 1, Params: sampling.Greedy()}); !errors.Is(err, control.ErrNotLeader) {
		t.Errorf("submit after Stop: %v, want ErrNotLeader", err)
	}
}

func TestNoTerm(t *testing.T) {
	s, err := scheduler.New(scheduler.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	r := scheduler.Request{Prompt: []int32{1}, MaxTokens: 1, Params: sampling.Greedy()}
	if _, err := s.Submit(context.Background(), r); !errors.Is(err, control.ErrNotLeader) {
		t.Errorf("standby: %v, want ErrNotLeader", err)
	}
	s.SetHealth(func() control.Health { return control.Health{Role: "leader"} })
	if _, err := s.Submit(context.Background(), r); !errors.Is(err, control.ErrNotReady) {
		t.Errorf("leader without placement: %v, want ErrNotReady", err)
	}
	for _, cfg := range []scheduler.Config{{MaxBatchTokens: 0, MaxSeqs: 1}, {MaxBatchTokens: 1, MaxSeqs: 0}} {
		if _, err := scheduler.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestBadRequests(t *testing.T) {
	geo := coordinator.Geometry{Groups: 2, KVBlocks: 4, BlockSize: 4, Vocab: 10}
	s := start(t, newFake(geo), scheduler.DefaultConfig())
	g := sampling.Greedy()
	for _, tc := range []struct {
		name string
		r    scheduler.Request
	}{
		{"empty prompt", scheduler.Request{MaxTokens: 1}},
		{"no tokens", scheduler.Request{Prompt: []int32{1}}},
		{"generated fills max tokens", scheduler.Request{Prompt: []int32{1}, Generated: []int32{2}, MaxTokens: 1, Params: g}},
		{"bad params", scheduler.Request{Prompt: []int32{1}, MaxTokens: 1, Params: sampling.Params{Temperature: -1}}},
		{"negative top logprobs", scheduler.Request{Prompt: []int32{1}, MaxTokens: 1, Params: g, TopLogprobs: -1}},
		{"insert without end", scheduler.Request{Prompt: []int32{1}, MaxTokens: 1, Params: g, Budget: &scheduler.ThinkingBudget{Tokens: 1, End: 3, Insert: []int32{4}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Submit(context.Background(), tc.r); !errors.Is(err, scheduler.ErrBadRequest) {
				t.Errorf("Submit: %v, want ErrBadRequest", err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		r    scheduler.Request
		want error
	}{
		{"token outside the vocabulary", scheduler.Request{Prompt: []int32{10}, MaxTokens: 1, Params: g}, scheduler.ErrBadRequest},
		{"generated outside the vocabulary", scheduler.Request{Prompt: []int32{1}, Generated: []int32{-1}, MaxTokens: 2, Params: g}, scheduler.ErrBadRequest},
		{"prompt over the KV cache", scheduler.Request{Prompt: make([]int32, 17), MaxTokens: 1, Params: g}, scheduler.ErrKVFull},
		{"generation over the KV cache", scheduler.Request{Prompt: make([]int32, 15), MaxTokens: 5, Params: g}, scheduler.ErrKVFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := s.Submit(context.Background(), tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := collect(t, st); !errors.Is(err, tc.want) {
				t.Errorf("stream: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestCancelFreesBlocks: a cancelled request's blocks go back to the pool
// and the workers are told; the other request continues, and one needing
// the whole cache runs after.
func TestCancelFreesBlocks(t *testing.T) {
	geo := coordinator.Geometry{Groups: 1, KVBlocks: 8, BlockSize: 4, Vocab: 1000}
	f := newFake(geo)
	f.gate = make(chan struct{})
	rec := &recorder{}
	s := start(t, f, scheduler.Config{MaxBatchTokens: 64, MaxSeqs: 8, Observer: rec})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := s.Submit(ctx, scheduler.Request{Prompt: make([]int32, 8), MaxTokens: 20, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Submit(context.Background(), scheduler.Request{Prompt: []int32{5, 6}, MaxTokens: 6, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	f.gate <- struct{}{}
	if _, _, _, err := a.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // let later steps run
		for {
			select {
			case f.gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	if _, _, err := collect(t, a); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled stream: %v", err)
	}
	toks, finish, err := collect(t, b)
	if err != nil || finish != scheduler.FinishLength || len(toks) != 6 {
		t.Errorf("the other request: %d tokens, finish %q, err %v", len(toks), finish, err)
	}
	c, err := s.Submit(context.Background(), scheduler.Request{Prompt: make([]int32, 26), MaxTokens: 6, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	if toks, _, err := collect(t, c); err != nil || len(toks) != 6 {
		t.Errorf("after the cancel: %d tokens, err %v", len(toks), err)
	}
	f.mu.Lock()
	told := slices.Contains(f.finished, 1)
	f.mu.Unlock()
	if !told {
		t.Errorf("the workers were not told the cancelled sequence 1 finished: %v", f.finished)
	}
	if u := rec.last().KVUsage; u != 0 {
		t.Errorf("KV usage %v after every request ended, want 0", u)
	}
}

func TestStopToken(t *testing.T) {
	geo := coordinator.Geometry{Groups: 1, KVBlocks: 64, BlockSize: 4, Vocab: 1000}
	free := run(t, start(t, newFake(geo), scheduler.DefaultConfig()), []scheduler.Request{{Prompt: []int32{1, 2}, MaxTokens: 8, Params: sampling.Greedy()}})[0]
	s := start(t, newFake(geo), scheduler.DefaultConfig())
	st, err := s.Submit(context.Background(), scheduler.Request{Prompt: []int32{1, 2}, MaxTokens: 8, Params: sampling.Greedy(), Stop: []int32{free[3]}})
	if err != nil {
		t.Fatal(err)
	}
	toks, finish, err := collect(t, st)
	if err != nil || finish != scheduler.FinishStop {
		t.Fatalf("finish %q, err %v", finish, err)
	}
	if diff := cmp.Diff(free[:4], ids(toks)); diff != "" {
		t.Errorf("tokens up to the stop id (-want +got):\n%s", diff)
	}
}

// TestGroupsMatchBlocks: with more sequences than one group's pool holds
// at once, both groups serve, and the fake checks each step's blocks
// against its group's owners.
func TestGroupsMatchBlocks(t *testing.T) {
	f := newFake(geo2)
	reqs := fakeRequests(16)
	for i := range reqs {
		reqs[i].MaxTokens = 30
	}
	run(t, start(t, f, scheduler.DefaultConfig()), reqs)
	count := make([]int, geo2.Groups)
	for _, g := range f.groups {
		count[g]++
	}
	if count[0] == 0 || count[1] == 0 {
		t.Errorf("sequences per group %v: want both used", count)
	}
}

func TestLogprobsAndStats(t *testing.T) {
	f := newFake(geo2)
	rec := &recorder{}
	s := start(t, f, scheduler.Config{MaxBatchTokens: 64, MaxSeqs: 8, Observer: rec})
	st, err := s.Submit(context.Background(), scheduler.Request{Prompt: []int32{1, 2, 3}, MaxTokens: 3, Params: sampling.Greedy(), Logprobs: true, TopLogprobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	toks, _, err := collect(t, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		want := scheduler.Token{ID: tk.ID, Logprob: -float32(tk.ID) / 1000, TopIDs: []int32{tk.ID, tk.ID + 1}, TopLogprobs: []float32{0, -1}}
		if diff := cmp.Diff(want, tk); diff != "" {
			t.Errorf("token (-want +got):\n%s", diff)
		}
	}
	last := rec.last()
	if diff := cmp.Diff([]time.Duration{time.Millisecond, 2 * time.Millisecond}, last.WorkerTime); diff != "" {
		t.Errorf("worker times (-want +got):\n%s", diff)
	}
	sum := 0
	for _, l := range last.ExpertTokens {
		if len(l) != geo2.Experts {
			t.Errorf("a layer of %d experts, want %d", len(l), geo2.Experts)
		}
		for _, v := range l {
			sum += int(v)
		}
	}
	if len(last.ExpertTokens) != 2 || sum != 2 {
		t.Errorf("expert tokens %v: want 2 layers summing to 2", last.ExpertTokens)
	}
}

// TestAlarmRecovers: an alarm while idle makes the scheduler recover, and
// it serves afterwards.
func TestAlarmRecovers(t *testing.T) {
	f := newFake(geo2)
	s := start(t, f, scheduler.DefaultConfig())
	f.alarm <- errAlarm
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		n := f.recovers
		f.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no recovery after the alarm")
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	if got := run(t, s, fakeRequests(3)); len(got[2]) == 0 {
		t.Errorf("no tokens after the recovery")
	}
}

// TestCancelReportsQueues: a request cancelled while nothing else runs is
// reported to the Observer (no step follows it), so running-request
// gauges do not stay stale.
func TestCancelReportsQueues(t *testing.T) {
	f := newFake(coordinator.Geometry{Groups: 1, KVBlocks: 8, BlockSize: 4, Vocab: 1000})
	f.gate = make(chan struct{})
	rec := &recorder{}
	s := start(t, f, scheduler.Config{MaxBatchTokens: 64, MaxSeqs: 8, Observer: rec})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := s.Submit(ctx, scheduler.Request{Prompt: []int32{1, 2, 3}, MaxTokens: 100, Params: sampling.Greedy()})
	if err != nil {
		t.Fatal(err)
	}
	f.gate <- struct{}{}
	if _, _, _, err := a.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // let a step in flight finish, whether or not one is
		select {
		case f.gate <- struct{}{}:
		case <-stop:
		}
	}()
	if _, _, err := collect(t, a); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled stream: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		last := rec.steps[len(rec.steps)-1]
		rec.mu.Unlock()
		if last.Queues && last.Running == 0 && last.Waiting == 0 && last.KVUsage == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("last report %+v; want the empty queues reported", last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
