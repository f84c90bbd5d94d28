package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model/synth"
)

func init() { register(newGenModelCmd) }

type genModelOptions struct {
	Preset string
	Out    string
	Seed   uint64
	DType  string
	Rope   string
	yarn   *synth.YaRN
}

func (o *genModelOptions) Validate() error {
	if !slices.Contains(synth.Presets, o.Preset) {
		return usagef("--preset %q: allowed values are %v", o.Preset, synth.Presets)
	}
	if !slices.Contains(synth.DTypes, o.DType) {
		return usagef("--dtype %q: allowed values are %v", o.DType, synth.DTypes)
	}
	y, err := synth.ParseRopeScaling(o.Rope)
	if err != nil {
		return usagef("--rope-scaling %q: allowed values are none, yarn:FACTOR (over %d original positions) or yarn:FACTOR:ORIGINAL, FACTOR ≥ 1", o.Rope, synth.QwenOriginalContext)
	}
	o.yarn = y
	if o.Out == "" {
		return usagef("--out is required")
	}
	return nil
}

func newGenModelCmd(s IOStreams) *cobra.Command {
	o := &genModelOptions{}
	cmd := &cobra.Command{
		Use:   "gen-model --preset tiny|bench --out DIR [--dtype fp8] [--rope-scaling yarn:4]",
		Short: "Write a synthetic Qwen3-MoE checkpoint (random weights, real tokenizer)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return genModel(s, o.Out, synth.Options{Preset: o.Preset, Seed: o.Seed, DType: o.DType, YaRN: o.yarn})
		},
	}
	cmd.Flags().StringVar(&o.Preset, "preset", "tiny", "model size: tiny (≈21M parameters) or bench (≈1.58B)")
	cmd.Flags().StringVar(&o.Out, "out", "", "output directory")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 0, "random seed for the weights")
	cmd.Flags().StringVar(&o.DType, "dtype", "bf16", "weight type: f32, bf16, or fp8 (E4M3 projections with 128×128 block scales, the rest bf16)")
	cmd.Flags().StringVar(&o.Rope, "rope-scaling", "none", "none, or yarn:FACTOR[:ORIGINAL] (YaRN over original_max_position_embeddings ORIGINAL, default 32768)")
	return cmd
}

// genModel writes a checkpoint into a temporary sibling directory and
// renames it into place, so an interrupted run leaves no half-written model.
func genModel(s IOStreams, out string, o synth.Options) error {
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, ".gen-model-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if s.ErrIsTerminal {
		var bar *progressbar.ProgressBar
		o.Progress = func(done, total int64) {
			if bar == nil {
				bar = progressbar.DefaultBytes(total, "writing weights")
			}
			bar.Set64(done)
		}
	}
	if err := synth.Generate(tmp, o); err != nil {
		return err
	}
	if _, err := os.Stat(out); err == nil {
		return usagef("--out %s already exists; remove it or choose another directory", out)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("moving model into %s: %w", out, err)
	}
	return nil
}
