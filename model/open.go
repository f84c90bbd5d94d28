package model

import (
	"fmt"
	"math"

	"github.com/moemesh/moemesh/kernels"
)

// OpenOptions say how Open loads a model directory.
type OpenOptions struct {
	Shard Shard
	// BlockSize is the KV cache block size in positions (default 16).
	BlockSize int
	// ContextTokens sizes the KV pool: ContextTokens/BlockSize blocks
	// (default 8192 positions).
	ContextTokens int
	// CloseBackend makes Model.Close also close the backend (when it has a
	// Close method), for callers that made the backend only for this model.
	CloseBackend bool
	// Prefault reads every page of the shard's weights once after loading,
	// so the first steps do not pay for page faults on the memory map
	// (workers, benchmarks and latency-sensitive serving want this). Only
	// host-memory weights are touched; a GPU backend has copied them.
	Prefault bool
	// Progress, when set, is called after each layer is loaded.
	Progress func(done, total int)
}

// Open loads config.json and the checkpoint in dir, the shard's weights
// into backend b, and allocates the KV cache. Close releases everything,
// the memory-mapped checkpoint included.
func Open(dir string, b kernels.Backend, o OpenOptions) (*Model, error) {
	if o.BlockSize <= 0 {
		o.BlockSize = 16
	}
	if o.ContextTokens <= 0 {
		o.ContextTokens = 8192
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	ck, err := OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	w, err := loadWeights(ck, cfg, b, o.Shard, o.Progress)
	if err != nil {
		ck.Close()
		if o.CloseBackend {
			closeBackend(b)
		}
		return nil, err
	}
	m, err := NewModel(cfg, w, b, o.Shard, o.BlockSize, (o.ContextTokens+o.BlockSize-1)/o.BlockSize)
	if err != nil {
		ck.Close()
		return nil, fmt.Errorf("model: %s: %w", dir, err)
	}
	if o.Prefault {
		w.prefault()
	}
	m.ck = ck
	m.closeBackend = o.CloseBackend
	return m, nil
}

func closeBackend(b kernels.Backend) {
	switch c := b.(type) {
	case interface{ Close() error }:
		_ = c.Close()
	case interface{ Close() }:
		c.Close()
	}
}

// prefault touches one byte per page of every host-memory weight; the sum
// defeats dead code elimination.
func (w *Weights) prefault() byte {
	var sum byte
	w.each(func(t *Tensor) {
		switch hb := t.Buf.(type) {
		case *kernels.HostBuffer:
			if f := hb.F32(); len(f) > 0 {
				for i := 0; i < len(f); i += 1024 {
					sum += byte(math.Float32bits(f[i]))
				}
			}
			if b := hb.BF16(); len(b) > 0 {
				for i := 0; i < len(b); i += 2048 {
					sum += byte(b[i])
				}
			}
		}
	})
	return sum
}
