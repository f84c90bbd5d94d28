package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/coordinator/planner"
	"github.com/moemesh/moemesh/coordinator/store"
	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
)

// Errors of the live operations (rebalance, drain, uncordon), wrapped
// with %w; serving maps them to gRPC codes.
var (
	// ErrBusy: another placement change (an operation or a recovery) runs.
	ErrBusy = errors.New("control: another placement change is running")
	// ErrStalePlan: the plan was computed against an epoch that no longer serves.
	ErrStalePlan = errors.New("control: the plan is for an epoch that no longer serves")
	// ErrBadPlan: the plan does not fit the serving placement.
	ErrBadPlan = errors.New("control: the plan does not fit the placement")
	// ErrUnknownWorker: no registered, placed or cordoned worker has the id.
	ErrUnknownWorker = errors.New("control: unknown worker")
	// ErrNoStats: no expert statistics were collected yet.
	ErrNoStats = errors.New("control: no expert statistics yet")
	// ErrAborted: a live operation failed; the cluster stays on the old
	// epoch (or recovers from it through the failure path).
	ErrAborted = errors.New("control: operation aborted")
	// ErrPlacementChanged: steps moved to a placement on a new mesh, whose
	// KV caches hold nothing; the scheduler re-prefills its sequences.
	ErrPlacementChanged = errors.New("control: the placement moved to a new mesh")
)

// serving returns the leader's state when this coordinator leads and a
// placement serves.
func (c *Coordinator) serving() (*leading, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lead == nil {
		return nil, fmt.Errorf("%w: the leader is %q", ErrNotLeader, c.health.Leader)
	}
	if c.lead.view.Load() == nil {
		return nil, ErrNotReady
	}
	return c.lead, nil
}

// ApplyRebalance applies plan live (two-phase by epoch) and returns when
// it committed or aborted. It runs on the leadership's context: a caller
// that goes away does not cut it short.
func (c *Coordinator) ApplyRebalance(ctx context.Context, plan *adminpb.RebalancePlan, progress func(*adminpb.OperationProgress)) error {
	ld, err := c.serving()
	if err != nil {
		return err
	}
	return ld.operate(ctx, "rebalance", "", progress, func(op *operation) error {
		rec, err := ld.applyMoves(plan)
		if err != nil {
			return err
		}
		return ld.twoPhase(op, rec, ld.plan)
	})
}

// Drain moves worker id's share to the others (or a spare) live and
// cordons it. A spare is only cordoned.
func (c *Coordinator) Drain(ctx context.Context, id string, progress func(*adminpb.OperationProgress)) error {
	ld, err := c.serving()
	if err != nil {
		return err
	}
	return ld.operate(ctx, "drain", id, progress, func(op *operation) error {
		return ld.drain(op, id)
	})
}

// Uncordon returns a cordoned worker to the pool; it reports whether the
// worker was cordoned.
func (c *Coordinator) Uncordon(ctx context.Context, id string) (bool, error) {
	ld, err := c.serving()
	if err != nil {
		return false, err
	}
	was, err := c.st.Uncordon(ctx, ld.l, id)
	if err != nil {
		return false, err
	}
	if !was {
		if !ld.knownWorker(ctx, id) {
			return false, fmt.Errorf("%w: %q is neither registered nor cordoned", ErrUnknownWorker, id)
		}
	}
	c.log.Info("uncordoned", "worker", id, "was_cordoned", was)
	if rec := ld.view.Load(); was && int(rec.GetLayout().GetWorkers()) < c.cfg.Workers {
		// The layout shrank (a drain without a spare): grow it back now
		// that a worker is free, by the same live path.
		err = ld.operate(ctx, "uncordon", id, nil, func(op *operation) error { return ld.grow(op, id) })
		if err != nil && !errors.Is(err, ErrBusy) {
			return was, err
		}
	}
	return was, nil
}

// grow re-plans the layout at its configured size when enough workers
// are free; the caller holds placeMu.
func (ld *leading) grow(op *operation, id string) error {
	cands, err := ld.candidates(op.ctx, nil)
	if err != nil {
		return err
	}
	if len(cands) < ld.c.cfg.Workers {
		ld.log.Info("uncordoned worker waits as a spare: too few workers to grow the layout", "worker", id, "candidates", len(cands))
		return nil
	}
	p, err := planner.Initial(ld.cfg, cands, ld.options(0))
	if err != nil {
		return err
	}
	return ld.twoPhase(op, ld.record(p, 0, ld.publishedMesh+1, fmt.Sprintf("uncordon %s: layout back to %d workers", id, p.Layout.Workers)), p)
}

// operation is one live operation in flight.
type operation struct {
	ctx      context.Context
	progress func(*adminpb.OperationProgress)
	state    *adminpb.OperationProgress
}

func (op *operation) report(f func(p *adminpb.OperationProgress)) {
	f(op.state)
	if op.progress != nil {
		op.progress(proto.Clone(op.state).(*adminpb.OperationProgress))
	}
}

// operate runs f as the one placement change in flight, on the
// leadership's context (bounded by ReadyTimeout), and waits for it or
// for ctx; a caller gone does not stop it.
func (ld *leading) operate(ctx context.Context, kind, worker string, progress func(*adminpb.OperationProgress), f func(op *operation) error) error {
	if !ld.placeMu.TryLock() {
		return ErrBusy
	}
	opCtx, cancel := context.WithTimeout(ld.ctx, ld.c.cfg.ReadyTimeout)
	op := &operation{ctx: opCtx, state: &adminpb.OperationProgress{Kind: kind, Worker: worker, StartedUnixMs: time.Now().UnixMilli(),
		FromEpoch: ld.view.Load().GetEpoch()}}
	op.progress = func(p *adminpb.OperationProgress) {
		ld.c.mu.Lock()
		ld.c.op = p
		ld.c.mu.Unlock()
		if progress != nil {
			progress(p)
		}
	}
	done := make(chan error, 1)
	go func() {
		defer ld.placeMu.Unlock()
		defer cancel()
		err := f(op)
		if err != nil {
			ld.log.Warn("operation failed", "kind", kind, "worker", worker, "err", err)
			op.report(func(p *adminpb.OperationProgress) { p.Phase, p.Message = adminpb.Phase_PHASE_ABORTED, err.Error() })
		} else {
			op.report(func(p *adminpb.OperationProgress) { p.Phase = adminpb.Phase_PHASE_DONE })
		}
		ld.c.mu.Lock()
		ld.c.op, ld.c.lastOp = nil, proto.Clone(op.state).(*adminpb.OperationProgress)
		ld.c.mu.Unlock()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// applyMoves builds the next epoch's record from the serving one and the
// plan's moves; the caller holds placeMu.
func (ld *leading) applyMoves(plan *adminpb.RebalancePlan) (*pb.PlacementRecord, error) {
	rec := ld.rec
	if plan.GetFromEpoch() != rec.Epoch {
		return nil, fmt.Errorf("%w: the plan is for epoch %d, epoch %d serves", ErrStalePlan, plan.GetFromEpoch(), rec.Epoch)
	}
	layers, moe, err := ld.layerPlacements(rec)
	if err != nil {
		return nil, err
	}
	sets := make(map[int][]map[int]bool) // decoder layer → worker → experts
	for _, l := range moe {
		s := make([]map[int]bool, len(layers[l].Slots))
		for w, es := range layers[l].Slots {
			s[w] = map[int]bool{}
			for _, e := range es {
				s[w][e] = true
			}
		}
		sets[l] = s
	}
	index := map[string]int{}
	for i, id := range rec.WorkerIds {
		index[id] = i
	}
	worker := func(id string) (int, error) {
		if id == "" {
			return -1, nil
		}
		w, ok := index[id]
		if !ok {
			return 0, fmt.Errorf("%w: worker %q is not in epoch %d", ErrBadPlan, id, rec.Epoch)
		}
		return w, nil
	}
	for _, m := range plan.GetMoves() {
		s, ok := sets[int(m.GetLayer())]
		if !ok {
			return nil, fmt.Errorf("%w: layer %d is not a MoE layer", ErrBadPlan, m.GetLayer())
		}
		e := int(m.GetExpert())
		if e >= ld.cfg.NumExperts {
			return nil, fmt.Errorf("%w: expert %d, the model has %d", ErrBadPlan, e, ld.cfg.NumExperts)
		}
		from, err := worker(m.GetFromWorker())
		if err != nil {
			return nil, err
		}
		to, err := worker(m.GetToWorker())
		if err != nil {
			return nil, err
		}
		if from >= 0 {
			if !s[from][e] {
				return nil, fmt.Errorf("%w: layer %d: %s does not host expert %d", ErrBadPlan, m.GetLayer(), m.GetFromWorker(), e)
			}
			delete(s[from], e)
		}
		if to >= 0 {
			if s[to][e] {
				return nil, fmt.Errorf("%w: layer %d: %s already hosts expert %d", ErrBadPlan, m.GetLayer(), m.GetToWorker(), e)
			}
			s[to][e] = true
		}
	}
	slots := slotsPerWorker(rec, layers)
	out := &pb.Placement{Epoch: rec.Epoch}
	for l := range ld.cfg.NumHiddenLayers {
		if _, ok := sets[l]; !ok {
			out.Layers = append(out.Layers, coordinator.LayerProto(layers[l], l))
			continue
		}
		ws := make([][]int, len(sets[l]))
		for w, set := range sets[l] {
			for e := range set {
				ws[w] = append(ws[w], e)
			}
			if len(ws[w]) > slots {
				return nil, fmt.Errorf("%w: layer %d: worker %s would host %d experts, its slots are %d", ErrBadPlan, l, rec.WorkerIds[w], len(ws[w]), slots)
			}
		}
		p := sharding.NewPlacement(ld.cfg.NumExperts, ws)
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("%w: layer %d: %w", ErrBadPlan, l, err)
		}
		out.Layers = append(out.Layers, coordinator.LayerProto(p, l))
	}
	next := proto.Clone(rec).(*pb.PlacementRecord)
	next.Placement = out
	next.SlotsPerWorker = uint32(slots)
	next.Reason = fmt.Sprintf("rebalance: %d moves, predicted imbalance %.3f → %.3f", len(plan.GetMoves()), plan.GetImbalanceBefore(), plan.GetImbalanceAfter())
	return next, nil
}

// drain plans the layout without id and applies it live; the caller
// holds placeMu.
func (ld *leading) drain(op *operation, id string) error {
	ctx := op.ctx
	rec := ld.rec
	if !ld.knownWorker(ctx, id) {
		return fmt.Errorf("%w: %q", ErrUnknownWorker, id)
	}
	cord := &pb.CordonRecord{Id: id, Reason: "drain", CreatedUnixMs: time.Now().UnixMilli()}
	if err := ld.c.st.Cordon(ctx, ld.l, cord); err != nil {
		return err
	}
	if !slices.Contains(rec.WorkerIds, id) {
		ld.log.Info("drained a spare: cordoned", "worker", id)
		return nil
	}
	skip := map[string]bool{id: true}
	for _, w := range rec.WorkerIds {
		skip[w] = true
	}
	spares, err := ld.candidates(ctx, skip)
	if err == nil {
		var p planner.Plan
		p, err = planner.Replan(ld.cfg, ld.plan, map[string]bool{id: true}, spares, ld.options(0))
		if err == nil {
			next := ld.record(p, 0, ld.publishedMesh+1, "drain "+id)
			err = ld.twoPhase(op, next, p)
		}
	}
	if err != nil {
		uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = ld.c.st.Uncordon(uctx, ld.l, id)
		cancel()
		return err
	}
	return nil
}

// knownWorker reports whether id is registered, placed or cordoned.
func (ld *leading) knownWorker(ctx context.Context, id string) bool {
	if rec := ld.view.Load(); rec != nil && slices.Contains(rec.WorkerIds, id) {
		return true
	}
	recs, _ := ld.c.st.Workers(ctx)
	cords, _ := ld.c.st.Cordoned(ctx)
	return slices.ContainsFunc(recs, func(r *pb.WorkerRecord) bool { return r.Id == id }) ||
		slices.ContainsFunc(cords, func(r *pb.CordonRecord) bool { return r.Id == id })
}

// twoPhase moves steps to next live: prepare (the workers load next
// beside the serving epoch), switch at a step boundary, commit (the old
// epoch is freed). When it fails before the switch, steps stay on the
// old epoch, which the workers still hold. The caller holds placeMu.
func (ld *leading) twoPhase(op *operation, next *pb.PlacementRecord, p planner.Plan) error {
	ctx := op.ctx
	from := ld.rec
	latest, err := ld.c.st.LatestEpoch(ctx)
	if err != nil {
		return err
	}
	next.Epoch = max(ld.published, latest, from.Epoch) + 1
	next.Placement.Epoch = next.Epoch
	next.CreatedUnixMs = time.Now().UnixMilli()
	op.report(func(s *adminpb.OperationProgress) {
		s.Phase, s.FromEpoch, s.ToEpoch, s.WorkersTotal = adminpb.Phase_PHASE_PREPARING, from.Epoch, next.Epoch, uint32(len(next.WorkerIds))
		s.Message = next.Reason
	})
	if err := ld.c.st.PreparePlacement(ctx, ld.l, next); err != nil {
		return err
	}
	ld.published, ld.publishedMesh = max(ld.published, next.Epoch), max(ld.publishedMesh, next.MeshEpoch)
	ld.learn(next)
	ld.log.Info("prepared placement", "epoch", next.Epoch, "from", from.Epoch, "reason", next.Reason)
	if err := ld.waitPrepared(op, next); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = ld.c.st.ClearNext(cctx, ld.l)
		cancel()
		return fmt.Errorf("%w: %w", ErrAborted, err)
	}
	op.report(func(s *adminpb.OperationProgress) { s.Phase = adminpb.Phase_PHASE_SWITCHING })
	newMesh := next.MeshEpoch != from.MeshEpoch || !slices.Equal(next.Addrs, from.Addrs)
	ld.stepMu.Lock()
	if newMesh {
		err = ld.attach(next, p)
		if err == nil {
			ld.kvLost = true
		}
	} else {
		ld.step = max(ld.step, ld.drv.LastStep())
		ld.drv.Attach(ld.drv.Layout(), ld.cfg.VocabSize, next.Epoch, ld.step)
		ld.rec, ld.plan = next, p
		ld.view.Store(next)
		ld.c.setHealth(func(h *Health) { h.Epoch = next.Epoch })
	}
	ld.stepMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: switching to epoch %d: %w", ErrAborted, next.Epoch, err)
	}
	if newMesh {
		select { // an idle scheduler re-reads the geometry
		case ld.alarm <- ErrPlacementChanged:
		default:
		}
	}
	ld.log.Info("steps switched", "epoch", next.Epoch, "new_mesh", newMesh)
	op.report(func(s *adminpb.OperationProgress) { s.Phase = adminpb.Phase_PHASE_COMMITTING })
	for {
		err := ld.c.st.PublishPlacement(ctx, ld.l, next)
		if err == nil || errors.Is(err, store.ErrNotLeader) || ctx.Err() != nil {
			if err != nil {
				return err
			}
			break
		}
		sleep(ctx, 10*ld.c.cfg.PollInterval)
	}
	if err := ld.c.st.ClearNext(ctx, ld.l); err != nil {
		ld.log.Warn("clearing placement/next", "err", err)
	}
	ld.log.Info("committed placement", "epoch", next.Epoch, "reason", next.Reason)
	return nil
}

// waitPrepared polls next's members until each holds next's epoch, and
// fails when one dies, reports a load error, or the operation times out.
func (ld *leading) waitPrepared(op *operation, next *pb.PlacementRecord) error {
	ctx := op.ctx
	t := time.NewTicker(ld.c.cfg.PollInterval)
	defer t.Stop()
	missed := make([]int, len(next.Addrs))
	for poll := 0; ; poll++ {
		if poll%10 == 9 {
			if err := ld.checkLoading(ctx, next); err != nil {
				return err
			}
		}
		hs := ld.probe(ctx, next.Addrs)
		ready := 0
		for i, h := range hs {
			id := next.WorkerIds[i]
			if ld.isSuspect(id) {
				return fmt.Errorf("%w: %s left the memberlist while loading epoch %d", ErrWorkerLost, id, next.Epoch)
			}
			if h == nil {
				if missed[i]++; missed[i] >= 2 {
					return fmt.Errorf("%w: %s stopped answering while loading epoch %d", ErrWorkerLost, id, next.Epoch)
				}
				continue
			}
			missed[i] = 0
			if h.State == pb.WorkerState_WORKER_STATE_SERVING && h.PlacementEpoch >= next.Epoch {
				ready++
			}
		}
		if uint32(ready) != op.state.WorkersReady {
			op.report(func(s *adminpb.OperationProgress) { s.WorkersReady = uint32(ready) })
		}
		if ready == len(hs) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("placement epoch %d not loaded by every worker: %w", next.Epoch, ctx.Err())
		case <-t.C:
		}
	}
}

// layerPlacements converts rec's placement into one sharding.Placement
// per decoder layer and lists the MoE layers.
func (ld *leading) layerPlacements(rec *pb.PlacementRecord) ([]*sharding.Placement, []int, error) {
	return layerPlacements(ld.cfg.NumHiddenLayers, ld.cfg.NumExperts, ld.cfg.IsMoELayer, rec)
}
