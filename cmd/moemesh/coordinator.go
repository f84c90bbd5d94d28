package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/coordinator/etcdembed"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/membership"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/serving"
)

func init() { register(newCoordinatorCmd) }

// etcdFlags select the etcd cluster and the key prefix.
type etcdFlags struct {
	Endpoints []string
	Prefix    string
	Sec       etcdSecurityFlags // TLS and credentials (clustertls.go)
}

func (e *etcdFlags) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&e.Endpoints, "etcd-endpoints", nil, "etcd client URLs, comma-separated")
	cmd.Flags().StringVar(&e.Prefix, "etcd-prefix", store.DefaultConfig().Prefix, "prefix of every key the cluster keeps in etcd")
	e.Sec.AddFlags(cmd)
}

func (e *etcdFlags) open(log *slog.Logger) (*store.Store, error) {
	c := store.DefaultConfig()
	c.Endpoints, c.Prefix, c.Log = e.Endpoints, e.Prefix, log
	if err := e.Sec.apply(&c); err != nil {
		return nil, err
	}
	return store.Open(c)
}

// gossipConfig parses a memberlist bind address host:port.
func gossipConfig(addr string) (membership.Config, error) {
	g := membership.DefaultConfig()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return g, usagef("--gossip-addr %q: want host:port: %v", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return g, usagef("--gossip-addr %q: bad port", addr)
	}
	g.BindAddr, g.BindPort = host, p
	return g, nil
}

func newLogger(s IOStreams, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(s.ErrOut, &slog.HandlerOptions{Level: l})), nil
}

type coordinatorOptions struct {
	Etcd           etcdFlags
	ID             string
	Model          string
	GRPCAddr       string
	HTTPAddr       string
	GossipAddr     string
	MinWorkers     int
	TP             int
	ExpertReplicas int
	Context        int
	WireDType      string
	LeaseTTL       time.Duration
	LogLevel       string
	// MaxBatchTokens and MaxSeqs are the scheduler's per-step limits.
	MaxBatchTokens int
	MaxSeqs        int
	// Serving are the front doors' settings (names, keys, TLS, limits).
	Serving serving.Config
	// TLS is the coordinator's certificate towards the workers (clustertls.go).
	TLS clusterTLSFlags
	// AdminTokenFile holds the operator token of the admin API (also
	// read from $MOEMESH_ADMIN_TOKEN).
	AdminTokenFile string
	// SpareSlots are the free expert slots each worker keeps per MoE
	// layer for rebalancing replicas; MaxMoves is a rebalance's default
	// bound on expert copies loaded (0: none).
	SpareSlots int
	MaxMoves   int
}

func (o *coordinatorOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Model, "model", "", "model directory, published as the cluster's model (every worker mounts it at the same path); default: the model already in etcd")
	f.StringVar(&o.GRPCAddr, "grpc-addr", "127.0.0.1:50051", "address of the gRPC inference API")
	f.StringVar(&o.HTTPAddr, "http-addr", "127.0.0.1:8080", "address of the HTTP API (/health)")
	f.StringVar(&o.GossipAddr, "gossip-addr", "127.0.0.1:0", "memberlist address (host:port; port 0 picks one)")
	f.StringVar(&o.ID, "id", "", "coordinator name (default: c-<hostname>-<pid>)")
	f.IntVar(&o.MinWorkers, "min-workers", 1, "workers in the layout; more registered workers are spares")
	f.IntVar(&o.TP, "tp", 1, "tensor-parallel size: attention heads are split over this many workers of a group")
	f.IntVar(&o.ExpertReplicas, "expert-replicas", 0, "extra expert replicas per MoE layer")
	f.IntVar(&o.Context, "context", 8192, "KV cache size of each attention group, in tokens")
	f.StringVar(&o.WireDType, "wire-dtype", "f32", "activation type on the wire: f32 or bf16")
	f.DurationVar(&o.LeaseTTL, "lease-ttl", 5*time.Second, "leader election lease: a dead leader is replaced within it")
	f.StringVar(&o.LogLevel, "log-level", "warn", "debug, info, warn or error")
	sd := scheduler.DefaultConfig()
	f.IntVar(&o.MaxBatchTokens, "max-num-batched-tokens", sd.MaxBatchTokens, "tokens per step, decodes and prefill chunks together (vLLM's --max-num-batched-tokens)")
	f.IntVar(&o.MaxSeqs, "max-num-seqs", sd.MaxSeqs, "sequences running at once (vLLM's --max-num-seqs)")
	o.Serving = serving.DefaultConfig()
	f.StringVar(&o.Serving.ModelName, "served-model-name", "", "model name the APIs answer to (default: the model directory's base name)")
	f.StringVar(&o.Serving.APIKeyFile, "api-key-file", "", "file of accepted API keys, one a line; keys are also read from $MOEMESH_API_KEY (comma-separated); none: no authentication")
	f.StringVar(&o.Serving.TLSCertFile, "tls-cert", "", "PEM certificate: serve gRPC and HTTP over TLS (with --tls-key)")
	f.StringVar(&o.Serving.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.Int64Var(&o.Serving.MaxBodyBytes, "max-request-bytes", o.Serving.MaxBodyBytes, "largest HTTP request body and gRPC message")
	f.IntVar(&o.Serving.MaxPromptTokens, "max-prompt-tokens", 0, "largest prompt in tokens (0: the context bounds it)")
	f.IntVar(&o.Serving.MaxStreamsPerKey, "max-streams-per-key", 0, "generations running at once per API key, server-wide without keys (0: no bound)")
	f.StringVar(&o.AdminTokenFile, "admin-token-file", "", "file holding the admin API's operator token (rebalance, drain, uncordon); also read from $MOEMESH_ADMIN_TOKEN; none: those operations are refused")
	f.IntVar(&o.SpareSlots, "expert-spare-slots", 0, "free expert slots per worker and MoE layer that a rebalance may fill with replicas of hot experts (each costs one expert's weights when used)")
	f.IntVar(&o.MaxMoves, "rebalance-max-moves", 0, "default bound on the expert copies one rebalance loads (0: no bound)")
}

func (o *coordinatorOptions) Validate() error {
	if o.MinWorkers < 1 {
		return usagef("--min-workers must be at least 1, got %d", o.MinWorkers)
	}
	if o.TP < 1 || o.MinWorkers%o.TP != 0 {
		return usagef("--tp %d must be positive and divide --min-workers %d", o.TP, o.MinWorkers)
	}
	if o.Context < 1 {
		return usagef("--context must be at least 1, got %d", o.Context)
	}
	if o.ExpertReplicas < 0 {
		return usagef("--expert-replicas must be non-negative, got %d", o.ExpertReplicas)
	}
	if o.SpareSlots < 0 || o.MaxMoves < 0 {
		return usagef("--expert-spare-slots (%d) and --rebalance-max-moves (%d) must be non-negative", o.SpareSlots, o.MaxMoves)
	}
	if o.WireDType != "f32" && o.WireDType != "bf16" {
		return usagef("--wire-dtype %q: allowed values are f32, bf16", o.WireDType)
	}
	if o.MaxBatchTokens < 1 {
		return usagef("--max-num-batched-tokens must be at least 1, got %d", o.MaxBatchTokens)
	}
	if o.MaxSeqs < 1 {
		return usagef("--max-num-seqs must be at least 1, got %d", o.MaxSeqs)
	}
	if o.LeaseTTL < time.Second {
		return usagef("--lease-ttl %v: etcd leases have a granularity of 1s", o.LeaseTTL)
	}
	return nil
}

func newCoordinatorCmd(s IOStreams) *cobra.Command {
	o := &coordinatorOptions{}
	var dataDir, etcdListen string
	var etcdServer etcdServerFlags
	cmd := &cobra.Command{
		Use:   "coordinator [--etcd-endpoints URLS] [--model DIR]",
		Short: "Run a coordinator: campaigns for leadership in etcd; the leader plans the layout, drives the workers and serves the APIs",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log, err := newLogger(s, o.LogLevel)
			if err != nil {
				return err
			}
			if len(o.Etcd.Endpoints) == 0 {
				// No external etcd: run an embedded one (loopback only).
				ec := etcdembed.DefaultConfig(dataDir)
				ec.Log = log
				if err := etcdServer.apply(&ec, etcdListen, &o.Etcd.Sec); err != nil {
					return err
				}
				etcd, err := etcdembed.Start(ctx, ec)
				if err != nil {
					return err
				}
				defer etcd.Close()
				o.Etcd.Endpoints = etcd.Endpoints()
				fmt.Fprintf(s.Out, "moemesh coordinator: embedded etcd on %s (data in %s); start workers with --etcd-endpoints %s\n",
					etcd.Endpoints()[0], dataDir, etcd.Endpoints()[0])
			}
			st, err := o.Etcd.open(log)
			if err != nil {
				return err
			}
			defer st.Close()
			return o.Run(ctx, s, st, nil)
		},
	}
	o.Etcd.AddFlags(cmd)
	o.AddFlags(cmd)
	cmd.Flags().StringVar(&dataDir, "data-dir", "moemesh-etcd", "data directory of the embedded etcd started when --etcd-endpoints is absent")
	cmd.Flags().StringVar(&etcdListen, "etcd-listen", "127.0.0.1:2379", "client address of that embedded etcd (loopback only without --etcd-server-cert)")
	etcdServer.AddFlags(cmd)
	o.TLS.AddFlags(cmd)
	return cmd
}

// Run serves until ctx ends. ready, when set, is called with the API
// addresses once they listen.
func (o *coordinatorOptions) Run(ctx context.Context, s IOStreams, st *store.Store, ready func(grpcAddr, httpAddr string)) error {
	log, err := newLogger(s, o.LogLevel)
	if err != nil {
		return err
	}
	g, err := gossipConfig(o.GossipAddr)
	if err != nil {
		return err
	}
	if err := o.TLS.gossip(log, &g); err != nil {
		return err
	}
	if o.ID == "" {
		h, _ := os.Hostname()
		o.ID = fmt.Sprintf("c-%s-%d", h, os.Getpid())
	}
	l, err := serving.Listen(o.GRPCAddr, o.HTTPAddr)
	if err != nil {
		return err
	}
	cfg := control.DefaultConfig()
	cfg.ID, cfg.Store, cfg.ModelDir, cfg.Log, cfg.Gossip = o.ID, st, o.Model, log, g
	cfg.Workers, cfg.TP, cfg.ExpertReplicas, cfg.KVTokens, cfg.LeaseTTL = o.MinWorkers, o.TP, o.ExpertReplicas, o.Context, o.LeaseTTL
	cfg.SpareSlots, cfg.MaxMoves = o.SpareSlots, o.MaxMoves
	if o.WireDType == "bf16" {
		cfg.WireDType = pb.DType_DTYPE_BF16
	}
	cfg.GRPCAddr, cfg.HTTPAddr = l.GRPC.Addr().String(), l.HTTP.Addr().String()
	if cfg.DialOptions, err = o.TLS.coordinatorDial(log); err != nil {
		l.Close()
		return err
	}
	sc := scheduler.DefaultConfig()
	sc.MaxBatchTokens, sc.MaxSeqs, sc.Log = o.MaxBatchTokens, o.MaxSeqs, log
	metrics := serving.NewMetrics(nil)
	sc.Observer = metrics
	sched, err := scheduler.New(sc)
	if err != nil {
		l.Close()
		return usagef("%v", err)
	}
	cfg.Lead = sched
	c, err := control.Start(ctx, cfg)
	if err != nil {
		l.Close()
		return err
	}
	sched.SetHealth(c.Health)
	scfg := o.Serving
	if scfg.MaxBodyBytes == 0 { // options built without AddFlags
		scfg = serving.DefaultConfig()
	}
	scfg.Log = log
	scfg.AdminTokenFile = o.AdminTokenFile
	srv, err := serving.New(scfg, serving.Deps{Submitter: sched, Model: c, Health: c, Metrics: metrics, Admin: c})
	if err != nil {
		c.Close()
		l.Close()
		return usagef("%v", err)
	}
	srv.Serve(l)
	if ready != nil {
		ready(cfg.GRPCAddr, cfg.HTTPAddr)
	} else {
		fmt.Fprintf(s.Out, "moemesh coordinator %s: gRPC API on %s, HTTP on http://%s (GET /health)\n", o.ID, cfg.GRPCAddr, cfg.HTTPAddr)
	}
	<-ctx.Done()
	cerr := c.Close()
	serr := srv.Close(2 * time.Second)
	if cerr != nil {
		return cerr
	}
	return serr
}
