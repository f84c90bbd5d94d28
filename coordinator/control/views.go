package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/moemesh/moemesh/coordinator/planner"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/model"
	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
	"github.com/moemesh/moemesh/worker"
)

// Status describes the cluster from etcd (any coordinator answers); the
// leader adds what its workers' Health reports.
func (c *Coordinator) Status(ctx context.Context) (*adminpb.GetStatusResponse, error) {
	h := c.Health()
	out := &adminpb.GetStatusResponse{Leader: h.Leader, Ready: h.Ready, Reason: h.Reason, AnsweredBy: c.cfg.ID}
	rec, err := c.st.CurrentPlacement(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	workers, err := c.st.Workers(ctx)
	if err != nil {
		return nil, err
	}
	cords, err := c.st.Cordoned(ctx)
	if err != nil {
		return nil, err
	}
	coords, err := c.st.Coordinators(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range coords {
		out.Coordinators = append(out.Coordinators, &adminpb.CoordinatorStatus{Id: r.Id, GrpcAddr: r.GrpcAddr, HttpAddr: r.HttpAddr, Leader: r.Id == h.Leader})
	}
	if m, err := c.st.Model(ctx); err == nil {
		out.Model = m.Name
	}
	c.mu.Lock()
	ld := c.lead
	out.Operation, out.LastOperation = c.op, c.lastOp
	c.mu.Unlock()
	if ld != nil {
		if v := ld.view.Load(); v != nil {
			rec = v // the epoch steps run, which may be ahead of etcd for a moment
		}
	}
	cordoned := map[string]bool{}
	for _, r := range cords {
		cordoned[r.Id] = true
	}
	byID := map[string]*pb.WorkerRecord{}
	for _, r := range workers {
		byID[r.Id] = r
	}
	var layers []*sharding.Placement
	var moe []int
	var layout sharding.Layout
	if rec != nil {
		out.Epoch, out.MeshEpoch = rec.Epoch, rec.MeshEpoch
		layout, _ = sharding.NewLayout(int(rec.Layout.GetWorkers()), max(int(rec.Layout.GetTp()), 1))
		out.LayoutWorkers, out.Tp, out.Groups = uint32(layout.Workers), uint32(layout.TP), uint32(layout.DP)
		if cfg := c.config(); cfg != nil {
			layers, moe, _ = layerPlacements(cfg.NumHiddenLayers, cfg.NumExperts, cfg.IsMoELayer, rec)
		}
	}
	var health []*pb.HealthResponse
	if ld != nil && rec != nil {
		health = ld.probe(ctx, rec.Addrs)
	}
	seen := map[string]bool{}
	if rec != nil {
		for i, id := range rec.WorkerIds {
			seen[id] = true
			ws := &adminpb.WorkerStatus{Id: id, Index: int32(i), Group: uint32(layout.Group(i)), TpRank: uint32(layout.Rank(i)), State: adminpb.WorkerState_WORKER_STATE_SERVING}
			if i < len(rec.Addrs) {
				ws.Addr = rec.Addrs[i]
			}
			for _, l := range moe {
				if i < len(layers[l].Slots) {
					ws.ExpertSlots += uint32(len(layers[l].Slots[i]))
				}
			}
			r := byID[id]
			if r == nil {
				ws.State = adminpb.WorkerState_WORKER_STATE_LOST
			} else {
				fill(ws, r)
				if r.State == pb.WorkerState_WORKER_STATE_LOADING || r.PlacementEpoch < rec.Epoch {
					ws.State = adminpb.WorkerState_WORKER_STATE_LOADING
				}
			}
			if health != nil {
				if hh := health[i]; hh == nil {
					ws.State = adminpb.WorkerState_WORKER_STATE_LOST
				} else {
					ws.ResidentWeightBytes = hh.ResidentWeightBytes
					ws.PlacementEpoch = hh.PlacementEpoch
				}
			}
			out.Workers = append(out.Workers, ws)
		}
	}
	for _, r := range workers {
		if seen[r.Id] {
			continue
		}
		seen[r.Id] = true
		ws := &adminpb.WorkerStatus{Id: r.Id, Index: -1, State: adminpb.WorkerState_WORKER_STATE_SPARE}
		fill(ws, r)
		if cordoned[r.Id] {
			ws.State = adminpb.WorkerState_WORKER_STATE_CORDONED
		}
		out.Workers = append(out.Workers, ws)
	}
	for _, r := range cords {
		if !seen[r.Id] {
			out.Workers = append(out.Workers, &adminpb.WorkerStatus{Id: r.Id, Index: -1, State: adminpb.WorkerState_WORKER_STATE_CORDONED, Error: "not registered"})
		}
	}
	return out, nil
}

func fill(ws *adminpb.WorkerStatus, r *pb.WorkerRecord) {
	ws.Addr, ws.Device, ws.MemoryBytes, ws.PlacementEpoch, ws.Error = r.Addr, r.Device, r.MemoryBytes, r.PlacementEpoch, r.Error
}

// config returns the served model's config (the leader's, or the
// manifest's for a standby); nil when unknown.
func (c *Coordinator) config() *model.Config {
	c.mu.Lock()
	if c.lead != nil && c.lead.cfg != nil {
		cfg := c.lead.cfg
		c.mu.Unlock()
		return cfg
	}
	c.mu.Unlock()
	dir := c.cfg.ModelDir
	if dir == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m, err := c.st.Model(ctx)
		if err != nil {
			return nil
		}
		dir = m.ModelDir
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil
	}
	return cfg
}

// Placement returns the serving epoch's expert placement (one layer when
// layer is set).
func (c *Coordinator) Placement(ctx context.Context, layer *uint32) (*adminpb.GetPlacementResponse, error) {
	rec, cfg, err := c.servingRecord(ctx)
	if err != nil {
		return nil, err
	}
	layers, moe, err := layerPlacements(cfg.NumHiddenLayers, cfg.NumExperts, cfg.IsMoELayer, rec)
	if err != nil {
		return nil, err
	}
	out := &adminpb.GetPlacementResponse{Epoch: rec.Epoch, WorkerIds: rec.WorkerIds, Experts: uint32(cfg.NumExperts), SlotsPerWorker: uint32(slotsPerWorker(rec, layers))}
	if layer != nil && !slices.Contains(moe, int(*layer)) {
		return nil, fmt.Errorf("%w: layer %d is not a MoE layer (the MoE layers are %v)", ErrBadPlan, *layer, moe)
	}
	for _, l := range moe {
		if layer != nil && int(*layer) != l {
			continue
		}
		lp := &adminpb.LayerPlacement{Layer: uint32(l)}
		for _, s := range layers[l].Slots {
			we := &adminpb.WorkerExperts{}
			for _, e := range s {
				we.Experts = append(we.Experts, uint32(e))
			}
			lp.Workers = append(lp.Workers, we)
		}
		out.Layers = append(out.Layers, lp)
	}
	return out, nil
}

// servingRecord returns the serving record and the model config, from the
// leader's view or etcd.
func (c *Coordinator) servingRecord(ctx context.Context) (*pb.PlacementRecord, *model.Config, error) {
	var rec *pb.PlacementRecord
	c.mu.Lock()
	if c.lead != nil {
		rec = c.lead.view.Load()
	}
	c.mu.Unlock()
	if rec == nil {
		var err error
		if rec, err = c.st.CurrentPlacement(ctx); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, nil, fmt.Errorf("%w: %w", ErrNotReady, err)
			}
			return nil, nil, err
		}
	}
	cfg := c.config()
	if cfg == nil {
		return nil, nil, fmt.Errorf("%w: the model's config cannot be read", ErrNotReady)
	}
	return rec, cfg, nil
}

// load is the window's statistics summed over the workers.
type load struct {
	rec       *pb.PlacementRecord
	cfg       *model.Config
	layers    []*sharding.Placement // per decoder layer
	moe       []int                 // MoE layer indices
	counts    [][]uint64            // [MoE layer][expert]
	windowMs  int64
	reporting int
}

func (c *Coordinator) load(ctx context.Context) (*load, error) {
	rec, cfg, err := c.servingRecord(ctx)
	if err != nil {
		return nil, err
	}
	layers, moe, err := layerPlacements(cfg.NumHiddenLayers, cfg.NumExperts, cfg.IsMoELayer, rec)
	if err != nil {
		return nil, err
	}
	recs, err := c.st.ExpertStats(ctx)
	if err != nil {
		return nil, err
	}
	out := &load{rec: rec, cfg: cfg, layers: layers, moe: moe, counts: make([][]uint64, len(moe))}
	for i := range out.counts {
		out.counts[i] = make([]uint64, cfg.NumExperts)
	}
	now := time.Now()
	for _, r := range recs {
		if len(r.Counts) != len(moe)*cfg.NumExperts || !store.StatsFresh(r, now, c.cfg.StatsMaxAge) {
			continue
		}
		out.reporting++
		out.windowMs = max(out.windowMs, r.WindowMs)
		for i, n := range r.Counts {
			out.counts[i/cfg.NumExperts][i%cfg.NumExperts] += n
		}
	}
	return out, nil
}

// floats converts the counts for sharding.
func (l *load) floats() [][]float64 {
	out := make([][]float64, len(l.counts))
	for i, row := range l.counts {
		out[i] = make([]float64, len(row))
		for e, n := range row {
			out[i][e] = float64(n)
		}
	}
	return out
}

func (l *load) moePlacements() []*sharding.Placement {
	out := make([]*sharding.Placement, len(l.moe))
	for i, layer := range l.moe {
		out[i] = l.layers[layer]
	}
	return out
}

// tokens is the window's routed tokens (each once, whatever its top-k).
func (l *load) tokens() uint64 {
	if len(l.counts) == 0 || l.cfg.NumExpertsPerTok == 0 {
		return 0
	}
	var n uint64
	for _, c := range l.counts[0] {
		n += c
	}
	return n / uint64(l.cfg.NumExpertsPerTok)
}

// ExpertStats returns the window's routed-token counts and the measured
// imbalance under the serving placement.
func (c *Coordinator) ExpertStats(ctx context.Context) (*adminpb.GetExpertStatsResponse, error) {
	l, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	f := l.floats()
	overall, per := sharding.Imbalance(l.moePlacements(), f)
	out := &adminpb.GetExpertStatsResponse{Epoch: l.rec.Epoch, WindowMs: l.windowMs, WindowTokens: l.tokens(), Imbalance: overall,
		WorkerIds: l.rec.WorkerIds, WorkersReporting: uint32(l.reporting), WorkerLoad: make([]float64, len(l.rec.WorkerIds))}
	for i, layer := range l.moe {
		wl := l.layers[layer].WorkerLoads(f[i])
		for w, v := range wl {
			if w < len(out.WorkerLoad) {
				out.WorkerLoad[w] += v
			}
		}
		out.Layers = append(out.Layers, &adminpb.LayerStats{Layer: uint32(layer), Tokens: l.counts[i], WorkerLoad: wl, Imbalance: per[i]})
	}
	return out, nil
}

// PlanRebalance computes a rebalance of the serving placement from the
// window's statistics (sharding.Rebalance) without applying it.
func (c *Coordinator) PlanRebalance(ctx context.Context, maxMoves int) (*adminpb.RebalancePlan, error) {
	if maxMoves < 0 {
		return nil, fmt.Errorf("%w: max moves %d", ErrBadPlan, maxMoves)
	}
	if maxMoves == 0 {
		maxMoves = c.cfg.MaxMoves
	}
	l, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	if l.tokens() == 0 {
		return nil, fmt.Errorf("%w: %d workers reported, no token was routed in the window", ErrNoStats, l.reporting)
	}
	shape := planner.Shape(l.cfg)
	expertBytes := int64(3 * shape.Hidden * shape.MoEIntermediate * shape.BytesPerParam)
	plan, err := sharding.Rebalance(l.moePlacements(), l.floats(), sharding.RebalanceOptions{
		SlotsPerWorker: slotsPerWorker(l.rec, l.layers), MaxMoves: maxMoves, ExpertBytes: expertBytes})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPlan, err)
	}
	out := &adminpb.RebalancePlan{FromEpoch: l.rec.Epoch, Bytes: uint64(plan.Bytes), ImbalanceBefore: plan.Before, ImbalanceAfter: plan.After,
		MaxMoves: uint32(maxMoves), WindowTokens: l.tokens()}
	id := func(w int) string {
		if w < 0 {
			return ""
		}
		return l.rec.WorkerIds[w]
	}
	for _, m := range plan.Moves {
		mv := &adminpb.Move{Layer: uint32(l.moe[m.Layer]), Expert: uint32(m.Expert), FromWorker: id(m.From), ToWorker: id(m.To)}
		if m.To >= 0 {
			mv.Bytes = uint64(expertBytes)
		}
		out.Moves = append(out.Moves, mv)
	}
	return out, nil
}

// layerPlacements converts rec's placement into one sharding.Placement per
// decoder layer and lists the MoE layers.
func layerPlacements(layers, experts int, isMoE func(int) bool, rec *pb.PlacementRecord) ([]*sharding.Placement, []int, error) {
	ps, err := worker.PlacementFromProto(rec.GetPlacement(), int(rec.GetLayout().GetWorkers()), experts, layers)
	if err != nil {
		return nil, nil, fmt.Errorf("control: placement epoch %d: %w", rec.GetEpoch(), err)
	}
	var moe []int
	for l := range layers {
		if isMoE(l) {
			moe = append(moe, l)
		}
	}
	return ps, moe, nil
}

// slotsPerWorker is rec's expert capacity per worker and layer: the
// recorded one, or the most any worker hosts in records without it.
func slotsPerWorker(rec *pb.PlacementRecord, layers []*sharding.Placement) int {
	most := 0
	for _, p := range layers {
		for _, s := range p.Slots {
			most = max(most, len(s))
		}
	}
	return max(int(rec.GetSlotsPerWorker()), most)
}
