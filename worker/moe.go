package worker

import (
	"context"
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker/collective"
)

// Exchange is what the data plane needs from the peer mesh; a
// *collective.Mesh is one, and tests wrap it to inject faults. Every call is
// collective: all members named must make the matching call with the same
// tag, and every call fails (never hangs) when a peer is lost or ctx ends.
type Exchange interface {
	AllReduceSum(ctx context.Context, tag collective.Tag, group []int, data []float32) error
	AllGatherV(ctx context.Context, tag collective.Tag, group []int, mine []float32, out [][]float32) error
	AllToAll(ctx context.Context, tag collective.Tag, group []int, send map[int]collective.Payload) (map[int]collective.Payload, error)
}

var _ Exchange = (*collective.Mesh)(nil)

// TokenKey is the key that picks an expert replica for token i of worker
// self's share (sharding.Placement.Route).
func TokenKey(self, i int) uint64 { return uint64(self)<<32 | uint64(i) }

// meshMoE is the expert-parallel FFN: each rank of a tensor-parallel group
// takes a contiguous share of the group's tokens, routes them, sends each
// token once to every remote worker that computes one of its experts
// (dispatch), gets back the weighted sums (combine), and finally the group
// all-gathers the shares so every rank holds the whole FFN output.
type meshMoE struct {
	m      *model.Model
	ex     Exchange
	self   int
	layout sharding.Layout
	place  []*sharding.Placement // per layer
	all    []int                 // every worker: the all-to-all spans all groups

	// moeIndex[l] is layer l's index among the MoE layers (-1: dense).
	moeIndex []int
	// counts[moeIndex[l]*experts+e] are the tokens this rank routed to
	// expert e of layer l since resetCounts. MoE runs under Worker.stepMu,
	// one layer at a time, so they need no lock.
	counts []uint32
}

func newMeshMoE(m *model.Model, ex Exchange, self int, layout sharding.Layout, place []*sharding.Placement, all []int) *meshMoE {
	d := &meshMoE{m: m, ex: ex, self: self, layout: layout, place: place, all: all, moeIndex: make([]int, m.Cfg.NumHiddenLayers)}
	moe := 0
	for l := range d.moeIndex {
		d.moeIndex[l] = -1
		if m.Cfg.IsMoELayer(l) {
			d.moeIndex[l] = moe
			moe++
		}
	}
	d.counts = make([]uint32, moe*m.Cfg.NumExperts)
	return d
}

// resetCounts zeroes the routed-token counters.
func (d *meshMoE) resetCounts() { clear(d.counts) }

// takeCounts returns a copy of the routed-token counters, layer-major
// [MoE layer][expert] (nil for a dense model), and zeroes them.
func (d *meshMoE) takeCounts() []uint32 {
	if len(d.counts) == 0 {
		return nil
	}
	out := slices.Clone(d.counts)
	clear(d.counts)
	return out
}

// count adds one routing decision per (token, expert) pair of layer l.
func (d *meshMoE) count(l int, r model.Routing) {
	if l < 0 || l >= len(d.moeIndex) || d.moeIndex[l] < 0 {
		return
	}
	c := d.counts[d.moeIndex[l]*d.m.Cfg.NumExperts:][:d.m.Cfg.NumExperts]
	for _, e := range r.Experts {
		if int(e) >= 0 && int(e) < len(c) {
			c[e]++
		}
	}
}

var _ model.FFN = (*meshMoE)(nil)

// MoE implements model.FFN.
func (d *meshMoE) MoE(ctx context.Context, step uint64, l int, h, out kernels.Buffer, tokens int) error {
	m, b := d.m, d.m.B
	hid := m.Cfg.HiddenSize
	group := d.layout.GroupWorkers(d.layout.Group(d.self))
	share := sharding.SplitRange(tokens, d.layout.TP, d.layout.Rank(d.self))
	lo, n := share[0], share[1]-share[0]

	// Route this rank's share.
	var r model.Routing
	hLocal := b.View(h, lo*hid, n*hid)
	if n > 0 {
		var err error
		if r, err = m.Route(l, hLocal, n); err != nil {
			return err
		}
		d.count(l, r)
	}
	// The rows are copied to the host only if some token leaves the process.
	var hostH []float32
	rowOf := func(i int) ([]float32, error) {
		if hostH == nil {
			hostH = make([]float32, n*hid)
			if err := b.ReadF32(hLocal, 0, hostH); err != nil {
				return nil, err
			}
		}
		return hostH[i*hid : (i+1)*hid], nil
	}

	// Build one message per remote destination and the local work list.
	type pick struct {
		e int32
		w float32
	}
	send := map[int]collective.Payload{}
	sentRows := map[int][]int{} // destination -> local token index of each row
	localRows := make([][]int32, m.Cfg.NumExperts)
	localW := make([][]float32, m.Cfg.NumExperts)
	for i := range n {
		byDst := map[int][]pick{}
		var order []int
		for j := range r.K {
			e := r.Experts[i*r.K+j]
			dst := d.place[l].Route(d.self, int(e), TokenKey(d.self, i))
			if _, ok := byDst[dst]; !ok {
				order = append(order, dst)
			}
			byDst[dst] = append(byDst[dst], pick{e, r.Weights[i*r.K+j]})
		}
		for _, dst := range order {
			ps := byDst[dst]
			if dst == d.self {
				for _, p := range ps {
					localRows[p.e] = append(localRows[p.e], int32(lo+i))
					localW[p.e] = append(localW[p.e], p.w)
				}
				continue
			}
			msg := send[dst]
			msg.Cols = hid
			msg.Rows++
			row, err := rowOf(i)
			if err != nil {
				return err
			}
			msg.Data = append(msg.Data, row...)
			msg.Aux = append(msg.Aux, int32(len(ps)))
			for _, p := range ps {
				msg.Aux = appendPair(msg.Aux, p.e, p.w)
			}
			send[dst] = msg
			sentRows[dst] = append(sentRows[dst], i)
		}
	}

	tag := collective.Tag{Step: step, Layer: uint32(l), Phase: pb.Phase_PHASE_DISPATCH}
	recv, err := d.ex.AllToAll(ctx, tag, d.all, send)
	if err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}

	// Compute the experts for the rows others sent us.
	reply := map[int]collective.Payload{}
	for src, msg := range recv {
		if msg.Rows == 0 {
			continue
		}
		res, err := d.remoteRows(l, src, msg)
		if err != nil {
			return err
		}
		reply[src] = res
	}
	// Local experts, straight into out.
	if err := m.RunExperts(l, h, out, localRows, localW); err != nil {
		return err
	}
	tag.Phase = pb.Phase_PHASE_COMBINE
	back, err := d.ex.AllToAll(ctx, tag, d.all, reply)
	if err != nil {
		return fmt.Errorf("combine: %w", err)
	}
	// Add the remote partial sums into this rank's rows of out.
	for dst, rows := range sentRows {
		msg := back[dst]
		if msg.Rows != len(rows) || msg.Cols != hid || len(msg.Data) != len(rows)*hid {
			return fmt.Errorf("combine: worker %d returned %d rows of %d, want %d of %d", dst, msg.Rows, msg.Cols, len(rows), hid)
		}
		part, err := m.Scratch("combine", len(rows)*hid)
		if err != nil {
			return err
		}
		if err := b.WriteF32(part, 0, msg.Data); err != nil {
			return err
		}
		idx := make([]int32, len(rows))
		ones := make([]float32, len(rows))
		for j, i := range rows {
			idx[j], ones[j] = int32(lo+i), 1
		}
		b.ScatterAdd(out, part, idx, ones, hid)
	}

	// Restore the whole output on every rank of the group.
	if d.layout.TP > 1 {
		mine := make([]float32, n*hid)
		if err := b.ReadF32(b.View(out, lo*hid, n*hid), 0, mine); err != nil {
			return err
		}
		full := make([]float32, tokens*hid)
		parts := make([][]float32, d.layout.TP)
		for r := range parts {
			sr := sharding.SplitRange(tokens, d.layout.TP, r)
			parts[r] = full[sr[0]*hid : sr[1]*hid]
		}
		tag.Phase = pb.Phase_PHASE_ALLGATHER
		if err := d.ex.AllGatherV(ctx, tag, group, mine, parts); err != nil {
			return fmt.Errorf("all-gather: %w", err)
		}
		if err := b.WriteF32(out, 0, full); err != nil {
			return err
		}
	}
	return nil
}

// remoteRows computes, for each row src sent, the weighted sum of the
// experts it asked for, all of which must be hosted here.
func (d *meshMoE) remoteRows(l, src int, msg collective.Payload) (collective.Payload, error) {
	m, b := d.m, d.m.B
	hid := m.Cfg.HiddenSize
	if msg.Cols != hid || len(msg.Data) != msg.Rows*hid {
		return collective.Payload{}, fmt.Errorf("%w: dispatch from worker %d: %d rows of %d floats, want rows of %d", ErrProtocol, src, msg.Rows, msg.Cols, hid)
	}
	rows, ws, err := decodeRouting(msg.Aux, msg.Rows, m.Cfg.NumExperts, m.Cfg.NumExpertsPerTok, func(e int) bool { return d.place[l].Hosts(d.self, e) })
	if err != nil {
		return collective.Payload{}, fmt.Errorf("dispatch from worker %d: %w", src, err)
	}
	x, err := m.Scratch("dispatch-in", msg.Rows*hid)
	if err != nil {
		return collective.Payload{}, err
	}
	y, err := m.Scratch("dispatch-out", msg.Rows*hid)
	if err != nil {
		return collective.Payload{}, err
	}
	if err := b.WriteF32(x, 0, msg.Data); err != nil {
		return collective.Payload{}, err
	}
	if err := m.Zero(y, msg.Rows*hid); err != nil {
		return collective.Payload{}, err
	}
	if err := m.RunExperts(l, x, y, rows, ws); err != nil {
		return collective.Payload{}, err
	}
	res := collective.Payload{Rows: msg.Rows, Cols: hid, Data: make([]float32, msg.Rows*hid)}
	return res, b.ReadF32(y, 0, res.Data)
}

// meshReducer sums partial attention outputs over the tensor-parallel
// group and joins its vocabulary-parallel embeddings and logits.
type meshReducer struct {
	ex    Exchange
	group []int
	b     kernels.Backend
	host  []float32
	vocab []model.HeadRange // every rank's vocabulary rows
}

var _ model.VocabReducer = (*meshReducer)(nil)

// AllReduceEmbed implements model.VocabReducer.
func (r *meshReducer) AllReduceEmbed(ctx context.Context, step uint64, x kernels.Buffer, n int) error {
	return r.allReduce(ctx, collective.Tag{Step: step, Phase: pb.Phase_PHASE_ALLREDUCE_EMBED}, x, n*r.hidden(x, n))
}

func (r *meshReducer) hidden(x kernels.Buffer, n int) int {
	if n == 0 {
		return 0
	}
	return x.Len() / n
}

// GatherLogits implements model.VocabReducer.
func (r *meshReducer) GatherLogits(ctx context.Context, step uint64, local []float32, rows int) ([]float32, error) {
	vocab := r.vocab[len(r.vocab)-1].Hi
	parts := make([][]float32, len(r.vocab))
	for k, v := range r.vocab {
		parts[k] = make([]float32, rows*v.Len())
	}
	tag := collective.Tag{Step: step, Phase: pb.Phase_PHASE_LOGITS_GATHER}
	if err := r.ex.AllGatherV(ctx, tag, r.group, local, parts); err != nil {
		return nil, err
	}
	full := make([]float32, rows*vocab)
	for k, v := range r.vocab {
		w := v.Len()
		for i := range rows {
			copy(full[i*vocab+v.Lo:i*vocab+v.Hi], parts[k][i*w:(i+1)*w])
		}
	}
	return full, nil
}

// AllReduceSum implements model.Reducer.
func (r *meshReducer) AllReduceSum(ctx context.Context, step uint64, layer int, buf kernels.Buffer, n int) error {
	return r.allReduce(ctx, collective.Tag{Step: step, Layer: uint32(layer), Phase: pb.Phase_PHASE_ALLREDUCE_ATTN}, buf, n)
}

func (r *meshReducer) allReduce(ctx context.Context, tag collective.Tag, buf kernels.Buffer, n int) error {
	if cap(r.host) < n {
		r.host = make([]float32, n)
	}
	h := r.host[:n]
	if err := r.b.ReadF32(buf, 0, h); err != nil {
		return err
	}
	if err := r.ex.AllReduceSum(ctx, tag, r.group, h); err != nil {
		return err
	}
	return r.b.WriteF32(buf, 0, h)
}
