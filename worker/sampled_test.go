package worker

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
)

// sampledSeq is one sequence of the sampled-generation tests: its prompt,
// its sampling (nil: greedy) and how many top logprobs it asks for.
type sampledSeq struct {
	prompt []int32
	params *sampling.Params
	top    int
}

// sampledScenarios: "candidates" has top-k on for every sequence, so a
// split vocabulary samples from per-rank candidates; "full" has one
// sequence without top-k, which makes the step gather whole rows.
var sampledScenarios = []struct {
	name string
	seqs []sampledSeq
}{
	{"candidates", []sampledSeq{
		{[]int32{5, 77, 301, 9, 1400}, &sampling.Params{Temperature: 0.9, TopK: 7, TopP: 0.9, MinP: 0.05, FrequencyPenalty: 0.7, PresencePenalty: 0.3, RepetitionPenalty: 1.1, Seed: 21}, 5},
		{[]int32{1, 2, 3}, &sampling.Params{Temperature: 1.3, TopK: 20, TopP: 1, FrequencyPenalty: 1.5, RepetitionPenalty: 1, Seed: 22}, 0},
		{[]int32{900, 1800, 40, 41, 42, 43, 7, 2000}, nil, 3},
	}},
	{"full", []sampledSeq{
		{[]int32{5, 77, 301, 9, 1400}, &sampling.Params{Temperature: 1.1, TopK: -1, TopP: 0.95, MinP: 0.01, FrequencyPenalty: 0.5, RepetitionPenalty: 1.2, Seed: 31}, 4},
		{[]int32{1, 2, 3}, &sampling.Params{Temperature: 0.8, TopK: 9, TopP: 0.8, PresencePenalty: -0.5, RepetitionPenalty: 1, Seed: 32}, 2},
		{[]int32{900, 1800, 40, 41, 42, 43, 7, 2000}, nil, 0},
	}},
}

const sampledSteps = 8

// sampledRun is what one generation gives: per sequence the tokens and,
// per token, the logprob results; per step the routed-token counts summed
// over every worker.
type sampledRun struct {
	tokens  [][]int32
	results [][]*pb.SeqResult
	counts  [][]uint32
}

// countingFFN is the single-process MoE with routed-token counters.
type countingFFN struct {
	m      *model.Model
	counts []uint32 // [layer][expert]; every layer of tiny-a is MoE
}

func (c *countingFFN) MoE(_ context.Context, _ uint64, l int, h, out kernels.Buffer, tokens int) error {
	r, err := c.m.Route(l, h, tokens)
	if err != nil {
		return err
	}
	for _, e := range r.Experts {
		c.counts[l*c.m.Cfg.NumExperts+int(e)]++
	}
	rows, ws := r.ByExpert(c.m.Cfg.NumExperts)
	return c.m.RunExperts(l, h, out, rows, ws)
}

// localSampled is the single-process reference: the model's logits, the
// sampling package's Sampler, log-softmax in float64 and the counts of a
// counting FFN.
func localSampled(t *testing.T, seqs []sampledSeq) (sampledRun, [][][]float32) {
	t.Helper()
	base, err := model.Open(tinyA, kernels.NewCPU(), model.OpenOptions{BlockSize: testBlockSize, ContextTokens: testBlockSize * testKVBlocks, CloseBackend: true})
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	cf := &countingFFN{m: base}
	m := base.WithFFN(cf)
	var pool testBlocks
	var run sampledRun
	state := make([][]int32, len(seqs)) // block tables
	samplers := make([]*sampling.Sampler, len(seqs))
	rows := make([][][]float32, len(seqs)) // per sequence, per step: the logits
	run.tokens = make([][]int32, len(seqs))
	for i, s := range seqs {
		if s.params != nil {
			if samplers[i], err = sampling.New(*s.params); err != nil {
				t.Fatal(err)
			}
		}
	}
	for step := range sampledSteps {
		cf.counts = make([]uint32, base.Cfg.NumHiddenLayers*base.Cfg.NumExperts)
		var in []model.SeqInput
		for i, s := range seqs {
			toks, start := s.prompt, 0
			if step > 0 {
				toks, start = run.tokens[i][step-1:step], len(s.prompt)+step-1
			}
			pool.reserve(t, &state[i], start+len(toks))
			in = append(in, model.SeqInput{ID: uint64(i), Tokens: toks, StartPos: start, Blocks: state[i]})
		}
		logits, err := m.Forward(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		for i := range seqs {
			var tok int
			if samplers[i] != nil {
				tok = samplers[i].Sample(logits[i], toInts(seqs[i].prompt), toInts(run.tokens[i]))
			} else {
				tok = int(argmax(logits[i]))
			}
			run.tokens[i] = append(run.tokens[i], int32(tok))
			rows[i] = append(rows[i], logits[i])
		}
		run.counts = append(run.counts, cf.counts)
	}
	return run, rows
}

func toInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// clusterSampled generates seqs on a loaded cluster, every sequence in
// attention group id mod dp, each asking for logprobs.
func clusterSampled(t *testing.T, c *testCluster, members []int, dp int, seqs []sampledSeq) sampledRun {
	t.Helper()
	ctx := context.Background()
	var pool testBlocks
	state := make([][]int32, len(seqs)) // block tables
	run := sampledRun{tokens: make([][]int32, len(seqs)), results: make([][]*pb.SeqResult, len(seqs))}
	for step := range sampledSteps {
		req := &pb.StepRequest{Step: uint64(step + 1), PlacementEpoch: 1}
		for i, s := range seqs {
			toks, start := s.prompt, 0
			if step > 0 {
				toks, start = run.tokens[i][step-1:step], len(s.prompt)+step-1
			}
			pool.reserve(t, &state[i], start+len(toks))
			ss := &pb.SeqStep{SeqId: uint64(i), Tokens: toks, StartPos: int32(start), BlockTable: state[i],
				Sample: true, AttnGroup: uint32(i % dp), PromptLen: int32(len(s.prompt)), Logprobs: true, TopLogprobs: uint32(s.top)}
			if s.params != nil {
				ss.Sampling = samplingProto(*s.params)
			}
			req.Seqs = append(req.Seqs, ss)
		}
		resp := make([]*pb.StepResponse, len(members))
		err := c.all(members, func(w, srv int) error {
			r, err := c.servers[srv].Worker.Step(ctx, req)
			resp[w] = r
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		byID := map[uint64]*pb.SeqResult{}
		var counts []uint32
		for _, r := range resp {
			for _, res := range r.Results {
				if byID[res.SeqId] != nil {
					t.Fatalf("step %d: two results for sequence %d", step, res.SeqId)
				}
				byID[res.SeqId] = res
			}
			et := r.GetStats().GetExpertTokens()
			if counts == nil {
				counts = make([]uint32, len(et))
			}
			if len(et) != len(counts) {
				t.Fatalf("step %d: workers report %d and %d expert counters", step, len(counts), len(et))
			}
			for j, v := range et {
				counts[j] += v
			}
		}
		for i := range seqs {
			res := byID[uint64(i)]
			if res == nil {
				t.Fatalf("step %d: no result for sequence %d", step, i)
			}
			run.tokens[i] = append(run.tokens[i], res.Token)
			run.results[i] = append(run.results[i], res)
		}
		run.counts = append(run.counts, counts)
	}
	return run
}

// samplingProto is the wire form, as coordinator.SamplingProto writes it
// (the worker may not import the coordinator).
func samplingProto(p sampling.Params) *pb.Sampling {
	return &pb.Sampling{Temperature: p.Temperature, TopK: int32(p.TopK), TopP: p.TopP, MinP: p.MinP,
		PresencePenalty: p.PresencePenalty, FrequencyPenalty: p.FrequencyPenalty, RepetitionPenalty: p.RepetitionPenalty, Seed: p.Seed}
}

// refLogprobs is the float64 log-softmax of row: the log-probability of
// tok and the top n, most likely first, ties to the lowest id.
func refLogprobs(row []float32, tok int32, n int) (float64, []int32, []float64) {
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - m)
	}
	lse := m + math.Log(s)
	ids := make([]int32, len(row))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortStableFunc(ids, func(a, b int32) int {
		switch {
		case row[a] > row[b]:
			return -1
		case row[a] < row[b]:
			return 1
		}
		return 0
	})
	ids = ids[:n]
	top := make([]float64, n)
	for j, id := range ids {
		top[j] = float64(row[id]) - lse
	}
	return float64(row[tok]) - lse, ids, top
}

// TestSampledGenerationEveryLayout: the same seeds give the same tokens on
// every tensor- and expert-parallel layout and in one process, with every
// penalty and filter, on the candidates path and the full-logits path; the
// logprobs equal a float64 log-softmax of the single-process logits; and
// the routed-token counters summed over the workers equal one process's
// routing, top_k per token and layer.
func TestSampledGenerationEveryLayout(t *testing.T) {
	checkLeaks(t)
	layouts := []struct{ n, tp int }{{1, 1}, {2, 1}, {2, 2}, {4, 2}}
	for _, sc := range sampledScenarios {
		want, rows := localSampled(t, sc.seqs)
		for _, lt := range layouts {
			t.Run(fmt.Sprintf("%s/N%d_T%d", sc.name, lt.n, lt.tp), func(t *testing.T) {
				c := newTestCluster(t, tinyA, lt.n, nil)
				members := make([]int, lt.n)
				for i := range members {
					members[i] = i
				}
				if _, err := c.load(context.Background(), loadSpec{members: members, tp: lt.tp, place: placementProto(1, uniform(c.cfg, lt.n, 1)), meshEpoch: 1}); err != nil {
					t.Fatal(err)
				}
				got := clusterSampled(t, c, members, lt.n/lt.tp, sc.seqs)
				for i := range sc.seqs {
					if !slices.Equal(got.tokens[i], want.tokens[i]) {
						t.Errorf("sequence %d tokens (-want +got):\n-%v\n+%v", i, want.tokens[i], got.tokens[i])
						continue
					}
					for step, res := range got.results[i] {
						lp, ids, top := refLogprobs(rows[i][step], res.Token, sc.seqs[i].top)
						if d := math.Abs(float64(res.Logprob) - lp); d > 1e-4 {
							t.Errorf("sequence %d step %d: logprob %v, want %v", i, step, res.Logprob, lp)
						}
						if !slices.Equal(res.TopIds, ids) || len(res.TopLogprobs) != len(top) {
							t.Errorf("sequence %d step %d: top ids %v, want %v", i, step, res.TopIds, ids)
							continue
						}
						for j := range top {
							if d := math.Abs(float64(res.TopLogprobs[j]) - top[j]); d > 1e-4 {
								t.Errorf("sequence %d step %d: top logprob %d = %v, want %v", i, step, j, res.TopLogprobs[j], top[j])
							}
						}
					}
				}
				k := uint32(c.cfg.NumExpertsPerTok)
				for step := range sampledSteps {
					tokens := 0
					for _, s := range sc.seqs {
						tokens += 1
						if step == 0 {
							tokens += len(s.prompt) - 1
						}
					}
					gc := got.counts[step]
					if len(gc) != c.cfg.NumHiddenLayers*c.cfg.NumExperts {
						t.Fatalf("step %d: %d expert counters, want %d layers × %d experts", step, len(gc), c.cfg.NumHiddenLayers, c.cfg.NumExperts)
					}
					for l := range c.cfg.NumHiddenLayers {
						var sum uint32
						for _, v := range gc[l*c.cfg.NumExperts : (l+1)*c.cfg.NumExperts] {
							sum += v
						}
						if sum != k*uint32(tokens) {
							t.Errorf("step %d layer %d: %d routed tokens, want top_k %d × %d tokens", step, l, sum, k, tokens)
						}
					}
					if !slices.Equal(gc, want.counts[step]) {
						t.Errorf("step %d: expert counts (-want +got):\n-%v\n+%v", step, want.counts[step], gc)
					}
				}
			})
		}
	}
}
