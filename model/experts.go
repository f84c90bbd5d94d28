package model

import (
	"context"
	"fmt"
)

// Changing the hosted experts of an opened model. A serving process moves
// experts while it keeps running steps: it reads the new ones with
// LoadExperts (which does not touch the model, so a step may run
// meanwhile), installs them with AddExperts and later frees the ones no
// longer needed with DropExperts; the last two must not run during a step.

// LoadExperts reads, for every layer l, the experts experts[l] from the
// checkpoint the model was opened from into its backend, and returns them
// indexed [layer][expert id] (nil where not asked). It leaves the model
// unchanged and may run while the model runs a step. ctx is checked
// between experts. The model must have been made by Open.
func (m *Model) LoadExperts(ctx context.Context, experts [][]int, prefault bool) ([][]*Expert, error) {
	if m.ck == nil {
		return nil, fmt.Errorf("%w: the model has no checkpoint to load experts from (use Open)", ErrShard)
	}
	if len(experts) != m.Cfg.NumHiddenLayers {
		return nil, fmt.Errorf("%w: expert lists for %d layers, model has %d", ErrShard, len(experts), m.Cfg.NumHiddenLayers)
	}
	sh := Shard{Experts: experts}
	l := &loader{ck: m.ck, cfg: m.Cfg, b: m.B, shard: sh, q: m.QHeads, kv: m.KVHeads, vocab: m.Vocab}
	out := make([][]*Expert, len(experts))
	for layer := range experts {
		if len(experts[layer]) == 0 {
			continue
		}
		if !m.Cfg.IsMoELayer(layer) {
			return nil, fmt.Errorf("%w: layer %d is dense and has no experts", ErrShard, layer)
		}
		ids, err := l.hosted(layer)
		if err != nil {
			return nil, err
		}
		out[layer] = make([]*Expert, m.Cfg.NumExperts)
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			e, err := l.expert(fmt.Sprintf("model.layers.%d.mlp.experts.%d.", layer, id))
			if err != nil {
				return nil, err
			}
			out[layer][id] = e
		}
	}
	if prefault {
		(&Weights{Layers: expertLayers(out)}).prefault()
	}
	return out, nil
}

func expertLayers(experts [][]*Expert) []Layer {
	ls := make([]Layer, len(experts))
	for i, es := range experts {
		ls[i].Experts = es
	}
	return ls
}

// AddExperts installs the experts LoadExperts returned (the non-nil
// entries); an expert already hosted is replaced only if absent. It must
// not run during a step.
func (m *Model) AddExperts(experts [][]*Expert) {
	for l, es := range experts {
		ly := &m.W.Layers[l]
		for id, e := range es {
			if e == nil {
				continue
			}
			if ly.Experts == nil {
				ly.Experts = make([]*Expert, m.Cfg.NumExperts)
			}
			if ly.Experts[id] == nil {
				ly.Experts[id] = e
			}
		}
	}
}

// DropExperts frees, for every layer l, the experts drop[l] and marks them
// not hosted. It must not run during a step.
func (m *Model) DropExperts(drop [][]int) {
	for l, ids := range drop {
		if l >= len(m.W.Layers) {
			break
		}
		ly := &m.W.Layers[l]
		for _, id := range ids {
			if id < 0 || id >= len(ly.Experts) || ly.Experts[id] == nil {
				continue
			}
			e := ly.Experts[id]
			for _, t := range []*Tensor{&e.Gate, &e.Up, &e.Down} {
				m.B.Free(t.Buf)
			}
			ly.Experts[id] = nil
		}
	}
}

// WithFFN returns a model that shares m's weights, KV cache, backend,
// scratch buffers and Reducer but computes MoE layers with ffn. The two
// must not run steps concurrently; only m may be closed, after which the
// returned model must not be used.
func (m *Model) WithFFN(ffn FFN) *Model {
	c := *m
	c.FFN = ffn
	c.ck, c.closeBackend, c.zeros = nil, false, nil
	return &c
}
