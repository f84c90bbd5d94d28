package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/schollz/progressbar/v3"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/synth"
)

// demoModelDir returns the directory of the tiny demo model, creating it
// once under the user cache directory ($MOEMESH_CACHE overrides it).
func demoModelDir(s IOStreams) (string, error) {
	base := os.Getenv("MOEMESH_CACHE")
	if base == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache directory for the demo model (set MOEMESH_CACHE): %w", err)
		}
		base = filepath.Join(c, "moemesh")
	}
	dir := filepath.Join(base, "demo-tiny-bf16-seed0")
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir, nil
	}
	fmt.Fprintf(s.ErrOut, "creating the tiny demo model in %s\n", dir)
	if err := genModel(s, dir, synth.Options{Preset: "tiny", DType: "bf16"}); err != nil {
		return "", err
	}
	return dir, nil
}

// openModel loads a model directory on backend b (closed with the model),
// with a progress bar on a terminal.
func openModel(s IOStreams, dir string, b kernels.Backend, o model.OpenOptions) (*model.Model, error) {
	if s.ErrIsTerminal {
		var bar *progressbar.ProgressBar
		o.Progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(s.ErrOut),
					progressbar.OptionSetDescription("loading layers"), progressbar.OptionClearOnFinish())
			}
			bar.Set(done)
		}
	}
	o.CloseBackend = true
	return model.Open(dir, b, o)
}
