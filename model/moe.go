package model

import (
	"context"
	"fmt"

	"github.com/moemesh/moemesh/kernels"
)

// Routing is the router's decision for a batch of tokens: token t goes to
// experts Experts[t*K:(t+1)*K] (most probable first) with weights Weights[...].
type Routing struct {
	K       int
	Experts []int32
	Weights []float32
}

// Route runs layer l's router on h [tokens, hidden]: softmax over all
// experts in float32, the top k, renormalised to sum 1 when norm_topk_prob.
func (m *Model) Route(l int, h kernels.Buffer, tokens int) (Routing, error) {
	c := m.Cfg
	ly := &m.W.Layers[l]
	if ly.Router == nil {
		return Routing{}, fmt.Errorf("model: layer %d has no router", l)
	}
	e, k := c.NumExperts, c.NumExpertsPerTok
	lg, err := m.buf("router", tokens*e)
	if err != nil {
		return Routing{}, err
	}
	m.B.MatMul(lg, h, ly.Router.Buf, tokens, e, c.HiddenSize)
	m.B.Softmax(lg, tokens, e)
	r := Routing{K: k, Experts: make([]int32, tokens*k), Weights: make([]float32, tokens*k)}
	if err := m.B.TopK(lg, tokens, e, k, r.Experts, r.Weights); err != nil {
		return Routing{}, err
	}
	if c.NormTopkProb {
		for t := range tokens {
			w := r.Weights[t*k : (t+1)*k]
			var s float32
			for _, v := range w {
				s += v
			}
			for i := range w {
				w[i] /= s
			}
		}
	}
	return r, nil
}

// ByExpert groups the routing by expert: for expert e, the token rows that
// chose it and their weights, in token order.
func (r Routing) ByExpert(experts int) (rows [][]int32, weights [][]float32) {
	rows = make([][]int32, experts)
	weights = make([][]float32, experts)
	for i, e := range r.Experts {
		t := int32(i / r.K)
		rows[e] = append(rows[e], t)
		weights[e] = append(weights[e], r.Weights[i])
	}
	return rows, weights
}

// RunExperts computes, for every expert e with rows, out[rows[e][i],:] +=
// weights[e][i] · expert_e(h[rows[e][i],:]). Every expert with rows must be
// hosted by this shard.
func (m *Model) RunExperts(l int, h, out kernels.Buffer, rows [][]int32, weights [][]float32) error {
	ly := &m.W.Layers[l]
	hid, inter := m.Cfg.HiddenSize, m.Cfg.MoeIntermediateSize
	for e, rs := range rows {
		if len(rs) == 0 {
			continue
		}
		if e >= len(ly.Experts) || ly.Experts[e] == nil {
			return fmt.Errorf("model: layer %d: expert %d is not hosted here", l, e)
		}
		xe, err := m.buf("xe", len(rs)*hid)
		if err != nil {
			return err
		}
		ye, err := m.buf("ye", len(rs)*hid)
		if err != nil {
			return err
		}
		m.B.Gather(xe, h, rs, hid)
		if err := m.expert(ly.Experts[e], xe, ye, len(rs), inter); err != nil {
			return err
		}
		m.B.ScatterAdd(out, ye, rs, weights[e], hid)
	}
	return nil
}

// LocalMoE computes every expert in-process.
type LocalMoE struct{ M *Model }

var _ FFN = LocalMoE{}

// MoE implements FFN.
func (lm LocalMoE) MoE(_ context.Context, l int, h, out kernels.Buffer, tokens int) error {
	r, err := lm.M.Route(l, h, tokens)
	if err != nil {
		return err
	}
	rows, weights := r.ByExpert(lm.M.Cfg.NumExperts)
	return lm.M.RunExperts(l, h, out, rows, weights)
}
