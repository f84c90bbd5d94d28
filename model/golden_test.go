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

// fixtures: tiny-a (f32), tiny-c (bf16), tiny-ay (YaRN, a 300-token
// prompt beyond its original 64 positions), tiny-af (FP8 block-quantized).
var fixtures = []string{"tiny-a", "tiny-c", "tiny-ay", "tiny-af"}

// goldenBlocks holds every fixture's prompts at once in blocks of 4.
const goldenBlocks = 160

// TestGoldenOneBatch feeds prompt + greedy[:-1] of every prompt as one
// batch of three sequences and compares the logits at every position.
func TestGoldenOneBatch(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx, func(t *testing.T) {
			g := loadGolden(t, fx)
			m := openFixture(t, fx, goldenBlocks)
			pool := newKVBlocks(m)
			var in []model.SeqInput
			for i, p := range g.Prompts {
				toks := append(append([]int32{}, p.Tokens...), p.Greedy[:len(p.Greedy)-1]...)
				var blocks []int32
				pool.reserve(t, &blocks, len(toks))
				in = append(in, model.SeqInput{ID: uint64(i), Tokens: toks, Blocks: blocks, AllLogits: true})
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
			for i := range in {
				pool.release(&in[i].Blocks)
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
			m := openFixture(t, fx, goldenBlocks)
			pool := newKVBlocks(m)
			for i, p := range g.Prompts {
				var blocks []int32
				next := p.Tokens[0]
				total := len(p.Tokens) + len(p.Greedy) - 1
				for pos := range total {
					if pos < len(p.Tokens) {
						next = p.Tokens[pos]
					}
					pool.reserve(t, &blocks, pos+1)
					rows, err := m.Forward(context.Background(), []model.SeqInput{{ID: uint64(i), Tokens: []int32{next}, StartPos: pos, Blocks: blocks}})
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
				pool.release(&blocks)
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
			m := openFixture(t, fx, goldenBlocks)
			pool := newKVBlocks(m)
			seqs := make([][]int32, len(g.Prompts)) // block tables
			fed := make([]int, len(g.Prompts))      // positions already in the cache
			all := make([][]int32, len(g.Prompts))
			for i, p := range g.Prompts {
				all[i] = append(append([]int32{}, p.Tokens...), p.Greedy[:len(p.Greedy)-1]...)
			}
			chunk := []int{len(all[0]), 3, len(g.Prompts[2].Tokens), 16} // tiny-ay's fourth prompt: chunks of 16
			start := []int{0, 1, 2, 3}                                   // the step each sequence joins
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
					pool.reserve(t, &seqs[i], fed[i]+n)
					in = append(in, model.SeqInput{ID: uint64(i), Tokens: all[i][fed[i] : fed[i]+n], StartPos: fed[i], Blocks: seqs[i], AllLogits: true})
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
			for i := range seqs {
				if fed[i] != len(all[i]) {
					t.Errorf("prompt %d: fed %d of %d positions", i, fed[i], len(all[i]))
				}
				pool.release(&seqs[i])
			}
		})
	}
}
