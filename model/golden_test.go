package model_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
)

type goldenPrompt struct {
	Tokens       []int32     `json:"tokens"`
	Greedy       []int32     `json:"greedy"`
	PromptLogits [][]float32 `json:"prompt_logits"`
	StepLogits   [][]float32 `json:"step_logits"`
}

type golden struct {
	Prompts []goldenPrompt `json:"prompts"`
}

func loadGolden(t testing.TB, fixture string) *golden {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", fixture, "golden.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.NewDecoder(zr).Decode(&g); err != nil {
		t.Fatal(err)
	}
	return &g
}

// openFixture loads a fixture checkpoint on the CPU backend.
func openFixture(t testing.TB, fixture string, blocks int) *model.Model {
	t.Helper()
	dir := filepath.Join("testdata", fixture)
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := model.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	b := kernels.NewCPU()
	t.Cleanup(b.Close)
	w, err := model.LoadWeights(ck, cfg, b, model.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.NewModel(cfg, w, b, model.Shard{}, 4, blocks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// checkLogits applies the fixtures' tolerance: per position ‖got−want‖₂/‖want‖₂ ≤ 1e-5 and max|diff| ≤ 1e-4.
func checkLogits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits, want %d", what, len(got), len(want))
	}
	var num, den, maxAbs float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		if math.IsNaN(d) {
			t.Fatalf("%s: NaN at %d", what, i)
		}
		num += d * d
		den += float64(want[i]) * float64(want[i])
		maxAbs = max(maxAbs, math.Abs(d))
	}
	if rel := math.Sqrt(num / den); rel > 1e-5 || maxAbs > 1e-4 {
		t.Errorf("%s: relative L2 %.3g (limit 1e-5), max |diff| %.3g (limit 1e-4)", what, rel, maxAbs)
	}
}

func argmax(v []float32) int32 {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return int32(best)
}

// wantRow returns the golden logits at position p of prompt+greedy.
func (g goldenPrompt) wantRow(p int) []float32 {
	n := len(g.Tokens)
	if p < n-1 {
		return g.PromptLogits[p]
	}
	return g.StepLogits[p-(n-1)]
}

var fixtures = []string{"tiny-a", "tiny-c"}

// TestGoldenOneBatch feeds prompt + greedy[:-1] of every prompt as one
// batch of three sequences and compares the logits at every position.
func TestGoldenOneBatch(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx, func(t *testing.T) {
			g := loadGolden(t, fx)
			m := openFixture(t, fx, 64)
			pool := model.NewBlockPool(m.KV.BlockSize, m.KV.NumBlocks)
			var in []model.SeqInput
			var seqs []*model.Seq
			for i, p := range g.Prompts {
				toks := append(append([]int32{}, p.Tokens...), p.Greedy[:len(p.Greedy)-1]...)
				s := &model.Seq{ID: uint64(i)}
				if err := pool.Reserve(s, len(toks)); err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, s)
				in = append(in, model.SeqInput{Tokens: toks, Blocks: s.Blocks, AllLogits: true})
			}
			rows, err := m.Forward(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			r := 0
			for i, p := range g.Prompts {
				for pos := range in[i].Tokens {
					checkLogits(t, fxPos(fx, i, pos), rows[r], p.wantRow(pos))
					if pos >= len(p.Tokens)-1 {
						if got, want := argmax(rows[r]), p.Greedy[pos-(len(p.Tokens)-1)]; got != want {
							t.Errorf("%s: greedy id %d, want %d", fxPos(fx, i, pos), got, want)
						}
					}
					r++
				}
			}
			for _, s := range seqs {
				pool.Release(s)
			}
		})
	}
}

// TestGoldenTokenByToken feeds every token alone through the KV cache and
// lets the model choose its own continuation greedily.
func TestGoldenTokenByToken(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx, func(t *testing.T) {
			g := loadGolden(t, fx)
			m := openFixture(t, fx, 64)
			pool := model.NewBlockPool(m.KV.BlockSize, m.KV.NumBlocks)
			for i, p := range g.Prompts {
				s := &model.Seq{ID: uint64(i)}
				next := p.Tokens[0]
				total := len(p.Tokens) + len(p.Greedy) - 1
				for pos := range total {
					if pos < len(p.Tokens) {
						next = p.Tokens[pos]
					}
					if err := pool.Reserve(s, pos+1); err != nil {
						t.Fatal(err)
					}
					rows, err := m.Forward(context.Background(), []model.SeqInput{{Tokens: []int32{next}, StartPos: pos, Blocks: s.Blocks}})
					if err != nil {
						t.Fatal(err)
					}
					checkLogits(t, fxPos(fx, i, pos), rows[0], p.wantRow(pos))
					if pos >= len(p.Tokens)-1 {
						next = argmax(rows[0])
						if want := p.Greedy[pos-(len(p.Tokens)-1)]; next != want {
							t.Fatalf("%s: greedy id %d, want %d", fxPos(fx, i, pos), next, want)
						}
					}
				}
				pool.Release(s)
			}
		})
	}
}

func fxPos(fx string, prompt, pos int) string {
	return fmt.Sprintf("%s/prompt%d/pos%d", fx, prompt, pos)
}

// TestGoldenMixedStep runs prefill and decode in the same steps: prompt 0
// is prefilled alone, then each step decodes its next token while prompt
// 1 is prefilled in chunks of 3 and prompt 2 whole, all sharing the pool.
func TestGoldenMixedStep(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx, func(t *testing.T) {
			g := loadGolden(t, fx)
			m := openFixture(t, fx, 64)
			pool := model.NewBlockPool(m.KV.BlockSize, m.KV.NumBlocks)
			seqs := make([]*model.Seq, len(g.Prompts))
			fed := make([]int, len(g.Prompts)) // positions already in the cache
			all := make([][]int32, len(g.Prompts))
			for i, p := range g.Prompts {
				seqs[i] = &model.Seq{ID: uint64(i)}
				all[i] = append(append([]int32{}, p.Tokens...), p.Greedy[:len(p.Greedy)-1]...)
			}
			chunk := []int{len(all[0]), 3, len(g.Prompts[2].Tokens)}
			start := []int{0, 1, 2} // the step each sequence joins
			for step := 0; ; step++ {
				var in []model.SeqInput
				var who []int
				for i := range seqs {
					if step < start[i] || fed[i] >= len(all[i]) {
						continue
					}
					n := 1
					if fed[i] < len(g.Prompts[i].Tokens) { // still prefilling
						n = min(chunk[i], len(g.Prompts[i].Tokens)-fed[i])
					}
					if i == 0 && step == 0 {
						n = len(g.Prompts[0].Tokens)
					}
					if err := pool.Reserve(seqs[i], fed[i]+n); err != nil {
						t.Fatal(err)
					}
					in = append(in, model.SeqInput{ID: seqs[i].ID, Tokens: all[i][fed[i] : fed[i]+n], StartPos: fed[i], Blocks: seqs[i].Blocks, AllLogits: true})
					who = append(who, i)
				}
				if len(in) == 0 {
					break
				}
				rows, err := m.Forward(context.Background(), in)
				if err != nil {
					t.Fatal(err)
				}
				r := 0
				for j, i := range who {
					for k := range in[j].Tokens {
						checkLogits(t, fxPos(fx, i, fed[i]+k), rows[r], g.Prompts[i].wantRow(fed[i]+k))
						r++
					}
					fed[i] += len(in[j].Tokens)
				}
			}
			for i, s := range seqs {
				if fed[i] != len(all[i]) {
					t.Errorf("prompt %d: fed %d of %d positions", i, fed[i], len(all[i]))
				}
				pool.Release(s)
			}
		})
	}
}
