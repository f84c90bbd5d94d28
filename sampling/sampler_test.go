package sampling_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/sampling"
)

const qwen3Vocab = 151936

// past returns a generated history of n ids outside every vocabulary: no
// penalty reads it, but Sample then draws for position n. Tests that draw
// many times from one distribution use it to get independent draws.
func past(n int) []int {
	if cap(pastIDs) < n {
		pastIDs = make([]int, 2*n)
		for i := range pastIDs {
			pastIDs[i] = -1
		}
	}
	return pastIDs[:n]
}

var pastIDs []int

func mustNew(t testing.TB, p sampling.Params) *sampling.Sampler {
	t.Helper()
	s, err := sampling.New(p)
	if err != nil {
		t.Fatalf("New(%+v): %v", p, err)
	}
	return s
}

// randomLogits returns n logits drawn from a fixed-seed normal distribution
// scaled like real model output.
func randomLogits(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(r.NormFloat64() * 3)
	}
	return l
}

// logProbs returns the natural logs of p as logits, so that
// softmax(logits) == p at temperature 1.
func logProbs(p ...float64) []float32 {
	l := make([]float32, len(p))
	for i, v := range p {
		l[i] = float32(math.Log(v))
	}
	return l
}

func TestGreedy(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name   string
		logits []float32
		want   int
	}{
		{"single", []float32{-3}, 0},
		{"max in middle", []float32{0.1, 2.5, -1, 2.4}, 1},
		{"max last", []float32{0, 1, 2, 3}, 3},
		{"tie goes to lowest id", []float32{1, 7, 3, 7, 7}, 1},
		{"all equal", []float32{4, 4, 4}, 0},
		{"NaN is -Inf", []float32{nan, -100, nan}, 1},
		{"all NaN", []float32{nan, nan}, 0},
		{"all -Inf", []float32{-inf, -inf, -inf}, 0},
		{"+Inf wins, lowest first", []float32{1, inf, inf}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Every temperature below MinTemperature is greedy, whatever
			// the seed and position.
			for _, temp := range []float32{0, 1e-7, 0.99e-5} {
				p := sampling.ThinkingDefaults()
				p.Temperature, p.Seed = temp, 5
				s := mustNew(t, p)
				for pos := range 20 {
					if got := s.Sample(tc.logits, nil, past(pos)); got != tc.want {
						t.Errorf("temperature %g, position %d: Sample(%v) = %d, want %d", temp, pos, tc.logits, got, tc.want)
					}
				}
			}
		})
	}
}

// TestNaNAndInfWhenSampling checks the deterministic handling of NaN and
// infinite logits on the random path.
func TestNaNAndInfWhenSampling(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	p := sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1, Seed: 3}
	tests := []struct {
		name   string
		logits []float32
		want   []int // ids that may be drawn; every one must be
	}{
		{"NaN never drawn", []float32{nan, 0, nan, 0}, []int{1, 3}},
		{"all NaN gives 0", []float32{nan, nan, nan}, []int{0}},
		{"all -Inf gives 0", []float32{-inf, -inf}, []int{0}},
		{"+Inf tokens share the mass", []float32{inf, 5, inf, nan}, []int{0, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, p)
			seen := map[int]bool{}
			for i := range 500 {
				seen[s.Sample(tc.logits, nil, past(i))] = true
			}
			got := make([]int, 0, len(seen))
			for id := range seen {
				got = append(got, id)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("drawn ids %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTopK1IsGreedy(t *testing.T) {
	p := sampling.ThinkingDefaults()
	p.TopK = 1
	p.Seed = 42
	s := mustNew(t, p)
	g := mustNew(t, sampling.Greedy())
	for step := range 50 {
		logits := randomLogits(uint64(step), 1000)
		// Force ties for the maximum on some steps.
		if step%3 == 0 {
			m := logits[argmaxRef(logits)]
			logits[999], logits[500] = m, m
		}
		if got, want := s.Sample(logits, nil, nil), g.Sample(logits, nil, nil); got != want {
			t.Fatalf("step %d: top-k 1 gave %d, greedy gave %d", step, got, want)
		}
	}
}

func argmaxRef(l []float32) int {
	best := 0
	for i, v := range l {
		if v > l[best] {
			best = i
		}
	}
	return best
}

func sequence(t *testing.T, p sampling.Params, steps int) []int {
	t.Helper()
	s := mustNew(t, p)
	var generated []int
	for step := range steps {
		logits := randomLogits(uint64(step), 2000)
		generated = append(generated, s.Sample(logits, []int{1, 2, 3}, generated))
	}
	return generated
}

func TestSeededReproducibility(t *testing.T) {
	p := sampling.NonThinkingDefaults()
	p.Seed = 1234
	p.PresencePenalty = 0.5
	a, b := sequence(t, p, 200), sequence(t, p, 200)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed gave different sequences:\n%v\n%v", a, b)
	}
	p.Seed = 1235
	if c := sequence(t, p, 200); slices.Equal(a, c) {
		t.Fatalf("seeds 1234 and 1235 gave the same sequence %v", a)
	}
}

// TestGoldenSequence pins the exact tokens for one seed, so a change in the
// generator, the exponential or the order of operations shows up here, and
// so every platform must produce the same ids.
func TestGoldenSequence(t *testing.T) {
	logits := make([]float32, 64)
	for i := range logits {
		logits[i] = float32((i*7919)%97)/16 - 3 // exact in float32
	}
	tests := []struct {
		name string
		p    sampling.Params
		want []int
	}{
		{"thinking", withSeed(sampling.ThinkingDefaults(), 7), []int{28, 14, 61, 6, 61, 42, 28, 14, 14, 6, 50, 25, 3, 28, 61, 50}},
		{"non-thinking", withSeed(sampling.NonThinkingDefaults(), 7), []int{3, 14, 61, 53, 61, 53, 3, 50, 14, 17, 50, 25, 39, 3, 61, 50}},
		{"plain T=1", sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1, Seed: 7}, []int{50, 34, 9, 59, 9, 56, 50, 28, 31, 61, 25, 15, 42, 50, 3, 25}},
		{"min-p and penalties", sampling.Params{Temperature: 0.9, TopP: 1, MinP: 0.05, RepetitionPenalty: 1.2, PresencePenalty: 0.4, Seed: 7}, []int{50, 31, 9, 61, 9, 53, 42, 25, 28, 59, 17, 14, 39, 48, 3, 25}},
		{"top-p without top-k", sampling.Params{Temperature: 0.8, TopP: 0.9, RepetitionPenalty: 1, Seed: 7}, []int{17, 3, 25, 20, 25, 20, 42, 39, 3, 45, 14, 25, 53, 17, 61, 14}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, tc.p)
			var got []int
			for range 16 {
				got = append(got, s.Sample(logits, []int{5, 6}, got))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("tokens (-want +got):\n-%v\n+%v", tc.want, got)
			}
		})
	}
}

func withSeed(p sampling.Params, seed uint64) sampling.Params {
	p.Seed = seed
	return p
}

// TestFrequenciesMatchSoftmax draws many tokens with a fixed seed and checks
// each token's frequency against softmax(logits/T) (renormalized over the
// tokens top-k keeps) within five standard errors.
func TestFrequenciesMatchSoftmax(t *testing.T) {
	logits := []float32{1, 2, 0.5, -1, 3, 2, 0, -0.5}
	tests := []struct {
		name string
		p    sampling.Params
		keep []int // ids that survive filtering; nil means all
	}{
		{"T=1", sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1, Seed: 11}, nil},
		{"T=0.7", sampling.Params{Temperature: 0.7, TopP: 1, RepetitionPenalty: 1, Seed: 12}, nil},
		{"T=2", sampling.Params{Temperature: 2, TopP: 1, RepetitionPenalty: 1, Seed: 13}, nil},
		{"T=0.7 top-k 3", sampling.Params{Temperature: 0.7, TopP: 1, TopK: 3, RepetitionPenalty: 1, Seed: 14}, []int{1, 4, 5}},
	}
	const draws = 200_000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := softmaxRef(logits, float64(tc.p.Temperature), tc.keep)
			s := mustNew(t, tc.p)
			counts := make([]int, len(logits))
			for i := range draws {
				counts[s.Sample(logits, nil, past(i))]++
			}
			for id, p := range want {
				got := float64(counts[id]) / draws
				tol := 5*math.Sqrt(p*(1-p)/draws) + 1e-12
				if math.Abs(got-p) > tol {
					t.Errorf("token %d: frequency %.5f, want %.5f ± %.5f", id, got, p, tol)
				}
			}
		})
	}
}

func softmaxRef(logits []float32, temp float64, keep []int) []float64 {
	p := make([]float64, len(logits))
	var sum float64
	for i, l := range logits {
		if keep != nil && !slices.Contains(keep, i) {
			continue
		}
		p[i] = math.Exp(float64(l) / temp)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

// drawnSet returns the sorted ids drawn in n samples.
func drawnSet(t *testing.T, p sampling.Params, logits []float32, n int) []int {
	t.Helper()
	s := mustNew(t, p)
	seen := make([]bool, len(logits))
	for i := range n {
		seen[s.Sample(logits, nil, past(i))] = true
	}
	var ids []int
	for id, ok := range seen {
		if ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestFilterSets checks, by drawing, which ids top-k, top-p and min-p let
// through; internal_test.go checks the same cases on the filter directly.
func TestFilterSets(t *testing.T) {
	for _, tc := range filterCases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.Seed = 99
			if got := drawnSet(t, p, tc.logits, 20_000); !slices.Equal(got, tc.want) {
				t.Errorf("drawn ids %v, want %v", got, tc.want)
			}
		})
	}
}

// filterCases are small distributions with known kept sets. Logits are the
// logs of round probabilities, chosen away from every threshold.
var filterCases = []struct {
	name   string
	p      sampling.Params
	logits []float32
	want   []int
}{
	{"no filter", params(1, 1, 0, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0, 1, 2, 3}},
	{"top-p 0.3 keeps the best", params(1, 0.3, 0, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0}},
	{"top-p 0.5", params(1, 0.5, 0, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0, 1}},
	{"top-p 0.75", params(1, 0.75, 0, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0, 1, 2}},
	{"top-p 0.95", params(1, 0.95, 0, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0, 1, 2, 3}},
	{"top-p unsorted ids", params(1, 0.75, 0, 0), logProbs(0.1, 0.3, 0.2, 0.4), []int{1, 2, 3}},
	{"temperature before top-p", params(0.1, 0.5, 0, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0}},
	{"min-p 0.2", params(1, 1, 0.2, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0, 1, 2, 3}},
	{"min-p 0.6", params(1, 1, 0.6, 0), logProbs(0.4, 0.3, 0.2, 0.1), []int{0, 1}},
	{"min-p 1 keeps ties", params(1, 1, 1, 0), []float32{2, 1, 2}, []int{0, 2}},
	{"top-k 2", params(1, 1, 0, 2), logProbs(0.1, 0.4, 0.2, 0.3), []int{1, 3}},
	{"top-k keeps ties with the k-th", params(1, 1, 0, 2), []float32{1, 3, 1, 1}, []int{0, 1, 2, 3}},
	{"top-k -1 is off", params(1, 1, 0, -1), logProbs(0.1, 0.4, 0.2, 0.3), []int{0, 1, 2, 3}},
	{"top-k before top-p", params(1, 0.5, 0, 2), logProbs(0.4, 0.3, 0.2, 0.1), []int{0}},
	{"min-p before top-p", params(1, 0.52, 0.5, 0), logProbs(0.5, 0.45, 0.05), []int{0}},
}

func params(temp, topP, minP float32, topK int) sampling.Params {
	return sampling.Params{Temperature: temp, TopP: topP, MinP: minP, TopK: topK, RepetitionPenalty: 1}
}

func TestPenaltiesSteerGreedy(t *testing.T) {
	logits := []float32{3, 2.9, -1, -1.1}
	tests := []struct {
		name            string
		rep, pres, freq float32
		prompt          []int
		generated       []int
		want            int
	}{
		{"no penalty", 1, 0, 0, []int{0}, []int{0}, 0},
		{"repetition from prompt", 1.1, 0, 0, []int{0}, nil, 1},
		{"presence ignores prompt", 1, 0.5, 0, []int{0}, nil, 0},
		{"presence on generated", 1, 0.5, 0, nil, []int{0}, 1},
		{"presence once per id", 1, 0.06, 0, nil, []int{0, 0, 0}, 0},
		{"frequency ignores prompt", 1, 0, 0.5, []int{0, 0, 0}, nil, 0},
		{"frequency once is not enough", 1, 0, 0.06, nil, []int{0}, 0},
		{"frequency counts occurrences", 1, 0, 0.06, nil, []int{0, 0}, 1},
		{"frequency and presence add", 1, 0.05, 0.03, nil, []int{0, 0}, 1},
		{"repetition multiplies negatives", 1.2, 0, 0, nil, []int{0, 1, 2}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := logits
			if tc.want == 3 {
				l = []float32{-3, -2.9, -1, -1.1}
			}
			p := sampling.Greedy()
			p.RepetitionPenalty, p.PresencePenalty, p.FrequencyPenalty = tc.rep, tc.pres, tc.freq
			s := mustNew(t, p)
			if got := s.Sample(l, tc.prompt, tc.generated); got != tc.want {
				t.Errorf("Sample = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestDoesNotModifyLogits(t *testing.T) {
	logits := randomLogits(5, 5000)
	logits[17] = float32(math.NaN())
	logits[18] = float32(math.Inf(-1))
	before := bits(logits)
	hist := []int{1, 17, 18, 20, 4000}
	for _, p := range []sampling.Params{
		sampling.Greedy(),
		sampling.ThinkingDefaults(),
		{Temperature: 0.8, TopP: 0.9, MinP: 0.1, RepetitionPenalty: 1.3, PresencePenalty: 1},
	} {
		s := mustNew(t, p)
		for range 10 {
			s.Sample(logits, hist, hist)
		}
	}
	if !slices.Equal(bits(logits), before) {
		t.Fatal("Sample modified the caller's logits")
	}
}

func bits(l []float32) []uint32 {
	b := make([]uint32, len(l))
	for i, v := range l {
		b[i] = math.Float32bits(v)
	}
	return b
}

func TestAllocationFree(t *testing.T) {
	logits := randomLogits(8, qwen3Vocab)
	prompt := []int{1, 2, 3, 100, 200}
	generated := []int{7, 8, 9, 7}
	for _, tc := range benchCases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, tc.p)
			s.Sample(logits, prompt, generated) // grow the scratch buffers
			if a := testing.AllocsPerRun(20, func() { s.Sample(logits, prompt, generated) }); a != 0 {
				t.Errorf("Sample allocated %v times per call, want 0", a)
			}
		})
	}
}

func TestOutOfRangeHistoryIgnored(t *testing.T) {
	p := sampling.Greedy()
	p.RepetitionPenalty, p.PresencePenalty = 2, 2
	s := mustNew(t, p)
	if got := s.Sample([]float32{1, 0.5}, []int{-1, 2, math.MaxInt}, []int{-5, 2}); got != 0 {
		t.Errorf("Sample = %d, want 0", got)
	}
}

var benchCases = []struct {
	name string
	p    sampling.Params
}{
	{"greedy", sampling.Greedy()},
	{"thinking", sampling.ThinkingDefaults()},
	{"non-thinking", sampling.NonThinkingDefaults()},
	{"top-p 0.95 no top-k", sampling.Params{Temperature: 0.6, TopP: 0.95, RepetitionPenalty: 1}},
	{"min-p 0.05 no top-k", sampling.Params{Temperature: 0.6, TopP: 1, MinP: 0.05, RepetitionPenalty: 1}},
	{"thinking with penalties", sampling.Params{Temperature: 0.6, TopP: 0.95, TopK: 20, RepetitionPenalty: 1.1, PresencePenalty: 1.5}},
}

// BenchmarkSample measures one Sample call over the Qwen3 vocabulary with a
// 4,096-token history.
func BenchmarkSample(b *testing.B) {
	logits := randomLogits(1, qwen3Vocab)
	r := rand.New(rand.NewPCG(2, 2))
	history := make([]int, 4096)
	for i := range history {
		history[i] = r.IntN(qwen3Vocab)
	}
	prompt, generated := history[:2048], history[2048:]
	for _, tc := range benchCases {
		b.Run(tc.name, func(b *testing.B) {
			s := mustNew(b, tc.p)
			b.ReportAllocs()
			for b.Loop() {
				s.Sample(logits, prompt, generated)
			}
		})
	}
}

// TestResumeFromHistory: a sequence sampled token by token equals one
// whose Sampler is recreated at any point from the same history (as a
// worker does for a sequence resubmitted from its tokens), because each
// draw depends only on the seed and the position.
func TestResumeFromHistory(t *testing.T) {
	prompt := []int{1, 2, 3}
	const steps = 40
	for _, tc := range []struct {
		name string
		p    sampling.Params
	}{
		{"thinking", withSeed(sampling.ThinkingDefaults(), 5)},
		{"non-thinking", withSeed(sampling.NonThinkingDefaults(), 6)},
		{"penalties, top-p without top-k", sampling.Params{Temperature: 0.9, TopP: 0.9, PresencePenalty: 0.5, RepetitionPenalty: 1.1, Seed: 7}},
		{"seed 0", sampling.Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := sequence(t, tc.p, steps)
			for _, cut := range []int{0, 1, 7, 23, steps - 1} {
				s := mustNew(t, tc.p)
				got := append([]int(nil), want[:cut]...)
				for step := cut; step < steps; step++ {
					if step == cut+3 {
						s = mustNew(t, tc.p) // and once more later
					}
					got = append(got, s.Sample(randomLogits(uint64(step), 2000), prompt, got))
				}
				if !slices.Equal(got, want) {
					t.Errorf("recreated after %d tokens (-want +got):\n-%v\n+%v", cut, want, got)
				}
			}
		})
	}
}
