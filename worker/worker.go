package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
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
	// ErrShutdown: the worker is shutting down (UNAVAILABLE).
	ErrShutdown = errors.New("worker: shutting down")
	// ErrFenced: the worker was fenced (Fence) while the call ran (ABORTED).
	ErrFenced = errors.New("worker: fenced")
)

// MeshFactory connects a worker to its peers. It is called by LoadShard.
type MeshFactory func(ctx context.Context, self int, addrs []string, wire pb.DType, epoch uint64) (Exchange, func() error, error)

// Config configures a Worker.
type Config struct {
	// Backend makes the compute backend (default: the CPU backend).
	Backend func() (kernels.Backend, error)
	// Mesh connects to peers (Serve supplies one, which reports lost peers
	// to OnPeerLost; a custom factory must do so itself).
	Mesh MeshFactory
	Log  *slog.Logger
	// WrapExchange, when set, wraps the mesh the worker uses (tests inject
	// faults with it).
	WrapExchange func(self int, ex Exchange) Exchange
	// MaxKVBytes bounds the KV cache one LoadShard may allocate; a larger
	// request is RESOURCE_EXHAUSTED. 0 means half the memory the host
	// reports available when the worker starts (8 GiB if unknown).
	MaxKVBytes int64
	// MaxKVSequences bounds kv_blocks × kv_block_size to this many
	// sequences of max_position_embeddings tokens; 0 means 256.
	MaxKVSequences int
	// ModelRoots confines LoadShard's model_dir to these directory trees
	// (see roots.go); empty allows any path (not recommended outside tests).
	ModelRoots []string
	// ServerOptions are added to the options of the gRPC server Serve
	// starts (mutual TLS: pki.Source.ServerOptions(pki.WorkerPolicy())).
	ServerOptions []grpc.ServerOption
	// PeerDialOptions reach the peers of a mesh Serve joins; nil means
	// plaintext (mutual TLS: pki.Source.DialOption(pki.RoleWorker)).
	PeerDialOptions []grpc.DialOption
	// OnPeerLost, when set, is told that the stream to peer of the mesh of
	// generation meshEpoch broke (err wraps collective.ErrPeerLost or
	// collective.ErrProtocol). Contract (as collective.MeshConfig's): at
	// most once per peer per mesh, synchronously from the goroutine that
	// saw the failure; it must not block and must not call into the worker
	// or the mesh. Hand the event to another goroutine.
	OnPeerLost func(meshEpoch uint64, peer int, err error)
	// LayoutInvariantMoE adds each token's expert outputs in ascending
	// expert id, as one process does, whatever the placement (docs/wire.md):
	// MoE outputs then equal one process's bitwise on every placement, at
	// the price of one combine row per (token, remote expert) instead of one
	// per (token, remote worker). Every worker of a mesh must agree (a
	// mismatch fails the step with ABORTED).
	LayoutInvariantMoE bool
}

// Worker implements the WorkerService. It holds one shard per live
// placement epoch (see docs/worker.md): epochs that share a layout, a
// worker index and a mesh generation share one base (attention and vocab
// weights, KV cache, mesh) and its resident experts.
//
// Lock order: loadMu, then stepMu, then hmu.
type Worker struct {
	pb.UnimplementedWorkerServiceServer
	cfg Config

	loadMu sync.Mutex // one LoadShard at a time; held while weights are read
	stepMu sync.Mutex // one Step at a time; LoadShard holds it only to install or free

	// Guarded by stepMu.
	epochs   map[uint64]*epoch
	bases    []*base
	samplers map[uint64]*seqSampler
	gen      uint64 // bumped when everything is dropped (Fence, Shutdown, Close)

	// Guarded by loadMu.
	loadedAny bool
	newest    uint64 // the newest placement epoch ever loaded (kept across Fence)

	lastStep atomic.Uint64
	loading  atomic.Int32

	hmu      sync.Mutex // guards the fields below; never held for long
	health   healthView
	life     context.Context // steps and loads run under it; cancelled by Fence and Shutdown
	endLife  context.CancelCauseFunc
	draining bool
	stopped  bool
	done     chan struct{} // closed when Shutdown has stopped the worker

	afterRead func() // test hook: runs after LoadShard read the weights, before it installs them

	cmu    sync.Mutex // guards totals
	totals []uint64   // routed tokens since start, [MoE layer][expert] (ExpertTotals)
}

// healthView is what Health reports, updated whenever epochs change.
type healthView struct {
	serving  bool
	self     int
	epoch    uint64
	resident int64
	meshes   []*collective.Mesh
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
	if cfg.MaxKVBytes <= 0 {
		cfg.MaxKVBytes = defaultKVBytes()
	}
	if cfg.MaxKVSequences <= 0 {
		cfg.MaxKVSequences = 256
	}
	w := &Worker{cfg: cfg, epochs: map[uint64]*epoch{}, samplers: map[uint64]*seqSampler{}, done: make(chan struct{})}
	w.life, w.endLife = context.WithCancelCause(context.Background())
	return w
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
		PresencePenalty: p.PresencePenalty, FrequencyPenalty: p.FrequencyPenalty,
		RepetitionPenalty: p.RepetitionPenalty, Seed: p.Seed,
	}
	if sp.TopP == 0 {
		sp.TopP = 1
	}
	if sp.RepetitionPenalty == 0 {
		sp.RepetitionPenalty = 1
	}
	return sp, sp.Validate()
}

// PlacementFromProto checks and converts the request's placement into one
// placement per layer: the request lists either one layer placement, used
// by every layer, or one for each layer (each layer index once).
func PlacementFromProto(p *pb.Placement, workers, experts, layers int) ([]*sharding.Placement, error) {
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

// Step implements WorkerService.
func (w *Worker) Step(ctx context.Context, req *pb.StepRequest) (*pb.StepResponse, error) {
	if err := w.accepting(); err != nil {
		return nil, err
	}
	w.stepMu.Lock()
	defer w.stepMu.Unlock()
	if err := w.accepting(); err != nil { // Shutdown began while this step waited
		return nil, err
	}
	ctx, stop := w.underLife(ctx)
	defer stop()
	if len(w.epochs) == 0 {
		return nil, status.Error(codes.FailedPrecondition, ErrNotLoaded.Error())
	}
	if last := w.lastStep.Load(); req.Step <= last {
		return nil, status.Errorf(codes.InvalidArgument, "worker: step %d is not after the last step %d", req.Step, last)
	}
	e := w.epochs[req.PlacementEpoch]
	if e == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "worker: placement epoch %d is not live (live: %v)", req.PlacementEpoch, w.liveEpochs())
	}
	if req.DeadlineUnixMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.UnixMilli(req.DeadlineUnixMs))
		defer cancel()
	}
	start := time.Now()
	w.lastStep.Store(req.Step)
	resp, err := w.run(ctx, e, req, start)
	if err != nil {
		return nil, stepError(ctx, err)
	}
	return resp, nil
}

// run runs one step at epoch e.
func (w *Worker) run(ctx context.Context, e *epoch, req *pb.StepRequest, start time.Time) (*pb.StepResponse, error) {
	b := e.base
	group := b.layout.Group(b.self)
	var in []model.SeqInput
	var ids []uint64
	var lps []int // per sequence of in: how many top logprobs, -1 for none
	seen := map[uint64]bool{}
	for _, s := range req.Seqs {
		if seen[s.SeqId] {
			return nil, status.Errorf(codes.InvalidArgument, "worker: sequence %d appears twice in step %d", s.SeqId, req.Step)
		}
		seen[s.SeqId] = true
		if int(s.AttnGroup) >= b.layout.DP {
			return nil, status.Errorf(codes.InvalidArgument, "worker: sequence %d assigned to group %d of %d", s.SeqId, s.AttnGroup, b.layout.DP)
		}
		if s.TopLogprobs > MaxTopLogprobs {
			return nil, status.Errorf(codes.InvalidArgument, "worker: sequence %d asks for %d top logprobs, at most %d", s.SeqId, s.TopLogprobs, MaxTopLogprobs)
		}
		if int(s.AttnGroup) != group {
			continue
		}
		in = append(in, model.SeqInput{ID: s.SeqId, Tokens: s.Tokens, StartPos: int(s.StartPos), Blocks: s.BlockTable, AllLogits: s.AllLogits})
		ids = append(ids, s.SeqId)
		lp := -1
		if s.Sample && (s.Logprobs || s.TopLogprobs > 0) {
			lp = min(int(s.TopLogprobs), e.m.Cfg.VocabSize)
		}
		lps = append(lps, lp)
	}
	for _, id := range req.FinishedSeqIds {
		delete(w.samplers, id)
	}
	rank0 := b.layout.Rank(b.self) == 0
	// Every rank of the group keeps the samplers' history: with a
	// vocabulary-parallel lm_head each rank penalizes its own ids.
	smp, err := w.prepareSamplers(req, group)
	if err != nil {
		return nil, err
	}
	e.moe.resetCounts()
	x, rows, err := e.m.Hidden(ctx, req.Step, in)
	if err != nil {
		return nil, err
	}
	resp := &pb.StepResponse{}
	if len(in) > 0 {
		// Every rank takes part; rank 0 samples and answers.
		var tokens []int32
		var logits [][]float32
		var lpOut []*logprobs
		if w.candidatesSuffice(e, req, in, smp) {
			tokens, lpOut, err = w.sampleCandidates(ctx, e, req.Step, x, rows, in, smp, lps)
		} else {
			if logits, err = e.m.Logits(ctx, req.Step, x, rows); err == nil && rank0 {
				tokens, lpOut = w.sampleFull(logits, in, smp, lps)
			}
		}
		if err != nil {
			return nil, err
		}
		for _, st := range smp {
			if st != nil {
				st.hasSampled = true
			}
		}
		if !rank0 {
			resp.Stats = w.stats(e, start)
			return resp, nil
		}
		r := 0
		for i, s := range in {
			n := 1
			if s.AllLogits {
				n = len(s.Tokens)
			}
			res := &pb.SeqResult{SeqId: ids[i], Token: tokens[i]}
			if lp := lpOut[i]; lp != nil {
				res.Logprob, res.TopIds, res.TopLogprobs = lp.token, lp.topIDs, lp.top
			}
			if req.ReturnLogits {
				res.Logits = tensorF32(logits[r : r+n])
			}
			resp.Results = append(resp.Results, res)
			r += n
		}
	}
	resp.Stats = w.stats(e, start)
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

// sampleFull samples every sequence from its whole logits rows (rank 0),
// and computes the logprobs lps asks for (see logprobs).
func (w *Worker) sampleFull(logits [][]float32, in []model.SeqInput, smp []*seqSampler, lps []int) ([]int32, []*logprobs) {
	out := make([]int32, len(in))
	lpOut := make([]*logprobs, len(in))
	r := 0
	for i, s := range in {
		n := 1
		if s.AllLogits {
			n = len(s.Tokens)
		}
		row := logits[r+n-1]
		if st := smp[i]; st != nil {
			out[i] = int32(st.s.Sample(row, st.prompt, st.generated))
		} else {
			out[i] = argmax(row)
		}
		if lps[i] >= 0 {
			lse := sampling.LogSumExp(row)
			ids, vals := sampling.TopLogits(row, 0, lps[i])
			lpOut[i] = newLogprobs(row[out[i]], lse, ids, vals)
		}
		r += n
	}
	return out, lpOut
}

// MaxTopLogprobs bounds SeqStep.top_logprobs.
const MaxTopLogprobs = 1024

// logprobs are one sequence's log-probabilities of a step, from the raw
// logits (log-softmax before penalties and temperature, vLLM's default):
// the sampled token's and the top ones', most likely first, ties to the
// lowest id.
type logprobs struct {
	token  float32
	topIDs []int32
	top    []float32
}

// newLogprobs subtracts the log-sum-exp lse from the raw logit of the
// sampled token and from the top raw logits vals (of ids).
func newLogprobs(raw float32, lse float64, ids []int32, vals []float32) *logprobs {
	lp := &logprobs{token: float32(float64(raw) - lse), topIDs: ids, top: make([]float32, len(vals))}
	for j, v := range vals {
		lp.top[j] = float32(float64(v) - lse)
	}
	return lp
}

// candidateK is the number of candidates a rank contributes for a sequence.
func (w *Worker) candidateK(e *epoch, st *seqSampler) int {
	p := sampling.Greedy()
	if st != nil {
		p = st.s.Params()
	}
	return sampling.CandidateK(p, e.m.Cfg.VocabSize)
}

// candidatesSuffice reports whether the step can sample from per-rank top-k
// candidates instead of gathering whole logits rows: the vocabulary is
// split, nobody asked for logits, and every sequence's parameters allow it.
// The answer depends only on the request, so every rank agrees.
func (w *Worker) candidatesSuffice(e *epoch, req *pb.StepRequest, in []model.SeqInput, smp []*seqSampler) bool {
	if e.m.Vocab.Len() == e.m.Cfg.VocabSize || req.ReturnLogits {
		return false
	}
	for i, s := range in {
		if s.AllLogits || w.candidateK(e, smp[i]) == 0 {
			return false
		}
	}
	return true
}

// sampleCandidates samples with a vocabulary-parallel lm_head without
// gathering logits: every rank sends rank 0 its top-k penalized candidates
// per sequence (with every one tied with the k-th) as (id, float32 bits)
// pairs in Aux, which no wire dtype rounds; rank 0 draws from their union
// (sampling.SampleCandidates), which gives the token a sampler of the whole
// vocabulary would give. For a sequence that asks for logprobs each rank
// adds the log-sum-exp of its raw logits, the raw logits of its candidates
// (the sampled token is one of them) and its top raw logits; rank 0
// combines the log-sum-exps, so the log-softmax is the whole row's.
func (w *Worker) sampleCandidates(ctx context.Context, e *epoch, step uint64, x kernels.Buffer, rows []int32, in []model.SeqInput, smp []*seqSampler, lps []int) ([]int32, []*logprobs, error) {
	b := e.base
	local, err := e.m.LocalLogits(x, rows)
	if err != nil {
		return nil, nil, err
	}
	lo, width := e.m.Vocab.Lo, e.m.Vocab.Len()
	var aux []int32
	mine := make([]seqCands, len(in))
	for i := range in {
		p, prompt, gen := sampling.Greedy(), []int(nil), []int(nil)
		if st := smp[i]; st != nil {
			p, prompt, gen = st.s.Params(), st.prompt, st.generated
		}
		row := local[i*width : (i+1)*width]
		c := &mine[i]
		c.ids, c.vals = sampling.TopCandidates(p, row, lo, prompt, gen, w.candidateK(e, smp[i]))
		if lps[i] >= 0 {
			c.raw = make([]float32, len(c.ids))
			for j, id := range c.ids {
				c.raw[j] = row[int(id)-lo]
			}
			c.lse = sampling.LogSumExp(row)
			c.topIDs, c.topVals = sampling.TopLogits(row, lo, lps[i])
		}
		aux = c.append(aux, lps[i] >= 0)
	}
	group := b.layout.GroupWorkers(b.layout.Group(b.self))
	root := group[0]
	send := map[int]collective.Payload{}
	if b.self != root {
		send[root] = collective.Payload{Aux: aux}
	}
	got, err := e.base.ex.AllToAll(ctx, collective.Tag{Step: step, Phase: pb.Phase_PHASE_LOGITS_GATHER}, group, send)
	if err != nil || b.self != root {
		return nil, nil, err
	}
	all := [][]seqCands{mine}
	for _, src := range group[1:] {
		theirs, err := decodeCandidates(got[src].Aux, lps, e.m.Cfg.VocabSize)
		if err != nil {
			return nil, nil, fmt.Errorf("candidates from worker %d: %w", src, err)
		}
		all = append(all, theirs)
	}
	out := make([]int32, len(in))
	lpOut := make([]*logprobs, len(in))
	for i := range in {
		var ids, topIDs []int32
		var vals, raw, topVals []float32
		var lses []float64
		for _, cs := range all {
			c := cs[i]
			ids, vals, raw = append(ids, c.ids...), append(vals, c.vals...), append(raw, c.raw...)
			topIDs, topVals = append(topIDs, c.topIDs...), append(topVals, c.topVals...)
			lses = append(lses, c.lse)
		}
		s := smp[i]
		if s == nil {
			g, _ := sampling.New(sampling.Greedy())
			s = &seqSampler{s: g}
		}
		out[i] = int32(s.s.SampleCandidates(ids, vals, len(s.prompt)+len(s.generated)))
		if lps[i] >= 0 {
			tok := float32(math.Inf(-1)) // every logit -Inf: token 0, not a candidate
			if j := slices.Index(ids, out[i]); j >= 0 {
				tok = raw[j]
			}
			topIDs, topVals = sampling.MergeTop(topIDs, topVals, lps[i])
			lpOut[i] = newLogprobs(tok, sampling.CombineLogSumExp(lses), topIDs, topVals)
		}
	}
	return out, lpOut, nil
}

// stats are the step's statistics on this worker: traffic per phase and
// the tokens this worker routed to each expert.
func (w *Worker) stats(e *epoch, start time.Time) *pb.StepStats {
	b := e.base
	st := &pb.StepStats{WallUs: time.Since(start).Microseconds(), ExpertTokens: e.moe.takeCounts()}
	w.addTotals(st.ExpertTokens)
	if b.mesh != nil {
		st.Phases = b.mesh.Stats().Proto()
		b.mesh.ResetStats()
	}
	return st
}

// stepError maps a step failure to a gRPC status. A step cut short by
// Shutdown fails UNAVAILABLE, one cut short by Fence ABORTED.
func stepError(ctx context.Context, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, ErrShutdown):
		return status.Error(codes.Unavailable, fmt.Sprintf("%v: %v", cause, err))
	case errors.Is(cause, ErrFenced):
		return status.Error(codes.Aborted, fmt.Sprintf("%v: %v", cause, err))
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
