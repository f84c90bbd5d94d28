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
}

func (o *genModelOptions) Validate() error {
	if !slices.Contains(synth.Presets, o.Preset) {
		return usagef("--preset %q: allowed values are %v", o.Preset, synth.Presets)
	}
	if o.DType != "f32" && o.DType != "bf16" {
		return usagef("--dtype %q: allowed values are f32, bf16", o.DType)
	}
	if o.Out == "" {
		return usagef("--out is required")
	}
	return nil
}

func newGenModelCmd(s IOStreams) *cobra.Command {
	o := &genModelOptions{}
	cmd := &cobra.Command{
		Use:   "gen-model --preset tiny|bench --out DIR",
		Short: "Write a synthetic Qwen3-MoE checkpoint (random weights, real tokenizer)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return genModel(s, o.Out, synth.Options{Preset: o.Preset, Seed: o.Seed, DType: o.DType})
		},
	}
	cmd.Flags().StringVar(&o.Preset, "preset", "tiny", "model size: tiny (≈21M parameters) or bench (≈1.58B)")
	cmd.Flags().StringVar(&o.Out, "out", "", "output directory")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 0, "random seed for the weights")
	cmd.Flags().StringVar(&o.DType, "dtype", "bf16", "weight type: f32 or bf16")
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
