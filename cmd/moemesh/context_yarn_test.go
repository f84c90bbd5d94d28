package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/model"
)

// yarnShortModel is tiny-ay (YaRN factor 4 over 64) with
// max_position_embeddings 128, so its context (4 × 64 = 256) is beyond
// max_position_embeddings: the checkpoint linked, config.json rewritten.
func yarnShortModel(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("..", "..", "model", "testdata", "tiny-ay"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(src, "model.safetensors"), filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["max_position_embeddings"] = 128
	if raw, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestContextYaRN: --context is bounded by the model's context, YaRN's
// factor × original when that exceeds max_position_embeddings: 256 is
// taken by a YaRN model of max_position_embeddings 128, 257 is a usage
// error before any worker starts, and an unset --context (8,192) is
// lowered to 256.
func TestContextYaRN(t *testing.T) {
	dir := yarnShortModel(t)
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxPositionEmbeddings != 128 || cfg.ContextLength() != 256 {
		t.Fatalf("max_position_embeddings %d, ContextLength %d; want 128, 256", cfg.MaxPositionEmbeddings, cfg.ContextLength())
	}
	logits := func(extra ...string) []string {
		return append([]string{"logits", "--model", dir, "--tokens", "1,2,3"}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"above max_position_embeddings", logits("--context", "200"), ExitOK},
		{"at the context", logits("--context", "256"), ExitOK},
		{"at the context on a cluster", logits("--context", "256", "--workers", "2"), ExitOK},
		{"beyond the context", logits("--context", "257"), ExitUsage},
		{"beyond the context on a cluster", logits("--context", "257", "--workers", "2"), ExitUsage},
		{"default lowered to the context", logits(), ExitOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakeMemory(t, 1<<40, nil)
			started := countWorkers(t)
			err := runErr(t, tc.args...)
			code := ExitOK
			if err != nil {
				code = exitCode(err)
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %v", code, tc.code, err)
			}
			if code == ExitUsage && started.Load() != 0 {
				t.Errorf("%d workers started before the usage error", started.Load())
			}
		})
	}
}

// TestValidateModelContext: ValidateModel itself, on the flags alone: a
// set --context beyond ContextLength is refused, an unset one is lowered
// to it, one within is kept.
func TestValidateModelContext(t *testing.T) {
	cfg, err := model.LoadConfig(yarnShortModel(t))
	if err != nil {
		t.Fatal(err)
	}
	fakeMemory(t, 1<<40, nil)
	for _, tc := range []struct {
		name    string
		context int
		set     bool
		want    int // --context after the check; 0: refused
	}{
		{"set within max_position_embeddings", 100, true, 100},
		{"set above max_position_embeddings", 256, true, 256},
		{"set beyond the context", 257, true, 0},
		{"unset beyond the context", 8192, false, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clusterFlags{Workers: 1, TP: 1, ContextTokens: tc.context, contextSet: func() bool { return tc.set }}
			err := c.ValidateModel(cfg)
			if tc.want == 0 {
				if exitCode(err) != ExitUsage {
					t.Fatalf("ValidateModel: %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ContextTokens != tc.want {
				t.Errorf("--context %d after the check, want %d", c.ContextTokens, tc.want)
			}
		})
	}
}
