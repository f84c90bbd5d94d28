package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker/collective"
)

// baseKey says which epochs can share a base.
type baseKey struct {
	modelDir  string
	layout    sharding.Layout
	self      int
	meshEpoch uint64
}

// base is what the epochs of one layout, worker index and mesh generation
// share: the model (attention and vocabulary slices, KV cache, the union
// of their experts) and the mesh. Guarded by Worker.stepMu.
type base struct {
	key       baseKey
	layout    sharding.Layout
	self      int
	m         *model.Model
	ex        Exchange
	mesh      *collective.Mesh // traffic counters and lost peers, when the exchange is a mesh
	closeMesh func() error
	kvBlocks  int
	blockSize int
	kvBytes   int64
	users     [][]int // users[l][e]: live epochs hosting expert e of layer l
	epochs    int     // live epochs on this base
	loaders   int     // LoadShard calls reading its checkpoint without the step lock
	dropped   bool    // no longer listed in Worker.bases
}

// epoch is one live placement epoch: its placement and the model view that
// routes with it.
type epoch struct {
	n       uint64
	base    *base
	place   []*sharding.Placement // per layer
	proto   *pb.Placement
	m       *model.Model // base.m with this epoch's FFN
	moe     *meshMoE     // that FFN
	experts [][]int      // per layer: the experts this worker hosts in this epoch
}

// close releases the base's mesh and model once no epoch and no loader
// uses it.
func (b *base) release() error {
	if !b.dropped || b.epochs > 0 || b.loaders > 0 {
		return nil
	}
	var err error
	if b.closeMesh != nil {
		err = b.closeMesh()
		b.closeMesh = nil
	}
	if b.m != nil {
		b.m.Close()
		b.m = nil
	}
	return err
}

// loadPlan is what LoadShard decided to do, checked against the request.
type loadPlan struct {
	key      baseKey
	cfg      *model.Config
	layout   sharding.Layout
	self     int
	place    []*sharding.Placement
	experts  [][]int
	blocks   int
	bs       int
	kvBytes  int64
	minLive  uint64
	epochNum uint64
}

// plan validates req; every failure is a status error. model_dir is
// confined to Config.ModelRoots first (roots.go): p.key.modelDir is the
// directory to read.
func (w *Worker) plan(req *pb.LoadShardRequest) (*loadPlan, error) {
	lay := req.GetLayout()
	layout, err := sharding.NewLayout(int(lay.GetWorkers()), int(lay.GetTp()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "worker: layout: %v", err)
	}
	self := int(req.WorkerIndex)
	if self >= layout.Workers || len(req.PeerAddrs) != layout.Workers {
		return nil, status.Errorf(codes.InvalidArgument, "worker: index %d with %d peer addresses for %d workers", self, len(req.PeerAddrs), layout.Workers)
	}
	dir, err := w.confine(req.ModelDir)
	if err != nil {
		return nil, err
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "%v", err)
	}
	heads, err := sharding.SplitHeads(cfg.NumAttentionHeads, cfg.NumKeyValueHeads, layout.TP)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	pl, err := PlacementFromProto(req.Placement, layout.Workers, cfg.NumExperts, cfg.NumHiddenLayers)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	p := &loadPlan{
		key: baseKey{modelDir: dir, layout: layout, self: self, meshEpoch: req.MeshEpoch},
		cfg: cfg, layout: layout, self: self, place: pl, minLive: req.MinLiveEpoch, epochNum: pl[0].Epoch,
		experts: make([][]int, cfg.NumHiddenLayers),
	}
	for l := range p.experts {
		if cfg.IsMoELayer(l) {
			p.experts[l] = slices.Clone(pl[l].Slots[self])
		}
	}
	if p.minLive > p.epochNum {
		return nil, status.Errorf(codes.InvalidArgument, "worker: min_live_epoch %d is after the placement epoch %d being loaded", p.minLive, p.epochNum)
	}
	blocks, bs := int64(req.KvBlocks), int64(req.KvBlockSize)
	if blocks <= 0 || bs <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "worker: kv_blocks (%d) and kv_block_size (%d) must be positive", blocks, bs)
	}
	// Sizes are checked before anything is allocated: a request that does
	// not fit must fail, not crash the process.
	maxTokens := int64(cfg.ContextLength()) * int64(w.cfg.MaxKVSequences)
	if blocks > maxTokens/bs {
		return nil, status.Errorf(codes.ResourceExhausted, "worker: kv_blocks %d × kv_block_size %d = %d tokens exceeds %d (%d sequences of the model's context, %d positions)",
			blocks, bs, blocks*bs, maxTokens, w.cfg.MaxKVSequences, cfg.ContextLength())
	}
	// The KV cache is float32 K and V for the rank's KV heads in every layer.
	p.kvBytes = 2 * int64(cfg.NumHiddenLayers) * blocks * bs * int64(heads[layout.Rank(self)].NumKV()*cfg.HeadDim) * 4
	if p.kvBytes > w.cfg.MaxKVBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "worker: a KV cache of %d blocks × %d tokens takes %d bytes, more than the %d this worker may allocate",
			blocks, bs, p.kvBytes, w.cfg.MaxKVBytes)
	}
	p.blocks, p.bs = int(blocks), int(bs)
	return p, nil
}

// LoadShard implements WorkerService. A placement epoch newer than every
// loaded one is loaded while the live epochs keep serving: on the base of
// the same layout, worker index and mesh generation only the experts it
// does not host yet are read; otherwise a new base (model, KV cache, mesh)
// is made. Re-sending the newest epoch with the same placement loads
// nothing (it only applies min_live_epoch); any other epoch not newer than
// the newest is FAILED_PRECONDITION. Epochs below min_live_epoch are then
// dropped, and with them everything only they used.
func (w *Worker) LoadShard(ctx context.Context, req *pb.LoadShardRequest) (*pb.LoadShardResponse, error) {
	if err := w.accepting(); err != nil {
		return nil, err
	}
	w.loadMu.Lock()
	defer w.loadMu.Unlock()
	w.loading.Add(1)
	defer w.loading.Add(-1)
	ctx, stop := w.underLife(ctx)
	defer stop()
	start := time.Now()
	p, err := w.plan(req)
	if err != nil {
		return nil, err
	}

	w.stepMu.Lock()
	gen := w.gen
	if w.loadedAny && p.epochNum <= w.newest {
		e := w.epochs[p.epochNum]
		if p.epochNum < w.newest || e == nil || e.base.key != p.key || !proto.Equal(e.proto, req.Placement) {
			w.stepMu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "worker: placement epoch %d is not newer than the newest loaded (%d)", p.epochNum, w.newest)
		}
		// The newest epoch again: only free.
		err := w.freeBelow(p.minLive)
		resp := w.response(e, start)
		w.stepMu.Unlock()
		w.refreshHealth()
		return resp, err
	}
	for _, b := range w.bases {
		if b.key.modelDir != p.key.modelDir {
			w.stepMu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "worker: model %s is resident; %s is a different model", b.key.modelDir, p.key.modelDir)
		}
	}
	b := w.findBase(p.key)
	if b == nil {
		for _, o := range w.bases {
			if o.key.meshEpoch == p.key.meshEpoch {
				w.stepMu.Unlock()
				return nil, status.Errorf(codes.FailedPrecondition, "worker: mesh epoch %d is in use with another layout or worker index; a new layout needs a new mesh_epoch", p.key.meshEpoch)
			}
		}
	} else {
		if b.kvBlocks != p.blocks || b.blockSize != p.bs {
			w.stepMu.Unlock()
			return nil, status.Errorf(codes.FailedPrecondition, "worker: mesh epoch %d has a KV cache of %d blocks of %d; the request asks for %d of %d", p.key.meshEpoch, b.kvBlocks, b.blockSize, p.blocks, p.bs)
		}
		b.loaders++
	}
	missing := make([][]int, len(p.experts))
	if b != nil {
		for l, ids := range p.experts {
			for _, e := range ids {
				if b.users[l][e] == 0 {
					missing[l] = append(missing[l], e)
				}
			}
		}
	}
	w.stepMu.Unlock()

	// Read the weights without the step lock: live epochs keep serving.
	var loaded [][]*model.Expert
	fresh := b == nil
	if fresh {
		b, err = w.newBase(ctx, req, p)
	} else {
		loaded, err = b.m.LoadExperts(ctx, missing, true)
	}
	if w.afterRead != nil {
		w.afterRead()
	}

	w.stepMu.Lock()
	defer w.refreshHealth()
	defer w.stepMu.Unlock()
	if !fresh {
		b.loaders--
		defer b.release() // a Fence meanwhile may have dropped it
	}
	if err == nil && w.gen != gen {
		err = fmt.Errorf("%w: while loading epoch %d", ErrFenced, p.epochNum)
	}
	if err == nil {
		err = w.accepting()
	}
	if err != nil {
		if fresh && b != nil {
			b.dropped = true
			_ = b.release()
		}
		if !fresh {
			for _, es := range loaded {
				for _, e := range es {
					if e != nil {
						b.freeExpert(e)
					}
				}
			}
		}
		return nil, loadError(ctx, err)
	}
	if fresh {
		w.bases = append(w.bases, b)
	} else {
		b.m.AddExperts(loaded)
	}
	e := &epoch{n: p.epochNum, base: b, place: p.place, proto: proto.Clone(req.Placement).(*pb.Placement), experts: p.experts}
	all := make([]int, b.layout.Workers)
	for i := range all {
		all[i] = i
	}
	e.moe = newMeshMoE(b.m, b.ex, b.self, b.layout, p.place, all)
	e.moe.byExpert = w.cfg.LayoutInvariantMoE
	e.m = b.m.WithFFN(e.moe)
	for l, ids := range p.experts {
		for _, x := range ids {
			b.users[l][x]++
		}
	}
	b.epochs++
	w.epochs[e.n] = e
	w.loadedAny, w.newest = true, e.n
	freeErr := w.freeBelow(p.minLive)
	resp := w.response(e, start)
	w.cfg.Log.Info("shard loaded", "worker", b.self, "placement_epoch", e.n, "mesh_epoch", b.key.meshEpoch, "new_base", fresh,
		"experts_read", countExperts(p.experts, missing, fresh), "resident_bytes", resp.ResidentWeightBytes, "took", time.Since(start))
	return resp, freeErr
}

func countExperts(all, missing [][]int, fresh bool) int {
	if !fresh {
		all = missing
	}
	n := 0
	for _, ids := range all {
		n += len(ids)
	}
	return n
}

// newBase opens the model for p and connects the mesh.
func (w *Worker) newBase(ctx context.Context, req *pb.LoadShardRequest, p *loadPlan) (*base, error) {
	be, err := w.cfg.Backend()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	shard := model.Shard{TPRank: p.layout.Rank(p.self), TPSize: p.layout.TP, Experts: p.experts}
	m, err := model.Open(p.key.modelDir, be, model.OpenOptions{Shard: shard, BlockSize: p.bs, ContextTokens: p.blocks * p.bs, CloseBackend: true, Prefault: true})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	b := &base{key: p.key, layout: p.layout, self: p.self, m: m, kvBlocks: p.blocks, blockSize: p.bs, kvBytes: p.kvBytes,
		users: make([][]int, p.cfg.NumHiddenLayers)}
	for l := range b.users {
		b.users[l] = make([]int, p.cfg.NumExperts)
	}
	ex, closeMesh, err := w.cfg.Mesh(ctx, p.self, req.PeerAddrs, req.WireDtype, req.MeshEpoch)
	if err != nil {
		m.Close()
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "worker: connecting to peers: %v", err)
	}
	b.mesh, _ = ex.(*collective.Mesh)
	if w.cfg.WrapExchange != nil {
		ex = w.cfg.WrapExchange(p.self, ex)
	}
	b.ex, b.closeMesh = ex, closeMesh
	m.Reducer = &meshReducer{ex: ex, group: p.layout.GroupWorkers(p.layout.Group(p.self)), b: be, vocab: vocabRanges(p.cfg, p.layout.TP)}
	return b, nil
}

// loadError maps a load failure to a gRPC status.
func loadError(ctx context.Context, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return stepError(ctx, err)
}

func (w *Worker) findBase(k baseKey) *base {
	for _, b := range w.bases {
		if b.key == k {
			return b
		}
	}
	return nil
}

// freeExpert frees one expert that was read but never installed.
func (b *base) freeExpert(e *model.Expert) {
	for _, t := range []*model.Tensor{&e.Gate, &e.Up, &e.Down} {
		b.m.B.Free(t.Buf)
	}
}

// freeBelow drops the epochs below min and everything only they used:
// experts no live epoch hosts, and bases no live epoch uses. The caller
// holds stepMu.
func (w *Worker) freeBelow(min uint64) error {
	var errs []error
	for n, e := range w.epochs {
		if n >= min {
			continue
		}
		if err := w.dropEpoch(e); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return status.Errorf(codes.Internal, "worker: freeing epochs below %d: %v", min, errs)
	}
	return nil
}

// dropEpoch removes e; the caller holds stepMu.
func (w *Worker) dropEpoch(e *epoch) error {
	delete(w.epochs, e.n)
	b := e.base
	drop := make([][]int, len(e.experts))
	for l, ids := range e.experts {
		for _, x := range ids {
			if b.users[l][x]--; b.users[l][x] == 0 {
				drop[l] = append(drop[l], x)
			}
		}
	}
	b.epochs--
	if b.epochs > 0 {
		b.m.DropExperts(drop)
		return nil
	}
	w.bases = slices.DeleteFunc(w.bases, func(o *base) bool { return o == b })
	b.dropped = true
	return b.release()
}

// dropAll drops every epoch; the caller holds stepMu.
func (w *Worker) dropAll() error {
	var errs []error
	for _, e := range w.epochs {
		if err := w.dropEpoch(e); err != nil {
			errs = append(errs, err)
		}
	}
	w.gen++
	clear(w.samplers)
	if len(errs) > 0 {
		return fmt.Errorf("worker: dropping shards: %v", errs)
	}
	return nil
}

// response describes the worker after loading e; the caller holds stepMu.
func (w *Worker) response(e *epoch, start time.Time) *pb.LoadShardResponse {
	resident, slots := w.residentLocked()
	return &pb.LoadShardResponse{
		ResidentWeightBytes: uint64(resident), KvBlocks: uint32(e.base.kvBlocks), KvCacheBytes: uint64(e.base.kvBytes),
		ExpertsLoaded: uint32(slots), PlacementEpoch: w.newest, LoadMs: time.Since(start).Milliseconds(),
	}
}

// residentLocked sums the weight bytes and expert slots of every base.
func (w *Worker) residentLocked() (bytes int64, slots int) {
	for _, b := range w.bases {
		bytes += b.m.W.ResidentBytes()
		for _, us := range b.users {
			for _, u := range us {
				if u > 0 {
					slots++
				}
			}
		}
	}
	return bytes, slots
}
