package collective

import (
	"context"
	"fmt"
	"time"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Payload is one worker's rows for another in an all-to-all: a row-major
// float32 matrix plus integer side data (token indices, expert ids).
type Payload struct {
	Rows, Cols int
	// Data holds Rows*Cols values, row-major.
	Data []float32
	// Aux is carried as is; its meaning is the caller's.
	Aux []int32
}

// empty reports whether p carries nothing; an empty payload travels as a
// frame without tensor bytes.
func (p Payload) empty() bool { return p.Rows == 0 && len(p.Aux) == 0 }

// AllReduceSum replaces data, on every member of group, with the
// element-wise sum of every member's data. Every member passes the same
// group (worker ids; a member's rank is its index) and the same len(data).
//
// The result is bitwise identical on every member: element i is summed in
// rank order 0..T-1 (in float64, then rounded to float32) by exactly one
// member, the owner of the chunk holding i, and sent to the others. With a
// bf16 wire every member's contribution from a peer arrives rounded to
// bf16, and the owner rounds its result to bf16 before keeping it, so all
// members still agree bit for bit.
//
// Traffic per member: 2(T-1)/T * len(data) elements out and in (a
// reduce-scatter of chunks to their owners, then an all-gather of the
// summed chunks), in two rounds.
func (m *Mesh) AllReduceSum(ctx context.Context, tag Tag, group []int, data []float32) (err error) {
	o, err := m.begin(ctx, "all-reduce", tag, group)
	if err != nil {
		return err
	}
	defer func() { err = o.finish(err) }()
	T, r, n := len(group), o.rank, len(data)
	if T == 1 {
		return nil
	}
	if 4*n <= m.cfg.OneRoundAllReduceBytes {
		return m.allReduceOneRound(o, tag, group, data)
	}
	bound := func(k int) int { return k * n / T }
	k0, k1 := key{tag: tag, round: 0}, key{tag: tag, round: 1}
	o.expect(k0)
	o.expect(k1)

	// Round 0: chunk k goes to its owner group[k].
	for k, p := range group {
		if k == r {
			continue
		}
		chunk := data[bound(k):bound(k+1)]
		if err := o.send(p, k0, m.vector(chunk), nil); err != nil {
			return err
		}
	}
	lo, hi := bound(r), bound(r+1)
	contrib := make([]*message, T)
	if err := o.recv(k0, func(k int, msg *message) error {
		contrib[k] = msg
		return checkVector(msg, hi-lo, group[k])
	}); err != nil {
		return err
	}
	acc := make([]float64, hi-lo)
	for k := range T {
		if k == r {
			for i, x := range data[lo:hi] {
				acc[i] += float64(x)
			}
			continue
		}
		accumulate(acc, contrib[k])
	}
	mine := data[lo:hi]
	for i, x := range acc {
		mine[i] = roundTrip(float32(x), m.cfg.WireDType)
	}

	// Round 1: every owner sends its summed chunk to everyone.
	v := m.vector(mine)
	for k, p := range group {
		if k != r {
			if err := o.send(p, k1, v, nil); err != nil {
				return err
			}
		}
	}
	if err := o.recv(k1, func(k int, msg *message) error {
		dst := data[bound(k):bound(k+1)]
		if err := checkVector(msg, len(dst), group[k]); err != nil {
			return err
		}
		decode(dst, msg.data, msg.dtype)
		return nil
	}); err != nil {
		return err
	}
	return o.flush()
}

// allReduceOneRound is AllReduceSum in one round: every member sends its
// whole vector to every other and sums the T vectors in rank order (float64,
// rounded to float32 and to the wire dtype). Each element sees the same
// additions in the same order as the owner of its chunk adds them in two
// rounds, so with an f32 wire the results are bitwise equal; with bf16 a
// member's own vector is rounded as its peers receive it, so every member
// gets the same result.
func (m *Mesh) allReduceOneRound(o *op, tag Tag, group []int, data []float32) error {
	T, r, n := len(group), o.rank, len(data)
	k0 := key{tag: tag, round: 0}
	o.expect(k0)
	v := m.vector(data)
	for k, p := range group {
		if k != r {
			if err := o.send(p, k0, v, nil); err != nil {
				return err
			}
		}
	}
	contrib := make([]*message, T)
	if err := o.recv(k0, func(k int, msg *message) error {
		contrib[k] = msg
		return checkVector(msg, n, group[k])
	}); err != nil {
		return err
	}
	acc := make([]float64, n)
	for k := range T {
		if k == r {
			for i, x := range data {
				acc[i] += float64(roundTrip(x, m.cfg.WireDType))
			}
			continue
		}
		accumulate(acc, contrib[k])
	}
	for i, x := range acc {
		data[i] = roundTrip(float32(x), m.cfg.WireDType)
	}
	return o.flush()
}

// AllGather gathers equal-sized chunks: out (len(group)*len(mine)) receives
// member k's mine at out[k*len(mine) : (k+1)*len(mine)] on every member. See
// AllGatherV.
func (m *Mesh) AllGather(ctx context.Context, tag Tag, group []int, mine, out []float32) error {
	n := len(mine)
	if len(out) != len(group)*n {
		return fmt.Errorf("all-gather %v: %w", tag, invalidf("len(out) = %d, want len(group)*len(mine) = %d", len(out), len(group)*n))
	}
	views := make([][]float32, len(group))
	for k := range views {
		views[k] = out[k*n : (k+1)*n]
	}
	return m.AllGatherV(ctx, tag, group, mine, views)
}

// AllGatherV gathers chunks of any sizes: out[k] receives member k's mine
// (len(out[k]) must be what member k sends; len(out[rank]) == len(mine)).
// With a bf16 wire the member's own chunk is rounded to bf16 too, so out is
// bitwise identical on every member. mine may alias out[rank].
func (m *Mesh) AllGatherV(ctx context.Context, tag Tag, group []int, mine []float32, out [][]float32) (err error) {
	o, err := m.begin(ctx, "all-gather", tag, group)
	if err != nil {
		return err
	}
	defer func() { err = o.finish(err) }()
	if len(out) != len(group) || len(out[o.rank]) != len(mine) {
		return invalidf("out needs one slice per member (%d, got %d) and out[rank] len(mine) = %d", len(group), len(out), len(mine))
	}
	if len(group) == 1 {
		copy(out[0], mine)
		return nil
	}
	k0 := key{tag: tag}
	o.expect(k0)
	v := m.vector(mine)
	quantize(out[o.rank], mine, m.cfg.WireDType)
	for k, p := range group {
		if k != o.rank {
			if err := o.send(p, k0, v, nil); err != nil {
				return err
			}
		}
	}
	if err := o.recv(k0, func(k int, msg *message) error {
		if err := checkVector(msg, len(out[k]), group[k]); err != nil {
			return err
		}
		decode(out[k], msg.data, msg.dtype)
		return nil
	}); err != nil {
		return err
	}
	return o.flush()
}

// AllToAll exchanges payloads among group: send[p] goes to member p (keys
// must be members). Every member sends exactly one message to every other
// member, an empty one (no tensor bytes, a few header bytes) where it has
// nothing, so each member knows whom to expect without further agreement.
// The result holds the non-empty payloads received, keyed by sender;
// send[self] is returned as is (sharing memory) and never touches the
// network. A received payload with no rows has Cols 0.
func (m *Mesh) AllToAll(ctx context.Context, tag Tag, group []int, send map[int]Payload) (got map[int]Payload, err error) {
	o, err := m.begin(ctx, "all-to-all", tag, group)
	if err != nil {
		return nil, err
	}
	defer func() { err = o.finish(err) }()
	for p, pl := range send {
		if _, ok := o.ranks[p]; !ok {
			return nil, invalidf("send has a payload for worker %d, not a member of %v", p, group)
		}
		if pl.Rows < 0 || pl.Cols < 0 || len(pl.Data) != pl.Rows*pl.Cols {
			return nil, invalidf("payload for worker %d: %d values for %d x %d", p, len(pl.Data), pl.Rows, pl.Cols)
		}
	}
	got = make(map[int]Payload)
	if pl := send[m.self]; !pl.empty() {
		got[m.self] = pl
	}
	if len(group) == 1 {
		return got, nil
	}
	k0 := key{tag: tag}
	o.expect(k0)
	for k, p := range group {
		if k == o.rank {
			continue
		}
		pl := send[p]
		var t *tensorData
		if pl.Rows > 0 {
			t = &tensorData{dtype: m.cfg.WireDType, shape: []int64{int64(pl.Rows), int64(pl.Cols)}, raw: encode(pl.Data, m.cfg.WireDType)}
		}
		if err := o.send(p, k0, t, pl.Aux); err != nil {
			return nil, err
		}
	}
	if err := o.recv(k0, func(k int, msg *message) error {
		pl := Payload{Aux: msg.aux}
		if msg.tensor {
			if len(msg.shape) != 2 {
				return protocolf("worker %d sent a tensor of shape %v for (%v), want [rows, cols]", group[k], msg.shape, msg.key)
			}
			pl.Rows, pl.Cols = int(msg.shape[0]), int(msg.shape[1])
			pl.Data = make([]float32, pl.Rows*pl.Cols)
			decode(pl.Data, msg.data, msg.dtype)
		}
		if !pl.empty() {
			got[group[k]] = pl
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return got, o.flush()
}

// vector encodes a 1-D tensor in the wire dtype.
func (m *Mesh) vector(x []float32) *tensorData {
	return &tensorData{dtype: m.cfg.WireDType, shape: []int64{int64(len(x))}, raw: encode(x, m.cfg.WireDType)}
}

// checkVector verifies a received 1-D tensor of want elements.
func checkVector(msg *message, want, from int) error {
	if !msg.tensor || len(msg.shape) != 1 || msg.shape[0] != int64(want) {
		got := "no tensor"
		if msg.tensor {
			got = fmt.Sprintf("shape %v", msg.shape)
		}
		return protocolf("worker %d sent %s for (%v), want %d elements", from, got, msg.key, want)
	}
	return nil
}

// accumulate adds a received vector into acc.
func accumulate(acc []float64, msg *message) {
	switch msg.dtype {
	case BF16:
		for i := range acc {
			acc[i] += float64(fromBF16(uint16(msg.data[2*i]) | uint16(msg.data[2*i+1])<<8))
		}
	default:
		x := make([]float32, len(acc))
		decode(x, msg.data, msg.dtype)
		for i, v := range x {
			acc[i] += float64(v)
		}
	}
}

// op is the bookkeeping of one running operation.
type op struct {
	m      *Mesh
	name   string
	tag    Tag
	ctx    context.Context
	cancel context.CancelFunc
	start  time.Time
	rank   int
	group  []int
	ranks  map[int]int // worker id -> rank
	sent   []sentMsg
	// pending holds the messages this operation will consume and has not
	// yet; on failure they are abandoned so the links stay in step.
	pending map[linkKey]struct{}
}

type sentMsg struct {
	l *link
	o *outMsg
}

type linkKey struct {
	peer int
	k    key
}

// begin validates the arguments and starts an operation.
func (m *Mesh) begin(ctx context.Context, name string, tag Tag, group []int) (*op, error) {
	o := &op{m: m, name: name, tag: tag, start: time.Now(), rank: -1, group: group, ranks: make(map[int]int, len(group))}
	wrap := func(err error) error { return fmt.Errorf("%s %v on worker %d: %w", name, tag, m.self, err) }
	if tag.Phase == moemeshv1.Phase_PHASE_UNSPECIFIED {
		return nil, wrap(invalidf("tag without a phase"))
	}
	for k, p := range group {
		if p < 0 || p >= len(m.links) {
			return nil, wrap(invalidf("group %v: worker %d outside [0, %d)", group, p, len(m.links)))
		}
		if _, dup := o.ranks[p]; dup {
			return nil, wrap(invalidf("group %v lists worker %d twice", group, p))
		}
		o.ranks[p] = k
		if p == m.self {
			o.rank = k
		} else if m.links[p] == nil {
			return nil, wrap(fmt.Errorf("%w: worker %d is absent from mesh epoch %d", ErrPeerLost, p, m.cfg.Epoch))
		}
	}
	if o.rank < 0 {
		return nil, wrap(invalidf("group %v does not include this worker (%d)", group, m.self))
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, wrap(ErrClosed)
	}
	o.ctx, o.cancel = ctx, func() {}
	if m.cfg.Timeout > 0 {
		o.ctx, o.cancel = context.WithTimeout(ctx, m.cfg.Timeout)
	}
	o.pending = make(map[linkKey]struct{})
	return o, nil
}

// expect records that one message keyed k will come from every peer.
func (o *op) expect(k key) {
	for k2, p := range o.group {
		if k2 != o.rank {
			o.pending[linkKey{p, k}] = struct{}{}
		}
	}
}

// send queues a message for peer p.
func (o *op) send(p int, k key, t *tensorData, aux []int32) error {
	l := o.m.links[p]
	msg := newOut(o.m.self, p, k, t, aux, o.m.cfg.MaxChunkBytes)
	if err := l.enqueue(o.ctx, msg); err != nil {
		return err
	}
	o.sent = append(o.sent, sentMsg{l, msg})
	return nil
}

// recv waits for the message keyed k from every peer, handing each to
// handle (with the sender's rank) in the caller's goroutine as it comes.
// It watches all peers at once, so a lost peer fails the operation at once
// whatever the order of arrivals.
func (o *op) recv(k key, handle func(rank int, msg *message) error) error {
	left := len(o.group) - 1
	got := make([]bool, len(o.group))
	for {
		wake := o.m.waitChan()
		for r, p := range o.group {
			if r == o.rank || got[r] {
				continue
			}
			msg, err := o.m.links[p].take(k)
			if err != nil {
				return err
			}
			if msg == nil {
				continue
			}
			got[r] = true
			left--
			delete(o.pending, linkKey{p, k})
			if err := handle(r, msg); err != nil {
				return err
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-wake:
		case <-o.ctx.Done():
			return ctxError(o.ctx)
		}
	}
}

// flush waits until every queued send has been written to its stream.
func (o *op) flush() error {
	for _, s := range o.sent {
		select {
		case err := <-s.o.done:
			if err != nil {
				return err
			}
			continue
		default:
		}
		select {
		case err := <-s.o.done:
			if err != nil {
				return err
			}
		case <-s.l.dead:
			select {
			case err := <-s.o.done:
				if err != nil {
					return err
				}
			default:
				return s.l.failure()
			}
		case <-o.ctx.Done():
			return ctxError(o.ctx)
		}
	}
	return nil
}

// finish ends the operation: on failure it abandons the messages not yet
// consumed; it records the time and wraps the error with the operation.
func (o *op) finish(err error) error {
	if err != nil {
		for lk := range o.pending {
			o.m.links[lk.peer].abandon(lk.k)
		}
	}
	o.cancel()
	o.m.stats.op(o.tag.Phase, time.Since(o.start))
	if err != nil {
		return fmt.Errorf("%s %v on worker %d: %w", o.name, o.tag, o.m.self, err)
	}
	return nil
}
