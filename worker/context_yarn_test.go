package worker

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// yarnModel is tiny-ay (YaRN factor 4 over 64) with max_position_embeddings
// lowered to maxPos: the checkpoint linked, config.json rewritten.
func yarnModel(t *testing.T, maxPos int) string {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("..", "model", "testdata", "tiny-ay"))
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
	cfg["max_position_embeddings"] = maxPos
	if raw, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestKVBoundYaRNContext: the token bound on a KV cache is the model's
// context (YaRN's factor × original when beyond max_position_embeddings),
// not max_position_embeddings: with one sequence allowed, a YaRN model of
// max_position_embeddings 128 and context 4 × 64 = 256 loads a cache of
// 256 tokens and refuses 260.
func TestKVBoundYaRNContext(t *testing.T) {
	checkLeaks(t)
	dir := yarnModel(t, 128)
	c := newTestCluster(t, dir, 1, func(int) Config { return Config{MaxKVSequences: 1} })
	if got := c.cfg.ContextLength(); got != 256 {
		t.Fatalf("ContextLength = %d, want 256 (4 × 64)", got)
	}
	w := c.servers[0].Worker
	for _, tc := range []struct {
		name   string
		blocks uint32 // of testBlockSize tokens
		want   codes.Code
	}{
		{"beyond the context", 256/testBlockSize + 1, codes.ResourceExhausted}, // refused: loads nothing
		{"above max_position_embeddings, within the context", 256 / testBlockSize, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.LoadShard(context.Background(), c.request(loadSpec{members: []int{0}, place: placementProto(1, uniform(c.cfg, 1, 0)), meshEpoch: 1, kvBlocks: tc.blocks}, 0))
			if status.Code(err) != tc.want {
				t.Errorf("LoadShard of %d blocks × %d: %v, want %v", tc.blocks, testBlockSize, err, tc.want)
			}
		})
	}
}
