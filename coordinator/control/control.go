// Package control is the coordinator's control plane: leader election in
// etcd, the initial plan, adoption of a running placement after a leader
// change, failure detection (memberlist events and broken steps) and
// recovery (fence, re-plan, wait for the workers to load). It runs no
// generation loop itself: while it leads with a serving placement it hands
// a coordinator.Backend to the Config.Lead hook (the scheduler), and ends
// that term when leadership is lost; standbys wait.
//
// Concurrency: a Coordinator's exported methods are safe for concurrent
// use. One goroutine runs the leadership loop (and calls the Lead hook);
// the term's own goroutine is the only caller of the Backend methods
// (Step, Recover); memberlist events arrive on the membership's goroutines
// and are handed off through a channel.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/moemesh/moemesh/coordinator"
	"github.com/moemesh/moemesh/coordinator/agent"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/membership"
	"github.com/moemesh/moemesh/model"
	adminpb "github.com/moemesh/moemesh/proto/moemesh/admin/v1"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Sentinel errors of the control plane.
var (
	// ErrNotLeader: this coordinator is a standby (or lost leadership).
	ErrNotLeader = errors.New("control: not the leader")
	// ErrNotReady: the leader has no placement serving yet.
	ErrNotReady = errors.New("control: no placement serving yet")
	// ErrNoLayout: the live workers cannot hold the model.
	ErrNoLayout = errors.New("control: no layout fits the live workers")
)

// Leader is the hook that serves while this coordinator leads: the
// scheduler.
type Leader interface {
	// Lead starts a term on b, once per leadership term, when the first
	// placement serves. It is called from the leadership goroutine and
	// must return promptly (the term runs on its own goroutines). The
	// term is the only caller of b's methods, one at a time, until its
	// Stop returns.
	Lead(b coordinator.Backend) Term
}

// Term is one leadership term's serving.
type Term interface {
	// Stop ends the term: its requests fail with cause (ErrNotLeader when
	// leadership was lost or the coordinator closed). It is called once,
	// and must not return before the term stopped calling the Backend.
	Stop(cause error)
}

// Config configures a Coordinator.
type Config struct {
	// ID names the coordinator (its election value and memberlist name).
	ID    string
	Store *store.Store
	// ModelDir, when set, is published as the model manifest by the
	// leader; when empty the manifest already in etcd is served.
	ModelDir string
	// Workers is the layout size; more registered workers are spares.
	Workers int
	// TP is the tensor-parallel size.
	TP int
	// ExpertReplicas are extra expert copies per MoE layer.
	ExpertReplicas int
	// SpareSlots are free expert slots per worker and MoE layer that a
	// rebalance may fill with replicas.
	SpareSlots int
	// MaxMoves is a rebalance's default bound on expert copies loaded
	// (0: none).
	MaxMoves int
	// StatsMaxAge is how old a worker's statistics record may be and
	// still count (a few of the workers' publishing intervals).
	StatsMaxAge time.Duration
	// KVTokens sizes each attention group's KV cache.
	KVTokens int
	// BlockSize is the KV block size in tokens.
	BlockSize int
	// WireDType is the activation type between workers.
	WireDType pb.DType
	// LeaseTTL is the election session's TTL: a dead leader is replaced
	// within it.
	LeaseTTL time.Duration
	// StepTimeout bounds every step.
	StepTimeout time.Duration
	// ProbeTimeout bounds each Health probe when looking for dead workers.
	ProbeTimeout time.Duration
	// ReadyTimeout bounds a placement's loading and a recovery.
	ReadyTimeout time.Duration
	// PollInterval paces waiting for workers.
	PollInterval time.Duration
	// GRPCAddr and HTTPAddr are advertised in the coordinator's record.
	GRPCAddr, HTTPAddr string
	// Gossip configures the coordinator's memberlist node (Name, Role and
	// OnEvent are set by the coordinator).
	Gossip membership.Config
	// DialOptions are added to every connection to a worker (steps, loads
	// and Health probes). Nil dials plaintext; with the cluster PKI give
	// pki.Source.DialOption(pki.RoleWorker) (the coordinator's
	// certificate, and only servers with a worker certificate accepted).
	DialOptions []grpc.DialOption
	// Lead, when set, serves while this coordinator leads (see Leader);
	// without it the leader keeps the placement but runs no requests.
	Lead Leader
	Log  *slog.Logger
}

// DefaultConfig returns a complete configuration; ID and Store must be set.
func DefaultConfig() Config {
	return Config{
		Workers:      1,                     // one worker: the smallest cluster
		TP:           1,                     // no tensor parallelism unless asked
		KVTokens:     8192,                  // the single-process default context
		BlockSize:    16,                    // vLLM's default KV block size: little waste per sequence, few table entries
		WireDType:    pb.DType_DTYPE_F32,    // exact: equal to single-process
		LeaseTTL:     5 * time.Second,       // failover bound; etcd's minimum useful TTL is a few seconds
		StepTimeout:  60 * time.Second,      // a long prefill of a large model on CPU
		ProbeTimeout: time.Second,           // a live worker answers Health in milliseconds even when loaded; a dead one refuses at once
		ReadyTimeout: 5 * time.Minute,       // loading a large shard from disk
		PollInterval: 20 * time.Millisecond, // loading the tiny model takes ~50 ms
		Gossip:       membership.DefaultConfig(),
		StatsMaxAge:  time.Minute, // six of the workers' default 10 s publishing intervals
		DialOptions:  nil,         // plaintext: the process sets the cluster's mTLS (cmd/moemesh --cluster-tls-dir)
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("control: ID is required")
	case c.Store == nil:
		return errors.New("control: Store is required")
	case c.Workers < 1:
		return fmt.Errorf("control: Workers must be at least 1, got %d", c.Workers)
	case c.TP < 1 || c.Workers%c.TP != 0:
		return fmt.Errorf("control: TP %d must be positive and divide Workers %d", c.TP, c.Workers)
	case c.KVTokens < 1 || c.BlockSize < 1:
		return fmt.Errorf("control: KVTokens (%d) and BlockSize (%d) must be positive", c.KVTokens, c.BlockSize)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("control: LeaseTTL %v is below etcd's granularity of 1 s", c.LeaseTTL)
	case c.StepTimeout <= 0 || c.ProbeTimeout <= 0 || c.ReadyTimeout <= 0 || c.PollInterval <= 0:
		return errors.New("control: StepTimeout, ProbeTimeout, ReadyTimeout and PollInterval must be positive")
	}
	return nil
}

// Health is the coordinator's state as /health reports it.
type Health struct {
	// Ready: this coordinator leads and a placement serves.
	Ready  bool   `json:"ready"`
	Role   string `json:"role"`
	Leader string `json:"leader,omitempty"`
	// Reason says why it is not ready (or what is degraded).
	Reason  string   `json:"reason,omitempty"`
	Epoch   uint64   `json:"placement_epoch,omitempty"`
	Layout  string   `json:"layout,omitempty"`
	Workers []string `json:"workers,omitempty"`
	Spares  []string `json:"spares,omitempty"`
	Etcd    string   `json:"etcd"`
}

// Coordinator is one coordinator process's control plane.
type Coordinator struct {
	cfg    Config
	st     *store.Store
	log    *slog.Logger
	ml     *membership.Membership
	reg    *store.Registration
	events chan membership.Event

	mu     sync.Mutex
	health Health
	term   Term
	lead   *leading                   // nil unless leading
	op     *adminpb.OperationProgress // the live operation in flight, if any
	lastOp *adminpb.OperationProgress // the last one finished

	stop    context.CancelFunc
	wg      sync.WaitGroup
	crashed bool // Abandon: no resignation
}

// Start registers the coordinator, joins the memberlist and starts
// campaigning; it returns at once (a standby until elected).
func Start(ctx context.Context, cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c := &Coordinator{cfg: cfg, st: cfg.Store, log: cfg.Log.With("coordinator", cfg.ID), events: make(chan membership.Event, 256)}
	c.health = Health{Role: "standby", Reason: "campaigning for leadership", Etcd: "ok"}
	g := cfg.Gossip
	g.Name, g.Role, g.Log = cfg.ID, membership.RoleCoordinator, cfg.Log
	g.Meta = map[string]string{"grpc": cfg.GRPCAddr, "http": cfg.HTTPAddr}
	g.OnEvent = func(ev membership.Event) {
		select {
		case c.events <- ev:
		default: // the leader re-probes on every failure; a dropped event is re-learnt
		}
	}
	ml, err := membership.New(g)
	if err != nil {
		return nil, err
	}
	c.ml = ml
	rec := &pb.CoordinatorRecord{Id: cfg.ID, GrpcAddr: cfg.GRPCAddr, HttpAddr: cfg.HTTPAddr, GossipAddr: ml.Addr(), StartedUnixMs: time.Now().UnixMilli()}
	reg, err := c.st.RegisterCoordinator(ctx, rec, cfg.LeaseTTL)
	if err != nil {
		ml.Shutdown()
		return nil, fmt.Errorf("control: registering coordinator %s: %w", cfg.ID, err)
	}
	c.reg = reg
	agent.JoinSeeds(ctx, c.st, ml, c.log)
	run, stop := context.WithCancel(context.Background())
	c.stop = stop
	c.wg.Add(3)
	go func() { defer c.wg.Done(); c.campaignLoop(run) }()
	go func() { defer c.wg.Done(); c.eventLoop(run) }()
	go func() { defer c.wg.Done(); c.etcdProbeLoop(run) }()
	return c, nil
}

// Health returns the coordinator's state.
func (c *Coordinator) Health() Health {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.health
	h.Workers = append([]string(nil), h.Workers...)
	h.Spares = append([]string(nil), h.Spares...)
	return h
}

func (c *Coordinator) setHealth(f func(h *Health)) {
	c.mu.Lock()
	f(&c.health)
	c.mu.Unlock()
}

// ModelDir is the served checkpoint ("" before the leader read it).
func (c *Coordinator) ModelDir() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lead != nil && c.lead.modelDir != "" {
		return c.lead.modelDir
	}
	return c.cfg.ModelDir
}

// ContextTokens is the KV cache of each attention group, in tokens.
func (c *Coordinator) ContextTokens() int {
	return (c.cfg.KVTokens + c.cfg.BlockSize - 1) / c.cfg.BlockSize * c.cfg.BlockSize
}

// Close stops serving: running requests fail, leadership is resigned so a
// standby takes over at once, and the coordinator leaves the memberlist
// and deregisters.
func (c *Coordinator) Close() error {
	c.stop()
	c.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var errs []error
	errs = append(errs, c.reg.Close(ctx))
	errs = append(errs, c.ml.Leave(time.Second))
	errs = append(errs, c.ml.Shutdown())
	return errors.Join(errs...)
}

// Abandon stops the coordinator as a crash would: no resignation, no
// leave, no deregistration; its leases expire by themselves once the
// caller closes the Store. Tests use it.
func (c *Coordinator) Abandon() {
	c.mu.Lock()
	c.crashed = true
	c.mu.Unlock()
	c.stop()
	c.wg.Wait()
	_ = c.ml.Shutdown()
}

func (c *Coordinator) campaignLoop(ctx context.Context) {
	for ctx.Err() == nil {
		l, err := c.st.Campaign(ctx, c.cfg.ID, c.cfg.LeaseTTL)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("campaign", "err", err)
			c.setHealth(func(h *Health) { h.Reason = "campaign failed: " + err.Error() })
			sleep(ctx, c.cfg.PollInterval*10)
			continue
		}
		c.log.Info("elected leader")
		c.leadUntilLost(ctx, l)
		c.mu.Lock()
		crashed := c.crashed
		c.mu.Unlock()
		if crashed {
			return
		}
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = l.Resign(rctx)
		cancel()
	}
}

// eventLoop forwards memberlist events to the leader's failure handling.
func (c *Coordinator) eventLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-c.events:
			if ev.Member.Role == membership.RoleCoordinator && ev.Kind == membership.EventDead {
				// A dead leader's election key would outlive it by the
				// lease TTL; end it now so a standby leads in seconds.
				c.log.Info("coordinator gone from the memberlist", "coordinator", ev.Member.Name)
				fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if err := c.st.FenceLeader(fctx, ev.Member.Name); err != nil {
					c.log.Warn("fencing the dead leader", "coordinator", ev.Member.Name, "err", err)
				}
				cancel()
				continue
			}
			if ev.Member.Role != membership.RoleWorker {
				continue
			}
			c.mu.Lock()
			l := c.lead
			c.mu.Unlock()
			if l == nil {
				continue
			}
			switch ev.Kind {
			case membership.EventDead, membership.EventLeave:
				c.log.Info("worker gone from the memberlist", "worker", ev.Member.Name, "kind", ev.Kind)
				l.suspect(ev.Member.Name)
			case membership.EventJoin:
				l.unsuspect(ev.Member.Name)
			}
		}
	}
}

// etcdProbeLoop keeps Health.Etcd current.
func (c *Coordinator) etcdProbeLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		leader, err := c.st.LeaderID(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.setHealth(func(h *Health) {
			switch {
			case err == nil:
				h.Etcd, h.Leader = "ok", leader
			case errors.Is(err, store.ErrNotFound):
				h.Etcd, h.Leader = "ok", ""
			default:
				h.Etcd = "unreachable: " + err.Error() + " (serving continues on the current placement; placement changes wait)"
			}
			if h.Role == "standby" && h.Leader != "" {
				h.Reason = "standby: the leader is " + h.Leader
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// modelConfig loads the served model's config: from ModelDir, or from the
// manifest in etcd.
func (c *Coordinator) modelConfig(ctx context.Context, l *store.Leader) (string, *model.Config, error) {
	if c.cfg.ModelDir != "" {
		cfg, err := model.LoadConfig(c.cfg.ModelDir)
		if err != nil {
			return "", nil, err
		}
		js, err := cfg.Marshal()
		if err != nil {
			return "", nil, err
		}
		m := &pb.ModelManifest{ModelDir: c.cfg.ModelDir, Name: modelName(c.cfg.ModelDir), ConfigJson: string(js), Dtype: cfg.TorchDType}
		if err := c.st.PutModel(ctx, l, m); err != nil {
			return "", nil, err
		}
		return c.cfg.ModelDir, cfg, nil
	}
	m, err := c.st.Model(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("control: no --model given and no model manifest in etcd: %w", err)
	}
	cfg, err := model.LoadConfig(m.ModelDir)
	if err != nil {
		return "", nil, err
	}
	return m.ModelDir, cfg, nil
}
