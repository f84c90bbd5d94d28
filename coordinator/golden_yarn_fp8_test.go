package coordinator_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
)

// goldenFixture is the part of a fixture's golden.json this file reads
// (see ../shared/fixtures/README.md): per prompt, its tokens, the greedy
// continuation, and the float64 reference logits at every prompt position
// and every greedy step.
type goldenFixture struct {
	Prompts []struct {
		Tokens       []int32     `json:"tokens"`
		Greedy       []int32     `json:"greedy"`
		PromptLogits [][]float32 `json:"prompt_logits"`
		StepLogits   [][]float32 `json:"step_logits"`
	} `json:"prompts"`
}

func readGolden(t *testing.T, dir string) *goldenFixture {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "golden.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFixture
	if err := json.NewDecoder(zr).Decode(&g); err != nil {
		t.Fatal(err)
	}
	if len(g.Prompts) == 0 {
		t.Fatalf("%s: no prompts in golden.json", dir)
	}
	return &g
}

// sequence is prompt + greedy[:-1]: the positions whose logits the golden
// file holds (the prompt's last position predicts greedy[0]).
func (g *goldenFixture) sequence(i int) []int32 {
	p := g.Prompts[i]
	return append(append([]int32{}, p.Tokens...), p.Greedy[:len(p.Greedy)-1]...)
}

// want is the golden logits row at position pos of sequence i.
func (g *goldenFixture) want(i, pos int) []float32 {
	p := g.Prompts[i]
	if n := len(p.Tokens); pos >= n-1 {
		return p.StepLogits[pos-(n-1)]
	}
	return p.PromptLogits[pos]
}

// checkGolden applies the fixtures' tolerance: ‖got−want‖₂/‖want‖₂ ≤ 1e-5
// and max |got−want| ≤ 1e-4.
func checkGolden(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits, want %d", what, len(got), len(want))
	}
	var num, den, maxAbs float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		if math.IsNaN(d) {
			t.Fatalf("%s: NaN at %d", what, i)
		}
		num, den, maxAbs = num+d*d, den+float64(want[i])*float64(want[i]), max(maxAbs, math.Abs(d))
	}
	if rel := math.Sqrt(num / den); rel > 1e-5 || maxAbs > 1e-4 {
		t.Errorf("%s: relative L2 %.3g (limit 1e-5), max |diff| %.3g (limit 1e-4)", what, rel, maxAbs)
	}
}

func argmaxRow(v []float32) int32 {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return int32(best)
}

// TestDistributedGoldenYaRNFP8 runs the YaRN fixture tiny-ay (a 300-token
// prompt beyond its original 64 positions) and the FP8 fixture tiny-af
// (block scales with partial edge blocks, cut by the TP slices) on
// in-process clusters of 4 workers × TP 2 (with and without expert
// replicas) and 2 × TP 1, against golden.json's float64 reference:
//   - one batch: every prompt + its greedy continuation in one step;
//   - token by token (without replicas): every sequence fed one token a
//     step through the KV cache, all in the same steps, the next token the
//     argmax of the cluster's logits;
//   - greedy generation sampled on the workers (scheduler.Generate):
//     the continuations are the golden ones.
func TestDistributedGoldenYaRNFP8(t *testing.T) {
	checkLeaks(t)
	for _, fx := range []string{"tiny-ay", "tiny-af"} {
		dir := filepath.Join("..", "model", "testdata", fx)
		g := readGolden(t, dir)
		for _, lt := range []struct{ n, tp, replicas int }{{4, 2, 0}, {4, 2, 3}, {2, 1, 0}} {
			t.Run(fmt.Sprintf("%s/N%d_T%d_R%d", fx, lt.n, lt.tp, lt.replicas), func(t *testing.T) {
				c := newCluster(t, dir, clusterConfig{workers: lt.n, tp: lt.tp, replicas: lt.replicas})
				ctx := context.Background()
				seqs := make([]*scheduler.Seq, len(g.Prompts))
				release := func() {
					for _, s := range seqs {
						c.pool.Release(s)
					}
				}

				t.Run("one batch", func(t *testing.T) {
					var in []model.SeqInput
					for i := range g.Prompts {
						toks := g.sequence(i)
						seqs[i] = &scheduler.Seq{ID: uint64(i)}
						if err := c.pool.Reserve(seqs[i], len(toks)); err != nil {
							t.Fatal(err)
						}
						in = append(in, model.SeqInput{ID: uint64(i), Tokens: toks, Blocks: seqs[i].Blocks, AllLogits: true})
					}
					defer release()
					rows, err := c.driver.Forward(ctx, in)
					if err != nil {
						t.Fatal(err)
					}
					r := 0
					for i, p := range g.Prompts {
						for pos := range in[i].Tokens {
							what := fmt.Sprintf("prompt %d position %d", i, pos)
							checkGolden(t, what, rows[r], g.want(i, pos))
							if k := pos - (len(p.Tokens) - 1); k >= 0 {
								if got := argmaxRow(rows[r]); got != p.Greedy[k] {
									t.Errorf("%s: greedy id %d, want %d", what, got, p.Greedy[k])
								}
							}
							r++
						}
					}
				})

				t.Run("token by token", func(t *testing.T) {
					if lt.replicas > 0 {
						t.Skip("the replicas change which worker runs an expert, not the attention path fed token by token; one batch and greedy generation cover them")
					}
					next := make([]int32, len(g.Prompts))
					total := make([]int, len(g.Prompts))
					for i, p := range g.Prompts {
						seqs[i] = &scheduler.Seq{ID: uint64(i)}
						total[i] = len(p.Tokens) + len(p.Greedy) - 1
					}
					defer release()
					for pos := 0; ; pos++ {
						var in []model.SeqInput
						var who []int
						for i, p := range g.Prompts {
							if pos >= total[i] {
								continue
							}
							if pos < len(p.Tokens) {
								next[i] = p.Tokens[pos]
							}
							if err := c.pool.Reserve(seqs[i], pos+1); err != nil {
								t.Fatal(err)
							}
							in = append(in, model.SeqInput{ID: uint64(i), Tokens: []int32{next[i]}, StartPos: pos, Blocks: seqs[i].Blocks})
							who = append(who, i)
						}
						if len(in) == 0 {
							break
						}
						rows, err := c.driver.Forward(ctx, in)
						if err != nil {
							t.Fatal(err)
						}
						for j, i := range who {
							what := fmt.Sprintf("prompt %d position %d", i, pos)
							checkGolden(t, what, rows[j], g.want(i, pos))
							if k := pos - (len(g.Prompts[i].Tokens) - 1); k >= 0 {
								next[i] = argmaxRow(rows[j])
								if want := g.Prompts[i].Greedy[k]; next[i] != want {
									t.Fatalf("%s: greedy id %d, want %d", what, next[i], want)
								}
							}
						}
					}
				})

				t.Run("greedy generation", func(t *testing.T) {
					var reqs []scheduler.GenerateRequest
					var want [][]int32
					for _, p := range g.Prompts {
						s, err := sampling.New(sampling.Greedy())
						if err != nil {
							t.Fatal(err)
						}
						reqs = append(reqs, scheduler.GenerateRequest{Prompt: p.Tokens, MaxTokens: len(p.Greedy), Sampler: s})
						want = append(want, p.Greedy)
					}
					got, err := scheduler.Generate(ctx, c.driver, c.pool, reqs, nil)
					if err != nil {
						t.Fatal(err)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("greedy continuations (-want +got):\n%s", diff)
					}
				})
			})
		}
	}
}
