// Package agent is the control plane's side of a worker process: it
// registers the worker in etcd under a lease, joins the memberlist, watches
// placement/current and loads each epoch that names the worker, and fences
// the worker (drops every shard) the moment it learns its lease is gone, so
// a worker cut off by a partition can never serve a stale epoch. A fenced
// worker registers again and comes back as a spare.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/membership"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/worker"
)

// Config configures an agent.
type Config struct {
	// ID names the worker in etcd and in the memberlist.
	ID     string
	Store  *store.Store
	Worker *worker.Worker
	// Addr is the worker's advertised WorkerService/PeerService address.
	Addr   string
	Device string
	// MemoryBytes is what the worker may use (0: unknown).
	MemoryBytes uint64
	// LeaseTTL is the registration's TTL: a worker that stops answering is
	// removed from etcd within it.
	LeaseTTL time.Duration
	// LoadTimeout bounds loading one placement epoch.
	LoadTimeout time.Duration
	// RetryInterval paces registration retries.
	RetryInterval time.Duration
	// Gossip configures the memberlist node (Name, Role, Meta and OnEvent
	// are set by the agent).
	Gossip membership.Config
	Log    *slog.Logger
	// StatsInterval is how often the worker's routed-token counts are
	// published to etcd (stats/experts/<id>); StatsWindow is the window
	// the published sums cover. A zero interval publishes nothing.
	StatsInterval time.Duration
	StatsWindow   time.Duration
	// Crash, when closed, stops the agent as a crash would: no leave, no
	// revocation (the lease expires by itself). Tests use it.
	Crash <-chan struct{}
}

// DefaultConfig returns a complete configuration; ID, Store, Worker and
// Addr must be set.
func DefaultConfig() Config {
	return Config{
		Device:        "cpu",
		LeaseTTL:      5 * time.Second,        // memberlist detects deaths faster; the lease is the fence
		LoadTimeout:   5 * time.Minute,        // loading a large shard from disk
		RetryInterval: 200 * time.Millisecond, // registration retries while etcd or an old lease is in the way
		Gossip:        membership.DefaultConfig(),
		StatsInterval: 10 * time.Second, // a rebalance looks at minutes of traffic; etcd sees one small write per worker per interval
		StatsWindow:   5 * time.Minute,  // long enough to smooth bursts, short enough to follow a shift in the workload
	}
}

// Run serves the worker's control plane until ctx ends, then leaves the
// memberlist and revokes the registration.
func Run(ctx context.Context, cfg Config) error {
	if cfg.ID == "" || cfg.Store == nil || cfg.Worker == nil || cfg.Addr == "" {
		return errors.New("agent: ID, Store, Worker and Addr are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	log := cfg.Log.With("worker_id", cfg.ID)
	g := cfg.Gossip
	g.Name, g.Role, g.Log = cfg.ID, membership.RoleWorker, cfg.Log
	g.Meta = map[string]string{"addr": cfg.Addr}
	ml, err := membership.New(g)
	if err != nil {
		return err
	}
	crashed := false
	defer func() {
		if !crashed {
			_ = ml.Leave(time.Second)
		}
		_ = ml.Shutdown()
	}()
	if cfg.Crash != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-cfg.Crash:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	isCrash := func() bool {
		select {
		case <-cfg.Crash:
			return true
		default:
			return false
		}
	}
	a := &agent{cfg: cfg, log: log, ml: ml, started: time.Now()}
	for {
		reg, err := a.register(ctx)
		if err != nil {
			return nil // ctx ended
		}
		JoinSeeds(ctx, cfg.Store, ml, log)
		fenced := a.serve(ctx, reg)
		if isCrash() {
			crashed = true
			return nil
		}
		if !fenced {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = reg.Close(cctx)
			cancel()
			return nil
		}
		log.Warn("fenced: the registration lease is gone; dropped every shard, registering again as a spare")
		_ = cfg.Worker.Fence()
		_ = reg.Close(context.Background())
	}
}

type agent struct {
	cfg     Config
	current uint64 // the epoch of the last placement/current seen
	log     *slog.Logger
	ml      *membership.Membership
	started time.Time
	lastErr string
}

func (a *agent) record() *pb.WorkerRecord {
	h, _ := a.cfg.Worker.Health(context.Background(), &pb.HealthRequest{})
	return &pb.WorkerRecord{
		Id: a.cfg.ID, Addr: a.cfg.Addr, GossipAddr: a.ml.Addr(), Device: a.cfg.Device, MemoryBytes: a.cfg.MemoryBytes,
		State: h.GetState(), PlacementEpoch: h.GetPlacementEpoch(), Error: a.lastErr, StartedUnixMs: a.started.UnixMilli(),
	}
}

// register retries until the worker is registered or ctx ends (an old
// lease of the same id, from before a restart, expires within its TTL).
func (a *agent) register(ctx context.Context) (*store.Registration, error) {
	for {
		reg, err := a.cfg.Store.RegisterWorker(ctx, a.record(), a.cfg.LeaseTTL)
		if err == nil {
			a.log.Info("registered", "lease", reg.LeaseID())
			return reg, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.log.Debug("registering", "err", err)
		t := time.NewTimer(a.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// serve loads every placement that names the worker until ctx ends (false)
// or the lease is lost (true).
func (a *agent) serve(ctx context.Context, reg *store.Registration) (fenced bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	statsDone := make(chan struct{})
	go func() { defer close(statsDone); a.publishStats(ctx, reg) }()
	defer func() { cancel(); <-statsDone }()
	watch := a.cfg.Store.WatchPlacement(ctx)
	next := a.cfg.Store.WatchNextPlacement(ctx)
	// One load runs at a time, beside this loop: a newer epoch arriving
	// cancels a load still in flight (it may be waiting for a peer that
	// died, and the newer epoch is the leader's answer to that), then
	// starts once it returned.
	var (
		cancelLoad context.CancelFunc
		loadDone   = make(chan struct{})
		loading    uint64
	)
	close(loadDone)
	start := func(rec *pb.PlacementRecord, minLive uint64) {
		if cancelLoad != nil {
			if rec.GetEpoch() > loading {
				cancelLoad()
			}
			<-loadDone
			cancelLoad()
		}
		lctx, c := context.WithCancel(ctx)
		done := make(chan struct{})
		cancelLoad, loadDone, loading = c, done, rec.GetEpoch()
		go func() {
			defer close(done)
			a.load(lctx, reg, rec, minLive)
		}()
	}
	defer func() {
		if cancelLoad != nil {
			cancelLoad()
			<-loadDone
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reg.Lost():
			return true
		case rec, ok := <-watch:
			if !ok {
				return false
			}
			a.current = rec.GetEpoch()
			start(rec, rec.GetEpoch())
		case rec, ok := <-next:
			if !ok {
				return false
			}
			// A prepared epoch: load it beside the serving one, which
			// keeps serving until the leader switches and commits.
			if rec.GetEpoch() > a.current {
				start(rec, a.current)
			}
		}
	}
}

// load loads rec when it names this worker and is not older than what
// it holds, keeping the epochs from minLive on (re-sending the newest
// epoch loads nothing and only frees the older ones).
func (a *agent) load(ctx context.Context, reg *store.Registration, rec *pb.PlacementRecord, minLive uint64) {
	idx := slices.Index(rec.WorkerIds, a.cfg.ID)
	if idx < 0 {
		a.log.Info("spare for placement epoch", "epoch", rec.Epoch)
		return
	}
	if h, _ := a.cfg.Worker.Health(ctx, &pb.HealthRequest{}); h.GetPlacementEpoch() > rec.Epoch {
		return
	}
	minLive = min(minLive, rec.Epoch)
	lctx, cancel := context.WithTimeout(ctx, a.cfg.LoadTimeout)
	defer cancel()
	// Watch the lease while loading: a fenced worker stops at once.
	go func() {
		select {
		case <-reg.Lost():
			cancel()
		case <-lctx.Done():
		}
	}()
	a.lastErr = ""
	a.update(ctx, reg)
	start := time.Now()
	resp, err := a.cfg.Worker.LoadShard(lctx, &pb.LoadShardRequest{
		ModelDir: rec.ModelDir, WorkerIndex: uint32(idx), Layout: rec.Layout, Placement: rec.Placement,
		PeerAddrs: rec.Addrs, WireDtype: rec.WireDtype, KvBlocks: rec.KvBlocks, KvBlockSize: rec.KvBlockSize,
		MeshEpoch: rec.MeshEpoch, MinLiveEpoch: minLive,
	})
	switch {
	case err != nil && errors.Is(ctx.Err(), context.Canceled):
		// Superseded by a newer epoch (or the agent stops): not a load
		// error for the leader to see.
		a.log.Info("load cancelled", "epoch", rec.Epoch, "err", err)
		return
	case err != nil:
		a.lastErr = fmt.Sprintf("loading placement epoch %d: %v", rec.Epoch, err)
		a.log.Error("load failed", "epoch", rec.Epoch, "err", err)
	default:
		a.lastErr = ""
		a.log.Info("loaded placement", "epoch", rec.Epoch, "index", idx, "experts", resp.ExpertsLoaded, "took", time.Since(start))
	}
	a.update(ctx, reg)
}

func (a *agent) update(ctx context.Context, reg *store.Registration) {
	uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := reg.Update(uctx, a.record()); err != nil {
		a.log.Debug("updating the registration", "err", err)
	}
}

// JoinSeeds joins ml to the memberlist of the nodes registered in etcd
// (Join skips ml's own address); failures are logged, not fatal: the
// others join this node when they start.
func JoinSeeds(ctx context.Context, st *store.Store, ml *membership.Membership, log *slog.Logger) {
	seeds, err := st.GossipSeeds(ctx)
	if err != nil || len(seeds) <= 1 {
		return
	}
	jctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := ml.Join(jctx, seeds); err != nil {
		log.Warn("joining the memberlist", "seeds", seeds, "err", err)
	}
}
