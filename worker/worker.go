package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker/collective"
)

// Sentinel errors of the worker.
var (
	// ErrProtocol: a peer sent data that does not fit the step.
	ErrProtocol = errors.New("worker: protocol violation")
	// ErrNotLoaded: a step arrived before LoadShard.
	ErrNotLoaded = errors.New("worker: no shard loaded")
	// ErrBadRequest: a malformed request.
	ErrBadRequest = errors.New("worker: bad request")
)

// MeshFactory connects a worker to its peers. It is called by LoadShard.
type MeshFactory func(ctx context.Context, self int, addrs []string, wire pb.DType, epoch uint64) (Exchange, func() error, error)

// Config configures a Worker.
type Config struct {
	// Backend makes the compute backend (default: the CPU backend).
	Backend func() (kernels.Backend, error)
	// Mesh connects to peers (Serve supplies one).
	Mesh MeshFactory
	Log  *slog.Logger
	// WrapExchange, when set, wraps the mesh the worker uses (tests inject
	// faults with it).
	WrapExchange func(self int, ex Exchange) Exchange
}

// Worker implements the WorkerService.
type Worker struct {
	pb.UnimplementedWorkerServiceServer
	cfg Config

	mu        sync.Mutex // one LoadShard or Step at a time
	m         *model.Model
	ex        Exchange
	closeMesh func() error
	self      int
	layout    sharding.Layout
	place     []*sharding.Placement // per layer
	step      uint64
	resident  int64
	mesh      *collective.Mesh // traffic counters, when the exchange is a mesh
	samplers  map[uint64]*seqSampler
	state     pb.WorkerState
}

var _ pb.WorkerServiceServer = (*Worker)(nil)

// New returns an empty worker.
func New(cfg Config) *Worker {
	if cfg.Backend == nil {
		cfg.Backend = func() (kernels.Backend, error) { return kernels.NewCPU(), nil }
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Worker{cfg: cfg, state: pb.WorkerState_WORKER_STATE_EMPTY, samplers: map[uint64]*seqSampler{}}
}

// vocabRanges lists every rank's vocabulary rows.
func vocabRanges(cfg *model.Config, tp int) []model.HeadRange {
	out := make([]model.HeadRange, tp)
	for r := range out {
		out[r] = model.Shard{TPRank: r, TPSize: tp}.VocabRange(cfg)
	}
	return out
}

// seqSampler is a sequence's sampling state on every rank of its group:
// the seeded sampler and the history its penalties read. With
// SeqStep.prompt_len > 0, positions below it are the prompt and the others
// generated tokens, so a sequence resubmitted from prompt + generated as
// one prefill samples as the uninterrupted one; with 0, tokens fed before
// the first sample are the prompt and every later fed token is the one
// sampled in the step before.
type seqSampler struct {
	s          *sampling.Sampler
	prompt     []int
	generated  []int
	hasSampled bool
}

// feed appends tokens fed at positions [start, start+len(tokens)).
func (st *seqSampler) feed(tokens []int32, start, promptLen int) {
	for j, t := range tokens {
		gen := st.hasSampled
		if promptLen > 0 {
			gen = start+j >= promptLen
		}
		if gen {
			st.generated = append(st.generated, int(t))
		} else {
			st.prompt = append(st.prompt, int(t))
		}
	}
}

// samplingParams converts the wire form; zero top_p and repetition_penalty
// mean "off" there.
func samplingParams(p *pb.Sampling) (sampling.Params, error) {
	if p == nil {
		return sampling.Greedy(), nil
	}
	sp := sampling.Params{
		Temperature: p.Temperature, TopK: int(p.TopK), TopP: p.TopP, MinP: p.MinP,
		PresencePenalty: p.PresencePenalty, RepetitionPenalty: p.RepetitionPenalty, Seed: p.Seed,
	}
	if sp.TopP == 0 {
		sp.TopP = 1
	}
	if sp.RepetitionPenalty == 0 {
		sp.RepetitionPenalty = 1
	}
	return sp, sp.Validate()
}

// placementFromProto checks and converts the request's placement into one
// placement per layer: the request lists either one layer placement, used
// by every layer, or one for each layer (each layer index once).
func placementFromProto(p *pb.Placement, workers, experts, layers int) ([]*sharding.Placement, error) {
	if p == nil || len(p.Layers) == 0 {
		return nil, fmt.Errorf("%w: no placement", ErrBadRequest)
	}
	out := make([]*sharding.Placement, layers)
	if len(p.Layers) == 1 {
		pl, err := layerPlacement(p.Layers[0], p.Epoch, workers, experts)
		if err != nil {
			return nil, err
		}
		for l := range out {
			out[l] = pl
		}
		return out, nil
	}
	if len(p.Layers) != layers {
		return nil, fmt.Errorf("%w: placement for %d layers, the model has %d (send one for all, or one per layer)", ErrBadRequest, len(p.Layers), layers)
	}
	for _, lp := range p.Layers {
		l := int(lp.Layer)
		if l >= layers || out[l] != nil {
			return nil, fmt.Errorf("%w: placement layer %d is out of range or listed twice", ErrBadRequest, lp.Layer)
		}
		pl, err := layerPlacement(lp, p.Epoch, workers, experts)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		out[l] = pl
	}
	return out, nil
}

func layerPlacement(lp *pb.LayerPlacement, epoch uint64, workers, experts int) (*sharding.Placement, error) {
	if len(lp.Workers) != workers {
		return nil, fmt.Errorf("%w: placement lists %d workers, layout has %d", ErrBadRequest, len(lp.Workers), workers)
	}
	pl := &sharding.Placement{Epoch: epoch, Workers: workers, Experts: experts, Slots: make([][]int, workers), Owners: make([][]int, experts)}
	for w, we := range lp.Workers {
		for _, e := range we.Experts {
			if int(e) >= experts {
				return nil, fmt.Errorf("%w: placement names expert %d, the model has %d", ErrBadRequest, e, experts)
			}
			pl.Slots[w] = append(pl.Slots[w], int(e))
			pl.Owners[e] = append(pl.Owners[e], w)
		}
	}
	if err := pl.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return pl, nil
}

// LoadShard implements WorkerService.
func (w *Worker) LoadShard(ctx context.Context, req *pb.LoadShardRequest) (*pb.LoadShardResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := time.Now()
	if w.m != nil {
		return nil, status.Error(codes.FailedPrecondition, "worker: a shard is already loaded; start a new worker to load another")
	}
	lay := req.GetLayout()
	layout, err := sharding.NewLayout(int(lay.GetWorkers()), int(lay.GetTp()))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "worker: layout: %v", err)
	}
	self := int(req.WorkerIndex)
	if self >= layout.Workers || len(req.PeerAddrs) != layout.Workers {
		return nil, status.Errorf(codes.InvalidArgument, "worker: index %d with %d peer addresses for %d workers", self, len(req.PeerAddrs), layout.Workers)
	}
	cfg, err := model.LoadConfig(req.ModelDir)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "%v", err)
	}
	if _, err := sharding.SplitHeads(cfg.NumAttentionHeads, cfg.NumKeyValueHeads, layout.TP); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	pl, err := placementFromProto(req.Placement, layout.Workers, cfg.NumExperts, cfg.NumHiddenLayers)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	experts := make([][]int, cfg.NumHiddenLayers)
	slots := 0
	for l := range experts {
		experts[l] = pl[l].Slots[self]
		slots += len(experts[l])
	}
	b, err := w.cfg.Backend()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	blocks, bs := int(req.KvBlocks), int(req.KvBlockSize)
	if blocks <= 0 || bs <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "worker: kv_blocks (%d) and kv_block_size (%d) must be positive", blocks, bs)
	}
	shard := model.Shard{TPRank: layout.Rank(self), TPSize: layout.TP, Experts: experts}
	m, err := model.Open(req.ModelDir, b, model.OpenOptions{Shard: shard, BlockSize: bs, ContextTokens: blocks * bs, CloseBackend: true, Prefault: true})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	ex, closeMesh, err := w.cfg.Mesh(ctx, self, req.PeerAddrs, req.WireDtype, req.MeshEpoch)
	if err != nil {
		m.Close()
		return nil, status.Errorf(codes.Unavailable, "worker: connecting to peers: %v", err)
	}
	w.mesh, _ = ex.(*collective.Mesh)
	if w.cfg.WrapExchange != nil {
		ex = w.cfg.WrapExchange(self, ex)
	}
	w.m, w.ex, w.closeMesh = m, ex, closeMesh
	w.self, w.layout, w.place = self, layout, pl
	all := make([]int, layout.Workers)
	for i := range all {
		all[i] = i
	}
	m.Reducer = &meshReducer{ex: ex, group: layout.GroupWorkers(layout.Group(self)), b: b, vocab: vocabRanges(cfg, layout.TP)}
	m.FFN = &meshMoE{m: m, ex: ex, self: self, layout: layout, place: pl, all: all}
	w.resident = m.W.ResidentBytes()
	w.state = pb.WorkerState_WORKER_STATE_SERVING
	w.cfg.Log.Info("shard loaded", "worker", self, "group", layout.Group(self), "rank", layout.Rank(self),
		"expert_slots", slots, "resident_bytes", w.resident, "took", time.Since(start))
	return &pb.LoadShardResponse{
		ResidentWeightBytes: uint64(w.resident), KvBlocks: uint32(blocks),
		KvCacheBytes:   uint64(2 * cfg.NumHiddenLayers * blocks * bs * m.KV.Width * 4),
		ExpertsLoaded:  uint32(slots),
		PlacementEpoch: pl[0].Epoch, LoadMs: time.Since(start).Milliseconds(),
	}, nil
}

// Step implements WorkerService.
func (w *Worker) Step(ctx context.Context, req *pb.StepRequest) (*pb.StepResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return nil, status.Error(codes.FailedPrecondition, ErrNotLoaded.Error())
	}
	if req.Step <= w.step {
		return nil, status.Errorf(codes.InvalidArgument, "worker: step %d is not after the last step %d", req.Step, w.step)
	}
	if req.PlacementEpoch != w.place[0].Epoch {
		return nil, status.Errorf(codes.FailedPrecondition, "worker: placement epoch %d not loaded (have %d)", req.PlacementEpoch, w.place[0].Epoch)
	}
	if req.DeadlineUnixMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.UnixMilli(req.DeadlineUnixMs))
		defer cancel()
	}
	start := time.Now()
	w.step = req.Step
	group := w.layout.Group(w.self)
	var in []model.SeqInput
	var ids []uint64
	seen := map[uint64]bool{}
	for _, s := range req.Seqs {
		if seen[s.SeqId] {
			return nil, status.Errorf(codes.InvalidArgument, "worker: sequence %d appears twice in step %d", s.SeqId, req.Step)
		}
		seen[s.SeqId] = true
		if int(s.AttnGroup) >= w.layout.DP {
			return nil, status.Errorf(codes.InvalidArgument, "worker: sequence %d assigned to group %d of %d", s.SeqId, s.AttnGroup, w.layout.DP)
		}
		if int(s.AttnGroup) != group {
			continue
		}
		in = append(in, model.SeqInput{ID: s.SeqId, Tokens: s.Tokens, StartPos: int(s.StartPos), Blocks: s.BlockTable, AllLogits: s.AllLogits})
		ids = append(ids, s.SeqId)
	}
	for _, id := range req.FinishedSeqIds {
		delete(w.samplers, id)
	}
	rank0 := w.layout.Rank(w.self) == 0
	// Every rank of the group keeps the samplers' history: with a
	// vocabulary-parallel lm_head each rank penalizes its own ids.
	smp, err := w.prepareSamplers(req, group)
	if err != nil {
		return nil, err
	}
	x, rows, err := w.m.Hidden(ctx, req.Step, in)
	if err != nil {
		return nil, stepError(err)
	}
	resp := &pb.StepResponse{}
	if len(in) > 0 {
		// Every rank takes part; rank 0 samples and answers.
		var tokens []int32
		var logits [][]float32
		if w.candidatesSuffice(req, in, smp) {
			tokens, err = w.sampleCandidates(ctx, req.Step, x, rows, in, smp)
		} else {
			if logits, err = w.m.Logits(ctx, req.Step, x, rows); err == nil && rank0 {
				tokens = w.sampleFull(logits, in, smp)
			}
		}
		if err != nil {
			return nil, stepError(err)
		}
		for _, st := range smp {
			if st != nil {
				st.hasSampled = true
			}
		}
		if !rank0 {
			resp.Stats = w.stats(start)
			return resp, nil
		}
		r := 0
		for i, s := range in {
			n := 1
			if s.AllLogits {
				n = len(s.Tokens)
			}
			res := &pb.SeqResult{SeqId: ids[i], Token: tokens[i]}
			if req.ReturnLogits {
				res.Logits = tensorF32(logits[r : r+n])
			}
			resp.Results = append(resp.Results, res)
			r += n
		}
	}
	resp.Stats = w.stats(start)
	return resp, nil
}

// prepareSamplers returns, for each of this group's sequences in order, its
// sampler when the step samples it with explicit parameters (nil: argmax),
// starting a fresh one for a sequence fed from position 0. Every fed token
// enters the history (also for prefill chunks that are not sampled).
func (w *Worker) prepareSamplers(req *pb.StepRequest, group int) ([]*seqSampler, error) {
	var out []*seqSampler
	for _, s := range req.Seqs {
		if int(s.AttnGroup) != group {
			continue
		}
		if s.StartPos == 0 {
			delete(w.samplers, s.SeqId) // a new sequence (or one resubmitted from its tokens)
		}
		st := w.samplers[s.SeqId]
		params := s.Sampling
		if params == nil {
			params = req.Sampling
		}
		if st == nil && params != nil {
			p, err := samplingParams(params)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "worker: sequence %d: %v", s.SeqId, err)
			}
			smp, err := sampling.New(p)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "worker: sequence %d: %v", s.SeqId, err)
			}
			st = &seqSampler{s: smp}
			w.samplers[s.SeqId] = st
		}
		if st != nil {
			st.feed(s.Tokens, int(s.StartPos), int(s.PromptLen))
		}
		if !s.Sample || params == nil {
			st = nil
		}
		out = append(out, st)
	}
	return out, nil
}

// sampleFull samples every sequence from its whole logits rows (rank 0).
func (w *Worker) sampleFull(logits [][]float32, in []model.SeqInput, smp []*seqSampler) []int32 {
	out := make([]int32, len(in))
	r := 0
	for i, s := range in {
		n := 1
		if s.AllLogits {
			n = len(s.Tokens)
		}
		if st := smp[i]; st != nil {
			out[i] = int32(st.s.Sample(logits[r+n-1], st.prompt, st.generated))
		} else {
			out[i] = argmax(logits[r+n-1])
		}
		r += n
	}
	return out
}

// candidateK is the number of candidates a rank contributes for a sequence.
func (w *Worker) candidateK(st *seqSampler) int {
	p := sampling.Greedy()
	if st != nil {
		p = st.s.Params()
	}
	return sampling.CandidateK(p, w.m.Cfg.VocabSize)
}

// candidatesSuffice reports whether the step can sample from per-rank top-k
// candidates instead of gathering whole logits rows: the vocabulary is
// split, nobody asked for logits, and every sequence's parameters allow it.
// The answer depends only on the request, so every rank agrees.
func (w *Worker) candidatesSuffice(req *pb.StepRequest, in []model.SeqInput, smp []*seqSampler) bool {
	if w.m.Vocab.Len() == w.m.Cfg.VocabSize || req.ReturnLogits {
		return false
	}
	for i, s := range in {
		if s.AllLogits || w.candidateK(smp[i]) == 0 {
			return false
		}
	}
	return true
}

// sampleCandidates samples with a vocabulary-parallel lm_head without
// gathering logits: every rank sends rank 0 its top-k penalized candidates
// per sequence as (id, float32 bits) pairs in Aux, which no wire dtype
// rounds; rank 0 draws from their union (sampling.SampleCandidates), which
// gives the token a sampler of the whole vocabulary would give.
func (w *Worker) sampleCandidates(ctx context.Context, step uint64, x kernels.Buffer, rows []int32, in []model.SeqInput, smp []*seqSampler) ([]int32, error) {
	local, err := w.m.LocalLogits(x, rows)
	if err != nil {
		return nil, err
	}
	lo, width := w.m.Vocab.Lo, w.m.Vocab.Len()
	var aux []int32
	cands := make([][]int32, len(in))
	vals := make([][]float32, len(in))
	for i := range in {
		p, prompt, gen := sampling.Greedy(), []int(nil), []int(nil)
		if st := smp[i]; st != nil {
			p, prompt, gen = st.s.Params(), st.prompt, st.generated
		}
		cands[i], vals[i] = sampling.TopCandidates(p, local[i*width:(i+1)*width], lo, prompt, gen, w.candidateK(smp[i]))
		aux = append(aux, int32(len(cands[i])))
		for j, id := range cands[i] {
			aux = appendPair(aux, id, vals[i][j])
		}
	}
	group := w.layout.GroupWorkers(w.layout.Group(w.self))
	root := group[0]
	send := map[int]collective.Payload{}
	if w.self != root {
		send[root] = collective.Payload{Aux: aux}
	}
	got, err := w.ex.AllToAll(ctx, collective.Tag{Step: step, Phase: pb.Phase_PHASE_LOGITS_GATHER}, group, send)
	if err != nil || w.self != root {
		return nil, err
	}
	for _, src := range group[1:] {
		k := 0
		for i := range in {
			k = max(k, w.candidateK(smp[i]))
		}
		ids, vs, err := decodeCandidates(got[src].Aux, len(in), k, w.m.Cfg.VocabSize)
		if err != nil {
			return nil, fmt.Errorf("candidates from worker %d: %w", src, err)
		}
		for i := range in {
			cands[i] = append(cands[i], ids[i]...)
			vals[i] = append(vals[i], vs[i]...)
		}
	}
	out := make([]int32, len(in))
	for i := range in {
		s := smp[i]
		if s == nil {
			g, _ := sampling.New(sampling.Greedy())
			s = &seqSampler{s: g}
		}
		out[i] = int32(s.s.SampleCandidates(cands[i], vals[i], len(s.prompt)+len(s.generated)))
	}
	return out, nil
}

func (w *Worker) stats(start time.Time) *pb.StepStats {
	st := &pb.StepStats{WallUs: time.Since(start).Microseconds()}
	if w.mesh != nil {
		st.Phases = w.mesh.Stats().Proto()
		w.mesh.ResetStats()
	}
	return st
}

// stepError maps a step failure to a gRPC status.
func stepError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, ErrProtocol):
		return status.Error(codes.Aborted, err.Error())
	}
	if c := collective.Code(err); c != codes.Internal {
		return status.Error(c, err.Error())
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

func argmax(v []float32) int32 {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return int32(best)
}

func tensorF32(rows [][]float32) *pb.Tensor {
	n := 0
	for _, r := range rows {
		n += len(r)
	}
	data := make([]byte, 0, 4*n)
	for _, r := range rows {
		for _, v := range r {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
	}
	var cols int64
	if len(rows) > 0 {
		cols = int64(len(rows[0]))
	}
	return &pb.Tensor{Dtype: pb.DType_DTYPE_F32, Shape: []int64{int64(len(rows)), cols}, Data: data}
}

// Health implements WorkerService.
func (w *Worker) Health(context.Context, *pb.HealthRequest) (*pb.HealthResponse, error) {
	if !w.mu.TryLock() {
		return &pb.HealthResponse{State: pb.WorkerState_WORKER_STATE_SERVING}, nil
	}
	defer w.mu.Unlock()
	return &pb.HealthResponse{State: w.state, WorkerIndex: uint32(w.self), LastStep: w.step, ResidentWeightBytes: uint64(w.resident)}, nil
}

// Close releases the model and the mesh.
func (w *Worker) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	if w.closeMesh != nil {
		err = w.closeMesh()
		w.closeMesh = nil
	}
	if w.m != nil {
		w.m.Close()
		w.m = nil
	}
	w.state = pb.WorkerState_WORKER_STATE_EMPTY
	return err
}
