package worker

import (
	"context"
	"fmt"
	"maps"
	"math"
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
	// WireDType is the dtype activations travel in; a worker rounds what
	// it keeps for itself the same way where its peers get a copy.
	WireDType() collective.DType
}

var _ Exchange = (*collective.Mesh)(nil)

// RoutingKey is the key that picks an expert replica for a token
// (sharding.Placement.RouteIn): a hash of the token's router decision, its
// expert ids in the router's order. That decision is a function of the
// token's hidden state alone, so the replica, and with it the grouping and
// order of the sums, does not change with the rest of the batch or with
// the rank that holds the token. The weights are left out on purpose: a
// last-bit difference in them (another layout's summation order) must not
// move the token to another replica. (The FFN sees no sequence ids; tokens
// routed to the same experts share their replicas.)
func RoutingKey(experts []int32) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, e := range experts {
		h = mix64(h ^ uint64(uint32(e)))
	}
	return h
}

// mix64 is the splitmix64 finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// meshMoE is the expert-parallel FFN: each rank of a tensor-parallel group
// takes a contiguous share of the group's tokens, routes them, sends each
// token once to every remote worker that computes one of its experts
// (dispatch), and every computing worker sends its results straight to
// every rank of the token's group (combine), so each rank holds the whole
// FFN output without a further all-gather. See docs/wire.md for the sums'
// order.
type meshMoE struct {
	m      *model.Model
	ex     Exchange
	self   int
	layout sharding.Layout
	place  []*sharding.Placement // per layer
	all    []int                 // every worker: the all-to-all spans all groups

	// byExpert selects the layout-invariant sum (Config.LayoutInvariantMoE):
	// each token's expert outputs are added in ascending expert id, as one
	// process adds them, whatever the placement.
	byExpert bool

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

// work is what this worker computes for the tokens of one group: rows x
// (host, [rows, hidden]) and, per row, the group's token index and the
// experts and weights asked for.
type work struct {
	group   int
	x       []float32
	tokens  []int32
	experts [][]int32 // by row, ascending
	weights [][]float32
}

// MoE implements model.FFN.
func (d *meshMoE) MoE(ctx context.Context, step uint64, l int, h, out kernels.Buffer, tokens int) error {
	m, b := d.m, d.m.B
	hid := m.Cfg.HiddenSize
	myGroup := d.layout.Group(d.self)
	group := d.layout.GroupWorkers(myGroup)
	share := sharding.SplitRange(tokens, d.layout.TP, d.layout.Rank(d.self))
	lo, n := share[0], share[1]-share[0]
	place := d.place[l]

	// Route this rank's share.
	var r model.Routing
	hLocal := b.View(h, lo*hid, n*hid)
	var hostH []float32
	if n > 0 {
		var err error
		if r, err = m.Route(l, hLocal, n); err != nil {
			return err
		}
		d.count(l, r)
		hostH = make([]float32, n*hid)
		if err := b.ReadF32(hLocal, 0, hostH); err != nil {
			return err
		}
	}

	// One dispatch row per (token, remote worker computing some of its
	// experts); the experts computed here join the local work list.
	send := map[int]collective.Payload{}
	var sentTokens map[int][]int32 // destination -> group token index of each row
	local := work{group: myGroup}
	// want[i]: the workers that compute token lo+i's experts, ascending.
	want := make([][]int, n)
	dstOf := make([]int, r.K)
	for i := range n {
		es, ws := r.Experts[i*r.K:(i+1)*r.K], r.Weights[i*r.K:(i+1)*r.K]
		key := RoutingKey(es)
		for j, e := range es {
			dstOf[j] = place.RouteIn(group, int(e), key)
		}
		dsts := slices.Clone(dstOf)
		slices.Sort(dsts)
		dsts = slices.Compact(dsts)
		want[i] = dsts
		row := hostH[i*hid : (i+1)*hid]
		for _, dst := range dsts {
			// This token's experts on dst, ascending.
			var pe []int32
			var pw []float32
			for _, j := range byID(es) {
				if dstOf[j] == dst {
					pe, pw = append(pe, es[j]), append(pw, ws[j])
				}
			}
			if dst == d.self {
				local.x = append(local.x, row...)
				local.tokens = append(local.tokens, int32(lo+i))
				local.experts, local.weights = append(local.experts, pe), append(local.weights, pw)
				continue
			}
			msg := send[dst]
			msg.Cols = hid
			msg.Rows++
			msg.Data = append(msg.Data, row...)
			msg.Aux = append(msg.Aux, int32(len(pe)))
			for j, e := range pe {
				msg.Aux = appendPair(msg.Aux, e, pw[j])
			}
			send[dst] = msg
			if sentTokens == nil {
				sentTokens = map[int][]int32{}
			}
			sentTokens[dst] = append(sentTokens[dst], int32(lo+i))
		}
	}
	// The group token index of every row follows the routing of all rows.
	for dst, toks := range sentTokens {
		msg := send[dst]
		msg.Aux = append(msg.Aux, toks...)
		send[dst] = msg
	}

	tag := collective.Tag{Step: step, Layer: uint32(l), Phase: pb.Phase_PHASE_DISPATCH}
	recv, err := d.ex.AllToAll(ctx, tag, d.all, send)
	if err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}

	// Compute the local work and the rows others sent, in worker order, and
	// address every result to each rank of the token's group.
	jobs := []work{}
	if len(local.tokens) > 0 {
		jobs = append(jobs, local)
	}
	for _, src := range slices.Sorted(maps.Keys(recv)) {
		msg := recv[src]
		if msg.Rows == 0 {
			continue
		}
		wk, err := d.decodeDispatch(l, src, msg)
		if err != nil {
			return err
		}
		jobs = append(jobs, wk)
	}
	reply := map[int]collective.Payload{}
	for _, wk := range jobs {
		res, err := d.compute(l, wk)
		if err != nil {
			return err
		}
		targets := d.layout.GroupWorkers(wk.group)
		if wk.group == myGroup && len(targets) > 1 {
			// Peers of the group get this over the wire; keep the same
			// rounding here so that every rank sums equal values.
			collective.RoundToWire(res.Data, d.ex.WireDType())
		}
		for _, v := range targets {
			msg := reply[v]
			msg.Cols = hid
			msg.Rows += res.Rows
			msg.Data = append(msg.Data, res.Data...)
			msg.Aux = append(msg.Aux, res.Aux...)
			reply[v] = msg
		}
	}
	tag.Phase = pb.Phase_PHASE_COMBINE
	back, err := d.ex.AllToAll(ctx, tag, d.all, reply)
	if err != nil {
		return fmt.Errorf("combine: %w", err)
	}
	return d.sum(l, back, out, tokens, lo, want)
}

// byID returns the indices of es in ascending order of expert id.
func byID(es []int32) []int {
	idx := make([]int, len(es))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return int(es[a]) - int(es[b]) })
	return idx
}

// decodeDispatch checks and decodes the rows src sent for this worker to
// compute, all of whose experts must be hosted here.
func (d *meshMoE) decodeDispatch(l, src int, msg collective.Payload) (work, error) {
	m := d.m
	hid := m.Cfg.HiddenSize
	if msg.Cols != hid || len(msg.Data) != msg.Rows*hid {
		return work{}, fmt.Errorf("%w: dispatch from worker %d: %d rows of %d floats, want rows of %d", ErrProtocol, src, msg.Rows, msg.Cols, hid)
	}
	if len(msg.Aux) < msg.Rows {
		return work{}, fmt.Errorf("%w: dispatch from worker %d: %d aux ints for %d rows", ErrProtocol, src, len(msg.Aux), msg.Rows)
	}
	routing, toks := msg.Aux[:len(msg.Aux)-msg.Rows], msg.Aux[len(msg.Aux)-msg.Rows:]
	experts, weights, err := decodeRows(routing, msg.Rows, m.Cfg.NumExperts, m.Cfg.NumExpertsPerTok, func(e int) bool { return d.place[l].Hosts(d.self, e) })
	if err != nil {
		return work{}, fmt.Errorf("dispatch from worker %d: %w", src, err)
	}
	for i, t := range toks {
		if t < 0 {
			return work{}, fmt.Errorf("%w: dispatch from worker %d: row %d names token %d", ErrProtocol, src, i, t)
		}
	}
	return work{group: d.layout.Group(src), x: msg.Data, tokens: toks, experts: experts, weights: weights}, nil
}

// compute runs wk's experts. By worker (the default) it returns one row per
// row of wk, the weighted sum of its experts in ascending id, with the
// token index as aux; by expert, one row per (row, expert), the expert's
// unweighted output, with aux (token, expert, weight bits).
func (d *meshMoE) compute(l int, wk work) (collective.Payload, error) {
	m, b := d.m, d.m.B
	hid := m.Cfg.HiddenSize
	nrows := len(wk.tokens)
	// in[i] is the row of x that output row i reads; rows[e] the output
	// rows of expert e.
	var in []int32
	rows := make([][]int32, m.Cfg.NumExperts)
	ws := make([][]float32, m.Cfg.NumExperts)
	res := collective.Payload{Cols: hid}
	for i, es := range wk.experts {
		if !d.byExpert {
			for j, e := range es {
				rows[e] = append(rows[e], int32(i))
				ws[e] = append(ws[e], wk.weights[i][j])
			}
			res.Aux = append(res.Aux, wk.tokens[i])
			continue
		}
		for j, e := range es {
			rows[e] = append(rows[e], int32(len(in)))
			ws[e] = append(ws[e], 1)
			in = append(in, int32(i))
			res.Aux = append(res.Aux, wk.tokens[i], e, int32(math.Float32bits(wk.weights[i][j])))
		}
	}
	res.Rows = nrows
	if d.byExpert {
		res.Rows = len(in)
	}
	x, err := m.Scratch("moe-in", nrows*hid)
	if err != nil {
		return res, err
	}
	if err := b.WriteF32(x, 0, wk.x); err != nil {
		return res, err
	}
	if d.byExpert {
		// One input row per (row, expert), so each output row holds one
		// expert's result alone.
		xp, err := m.Scratch("moe-in-pairs", res.Rows*hid)
		if err != nil {
			return res, err
		}
		b.Gather(xp, x, in, hid)
		x = xp
	}
	y, err := m.Scratch("moe-out", res.Rows*hid)
	if err != nil {
		return res, err
	}
	if err := m.Zero(y, res.Rows*hid); err != nil {
		return res, err
	}
	if err := m.RunExperts(l, x, y, rows, ws); err != nil {
		return res, err
	}
	res.Data = make([]float32, res.Rows*hid)
	return res, b.ReadF32(y, 0, res.Data)
}

// sum adds the contributions every worker sent for this group's tokens
// into out (zero on entry): by worker, each token's partial sums in
// ascending id of the worker that computed them; by expert, each token's
// expert outputs times their weights in ascending expert id. Either order
// depends on the token alone. want[i] lists the workers that compute token
// lo+i of this rank's share; they must be exactly the ones that answered.
func (d *meshMoE) sum(l int, back map[int]collective.Payload, out kernels.Buffer, tokens, lo int, want [][]int) error {
	m, b := d.m, d.m.B
	hid, k := m.Cfg.HiddenSize, m.Cfg.NumExpertsPerTok
	type row struct {
		src    int
		token  int32
		expert int32
		w      float32
		data   []float32
	}
	var all []row
	got := make([][]int, tokens) // per token, the workers that sent a row
	perToken := make([]int, tokens)
	for _, src := range slices.Sorted(maps.Keys(back)) {
		msg := back[src]
		c, err := decodeCombine(msg.Aux, msg.Rows, d.byExpert, tokens, m.Cfg.NumExperts)
		if err == nil && (msg.Cols != hid || len(msg.Data) != msg.Rows*hid) {
			err = fmt.Errorf("%w: %d rows of %d floats, want rows of %d", ErrProtocol, msg.Rows, msg.Cols, hid)
		}
		if err != nil {
			return fmt.Errorf("combine from worker %d: %w", src, err)
		}
		for i, t := range c.tokens {
			if n := len(got[t]); n == 0 || got[t][n-1] != src {
				got[t] = append(got[t], src)
			} else if !d.byExpert {
				return fmt.Errorf("%w: combine from worker %d: token %d twice", ErrProtocol, src, t)
			}
			perToken[t]++
			rw := row{src: src, token: t, data: msg.Data[i*hid : (i+1)*hid]}
			if d.byExpert {
				if !d.place[l].Hosts(src, int(c.experts[i])) {
					return fmt.Errorf("%w: combine from worker %d: expert %d is not hosted there", ErrProtocol, src, c.experts[i])
				}
				rw.expert, rw.w = c.experts[i], c.weights[i]
			}
			all = append(all, rw)
		}
	}
	for t := range tokens {
		bad := len(got[t]) == 0 || (d.byExpert && perToken[t] != k)
		if i := t - lo; i >= 0 && i < len(want) && !slices.Equal(got[t], want[i]) {
			bad = true
		}
		if bad {
			return fmt.Errorf("%w: combine: token %d got %d rows from workers %v", ErrProtocol, t, perToken[t], got[t])
		}
	}
	if d.byExpert {
		slices.SortStableFunc(all, func(a, b row) int {
			if a.expert != b.expert {
				return int(a.expert) - int(b.expert)
			}
			return int(a.token) - int(b.token)
		})
		for i := 1; i < len(all); i++ {
			if all[i].expert == all[i-1].expert && all[i].token == all[i-1].token {
				return fmt.Errorf("%w: combine: token %d got expert %d twice", ErrProtocol, all[i].token, all[i].expert)
			}
		}
	}
	if len(all) == 0 {
		return nil
	}
	host := make([]float32, len(all)*hid)
	idx := make([]int32, len(all))
	var scale []float32
	if d.byExpert {
		scale = make([]float32, len(all))
	}
	for i, rw := range all {
		copy(host[i*hid:], rw.data)
		idx[i] = rw.token
		if scale != nil {
			scale[i] = rw.w
		}
	}
	part, err := m.Scratch("combine", len(all)*hid)
	if err != nil {
		return err
	}
	if err := b.WriteF32(part, 0, host); err != nil {
		return err
	}
	b.ScatterAdd(out, part, idx, scale, hid)
	return nil
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
