package sampling

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestPenalize(t *testing.T) {
	nan := float32(math.NaN())
	ninf := float32(math.Inf(-1))
	logits := []float32{2, -2, 0.5, nan, 1, 0, 3}
	tests := []struct {
		name      string
		rep, pres float32
		prompt    []int
		generated []int
		want      []float32
	}{
		{
			name: "off", rep: 1, pres: 0,
			prompt: []int{0, 1}, generated: []int{2, 4},
			want: []float32{2, -2, 0.5, ninf, 1, 0, 3},
		},
		{
			// Positive logits are divided, others multiplied, once per id
			// however often it occurs, for prompt and generated ids alike.
			name: "repetition", rep: 2, pres: 0,
			prompt: []int{0, 0, 1}, generated: []int{2, 2, 4, 5},
			want: []float32{1, -4, 0.25, ninf, 0.5, 0, 3},
		},
		{
			// Subtracted once per generated id; prompt ids untouched.
			name: "presence", rep: 1, pres: 0.5,
			prompt: []int{0, 1}, generated: []int{2, 2, 2, 4, 1},
			want: []float32{2, -2.5, 0, ninf, 0.5, 0, 3},
		},
		{
			// Repetition first, then presence, each once.
			name: "both", rep: 2, pres: 0.5,
			prompt: []int{0, 4, 1}, generated: []int{4, 2, 4, 1, 3},
			want: []float32{1, -4.5, -0.25, ninf, 0, 0, 3},
		},
		{
			name: "negative presence", rep: 1, pres: -1,
			generated: []int{6},
			want:      []float32{2, -2, 0.5, ninf, 1, 0, 4},
		},
		{
			name: "out-of-range ids ignored", rep: 2, pres: 1,
			prompt: []int{-1, 7, math.MaxInt}, generated: []int{-3, 100},
			want: []float32{2, -2, 0.5, ninf, 1, 0, 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Sampler{p: Params{Temperature: 1, TopP: 1, RepetitionPenalty: tc.rep, PresencePenalty: tc.pres}}
			// Run twice to check that reused scratch carries nothing over.
			for range 2 {
				got := s.penalize(logits, tc.prompt, tc.generated)
				if !slices.Equal(got, tc.want) {
					t.Fatalf("penalized logits (-want +got):\n-%v\n+%v", tc.want, got)
				}
			}
		})
	}
}

func TestFilter(t *testing.T) {
	lp := func(p ...float64) []float32 {
		l := make([]float32, len(p))
		for i, v := range p {
			l[i] = float32(math.Log(v))
		}
		return l
	}
	inf := float32(math.Inf(1))
	tests := []struct {
		name   string
		p      Params
		logits []float32
		want   []int32 // kept ids, best first where sorted
	}{
		{"top-k 2", Params{Temperature: 1, TopP: 1, TopK: 2}, lp(0.1, 0.4, 0.2, 0.3), []int32{1, 3}},
		{"top-k keeps ties with the k-th", Params{Temperature: 1, TopP: 1, TopK: 3}, []float32{1, 3, 1, 1, 1}, []int32{1, 0, 2, 3, 4}},
		{"top-k ties above the k-th only", Params{Temperature: 1, TopP: 1, TopK: 2}, []float32{1, 3, 2, 2, 0}, []int32{1, 2, 3}},
		{"top-k -1 is off", Params{Temperature: 1, TopP: 1, TopK: -1}, lp(0.1, 0.4, 0.2, 0.3), []int32{0, 1, 2, 3}},
		{"top-k >= vocab is off", Params{Temperature: 1, TopP: 1, TopK: 4}, lp(0.1, 0.4, 0.2, 0.3), []int32{0, 1, 2, 3}},
		{"top-p 0.5", Params{Temperature: 1, TopP: 0.5}, lp(0.4, 0.3, 0.2, 0.1), []int32{0, 1}},
		{"top-p sorts", Params{Temperature: 1, TopP: 0.75}, lp(0.1, 0.3, 0.2, 0.4), []int32{3, 1, 2}},
		{"top-p keeps at least one", Params{Temperature: 1, TopP: 1e-6}, lp(0.25, 0.25, 0.5), []int32{2}},
		{"top-p after top-k renormalizes", Params{Temperature: 1, TopP: 0.5, TopK: 2}, lp(0.4, 0.3, 0.2, 0.1), []int32{0}},
		{"temperature before top-p", Params{Temperature: 0.1, TopP: 0.5}, lp(0.4, 0.3, 0.2, 0.1), []int32{0}},
		{"high temperature widens top-p", Params{Temperature: 10, TopP: 0.5}, lp(0.4, 0.3, 0.2, 0.1), []int32{0, 1}},
		{"min-p 0.6", Params{Temperature: 1, TopP: 1, MinP: 0.6}, lp(0.4, 0.3, 0.2, 0.1), []int32{0, 1}},
		{"min-p before top-p", Params{Temperature: 1, TopP: 0.52, MinP: 0.5}, lp(0.5, 0.45, 0.05), []int32{0}},
		{"min-p before top-p with top-k", Params{Temperature: 1, TopP: 0.52, MinP: 0.5, TopK: 2}, lp(0.5, 0.45, 0.05), []int32{0}},
		{"min-p 1 keeps ties", Params{Temperature: 1, TopP: 1, MinP: 1}, []float32{2, 1, 2}, []int32{0, 2}},
		{"+Inf only", Params{Temperature: 1, TopP: 1}, []float32{1, inf, 0, inf}, []int32{1, 3}},
		{"underflow dropped", Params{Temperature: 1, TopP: 1}, []float32{0, -800, -10}, []int32{0, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.RepetitionPenalty = 1
			s, err := New(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			x := s.penalize(tc.logits, nil, nil)
			cand, w := s.filter(x, argmax(x))
			if !slices.Equal(cand, tc.want) {
				t.Errorf("kept ids (-want +got):\n-%v\n+%v", tc.want, cand)
			}
			// Each weight is exp((x - max)/T), exactly 1 for the best id.
			mx := float64(x[argmax(x)])
			for i, id := range cand {
				want := math.Exp((float64(x[id]) - mx) / float64(tc.p.Temperature))
				if math.IsInf(mx, 1) {
					want = 1
				}
				if math.Abs(w[i]-want) > 1e-15*want {
					t.Errorf("weight of %d = %v, want %v", id, w[i], want)
				}
			}
		})
	}
}

// TestSelectTopK compares the heap selection with a full sort on data full
// of ties and -Inf values: the k best and every id tied with the k-th.
func TestSelectTopK(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ninf := float32(math.Inf(-1))
	for trial := range 200 {
		n := 1 + r.IntN(300)
		x := make([]float32, n)
		for i := range x {
			switch r.IntN(10) {
			case 0:
				x[i] = ninf
			default:
				x[i] = float32(r.IntN(8)) // many ties
			}
		}
		var want []int32
		for i, v := range x {
			if v != ninf {
				want = append(want, int32(i))
			}
		}
		slices.SortFunc(want, func(a, b int32) int { return compareRank(x, a, b) })
		k := 1 + r.IntN(n)
		if len(want) > k {
			// Keep every id tied with the k-th.
			end := k
			for end < len(want) && x[want[end]] == x[want[k-1]] {
				end++
			}
			want = want[:end]
		}
		s := &Sampler{cand: make([]int32, 0, n)}
		if got := s.selectTopK(x, k); !slices.Equal(got, want) {
			t.Fatalf("trial %d (n=%d, k=%d): selectTopK (-want +got):\n-%v\n+%v", trial, n, k, want, got)
		}
	}
}

func TestExpNeg(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	check := func(x float64) {
		t.Helper()
		got, want := expNeg(x), math.Exp(x)
		if math.Abs(got-want) > 1e-15*want {
			t.Errorf("expNeg(%v) = %v, want %v (rel err %g)", x, got, want, math.Abs(got-want)/want)
		}
	}
	for _, x := range []float64{0, -0.5 * math.Ln2, -math.Ln2, -1, -1e-300, -700, expMin} {
		check(x)
	}
	for range 100_000 {
		check(-r.Float64() * 708)
		check(-r.Float64() * 2)
	}
	if got := expNeg(0); got != 1 {
		t.Errorf("expNeg(0) = %v, want exactly 1", got)
	}
	for _, x := range []float64{expMin - 1e-9, -1000, math.Inf(-1), math.NaN()} {
		if got := expNeg(x); got != 0 {
			t.Errorf("expNeg(%v) = %v, want 0", x, got)
		}
	}
}

// refNucleus is top-p by definition: sort every id with a nonzero weight
// best first and keep the shortest prefix reaching limit.
func refNucleus(x []float32, sc scale, limit float64) []int32 {
	var ids []int32
	for i, v := range x {
		if sc.weight(v) != 0 {
			ids = append(ids, int32(i))
		}
	}
	slices.SortFunc(ids, func(a, b int32) int { return compareRank(x, a, b) })
	var cum float64
	for i, id := range ids {
		cum += sc.weight(x[id])
		if cum >= limit {
			return ids[:i+1]
		}
	}
	return ids
}

// TestNucleusUnsorted checks the bucketed top-p against sorting everything,
// on its normal path and on its fallback.
func TestNucleusUnsorted(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 300 {
		n := 1 + r.IntN(3000)
		x := make([]float32, n)
		spread := []float64{0.01, 1, 5, 50}[r.IntN(4)]
		for i := range x {
			x[i] = float32(math.Round(r.NormFloat64()*spread*4) / 4) // ties
		}
		p := Params{Temperature: float32(0.1 + 2*r.Float64()), TopP: float32(0.05 + 0.949*r.Float64()), RepetitionPenalty: 1}
		s, err := New(p)
		if err != nil {
			t.Fatal(err)
		}
		best := argmax(x)
		sc := scale{max: x[best], t: float64(p.Temperature)}
		var total float64
		for _, v := range x {
			total += sc.weight(v)
		}
		limit := float64(float64(p.TopP) * total)
		want := refNucleus(x, sc, limit)

		got, _ := s.filter(x, best)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: filter (-want +got):\n-%v\n+%v", trial, want, got)
		}

		// Lie about the mass so the subset falls short and the fallback runs.
		s.cand, s.w = grow(s.cand, n), grow(s.w, n)
		cand, w := s.cand[:0], s.w[:0]
		for i, v := range x {
			if wi := sc.weight(v); wi != 0 {
				cand, w = append(cand, int32(i)), append(w, wi)
			}
		}
		var mass [massBuckets]float64
		mass[0] = total
		got, _ = s.nucleusUnsorted(x, sc, cand, w, &mass, limit)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: fallback (-want +got):\n-%v\n+%v", trial, want, got)
		}
	}
}
