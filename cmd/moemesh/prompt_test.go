package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/model"
)

type cliGolden struct {
	Prompts []struct {
		Tokens       []int       `json:"tokens"`
		PromptLogits [][]float32 `json:"prompt_logits"`
	} `json:"prompts"`
}

func loadCLIGolden(t *testing.T, fixture string) cliGolden {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "model", "testdata", fixture, "golden.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var g cliGolden
	if err := json.NewDecoder(zr).Decode(&g); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestLogitsPromptFile runs `moemesh logits` on tiny-ay's 300-token prompt
// (beyond its YaRN original context of 64) read from a file and from
// stdin, prefilled in chunks, and on tiny-af (FP8), against the goldens.
func TestLogitsPromptFile(t *testing.T) {
	for _, tc := range []struct {
		name, fixture, chunk string
		stdin                bool
	}{
		{"yarn file chunks of 7", "tiny-ay", "7", false},
		{"yarn stdin one step", "tiny-ay", "4096", true},
		{"fp8 file chunks of 5", "tiny-af", "5", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join("..", "..", "model", "testdata", tc.fixture)
			g := loadCLIGolden(t, tc.fixture)
			p := g.Prompts[len(g.Prompts)-1]
			ids := strings.Trim(fmt.Sprint(p.Tokens), "[]") // white-space separated
			args := []string{"logits", "--model", dir, "--prefill-chunk", tc.chunk, "--prompt-file"}
			stdin := ""
			if tc.stdin {
				args, stdin = append(args, "-"), ids
			} else {
				path := filepath.Join(t.TempDir(), "prompt.txt")
				if err := os.WriteFile(path, []byte(strings.ReplaceAll(ids, " ", ",\n")), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, path)
			}
			code, out, errOut := runCLI(t, stdin, args...)
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
				var num, den, maxAbs float64
				for j, v := range row {
					d := float64(v) - float64(p.PromptLogits[i][j])
					num += d * d
					den += float64(p.PromptLogits[i][j]) * float64(p.PromptLogits[i][j])
					maxAbs = max(maxAbs, math.Abs(d))
				}
				if rel := math.Sqrt(num / den); rel > 1e-5 || maxAbs > 1e-4 {
					t.Errorf("row %d: relative error %.3g, max |diff| %.3g", i, rel, maxAbs)
				}
			}
		})
	}
}

func TestPromptFileBadInput(t *testing.T) {
	dir := filepath.Join("..", "..", "model", "testdata", "tiny-ay")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("1 ", 300)
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"tokens and file", "", []string{"logits", "--model", dir, "--tokens", "1", "--prompt-file", "-"}},
		{"missing file", "", []string{"logits", "--model", dir, "--prompt-file", filepath.Join(t.TempDir(), "none")}},
		{"empty file", "", []string{"logits", "--model", dir, "--prompt-file", empty}},
		{"bad id in file", "1 2 x", []string{"logits", "--model", dir, "--prompt-file", "-"}},
		{"zero chunk", "1", []string{"logits", "--model", dir, "--prompt-file", "-", "--prefill-chunk", "0"}},
		{"beyond --context", long, []string{"logits", "--model", dir, "--prompt-file", "-", "--context", "256"}},
		{"generate prompt and file", "", []string{"generate", "--prompt", "hi", "--prompt-file", "-"}},
		{"generate empty stdin", "", []string{"generate", "--prompt-file", "-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, errOut := runCLI(t, tc.stdin, tc.args...); code != ExitUsage {
				t.Errorf("exit %d, want %d (usage): %s", code, ExitUsage, errOut)
			}
		})
	}
}

func TestCheckContext(t *testing.T) {
	parse := func(t *testing.T, maxPos int, scaling string) *model.Config {
		t.Helper()
		data, err := os.ReadFile(filepath.Join("..", "..", "model", "testdata", "tiny-ay", "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		m["max_position_embeddings"] = maxPos
		m["rope_scaling"] = json.RawMessage(scaling)
		data, _ = json.Marshal(m)
		cfg, err := model.ParseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	yarn := `{"rope_type":"yarn","factor":4,"original_max_position_embeddings":32768}`
	tests := []struct {
		name        string
		maxPos      int
		scaling     string
		context     int
		set         bool
		prompt, gen int
		wantErr     bool
		wantContext int // --context afterwards
	}{
		{"fits", 40960, "null", 8192, false, 100, 10, false, 8192},
		{"grows the unset cache", 40960, "null", 8192, false, 32768, 16, false, 32784},
		{"user --context too small", 40960, "null", 8192, true, 32768, 16, true, 8192},
		{"prompt beyond max_position_embeddings", 40960, "null", 8192, false, 40961, 0, true, 8192},
		{"generation beyond it", 40960, "null", 8192, false, 40000, 961, true, 8192},
		{"yarn extends to 131072", 40960, yarn, 8192, false, 100000, 16, false, 100016},
		{"beyond yarn", 40960, yarn, 8192, false, 131072, 1, true, 8192},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parse(t, tc.maxPos, tc.scaling)
			c := &clusterFlags{ContextTokens: tc.context, contextSet: func() bool { return tc.set }}
			err := checkContext(cfg, c, tc.prompt, tc.gen)
			if got := err != nil; got != tc.wantErr {
				t.Fatalf("checkContext = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, errContextFull) {
				t.Errorf("error %v does not wrap errContextFull", err)
			}
			if c.ContextTokens != tc.wantContext {
				t.Errorf("--context afterwards %d, want %d", c.ContextTokens, tc.wantContext)
			}
		})
	}
}

// recorder is a Stepper that records the steps it is given.
type recorder struct{ steps [][]model.SeqInput }

func (r *recorder) Forward(_ context.Context, seqs []model.SeqInput) ([][]float32, error) {
	r.steps = append(r.steps, seqs)
	var rows [][]float32
	for _, s := range seqs {
		rows = append(rows, []float32{float32(s.StartPos + len(s.Tokens))})
	}
	return rows, nil
}

func TestChunkPrefill(t *testing.T) {
	rec := &recorder{}
	st := chunkPrefill(rec, 4)
	long := []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	rows, err := st.Forward(context.Background(), []model.SeqInput{
		{ID: 1, Tokens: long, StartPos: 0},
		{ID: 2, Tokens: []int32{42}, StartPos: 7},
	})
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		ID       uint64
		Tokens   []int32
		StartPos int
	}
	var got [][]step
	for _, s := range rec.steps {
		var ss []step
		for _, in := range s {
			ss = append(ss, step{in.ID, in.Tokens, in.StartPos})
		}
		got = append(got, ss)
	}
	want := [][]step{
		{{1, long[0:4], 0}},
		{{1, long[4:8], 4}},
		{{1, long[8:10], 8}, {2, []int32{42}, 7}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([][]float32{{10}, {8}}, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
}
