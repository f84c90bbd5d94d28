package model_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/synth"
)

// writeCheckpoint writes cfg and tensors (F32) as a checkpoint directory.
func writeCheckpoint(t *testing.T, dir string, cfg *model.Config, tensors map[string][]float32, shapes map[string][]int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	js, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	var ws []model.WriteTensor
	for name, v := range tensors {
		data := make([]byte, 4*len(v))
		for i, f := range v {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(f))
		}
		ws = append(ws, model.WriteTensor{Name: name, DType: "F32", Shape: shapes[name], Data: data})
	}
	if err := model.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ws, nil); err != nil {
		t.Fatal(err)
	}
}

// TestDenseEqualsIdenticalExperts checks the dense SwiGLU path (a dense
// qwen3 model, and mlp_only_layers in a MoE model) against the MoE path: a
// MoE layer whose experts are all the same MLP computes that MLP exactly
// (its top-k weights sum to 1), so the three checkpoints must give the same
// logits.
func TestDenseEqualsIdenticalExperts(t *testing.T) {
	tmp := t.TempDir()
	cfg, err := synth.Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.VocabSize, cfg.NumExperts, cfg.NumExpertsPerTok = 512, 4, 2
	cfg.IntermediateSize = cfg.MoeIntermediateSize
	src := filepath.Join(tmp, "src")
	if err := synth.Generate(src, synth.Options{Config: cfg, Seed: 9, DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	ck, err := model.OpenCheckpoint(src)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	moe := map[string][]float32{}
	shapes := map[string][]int64{}
	for _, name := range ck.Names() {
		info, err := ck.Info(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := ck.F32(name)
		if err != nil {
			t.Fatal(err)
		}
		moe[name], shapes[name] = v, info.Shape
	}
	// Every expert becomes a copy of expert 0; dense MLP tensors are expert 0.
	dense := map[string][]float32{}
	mixed := map[string][]float32{}
	for name, v := range moe {
		mixed[name] = v
		if !strings.Contains(name, ".mlp.") {
			dense[name] = v
			continue
		}
		if i := strings.Index(name, ".mlp.experts."); i >= 0 {
			rest := name[i+len(".mlp.experts."):]
			proj := rest[strings.Index(rest, ".")+1:]
			e0 := name[:i] + ".mlp.experts.0." + proj
			moe[name] = moe[e0]
			if strings.HasPrefix(rest, "0.") {
				d := name[:i] + ".mlp." + proj
				dense[d], shapes[d] = moe[e0], shapes[e0]
			}
		}
	}
	// mixed: layer 0 dense (mlp_only_layers), layer 1 MoE with identical experts.
	for name, v := range dense {
		if strings.HasPrefix(name, "model.layers.0.mlp.") {
			mixed[name] = v
		}
	}
	for name := range mixed {
		if strings.HasPrefix(name, "model.layers.0.mlp.experts.") || name == "model.layers.0.mlp.gate.weight" {
			delete(mixed, name)
		}
	}
	for name, v := range moe {
		if strings.HasPrefix(name, "model.layers.1.mlp.") {
			mixed[name] = v
		}
	}

	moeCfg := *cfg
	moeCfg.TorchDType = "float32"
	denseCfg := moeCfg
	denseCfg.ModelType, denseCfg.Architectures = "qwen3", []string{"Qwen3ForCausalLM"}
	denseCfg.NumExperts, denseCfg.NumExpertsPerTok, denseCfg.MoeIntermediateSize, denseCfg.NormTopkProb = 0, 0, 0, false
	mixedCfg := moeCfg
	mixedCfg.MlpOnlyLayers = []int{0}
	dirs := map[string]string{"moe": filepath.Join(tmp, "moe"), "dense": filepath.Join(tmp, "dense"), "mixed": filepath.Join(tmp, "mixed")}
	writeCheckpoint(t, dirs["moe"], &moeCfg, moe, shapes)
	writeCheckpoint(t, dirs["dense"], &denseCfg, dense, shapes)
	writeCheckpoint(t, dirs["mixed"], &mixedCfg, mixed, shapes)

	tokens := []int32{3, 77, 400, 12, 511, 0, 9}
	logits := map[string][][]float32{}
	for kind, dir := range dirs {
		m, err := model.Open(dir, kernels.NewCPU(), model.OpenOptions{CloseBackend: true, BlockSize: 4, ContextTokens: 64})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		rows, err := m.Forward(context.Background(), []model.SeqInput{{Tokens: tokens, Blocks: blocksFor(t, m, len(tokens)), AllLogits: true}})
		m.Close()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		logits[kind] = rows
	}
	for _, kind := range []string{"dense", "mixed"} {
		for i := range tokens {
			checkLogits(t, kind+" vs moe", logits[kind][i], logits["moe"][i])
		}
	}
}
