package model

import (
	"context"
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/sampling"
)

// Stepper runs one batched forward step and returns the requested logits
// rows (see Model.Forward). A Model is a Stepper; so is a cluster driver.
type Stepper interface {
	Forward(ctx context.Context, seqs []SeqInput) ([][]float32, error)
}

var _ Stepper = (*Model)(nil)

// SamplingStepper is a Stepper that can sample where the logits are (a
// cluster's workers), returning one token per sequence instead of logits.
// A sequence fed from position 0 starts a fresh sampler made from its
// params; the sampler keeps its state (PRNG, prompt and generated history)
// across steps, so the tokens equal those of a local sampling.Sampler with
// the same parameters. Release says which sequences ended, so the far side
// can drop their state (with the next step).
type SamplingStepper interface {
	Stepper
	ForwardSample(ctx context.Context, seqs []SeqInput, params []sampling.Params) ([]int32, error)
	Release(ids []uint64)
}

// Allocator gives sequences KV blocks. A BlockPool is one; a cluster keeps
// one pool per attention group (coordinator.Driver.NewPools).
type Allocator interface {
	// Reserve makes room for positions [0, n) of s; on error nothing is taken.
	Reserve(s *Seq, n int) error
	// Release returns all of s's blocks.
	Release(s *Seq)
}

var _ Allocator = (*BlockPool)(nil)

// Request is one sequence to generate.
type Request struct {
	Prompt    []int32
	MaxTokens int
	Sampler   *sampling.Sampler
	// Stop ends the sequence when sampled (the stop id is emitted and kept).
	Stop []int32
}

// Generate prefills every prompt in one batched step, then decodes all
// unfinished sequences together, one token each per step, until each has
// MaxTokens tokens or sampled a stop id. emit, when set, is called for
// every sampled token in order (seq is the index in reqs); an error from it
// stops generation. The blocks taken from pool are returned before Generate
// returns. The result holds each sequence's generated ids.
func Generate(ctx context.Context, st Stepper, pool Allocator, reqs []Request, emit func(seq int, id int32) error) ([][]int32, error) {
	seqs := make([]*Seq, len(reqs))
	out := make([][]int32, len(reqs))
	defer func() {
		for _, s := range seqs {
			if s != nil {
				pool.Release(s)
			}
		}
	}()
	for i, r := range reqs {
		if len(r.Prompt) == 0 {
			return nil, fmt.Errorf("model: request %d has an empty prompt", i)
		}
		if r.Sampler == nil {
			return nil, fmt.Errorf("model: request %d has no sampler", i)
		}
		seqs[i] = &Seq{ID: uint64(i)}
	}
	prompts := make([][]int, len(reqs)) // sampler history: prompt and generated ids
	gen := make([][]int, len(reqs))
	for i, r := range reqs {
		for _, id := range r.Prompt {
			prompts[i] = append(prompts[i], int(id))
		}
	}
	active := make([]int, 0, len(reqs))
	for i, r := range reqs {
		if r.MaxTokens > 0 {
			active = append(active, i)
		}
	}
	pending := make([][]int32, len(reqs)) // tokens to feed next step
	for _, i := range active {
		pending[i] = reqs[i].Prompt
	}
	remote, _ := st.(SamplingStepper)
	for len(active) > 0 {
		in := make([]SeqInput, len(active))
		for j, i := range active {
			s := seqs[i]
			if err := pool.Reserve(s, s.Len+len(pending[i])); err != nil {
				return out, err
			}
			in[j] = SeqInput{ID: s.ID, Tokens: pending[i], StartPos: s.Len, Blocks: s.Blocks}
		}
		var rows [][]float32
		var ids []int32
		var err error
		if remote != nil {
			params := make([]sampling.Params, len(active))
			for j, i := range active {
				params[j] = reqs[i].Sampler.Params()
			}
			ids, err = remote.ForwardSample(ctx, in, params)
		} else {
			rows, err = st.Forward(ctx, in)
		}
		if err != nil {
			return out, err
		}
		next := active[:0]
		for j, i := range slices.Clone(active) {
			s := seqs[i]
			s.Len += len(pending[i])
			var id int32
			if remote != nil {
				id = ids[j]
			} else {
				id = int32(reqs[i].Sampler.Sample(rows[j], prompts[i], gen[i]))
			}
			out[i] = append(out[i], id)
			gen[i] = append(gen[i], int(id))
			if emit != nil {
				if err := emit(i, id); err != nil {
					return out, err
				}
			}
			if len(out[i]) < reqs[i].MaxTokens && !slices.Contains(reqs[i].Stop, id) {
				pending[i] = []int32{id}
				next = append(next, i)
			} else if remote != nil {
				remote.Release([]uint64{s.ID})
			}
		}
		active = next
	}
	return out, nil
}
