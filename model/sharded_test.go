package model_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
)

// writeSharded rewrites the checkpoint fixture src as three shards with
// model.safetensors.index.json, tensors dealt round-robin in name order
// (so an FP8 weight and its _scale_inv land in different shards).
func writeSharded(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	ck, err := model.OpenCheckpoint(src)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	shards := make([][]model.WriteTensor, 3)
	weightMap := map[string]string{}
	var total int64
	for i, name := range ck.Names() {
		info, err := ck.Info(name)
		if err != nil {
			t.Fatal(err)
		}
		data, err := ck.Bytes(name)
		if err != nil {
			t.Fatal(err)
		}
		s := i % 3
		shards[s] = append(shards[s], model.WriteTensor{Name: name, DType: info.DType, Shape: info.Shape, Data: data})
		weightMap[name] = fmt.Sprintf("model-%05d-of-00003.safetensors", s+1)
		total += info.Size
	}
	for s, ts := range shards {
		if err := model.WriteSafetensors(filepath.Join(dir, fmt.Sprintf("model-%05d-of-00003.safetensors", s+1)), ts, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := model.WriteShardedIndex(dir, weightMap, total); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestShardedCheckpointGolden checks the golden logits of tiny-c (bf16)
// and tiny-af (FP8, weights and scales in different shards) rewritten as
// sharded checkpoints, as large models ship, through model.Open.
func TestShardedCheckpointGolden(t *testing.T) {
	for _, fx := range []string{"tiny-c", "tiny-af"} {
		t.Run(fx, func(t *testing.T) {
			dir := writeSharded(t, filepath.Join("testdata", fx))
			m, err := model.Open(dir, kernels.NewCPU(), model.OpenOptions{CloseBackend: true, BlockSize: 4, ContextTokens: 256})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			g := loadGolden(t, fx)
			p := g.Prompts[len(g.Prompts)-1]
			rows, err := m.Forward(context.Background(), []model.SeqInput{{Tokens: p.Tokens, Blocks: blocksFor(t, m, len(p.Tokens)), AllLogits: true}})
			if err != nil {
				t.Fatal(err)
			}
			for pos := range p.Tokens {
				checkLogits(t, fxPos(fx+"-sharded", len(g.Prompts)-1, pos), rows[pos], p.wantRow(pos))
			}
		})
	}
}
