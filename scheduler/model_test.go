package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
)

const tinyDir = "../model/testdata/tiny-a"

func openTiny(t *testing.T, contextTokens int) *model.Model {
	t.Helper()
	m, err := model.Open(tinyDir, kernels.NewCPU(), model.OpenOptions{BlockSize: 4, ContextTokens: contextTokens, CloseBackend: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// modelBackend is a Backend over real tiny models, one per attention group
// (each with its own KV storage), sampling as a worker does: a sampler per
// sequence, fresh when fed from position 0, whose history splits prompt
// and generated at SeqStep.prompt_len.
type modelBackend struct {
	groups   []*model.Model
	samplers map[uint64]*histSampler
}

type histSampler struct {
	s           *sampling.Sampler
	prompt, gen []int
}

func newModelBackend(t *testing.T, groups, contextTokens int) *modelBackend {
	b := &modelBackend{samplers: map[uint64]*histSampler{}}
	for range groups {
		b.groups = append(b.groups, openTiny(t, contextTokens))
	}
	return b
}

func (b *modelBackend) Geometry() coordinator.Geometry {
	m := b.groups[0]
	return coordinator.Geometry{Groups: len(b.groups), KVBlocks: m.KV.NumBlocks, BlockSize: m.KV.BlockSize, Vocab: m.Cfg.VocabSize, Experts: m.Cfg.NumExperts}
}
func (b *modelBackend) Alarm() <-chan error                            { return nil }
func (b *modelBackend) StepStats() []*pb.StepStats                     { return nil }
func (b *modelBackend) Recover(ctx context.Context, cause error) error { return cause }

func (b *modelBackend) Step(ctx context.Context, seqs []*pb.SeqStep, finished []uint64) (map[uint64]*pb.SeqResult, error) {
	for _, id := range finished {
		delete(b.samplers, id)
	}
	out := map[uint64]*pb.SeqResult{}
	for g, m := range b.groups {
		var in []model.SeqInput
		var steps []*pb.SeqStep
		for _, s := range seqs {
			if int(s.AttnGroup) == g {
				in = append(in, model.SeqInput{ID: s.SeqId, Tokens: s.Tokens, StartPos: int(s.StartPos), Blocks: s.BlockTable})
				steps = append(steps, s)
			}
		}
		if len(in) == 0 {
			continue
		}
		rows, err := m.Forward(ctx, in)
		if err != nil {
			return nil, err
		}
		for i, s := range steps {
			hs := b.samplers[s.SeqId]
			if s.StartPos == 0 || hs == nil {
				p := s.Sampling
				smp, err := sampling.New(sampling.Params{Temperature: p.Temperature, TopK: int(p.TopK), TopP: p.TopP, MinP: p.MinP,
					PresencePenalty: p.PresencePenalty, RepetitionPenalty: p.RepetitionPenalty, Seed: p.Seed})
				if err != nil {
					return nil, err
				}
				hs = &histSampler{s: smp}
				b.samplers[s.SeqId] = hs
			}
			for j, tok := range s.Tokens {
				if int(s.StartPos)+j >= int(s.PromptLen) {
					hs.gen = append(hs.gen, int(tok))
				} else {
					hs.prompt = append(hs.prompt, int(tok))
				}
			}
			r := &pb.SeqResult{SeqId: s.SeqId, Token: -1}
			if s.Sample {
				r.Token = int32(hs.s.Sample(rows[i], hs.prompt, hs.gen))
			}
			out[s.SeqId] = r
		}
	}
	return out, nil
}

// alone generates r by itself with Generate, the reference.
func alone(t *testing.T, m *model.Model, r scheduler.Request) []int32 {
	t.Helper()
	smp, err := sampling.New(r.Params)
	if err != nil {
		t.Fatal(err)
	}
	out, err := scheduler.Generate(context.Background(), m, scheduler.ModelPools(m), []scheduler.GenerateRequest{{Prompt: r.Prompt, MaxTokens: r.MaxTokens, Sampler: smp, Stop: r.Stop}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out[0]
}

func tinyRequests(n int, params func(i int) sampling.Params) []scheduler.Request {
	var out []scheduler.Request
	for i := range n {
		p := make([]int32, 1+(i*7)%40)
		for j := range p {
			p[j] = int32((97*i + 31*j) % 2048)
		}
		out = append(out, scheduler.Request{Prompt: p, MaxTokens: 1 + (i*5)%24, Params: params(i)})
	}
	return out
}

// TestConcurrentEqualsAlone: 64 concurrent requests of different prompt
// lengths and max tokens each give what running it alone gives, greedy and
// sampled (seeded), with chunked prefill and with a KV pool so small that
// preemption must happen.
func TestConcurrentEqualsAlone(t *testing.T) {
	ref := openTiny(t, 1024)
	for _, mode := range []struct {
		name   string
		params func(i int) sampling.Params
	}{
		{"greedy", func(int) sampling.Params { return sampling.Greedy() }},
		{"sampled", func(i int) sampling.Params {
			return sampling.Params{Temperature: 0.9, TopK: 50, TopP: 0.95, RepetitionPenalty: 1.1, PresencePenalty: 0.2, Seed: uint64(i)}
		}},
	} {
		reqs := tinyRequests(64, mode.params)
		var want [][]int32
		for _, r := range reqs {
			want = append(want, alone(t, ref, r))
		}
		for _, tc := range []struct {
			name              string
			groups, context   int
			batchTokens, seqs int
			preempt           bool
		}{
			{"ample", 2, 4096, 2048, 256, false},
			{"chunked", 2, 4096, 7, 256, false},
			{"preempting", 2, 96, 64, 256, true},
			{"one group preempting chunked", 1, 96, 5, 16, true},
		} {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				rec := &recorder{}
				s, err := scheduler.New(scheduler.Config{MaxBatchTokens: tc.batchTokens, MaxSeqs: tc.seqs, Observer: rec, Log: quiet})
				if err != nil {
					t.Fatal(err)
				}
				b := newModelBackend(t, tc.groups, tc.context)
				base := goleak.IgnoreCurrent() // the models' kernel pools live until cleanup
				term := s.Lead(b)
				got := run(t, s, reqs)
				term.Stop(nil)
				goleak.VerifyNone(t, base)
				for i := range reqs {
					if diff := cmp.Diff(want[i], got[i]); diff != "" {
						t.Errorf("request %d (prompt %d, max %d) (-alone +batched):\n%s", i, len(reqs[i].Prompt), reqs[i].MaxTokens, diff)
					}
				}
				if p := rec.preemptions(); (p > 0) != tc.preempt {
					t.Errorf("%d preemptions; want some: %v", p, tc.preempt)
				}
			})
		}
	}
}

// TestResume: a request resumed from the tokens an earlier attempt
// produced continues exactly as the uninterrupted one, sampled or not.
func TestResume(t *testing.T) {
	ref := openTiny(t, 1024)
	s := start(t, newModelBackend(t, 2, 1024), scheduler.DefaultConfig())
	for _, p := range []sampling.Params{sampling.Greedy(), {Temperature: 1, TopP: 0.9, TopK: 40, PresencePenalty: 0.5, RepetitionPenalty: 1.2, Seed: 7}} {
		r := scheduler.Request{Prompt: []int32{5, 9, 200, 31, 7}, MaxTokens: 16, Params: p}
		full := alone(t, ref, r)
		for _, k := range []int{1, 6, 15} {
			t.Run(fmt.Sprintf("T%v/%d", p.Temperature, k), func(t *testing.T) {
				rr := r
				rr.Generated = full[:k]
				st, err := s.Submit(context.Background(), rr)
				if err != nil {
					t.Fatal(err)
				}
				toks, finish, err := collect(t, st)
				if err != nil || finish != scheduler.FinishLength {
					t.Fatalf("finish %q, err %v", finish, err)
				}
				if diff := cmp.Diff(full[k:], ids(toks)); diff != "" {
					t.Errorf("continuation (-uninterrupted +resumed):\n%s", diff)
				}
			})
		}
	}
}

// TestThinkingBudget: the insert is forced exactly when the budget is
// reached without End, fed to the model, and generation continues after
// it; a sequence that samples End first is never forced.
func TestThinkingBudget(t *testing.T) {
	ref := openTiny(t, 1024)
	s := start(t, newModelBackend(t, 1, 1024), scheduler.DefaultConfig())
	prompt := []int32{11, 22, 33, 44}
	const maxTokens = 14
	free := alone(t, ref, scheduler.Request{Prompt: prompt, MaxTokens: maxTokens, Params: sampling.Greedy()})
	end := int32(0)
	for slices.Contains(free, end) {
		end++
	}
	insert := []int32{1000, 1001, end, 1002}
	forced := func(n int) []scheduler.Token {
		var out []scheduler.Token
		for _, id := range insert[:n] {
			out = append(out, scheduler.Token{ID: id, Forced: true})
		}
		return out
	}
	sampled := func(ids []int32) []scheduler.Token {
		var out []scheduler.Token
		for _, id := range ids {
			out = append(out, scheduler.Token{ID: id})
		}
		return out
	}
	after := func(prefix []int32, n int) []int32 { // the greedy continuation of prompt + prefix
		return alone(t, ref, scheduler.Request{Prompt: slices.Concat(prompt, prefix), MaxTokens: n, Params: sampling.Greedy()})
	}
	for _, tc := range []struct {
		name   string
		budget scheduler.ThinkingBudget
		want   []scheduler.Token
	}{
		{"reached after 3", scheduler.ThinkingBudget{Tokens: 3, End: end, Insert: insert},
			slices.Concat(sampled(free[:3]), forced(4), sampled(after(slices.Concat(free[:3], insert), maxTokens-7)))},
		{"reached at once", scheduler.ThinkingBudget{Tokens: 0, End: end, Insert: insert},
			slices.Concat(forced(4), sampled(after(insert, maxTokens-4)))},
		{"cut by max tokens", scheduler.ThinkingBudget{Tokens: 12, End: end, Insert: insert},
			slices.Concat(sampled(free[:12]), forced(2))},
		{"end sampled first", scheduler.ThinkingBudget{Tokens: 3, End: free[1], Insert: []int32{1000, free[1]}}, sampled(free)},
		{"end sampled at the budget", scheduler.ThinkingBudget{Tokens: 3, End: free[2], Insert: []int32{1000, free[2]}}, sampled(free)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.budget
			st, err := s.Submit(context.Background(), scheduler.Request{Prompt: prompt, MaxTokens: maxTokens, Params: sampling.Greedy(), Budget: &b})
			if err != nil {
				t.Fatal(err)
			}
			toks, _, err := collect(t, st)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, toks); diff != "" {
				t.Errorf("tokens (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSameSeedSameTokens: two runs of the same sampled requests, batched
// differently, give the same tokens.
func TestSameSeedSameTokens(t *testing.T) {
	reqs := tinyRequests(16, func(i int) sampling.Params {
		return sampling.Params{Temperature: 1.2, TopP: 1, RepetitionPenalty: 1, Seed: uint64(100 + i%3)}
	})
	var runs [][][]int32
	for _, cfg := range []scheduler.Config{{MaxBatchTokens: 2048, MaxSeqs: 256}, {MaxBatchTokens: 3, MaxSeqs: 2}} {
		var mu sync.Mutex
		mu.Lock()
		runs = append(runs, run(t, start(t, newModelBackend(t, 2, 1024), cfg), reqs))
		mu.Unlock()
	}
	if diff := cmp.Diff(runs[0], runs[1]); diff != "" {
		t.Errorf("(-first +second):\n%s", diff)
	}
}
