package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/coordinator/planner"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/model"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sharding"
)

// ErrWorkerLost reports a worker of the serving placement gone.
var ErrWorkerLost = errors.New("control: worker lost")

func modelName(dir string) string { return filepath.Base(filepath.Clean(dir)) }

// leading is the state of a coordinator while it leads. Its Backend
// methods run on the term's goroutine; suspect runs on the event loop.
type leading struct {
	c        *Coordinator
	l        *store.Leader
	log      *slog.Logger
	modelDir string
	cfg      *model.Config

	// Term goroutine only (and the setup before the term starts).
	rec   *pb.PlacementRecord
	plan  planner.Plan
	drv   *coordinator.Driver
	step  uint64
	alarm chan error
	// published is the newest epoch (and mesh epoch) written to etcd.
	published, publishedMesh uint64
	addrBook                 map[string]string
	conns                    *connCache

	mu         sync.Mutex
	suspects   map[string]bool
	stepCancel context.CancelFunc

	// ctx is the leadership's context: live operations run under it.
	ctx context.Context
	// placeMu serialises placement changes: Recover and the live
	// operations (operate.go). stepMu is held by Step for its whole call,
	// so a live switch happens between steps; kvLost (guarded by it)
	// makes the next Step report ErrPlacementChanged.
	placeMu sync.Mutex
	stepMu  sync.Mutex
	kvLost  bool
	// view is the serving record, for readers off the term goroutine.
	view atomic.Pointer[pb.PlacementRecord]
}

var _ coordinator.Backend = (*leading)(nil)

// leadUntilLost runs the leader's work until leadership is lost or ctx ends.
func (c *Coordinator) leadUntilLost(ctx context.Context, l *store.Leader) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-l.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	ld := &leading{c: c, l: l, log: c.log, suspects: map[string]bool{}, alarm: make(chan error, 1), conns: newConnCache(c.cfg.DialOptions), ctx: ctx}
	defer ld.conns.close()
	c.mu.Lock()
	c.lead = ld
	c.health.Role, c.health.Leader, c.health.Ready = "leader", c.cfg.ID, false
	c.health.Reason = "leader: preparing the first placement"
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		term := c.term
		c.term, c.lead = nil, nil
		c.health = Health{Role: "standby", Reason: "lost leadership", Etcd: c.health.Etcd}
		c.mu.Unlock()
		if term != nil {
			term.Stop(ErrNotLeader)
		}
		if ld.drv != nil {
			ld.drv.Close()
		}
	}()
	if err := ld.start(ctx); err != nil {
		if ctx.Err() == nil {
			c.log.Error("leader could not start serving", "err", err)
			c.setHealth(func(h *Health) { h.Reason = "leader: " + err.Error() })
		}
		<-ctx.Done()
		return
	}
	if c.cfg.Lead != nil {
		term := c.cfg.Lead.Lead(ld)
		c.mu.Lock()
		c.term = term
		c.mu.Unlock()
	}
	<-ctx.Done()
}

// start adopts the placement in etcd when its workers still serve it, and
// plans a new one otherwise.
func (ld *leading) start(ctx context.Context) error {
	dir, cfg, err := ld.c.modelConfig(ctx, ld.l)
	for errors.Is(err, store.ErrUnavailable) && ctx.Err() == nil { // etcd not reachable yet
		sleep(ctx, 10*ld.c.cfg.PollInterval)
		dir, cfg, err = ld.c.modelConfig(ctx, ld.l)
	}
	if err != nil {
		return err
	}
	ld.c.mu.Lock()
	ld.modelDir, ld.cfg = dir, cfg
	ld.c.mu.Unlock()
	cur, err := ld.c.st.CurrentPlacement(ctx)
	switch {
	case err == nil:
		ld.published, ld.publishedMesh = cur.Epoch, cur.MeshEpoch
		if next, err := ld.c.st.NextPlacement(ctx); err == nil {
			// A live change the last leader left half done: its epoch
			// numbers are taken (the workers may hold it), it is not
			// resumed.
			ld.published, ld.publishedMesh = max(ld.published, next.Epoch), max(ld.publishedMesh, next.MeshEpoch)
			_ = ld.c.st.ClearNext(ctx, ld.l)
		}
		if latest, err := ld.c.st.LatestEpoch(ctx); err == nil {
			ld.published = max(ld.published, latest)
		}
		ld.learn(cur)
		if ld.adopt(ctx, cur) {
			return nil
		}
		ld.rec = cur
		ld.plan = planFromRecord(cur)
		return ld.Recover(ctx, fmt.Errorf("%w: the placement of epoch %d is not fully served", ErrWorkerLost, cur.Epoch))
	case errors.Is(err, store.ErrNotFound):
		return ld.initial(ctx)
	default:
		return err
	}
}

// adopt takes over a placement whose workers all serve it: nothing is
// reloaded, and steps continue after the highest step any worker ran.
func (ld *leading) adopt(ctx context.Context, rec *pb.PlacementRecord) bool {
	hs := ld.probe(ctx, rec.Addrs)
	var last uint64
	for i, h := range hs {
		if h == nil || h.State != pb.WorkerState_WORKER_STATE_SERVING || h.PlacementEpoch < rec.Epoch || len(h.LostPeers) > 0 {
			ld.log.Info("not adopting the placement", "epoch", rec.Epoch, "worker", rec.WorkerIds[i])
			return false
		}
		// Workers that ended on different steps were cut off mid-step by
		// the old leader: frames of that step may still be in flight on
		// their mesh, so it needs a new generation.
		if i > 0 && h.LastStep != hs[0].LastStep {
			ld.log.Info("not adopting the placement: a step was cut off", "epoch", rec.Epoch, "last_steps", fmt.Sprint(h.LastStep, " ", hs[0].LastStep))
			return false
		}
		last = max(last, h.LastStep)
	}
	ld.step = last
	if err := ld.attach(rec, planFromRecord(rec)); err != nil {
		ld.log.Warn("adopting", "err", err)
		return false
	}
	ld.log.Info("adopted the running placement", "epoch", rec.Epoch, "last_step", last)
	return true
}

// initial waits for enough workers and publishes the first placement.
func (ld *leading) initial(ctx context.Context) error {
	ld.c.setHealth(func(h *Health) {
		h.Reason = fmt.Sprintf("leader: waiting for %d workers to register", ld.c.cfg.Workers)
	})
	watch := ld.c.st.WatchWorkers(ctx)
	for {
		cands, err := ld.candidates(ctx, nil)
		if err == nil {
			var p planner.Plan
			p, err = planner.Initial(ld.cfg, cands, ld.options(1))
			if err == nil {
				return ld.publishAndWait(ctx, p, ld.published+1, ld.publishedMesh+1, "initial")
			}
		}
		if !errors.Is(err, planner.ErrNotEnough) && !errors.Is(err, store.ErrUnavailable) {
			return err
		}
		ld.c.setHealth(func(h *Health) { h.Reason = "leader: " + err.Error() })
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-watch:
		case <-time.After(time.Second):
		}
	}
}

func (ld *leading) options(epoch uint64) planner.Options {
	c := ld.c.cfg
	return planner.Options{Workers: c.Workers, TP: c.TP, ExpertReplicas: c.ExpertReplicas, SpareSlots: c.SpareSlots, KVTokens: c.KVTokens, Epoch: epoch}
}

// candidates lists the registered workers that answer Health, not in skip.
func (ld *leading) candidates(ctx context.Context, skip map[string]bool) ([]planner.Worker, error) {
	recs, err := ld.c.st.Workers(ctx)
	if err != nil {
		return nil, err
	}
	cordoned := map[string]bool{}
	cords, err := ld.c.st.Cordoned(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range cords {
		cordoned[r.Id] = true
	}
	recs = slices.DeleteFunc(recs, func(r *pb.WorkerRecord) bool { return skip[r.Id] || cordoned[r.Id] || ld.isSuspect(r.Id) })
	addrs := make([]string, len(recs))
	for i, r := range recs {
		addrs[i] = r.Addr
	}
	hs := ld.probe(ctx, addrs)
	var out []planner.Worker
	for i, r := range recs {
		if hs[i] != nil {
			out = append(out, planner.Worker{ID: r.Id, MemoryBytes: r.MemoryBytes})
			ld.addrs()[r.Id] = r.Addr
		}
	}
	return out, nil
}

// addrs maps worker ids to addresses (learnt from etcd).
func (ld *leading) addrs() map[string]string {
	if ld.addrBook == nil {
		ld.addrBook = map[string]string{}
	}
	return ld.addrBook
}

// publishAndWait writes plan as placement epoch and waits until every
// member serves it.
func (ld *leading) publishAndWait(ctx context.Context, p planner.Plan, epoch, meshEpoch uint64, reason string) error {
	c := ld.c.cfg
	rec := ld.record(p, epoch, meshEpoch, reason)
	ld.c.setHealth(func(h *Health) {
		h.Ready, h.Reason = false, fmt.Sprintf("leader: publishing placement epoch %d (%s)", epoch, reason)
	})
	for {
		err := ld.c.st.PublishPlacement(ctx, ld.l, rec)
		if err == nil {
			break
		}
		if errors.Is(err, store.ErrNotLeader) || ctx.Err() != nil {
			return err
		}
		ld.c.setHealth(func(h *Health) {
			h.Reason = fmt.Sprintf("leader: placement epoch %d waits for etcd: %v", epoch, err)
		})
		sleep(ctx, 10*c.PollInterval)
	}
	ld.published, ld.publishedMesh = max(ld.published, epoch), max(ld.publishedMesh, meshEpoch)
	ld.log.Info("published placement", "epoch", epoch, "workers", rec.WorkerIds, "tp", p.Layout.TP, "spares", rec.Spares, "reason", reason)
	ld.c.setHealth(func(h *Health) {
		h.Reason = fmt.Sprintf("leader: waiting for %d workers to load placement epoch %d", len(rec.WorkerIds), epoch)
	})
	if err := ld.waitReady(ctx, rec); err != nil {
		return err
	}
	return ld.attach(rec, p)
}

// record is the placement record of p.
func (ld *leading) record(p planner.Plan, epoch, meshEpoch uint64, reason string) *pb.PlacementRecord {
	c := ld.c.cfg
	rec := &pb.PlacementRecord{
		Epoch: epoch, MeshEpoch: meshEpoch,
		Layout:    &pb.Layout{Workers: uint32(p.Layout.Workers), Tp: uint32(p.Layout.TP)},
		Placement: coordinator.PlacementProto(p.Placement, ld.cfg.NumHiddenLayers),
		KvBlocks:  uint32((c.KVTokens + c.BlockSize - 1) / c.BlockSize), KvBlockSize: uint32(c.BlockSize),
		WireDtype: c.WireDType, ModelDir: ld.modelDir, Leader: c.ID, CreatedUnixMs: time.Now().UnixMilli(), Reason: reason,
	}
	rec.Placement.Epoch = epoch
	most := 0
	for _, sl := range p.Placement.Slots {
		most = max(most, len(sl))
	}
	rec.SlotsPerWorker = uint32(most + c.SpareSlots)
	for _, m := range p.Members {
		rec.WorkerIds = append(rec.WorkerIds, m.ID)
		rec.Addrs = append(rec.Addrs, ld.addrs()[m.ID])
	}
	for _, s := range p.Spares {
		rec.Spares = append(rec.Spares, s.ID)
	}
	return rec
}

// waitReady polls the members until each serves rec's epoch.
func (ld *leading) waitReady(ctx context.Context, rec *pb.PlacementRecord) error {
	ctx, cancel := context.WithTimeout(ctx, ld.c.cfg.ReadyTimeout)
	defer cancel()
	t := time.NewTicker(ld.c.cfg.PollInterval)
	defer t.Stop()
	for poll := 0; ; poll++ {
		if poll%10 == 9 {
			if err := ld.checkLoading(ctx, rec); err != nil {
				return err
			}
		}
		hs := ld.probe(ctx, rec.Addrs)
		ready := true
		for i, h := range hs {
			if ld.isSuspect(rec.WorkerIds[i]) {
				return fmt.Errorf("%w: %s died while loading placement epoch %d", ErrWorkerLost, rec.WorkerIds[i], rec.Epoch)
			}
			if h == nil || h.State != pb.WorkerState_WORKER_STATE_SERVING || h.PlacementEpoch < rec.Epoch {
				ready = false
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("control: placement epoch %d not loaded by every worker: %w", rec.Epoch, ctx.Err())
		case <-t.C:
		}
	}
}

// checkLoading fails when a member of rec can no longer load it: its
// registration is gone (dead or fenced) or it reported a load error.
func (ld *leading) checkLoading(ctx context.Context, rec *pb.PlacementRecord) error {
	recs, err := ld.c.st.Workers(ctx)
	if err != nil {
		return nil // etcd unreachable: keep polling the workers
	}
	byID := map[string]*pb.WorkerRecord{}
	for _, r := range recs {
		byID[r.Id] = r
	}
	for _, id := range rec.WorkerIds {
		r := byID[id]
		switch {
		case r == nil:
			return fmt.Errorf("%w: %s is no longer registered while loading placement epoch %d", ErrWorkerLost, id, rec.Epoch)
		case r.Error != "" && r.PlacementEpoch < rec.Epoch && r.State != pb.WorkerState_WORKER_STATE_LOADING:
			return fmt.Errorf("control: %s cannot load placement epoch %d: %s", id, rec.Epoch, r.Error)
		}
	}
	return nil
}

// attach points a new driver at the members of rec.
func (ld *leading) attach(rec *pb.PlacementRecord, p planner.Plan) error {
	drv, err := coordinator.Dial(rec.Addrs, ld.c.cfg.DialOptions...)
	if err != nil {
		return err
	}
	drv.StepTimeout = ld.c.cfg.StepTimeout
	layout, err := sharding.NewLayout(int(rec.Layout.GetWorkers()), int(rec.Layout.GetTp()))
	if err != nil {
		drv.Close()
		return err
	}
	drv.Attach(layout, ld.cfg.VocabSize, rec.Epoch, ld.step)
	if ld.drv != nil {
		ld.step = max(ld.step, ld.drv.LastStep())
		ld.drv.Close()
	}
	ld.drv, ld.rec, ld.plan = drv, rec, p
	ld.view.Store(rec)
	ld.learn(rec)
	ld.mu.Lock()
	for _, id := range rec.WorkerIds {
		delete(ld.suspects, id)
	}
	ld.mu.Unlock()
	ld.c.setHealth(func(h *Health) {
		h.Ready, h.Reason, h.Epoch = true, "", rec.Epoch
		h.Layout = fmt.Sprintf("%d workers = %d groups × tp %d", layout.Workers, layout.DP, layout.TP)
		h.Workers, h.Spares = slices.Clone(rec.WorkerIds), slices.Clone(rec.Spares)
	})
	return nil
}

// learn records the addresses of rec's workers.
func (ld *leading) learn(rec *pb.PlacementRecord) {
	for i, id := range rec.WorkerIds {
		if i < len(rec.Addrs) {
			ld.addrs()[id] = rec.Addrs[i]
		}
	}
}

// planFromRecord rebuilds the plan a record was written from.
func planFromRecord(rec *pb.PlacementRecord) planner.Plan {
	p := planner.Plan{}
	p.Layout, _ = sharding.NewLayout(int(rec.Layout.GetWorkers()), max(int(rec.Layout.GetTp()), 1))
	for _, id := range rec.WorkerIds {
		p.Members = append(p.Members, planner.Worker{ID: id})
	}
	for _, id := range rec.Spares {
		p.Spares = append(p.Spares, planner.Worker{ID: id})
	}
	return p
}

// probe asks every address for Health concurrently; nil marks no answer
// within ProbeTimeout.
func (ld *leading) probe(ctx context.Context, addrs []string) []*pb.HealthResponse {
	out := make([]*pb.HealthResponse, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		if a == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = ld.conns.health(ctx, a, ld.c.cfg.ProbeTimeout)
		}()
	}
	wg.Wait()
	return out
}

// suspect marks a worker reported dead; a step in flight on a placement
// that includes it is cancelled, and an idle scheduler is alarmed.
func (ld *leading) suspect(id string) {
	ld.mu.Lock()
	ld.suspects[id] = true
	cancel := ld.stepCancel
	ld.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	select {
	case ld.alarm <- fmt.Errorf("%w: %s left the memberlist", ErrWorkerLost, id):
	default:
	}
}

// unsuspect clears a worker memberlist sees alive again.
func (ld *leading) unsuspect(id string) {
	ld.mu.Lock()
	delete(ld.suspects, id)
	ld.mu.Unlock()
}

func (ld *leading) isSuspect(id string) bool {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.suspects[id]
}

// Geometry implements coordinator.Backend.
func (ld *leading) Geometry() coordinator.Geometry {
	ld.stepMu.Lock()
	defer ld.stepMu.Unlock()
	return coordinator.Geometry{Groups: ld.drv.Layout().DP, KVBlocks: int(ld.rec.KvBlocks), BlockSize: int(ld.rec.KvBlockSize),
		Vocab: ld.cfg.VocabSize, Experts: ld.cfg.NumExperts}
}

// StepStats implements coordinator.Backend.
func (ld *leading) StepStats() []*pb.StepStats {
	ld.stepMu.Lock()
	defer ld.stepMu.Unlock()
	return ld.drv.LastStats
}

// Alarm implements coordinator.Backend.
func (ld *leading) Alarm() <-chan error { return ld.alarm }

// Step implements coordinator.Backend.
func (ld *leading) Step(ctx context.Context, seqs []*pb.SeqStep, finished []uint64) (map[uint64]*pb.SeqResult, error) {
	ld.stepMu.Lock()
	defer ld.stepMu.Unlock()
	if ld.kvLost {
		ld.kvLost = false
		return nil, ErrPlacementChanged
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ld.mu.Lock()
	for _, id := range ld.rec.WorkerIds {
		if ld.suspects[id] {
			ld.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrWorkerLost, id)
		}
	}
	ld.stepCancel = cancel
	ld.mu.Unlock()
	defer func() {
		ld.mu.Lock()
		ld.stepCancel = nil
		ld.mu.Unlock()
	}()
	return ld.drv.Step(ctx, seqs, finished)
}

// Recover implements coordinator.Backend: find the dead, fence them, re-plan,
// publish the next epoch and wait for it to serve.
func (ld *leading) Recover(ctx context.Context, cause error) error {
	if errors.Is(cause, ErrPlacementChanged) {
		// A live change moved steps to a new mesh: nothing failed, the
		// scheduler only re-prefills (the KV caches are new).
		ld.stepMu.Lock()
		ld.kvLost = false
		ld.stepMu.Unlock()
		return nil
	}
	ld.placeMu.Lock()
	defer ld.placeMu.Unlock()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, ld.c.cfg.ReadyTimeout)
	defer cancel()
	ld.c.setHealth(func(h *Health) { h.Ready, h.Reason = false, "recovering: "+cause.Error() })
	fenced := map[string]bool{}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("control: recovery from %v: %w", cause, err)
		}
		if ld.drv != nil {
			ld.step = max(ld.step, ld.drv.LastStep())
		}
		dead, serving := ld.findDead(ctx)
		if len(dead) == 0 && serving && attempt == 0 && ld.drv != nil {
			// Everyone answers and serves and no peer link broke: the step
			// failed for another reason (a deadline); resubmit on the same
			// placement.
			ld.log.Warn("step failed with every worker healthy; resubmitting", "cause", cause)
			ld.c.setHealth(func(h *Health) { h.Ready, h.Reason = true, "" })
			return nil
		}
		// Fence each dead worker once: a worker that was only frozen comes
		// back under a new lease, as a spare, and must not be fenced again.
		for id := range dead {
			if fenced[id] {
				continue
			}
			fenced[id] = true
			if err := ld.c.st.FenceWorker(ctx, id); err != nil {
				ld.log.Warn("fencing", "worker", id, "err", err)
			}
		}
		inPlan := map[string]bool{}
		for _, id := range ld.rec.WorkerIds {
			inPlan[id] = true
		}
		skip := map[string]bool{}
		for id := range dead {
			skip[id] = true
		}
		for id := range inPlan {
			skip[id] = true
		}
		spares, err := ld.candidates(ctx, skip)
		if err != nil {
			ld.c.setHealth(func(h *Health) { h.Reason = "recovering: waiting for etcd: " + err.Error() })
			sleep(ctx, 10*ld.c.cfg.PollInterval)
			continue
		}
		o := ld.options(ld.published + 1)
		p, err := planner.Replan(ld.cfg, ld.plan, dead, spares, o)
		if err != nil {
			ld.c.setHealth(func(h *Health) { h.Reason = fmt.Sprintf("recovering: %v", err) })
			sleep(ctx, 10*ld.c.cfg.PollInterval)
			continue
		}
		var names []string
		for id := range dead {
			names = append(names, id)
		}
		slices.Sort(names)
		reason := fmt.Sprintf("workers %v lost", names)
		if err := ld.publishAndWait(ctx, p, ld.published+1, ld.publishedMesh+1, reason); err != nil {
			if errors.Is(err, store.ErrNotLeader) {
				return fmt.Errorf("%w: %w", ErrNotLeader, err)
			}
			ld.log.Warn("recovery attempt failed", "err", err)
			continue
		}
		ld.log.Info("recovered", "epoch", ld.rec.Epoch, "dead", names, "took", time.Since(start))
		return nil
	}
}

// findDead lists the members of the serving placement that are gone: they
// do not answer Health (twice) or memberlist declared them dead (the others then report their links to it broken). serving reports whether every member
// answers SERVING at the placement's epoch; a member that answers but
// does not (fenced and back, restarted) is alive and loads the next epoch.
func (ld *leading) findDead(ctx context.Context) (dead map[string]bool, serving bool) {
	dead = map[string]bool{}
	serving = true
	// memberlist's verdict stands: a frozen worker would only cost two
	// probe timeouts.
	addrs := make([]string, len(ld.rec.Addrs))
	for i, a := range ld.rec.Addrs {
		if !ld.isSuspect(ld.rec.WorkerIds[i]) {
			addrs[i] = a
		}
	}
	hs := ld.probe(ctx, addrs)
	retry := make([]string, len(hs))
	again := false
	for i, h := range hs {
		if h == nil && addrs[i] != "" {
			retry[i], again = addrs[i], true
		}
	}
	if again {
		for i, h := range ld.probe(ctx, retry) {
			if hs[i] == nil {
				hs[i] = h
			}
		}
	}
	for i, h := range hs {
		id := ld.rec.WorkerIds[i]
		if h == nil || ld.isSuspect(id) {
			dead[id] = true
			serving = false
			continue
		}
		if h.State != pb.WorkerState_WORKER_STATE_SERVING || h.PlacementEpoch < ld.rec.Epoch {
			serving = false
		}
		if len(h.LostPeers) > 0 {
			// A broken link says one end is bad, not which: the dead end
			// does not answer (above); the mesh needs a new generation.
			serving = false
		}
	}
	return dead, serving
}
