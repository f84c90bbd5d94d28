package coordinator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/sharding"
)

// ErrStep reports a step that failed on a worker.
var ErrStep = errors.New("coordinator: step failed")

// Driver sends steps to a fixed set of workers. It implements
// model.Stepper (and the scheduler's SamplingStepper), so the scheduler's
// one-shot Generate runs unchanged on a cluster.
//
// A Driver is not safe for concurrent use: steps are issued one at a time.
type Driver struct {
	conns   []*grpc.ClientConn
	clients []pb.WorkerServiceClient
	layout  sharding.Layout
	vocab   int
	step    uint64
	epoch   uint64

	// StepTimeout bounds every step RPC (default 60 s).
	StepTimeout time.Duration
	// LastStats holds each worker's statistics of the last step.
	LastStats []*pb.StepStats

	released []uint64 // sent with the next step
}

var _ model.Stepper = (*Driver)(nil)

// Dial connects to the workers at addrs (index = worker id). opts follow
// the defaults (plaintext, 1 GiB messages), so transport credentials among
// them replace plaintext: with the cluster PKI,
// pki.Source.DialOption(pki.RoleWorker) presents the coordinator's
// certificate and admits only servers with a worker certificate.
func Dial(addrs []string, opts ...grpc.DialOption) (*Driver, error) {
	d := &Driver{StepTimeout: 60 * time.Second}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30))}, opts...)
	for _, a := range addrs {
		c, err := grpc.NewClient(a, dial...)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("coordinator: dialing worker %s: %w", a, err)
		}
		d.conns = append(d.conns, c)
		d.clients = append(d.clients, pb.NewWorkerServiceClient(c))
	}
	return d, nil
}

// Close closes the connections (the workers keep running).
func (d *Driver) Close() error {
	var errs []error
	for _, c := range d.conns {
		errs = append(errs, c.Close())
	}
	d.conns, d.clients = nil, nil
	return errors.Join(errs...)
}

// LoadSpec describes the shards to load.
type LoadSpec struct {
	ModelDir  string
	Layout    sharding.Layout
	Placement *sharding.Placement // the placement of every layer
	// LayerPlacements, when set, gives each layer its own placement
	// (len Layers, one epoch); Placement is then ignored.
	LayerPlacements []*sharding.Placement
	Layers          int
	Vocab           int
	PeerAddrs       []string
	WireDType       pb.DType
	KVBlocks        int
	BlockSize       int
	Timeout         time.Duration // default 5 minutes
	MeshEpoch       uint64
}

// Load asks every worker to load its shard and connect to its peers, and
// returns each worker's answer.
func (d *Driver) Load(ctx context.Context, s LoadSpec) ([]*pb.LoadShardResponse, error) {
	if len(s.PeerAddrs) != len(d.clients) || s.Layout.Workers != len(d.clients) {
		return nil, fmt.Errorf("coordinator: %d peer addresses and layout of %d workers for %d connections", len(s.PeerAddrs), s.Layout.Workers, len(d.clients))
	}
	if s.Timeout <= 0 {
		s.Timeout = 5 * time.Minute
	}
	var pl *pb.Placement
	if s.LayerPlacements != nil {
		if len(s.LayerPlacements) != s.Layers {
			return nil, fmt.Errorf("coordinator: %d layer placements for %d layers", len(s.LayerPlacements), s.Layers)
		}
		pl = &pb.Placement{Epoch: s.LayerPlacements[0].Epoch}
		for l, p := range s.LayerPlacements {
			pl.Layers = append(pl.Layers, LayerProto(p, l))
		}
	} else {
		pl = PlacementProto(s.Placement, s.Layers)
	}
	d.layout, d.vocab, d.epoch = s.Layout, s.Vocab, pl.Epoch
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	out := make([]*pb.LoadShardResponse, len(d.clients))
	err := d.all(ctx, func(ctx context.Context, w int) error {
		r, err := d.clients[w].LoadShard(ctx, &pb.LoadShardRequest{
			ModelDir: s.ModelDir, WorkerIndex: uint32(w),
			Layout:    &pb.Layout{Workers: uint32(s.Layout.Workers), Tp: uint32(s.Layout.TP)},
			Placement: pl, PeerAddrs: s.PeerAddrs, WireDtype: s.WireDType,
			KvBlocks: uint32(s.KVBlocks), KvBlockSize: uint32(s.BlockSize), MeshEpoch: s.MeshEpoch,
		})
		out[w] = r
		return err
	})
	return out, err
}

// PlacementProto writes p as the placement of every one of layers layers.
func PlacementProto(p *sharding.Placement, layers int) *pb.Placement {
	out := &pb.Placement{Epoch: p.Epoch}
	for l := range layers {
		out.Layers = append(out.Layers, LayerProto(p, l))
	}
	return out
}

// LayerProto is the wire form of layer's placement p.
func LayerProto(p *sharding.Placement, layer int) *pb.LayerPlacement {
	lp := &pb.LayerPlacement{Layer: uint32(layer)}
	for _, slots := range p.Slots {
		we := &pb.WorkerExperts{}
		for _, e := range slots {
			we.Experts = append(we.Experts, uint32(e))
		}
		lp.Workers = append(lp.Workers, we)
	}
	return lp
}

// all runs f for every worker concurrently; the first error cancels the
// others. It returns a *WorkerError naming the worker at the root of the
// failure, not one cancelled because of it.
func (d *Driver) all(ctx context.Context, f func(ctx context.Context, w int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(d.clients))
	var wg sync.WaitGroup
	for w := range d.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx, w); err != nil {
				errs[w] = err
				// A worker's cancellation is an effect (its step was cut
				// by a peer's failure): let the others report the cause.
				if status.Code(err) != codes.Canceled {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	// Report the root cause, not the cancellations it caused, in this
	// order: a peer the workers report lost, a worker whose own connection
	// failed, any other failure, then a cancellation.
	addr := func(w int) string {
		if w < len(d.conns) && d.conns[w] != nil {
			return d.conns[w].Target()
		}
		return "?"
	}
	blame := func(w, reporter int, unreachable bool) error {
		return &WorkerError{Worker: w, Addr: addr(w), Unreachable: unreachable, Reporter: reporter, Err: errs[reporter]}
	}
	// A peer reported lost: the one whose own connection failed too, else
	// the one most workers name (a loss can cascade into others).
	votes := make([]int, len(errs))
	reporter := make([]int, len(errs))
	best := -1
	for w, err := range errs {
		if c := status.Code(err); c == codes.Unavailable || c == codes.Aborted {
			if p := lostPeer(err, len(errs)); p >= 0 {
				if votes[p] == 0 {
					reporter[p] = w
				}
				votes[p]++
				if best < 0 || votes[p] > votes[best] {
					best = p
				}
			}
		}
	}
	for p, v := range votes {
		if v > 0 && status.Code(errs[p]) == codes.Unavailable && lostPeer(errs[p], len(errs)) < 0 {
			return blame(p, p, true)
		}
	}
	if best >= 0 {
		return blame(best, reporter[best], true)
	}
	for w, err := range errs {
		if status.Code(err) == codes.Unavailable {
			return blame(w, w, true)
		}
	}
	first := -1
	for w, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
			return blame(w, w, false)
		}
		if first < 0 {
			first = w
		}
	}
	if first >= 0 {
		return blame(first, first, false)
	}
	return nil
}

// Group returns the attention group that serves sequence id on the
// Forward and ForwardSample path: id mod DP. A caller of those keeps one
// KV block pool per group and takes sequence id's blocks from group
// Group(id) (scheduler.DriverPools). Step leaves the choice to its caller
// (the scheduler picks groups by load).
func (d *Driver) Group(id uint64) int { return int(id % uint64(d.layout.DP)) }

// Release marks sequences as ended: the workers drop their sampler state
// with the next step (scheduler.SamplingStepper).
func (d *Driver) Release(ids []uint64) { d.released = append(d.released, ids...) }

// ForwardSample runs one step like Forward, but rank 0 of each group
// samples its sequences with params and only token ids come back
// (scheduler.SamplingStepper).
func (d *Driver) ForwardSample(ctx context.Context, seqs []model.SeqInput, params []sampling.Params) ([]int32, error) {
	if len(params) != len(seqs) {
		return nil, fmt.Errorf("coordinator: %d sampling parameter sets for %d sequences", len(params), len(seqs))
	}
	req := d.request(seqs, false)
	for i, p := range params {
		req.Seqs[i].Sampling = &pb.Sampling{
			Temperature: p.Temperature, TopK: int32(p.TopK), TopP: p.TopP, MinP: p.MinP,
			PresencePenalty: p.PresencePenalty, RepetitionPenalty: p.RepetitionPenalty, Seed: p.Seed,
		}
	}
	byID, err := d.run(ctx, req)
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(seqs))
	for i, s := range seqs {
		sr, ok := byID[s.ID]
		if !ok || sr.Token < 0 {
			return nil, fmt.Errorf("%w: step %d: no token for sequence %d from group %d", ErrStep, d.step, s.ID, d.Group(s.ID))
		}
		out[i] = sr.Token
	}
	return out, nil
}

// request builds the next step's description.
func (d *Driver) request(seqs []model.SeqInput, logits bool) *pb.StepRequest {
	d.step++
	req := &pb.StepRequest{Step: d.step, PlacementEpoch: d.epoch, ReturnLogits: logits, FinishedSeqIds: d.released}
	d.released = nil
	for _, s := range seqs {
		req.Seqs = append(req.Seqs, &pb.SeqStep{
			SeqId: s.ID, Tokens: s.Tokens, StartPos: int32(s.StartPos), BlockTable: s.Blocks,
			AttnGroup: uint32(d.Group(s.ID)), Sample: true, AllLogits: s.AllLogits,
		})
	}
	return req
}

// Forward implements model.Stepper: one step on every worker, sequence
// SeqInput.ID served by attention group ID mod D.
func (d *Driver) Forward(ctx context.Context, seqs []model.SeqInput) ([][]float32, error) {
	byID, err := d.run(ctx, d.request(seqs, true))
	if err != nil {
		return nil, err
	}
	var rows [][]float32
	for _, s := range seqs {
		sr, ok := byID[s.ID]
		if !ok {
			return nil, fmt.Errorf("%w: step %d: no result for sequence %d from group %d", ErrStep, d.step, s.ID, d.Group(s.ID))
		}
		want := 1
		if s.AllLogits {
			want = len(s.Tokens)
		}
		data := sr.GetLogits().GetData()
		if sr.GetLogits().GetDtype() != pb.DType_DTYPE_F32 || len(data) != want*d.vocab*4 {
			return nil, fmt.Errorf("%w: step %d: sequence %d: logits of %d bytes, want %d F32 rows of %d", ErrStep, d.step, s.ID, len(data), want, d.vocab)
		}
		flat := make([]float32, want*d.vocab)
		for i := range flat {
			flat[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[i*4:]))
		}
		for i := range want {
			rows = append(rows, flat[i*d.vocab:(i+1)*d.vocab:(i+1)*d.vocab])
		}
	}
	return rows, nil
}

// run sends req to every worker and returns the results of rank 0 of each
// group by sequence id.
func (d *Driver) run(ctx context.Context, req *pb.StepRequest) (map[uint64]*pb.SeqResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d.StepTimeout)
	defer cancel()
	req.DeadlineUnixMs = time.Now().Add(d.StepTimeout).UnixMilli()
	resp := make([]*pb.StepResponse, len(d.clients))
	err := d.all(ctx, func(ctx context.Context, w int) error {
		r, err := d.clients[w].Step(ctx, req)
		resp[w] = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: step %d: %w", ErrStep, d.step, err)
	}
	d.LastStats = d.LastStats[:0]
	byID := map[uint64]*pb.SeqResult{}
	for w, r := range resp {
		d.LastStats = append(d.LastStats, r.GetStats())
		if d.layout.Rank(w) != 0 {
			continue
		}
		for _, sr := range r.GetResults() {
			byID[sr.SeqId] = sr
		}
	}

	return byID, nil
}
