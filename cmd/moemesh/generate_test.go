package main

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogitsMatchesGolden runs `moemesh logits` on the tiny-a fixture and
// compares every row with llama.cpp's prompt logits.
func TestLogitsMatchesGolden(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-a")
	f, err := os.Open(filepath.Join(dir, "golden.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Prompts []struct {
			Tokens       []int       `json:"tokens"`
			PromptLogits [][]float32 `json:"prompt_logits"`
		} `json:"prompts"`
	}
	if err := json.NewDecoder(zr).Decode(&g); err != nil {
		t.Fatal(err)
	}
	p := g.Prompts[len(g.Prompts)-1]
	ids := strings.Trim(strings.ReplaceAll(fmt.Sprint(p.Tokens), " ", ","), "[]")
	code, out, errOut := runCLI(t, "", "logits", "--model", dir, "--tokens", ids)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct{ Logits [][]float32 }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v", err)
	}
	if len(got.Logits) != len(p.Tokens) {
		t.Fatalf("%d rows, want %d", len(got.Logits), len(p.Tokens))
	}
	for i, row := range got.Logits {
		var num, den float64
		for j, v := range row {
			d := float64(v - p.PromptLogits[i][j])
			num += d * d
			den += float64(p.PromptLogits[i][j]) * float64(p.PromptLogits[i][j])
		}
		if rel := math.Sqrt(num / den); rel > 1e-5 {
			t.Errorf("row %d: relative error %.3g", i, rel)
		}
	}
}

func TestLogitsBadInput(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-a")
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"no model", []string{"logits", "--tokens", "1"}, ExitUsage},
		{"bad token", []string{"logits", "--model", dir, "--tokens", "1,x"}, ExitUsage},
		{"token out of range", []string{"logits", "--model", dir, "--tokens", "1,99999"}, ExitUsage},
		{"token at the vocabulary size", []string{"logits", "--model", dir, "--tokens", "2048"}, ExitUsage},
		{"token out of range on a cluster", []string{"logits", "--model", dir, "--tokens", "999999", "--workers", "2"}, ExitUsage},
		{"missing model", []string{"logits", "--model", t.TempDir(), "--tokens", "1"}, ExitFailure},
		{"unknown flag", []string{"logits", "--bogus"}, ExitUsage},
		{"stray argument", []string{"logits", "extra"}, ExitUsage},
		{"bad workers", []string{"logits", "--model", dir, "--tokens", "1", "--workers", "3", "--tp", "2"}, ExitUsage},
		{"bad device", []string{"logits", "--model", dir, "--tokens", "1", "--device", "tpu"}, ExitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, errOut)
			}
			if errOut == "" {
				t.Error("no error message")
			}
		})
	}
}

// TestGenerateDemoModel runs `moemesh generate` without --model: it must
// create the demo model in the cache once and stream a reply.
func TestGenerateDemoModel(t *testing.T) {
	t.Setenv("MOEMESH_CACHE", t.TempDir())
	args := []string{"generate", "--prompt", "Hello", "--max-tokens", "8", "--seed", "7"}
	code, out1, errOut := runCLI(t, "", args...)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "creating the tiny demo model") {
		t.Errorf("first run did not report creating the demo model: %q", errOut)
	}
	code, out2, errOut := runCLI(t, "", args...)
	if code != ExitOK {
		t.Fatalf("second run: exit %d: %s", code, errOut)
	}
	if strings.Contains(errOut, "creating") {
		t.Errorf("second run re-created the demo model")
	}
	if out1 == "" || out1 != out2 {
		t.Errorf("same seed gave different or empty output:\n%q\n%q", out1, out2)
	}
}

// TestLocalClusterLogits runs `moemesh logits --workers 4 --tp 2` with real
// worker processes and compares with the single-process output.
func TestLocalClusterLogits(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-c")
	args := []string{"logits", "--model", dir, "--tokens", "5,17,300,2000,9"}
	code, single, errOut := runCLI(t, "", args...)
	if code != ExitOK {
		t.Fatalf("single process: exit %d: %s", code, errOut)
	}
	code, multi, errOut := runCLI(t, "", append(args, "--workers", "4", "--tp", "2", "--expert-replicas", "3")...)
	if code != ExitOK {
		t.Fatalf("cluster: exit %d: %s", code, errOut)
	}
	var a, b struct{ Logits [][]float32 }
	if err := json.Unmarshal([]byte(single), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(multi), &b); err != nil {
		t.Fatal(err)
	}
	if len(a.Logits) != 5 || len(b.Logits) != 5 {
		t.Fatalf("rows: single %d, cluster %d, want 5", len(a.Logits), len(b.Logits))
	}
	for i := range a.Logits {
		var num, den float64
		for j := range a.Logits[i] {
			d := float64(a.Logits[i][j] - b.Logits[i][j])
			num += d * d
			den += float64(a.Logits[i][j]) * float64(a.Logits[i][j])
		}
		if rel := math.Sqrt(num / den); rel > 1e-5 {
			t.Errorf("row %d: cluster differs from single process by %.3g relative", i, rel)
		}
	}
}

// TestLocalClusterBadTP: a TP size that does not divide the query heads
// fails before any worker starts.
func TestLocalClusterBadTP(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-c") // 12 query heads
	code, _, errOut := runCLI(t, "", "logits", "--model", dir, "--tokens", "1", "--workers", "8", "--tp", "8")
	if code != ExitUsage {
		t.Fatalf("exit %d, want %d (usage): %s", code, ExitUsage, errOut)
	}
}

// TestGenerateSeed: --seed is taken exactly; without it every run draws a
// fresh random seed.
func TestGenerateSeed(t *testing.T) {
	complete := func(flags map[string]bool, seed uint64) uint64 {
		o := &generateOptions{Seed: seed, changed: func(f string) bool { return flags[f] }}
		o.Complete()
		return o.Params.Seed
	}
	for _, seed := range []uint64{0, 7, math.MaxUint64} {
		if got := complete(map[string]bool{"seed": true}, seed); got != seed {
			t.Errorf("--seed %d gave seed %d", seed, got)
		}
	}
	seen := map[uint64]bool{}
	for range 8 {
		seen[complete(nil, 0)] = true
	}
	// Eight 64-bit draws collide with probability below 2^-58.
	if len(seen) != 8 {
		t.Errorf("8 runs without --seed got %d distinct seeds", len(seen))
	}
}
