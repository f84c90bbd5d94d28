package main

import (
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/model"
)

// TestGenModelFlags: --dtype and --rope-scaling are checked before
// anything is written, and the FP8 YaRN variant of the tiny preset is a
// checkpoint whose config says so.
func TestGenModelFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"dtype", []string{"--dtype", "f16"}},
		{"rope type", []string{"--rope-scaling", "linear:4"}},
		{"factor below 1", []string{"--rope-scaling", "yarn:0.5"}},
		{"original not a number", []string{"--rope-scaling", "yarn:4:many"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "m")
			err := runErr(t, append([]string{"gen-model", "--preset", "tiny", "--out", out}, tc.args...)...)
			if exitCode(err) != ExitUsage {
				t.Fatalf("exit %d, want %d: %v", exitCode(err), ExitUsage, err)
			}
			if _, err := model.LoadConfig(out); err == nil {
				t.Error("a model was written")
			}
		})
	}
	out := filepath.Join(t.TempDir(), "m")
	if err := runErr(t, "gen-model", "--preset", "tiny", "--out", out, "--dtype", "fp8", "--rope-scaling", "yarn:4"); err != nil {
		t.Fatal(err)
	}
	cfg, err := model.LoadConfig(out)
	if err != nil {
		t.Fatal(err)
	}
	q, err := model.ParseQuantConfig(cfg.QuantizationConfig)
	if err != nil || q == nil || q.WeightBlockSize[0] != 128 || q.WeightBlockSize[1] != 128 {
		t.Errorf("quantization_config %s (%v), want fp8 in 128×128 blocks", cfg.QuantizationConfig, err)
	}
	if got := cfg.ContextLength(); got != 4*32768 {
		t.Errorf("ContextLength %d, want %d", got, 4*32768)
	}
}
