package model_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/synth"
)

// benchModelDir returns the bench-preset checkpoint: $MOEMESH_BENCH_MODEL,
// or one generated once under the user cache directory (3.2 GB, about 15 s
// on two cores).
func benchModelDir(b *testing.B) string {
	if dir := os.Getenv("MOEMESH_BENCH_MODEL"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		b.Skip("no cache directory; set MOEMESH_BENCH_MODEL")
	}
	dir := filepath.Join(cache, "moemesh", "bench-bf16-seed0")
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir
	}
	b.Logf("generating the bench preset in %s", dir)
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := synth.Generate(tmp, synth.Options{Preset: "bench", DType: "bf16"}); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkDecode measures decode steps of the bench preset (128 experts,
// top-8, bf16) at batch 1 and 16 after a 32-token prefill per sequence.
// tokens/s = batch / (ns/op) × 1e9, also reported as a metric.
func BenchmarkDecode(b *testing.B) {
	dir := benchModelDir(b)
	be := kernels.NewCPU()
	defer be.Close()
	m, err := model.Open(dir, be, model.OpenOptions{Prefault: true, ContextTokens: 16 * 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, batch := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			pool := newKVBlocks(m)
			seqs := make([][]int32, batch) // block tables
			in := make([]model.SeqInput, batch)
			for i := range seqs {
				toks := make([]int32, 32)
				for j := range toks {
					toks[j] = int32(i*1000 + j)
				}
				pool.reserve(b, &seqs[i], 32)
				in[i] = model.SeqInput{ID: uint64(i), Tokens: toks, Blocks: seqs[i]}
			}
			if _, err := m.Forward(context.Background(), in); err != nil {
				b.Fatal(err)
			}
			pos := 32
			b.ResetTimer()
			for b.Loop() {
				for i := range in {
					pool.reserve(b, &seqs[i], pos+1)
					in[i] = model.SeqInput{ID: uint64(i), Tokens: []int32{int32(pos + i)}, StartPos: pos, Blocks: seqs[i]}
				}
				if _, err := m.Forward(context.Background(), in); err != nil {
					b.Fatal(err)
				}
				pos++
			}
			b.ReportMetric(float64(batch)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			for i := range seqs {
				pool.release(&seqs[i])
			}
		})
	}
}
