package synth

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/moemesh/moemesh/model"
)

func smallConfig(t *testing.T) *model.Config {
	t.Helper()
	c, err := Config("tiny")
	if err != nil {
		t.Fatal(err)
	}
	c.VocabSize, c.NumExperts, c.NumExpertsPerTok = 256, 8, 2
	return c
}

// TestGenerateDeterministic: the same options give the same bytes whether
// one core or several generate them; another seed gives other bytes.
func TestGenerateDeterministic(t *testing.T) {
	dir := t.TempDir()
	gen := func(name string, seed uint64, procs int) []byte {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		out := filepath.Join(dir, name)
		if err := Generate(out, Options{Config: smallConfig(t), Seed: seed, DType: "bf16"}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	one, many, other := gen("one", 5, 1), gen("many", 5, 8), gen("other", 6, 8)
	if !bytes.Equal(one, many) {
		t.Error("the checkpoint depends on the number of cores")
	}
	if bytes.Equal(one, other) {
		t.Error("seeds 5 and 6 gave the same checkpoint")
	}
}

// TestGenerateLoads: a generated checkpoint has every tensor the config
// implies, with the tokenizer files beside it.
func TestGenerateLoads(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir, Options{Config: smallConfig(t), Seed: 1, DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := model.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if got, want := len(ck.Names()), len(tensorSpecs(cfg)); got != want {
		t.Errorf("%d tensors, want %d", got, want)
	}
}

func TestBadOptions(t *testing.T) {
	if err := Generate(t.TempDir(), Options{Preset: "huge"}); !errors.Is(err, ErrPreset) {
		t.Errorf("preset huge: err = %v, want ErrPreset", err)
	}
	if err := Generate(t.TempDir(), Options{Preset: "tiny", DType: "f8"}); !errors.Is(err, ErrPreset) {
		t.Errorf("dtype f8: err = %v, want ErrPreset", err)
	}
}
