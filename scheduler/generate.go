package scheduler

import (
	"context"
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/sampling"
)

// This file holds the one-shot batched generation loop: a fixed set of
// prompts prefilled together and decoded together until each ends, in one
// process (moemesh generate and bench, tests). Serving uses Service, which
// admits and evicts sequences between steps.

// SamplingStepper is a model.Stepper that can sample where the logits are
// (a cluster's workers), returning one token per sequence instead of
// logits. A sequence fed from position 0 starts a fresh sampler made from
// its params; the sampler keeps its state (PRNG, prompt and generated
// history) across steps, so the tokens equal those of a local
// sampling.Sampler with the same parameters. Release says which sequences
// ended, so the far side can drop their state (with the next step).
type SamplingStepper interface {
	model.Stepper
	ForwardSample(ctx context.Context, seqs []model.SeqInput, params []sampling.Params) ([]int32, error)
	Release(ids []uint64)
}

var _ SamplingStepper = (*coordinator.Driver)(nil)

// Seq is a sequence's state in the KV cache during Generate: its id, its
// length and its block table.
type Seq struct {
	ID     uint64
	Len    int    // positions [0, Len) are in the cache
	Blocks Blocks // block table
}

// Allocator gives Generate's sequences KV blocks. Pools is one.
type Allocator interface {
	// Reserve makes room for positions [0, n) of s; on error nothing is taken.
	Reserve(s *Seq, n int) error
	// Release returns all of s's blocks and sets its length to 0.
	Release(s *Seq)
}

var _ Allocator = (*Pools)(nil)

// Pools is an Allocator with one BlockPool per attention group: every
// group has its own KV storage, so block ids only need to be unique inside
// a group and a cluster holds D times as many sequences as one pool would
// allow. Sequence s takes its blocks from the pool of group(s.ID).
//
// Pools is not safe for concurrent use.
type Pools struct {
	pools []*BlockPool
	group func(id uint64) int
}

// NewPools returns groups pools (at least one) of blocks blocks of
// blockSize positions each; group maps a sequence id to its attention
// group (nil: id mod groups).
func NewPools(groups, blockSize, blocks int, group func(id uint64) int) *Pools {
	p := &Pools{group: group}
	for range max(groups, 1) {
		p.pools = append(p.pools, NewBlockPool(blockSize, blocks))
	}
	if p.group == nil {
		n := uint64(len(p.pools))
		p.group = func(id uint64) int { return int(id % n) }
	}
	return p
}

// ModelPools returns one pool matching m's KV cache.
func ModelPools(m *model.Model) *Pools {
	return NewPools(1, m.KV.BlockSize, m.KV.NumBlocks, nil)
}

// DriverPools returns a pool of blocks blocks of blockSize positions for
// each of d's attention groups, a sequence in the group that d's Forward
// and ForwardSample send it to (Driver.Group). Call it after d.Load or
// d.Attach, which set the layout.
func DriverPools(d *coordinator.Driver, blockSize, blocks int) *Pools {
	return NewPools(d.Layout().DP, blockSize, blocks, d.Group)
}

// Free returns the free blocks of every group together.
func (p *Pools) Free() int {
	n := 0
	for _, bp := range p.pools {
		n += bp.Free()
	}
	return n
}

func (p *Pools) pool(s *Seq) (*BlockPool, error) {
	g := p.group(s.ID)
	if g < 0 || g >= len(p.pools) {
		return nil, fmt.Errorf("%w: sequence %d maps to attention group %d of %d", ErrBadRequest, s.ID, g, len(p.pools))
	}
	return p.pools[g], nil
}

// Reserve implements Allocator; a full group's error wraps ErrKVFull.
func (p *Pools) Reserve(s *Seq, n int) error {
	bp, err := p.pool(s)
	if err != nil {
		return err
	}
	if err := bp.Reserve(&s.Blocks, n); err != nil {
		return fmt.Errorf("%w (sequence %d)", err, s.ID)
	}
	return nil
}

// Release implements Allocator.
func (p *Pools) Release(s *Seq) {
	if bp, err := p.pool(s); err == nil {
		bp.Release(&s.Blocks)
	}
	s.Blocks, s.Len = nil, 0
}

// GenerateRequest is one sequence for Generate.
type GenerateRequest struct {
	Prompt    []int32
	MaxTokens int
	Sampler   *sampling.Sampler
	// Stop ends the sequence when sampled (the stop id is emitted and kept).
	Stop []int32
}

// Generate prefills every prompt in one batched step, then decodes all
// unfinished sequences together, one token each per step, until each has
// MaxTokens tokens or sampled a stop id. Sequence i has id i. On a
// SamplingStepper the tokens are sampled where the logits are, from each
// Sampler's parameters; otherwise by the Samplers here. emit, when set, is
// called for every sampled token in order (seq is the index in reqs); an
// error from it stops generation. The blocks taken from pool are returned
// before Generate returns. The result holds each sequence's generated ids.
func Generate(ctx context.Context, st model.Stepper, pool Allocator, reqs []GenerateRequest, emit func(seq int, id int32) error) ([][]int32, error) {
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
			return nil, fmt.Errorf("%w: request %d has an empty prompt", ErrBadRequest, i)
		}
		if r.Sampler == nil {
			return nil, fmt.Errorf("%w: request %d has no sampler", ErrBadRequest, i)
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
		in := make([]model.SeqInput, len(active))
		for j, i := range active {
			s := seqs[i]
			if err := pool.Reserve(s, s.Len+len(pending[i])); err != nil {
				return out, err
			}
			in[j] = model.SeqInput{ID: s.ID, Tokens: pending[i], StartPos: s.Len, Blocks: s.Blocks}
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
		if got := max(len(rows), len(ids)); got != len(active) {
			return out, fmt.Errorf("scheduler: a step of %d sequences returned %d results", len(active), got)
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
