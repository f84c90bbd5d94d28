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
// hosted by this shard. Backends with kernels.GroupedMatMul run each
// projection of all experts in one call.
func (m *Model) RunExperts(l int, h, out kernels.Buffer, rows [][]int32, weights [][]float32) error {
	ly := &m.W.Layers[l]
	var used []int
	total := 0
	for e, rs := range rows {
		if len(rs) == 0 {
			continue
		}
		if e >= len(ly.Experts) || ly.Experts[e] == nil {
			return fmt.Errorf("model: layer %d: expert %d is not hosted here", l, e)
		}
		used = append(used, e)
		total += len(rs)
	}
	if len(used) == 0 {
		return nil
	}
	if g, ok := m.B.(kernels.GroupedMatMul); ok {
		return m.runExpertsGrouped(g, ly, h, out, rows, weights, used, total)
	}
	hid, inter := m.Cfg.HiddenSize, m.Cfg.MoeIntermediateSize
	for _, e := range used {
		rs := rows[e]
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

// runExpertsGrouped gathers the rows of all used experts into one matrix
// (expert by expert), runs gate, up and down as three grouped matmuls, and
// scatters the weighted results back.
func (m *Model) runExpertsGrouped(g kernels.GroupedMatMul, ly *Layer, h, out kernels.Buffer, rows [][]int32, weights [][]float32, used []int, total int) error {
	hid, inter := m.Cfg.HiddenSize, m.Cfg.MoeIntermediateSize
	xe, err := m.buf("xe", total*hid)
	if err != nil {
		return err
	}
	gate, err := m.buf("gate", total*inter)
	if err != nil {
		return err
	}
	up, err := m.buf("up", total*inter)
	if err != nil {
		return err
	}
	ye, err := m.buf("ye", total*hid)
	if err != nil {
		return err
	}
	idx := make([]int32, 0, total)
	wts := make([]float32, 0, total)
	off := make([]int, len(used))
	cnt := make([]int, len(used))
	wg := make([]kernels.Buffer, len(used))
	wu := make([]kernels.Buffer, len(used))
	wd := make([]kernels.Buffer, len(used))
	for i, e := range used {
		off[i], cnt[i] = len(idx), len(rows[e])
		idx = append(idx, rows[e]...)
		wts = append(wts, weights[e]...)
		ex := ly.Experts[e]
		wg[i], wu[i], wd[i] = ex.Gate.Buf, ex.Up.Buf, ex.Down.Buf
	}
	m.B.Gather(xe, h, idx, hid)
	g.GroupedMatMul(gate, xe, wg, off, cnt, inter, hid)
	g.GroupedMatMul(up, xe, wu, off, cnt, inter, hid)
	m.B.SiLUMul(gate, gate, up, total*inter)
	g.GroupedMatMul(ye, gate, wd, off, cnt, hid, inter)
	m.B.ScatterAdd(out, ye, idx, wts, hid)
	return nil
}

// LocalMoE computes every expert in-process.
type LocalMoE struct{ M *Model }

var _ FFN = LocalMoE{}

// MoE implements FFN.
func (lm LocalMoE) MoE(_ context.Context, _ uint64, l int, h, out kernels.Buffer, tokens int) error {
	r, err := lm.M.Route(l, h, tokens)
	if err != nil {
		return err
	}
	rows, weights := r.ByExpert(lm.M.Cfg.NumExperts)
	return lm.M.RunExperts(l, h, out, rows, weights)
}
