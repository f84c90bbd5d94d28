package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/coordinator/agent"
	"github.com/moemesh/moemesh/internal/sysmem"
	"github.com/moemesh/moemesh/worker"
)

func init() { register(newWorkerCmd) }

type workerOptions struct {
	Listen           string
	Advertise        string
	Device           string
	Compute          string
	ExitOnStdinClose bool
	LogLevel         string
	Etcd             etcdFlags
	ID               string
	GossipAddr       string
	LeaseTTL         time.Duration
	TLS              clusterTLSFlags
	Roots            modelRootFlags
	// StatsInterval and StatsWindow pace the expert statistics the
	// worker publishes to etcd (stats/experts/<id>).
	StatsInterval time.Duration
	StatsWindow   time.Duration
}

func newWorkerCmd(s IOStreams) *cobra.Command {
	o := &workerOptions{}
	cmd := &cobra.Command{
		Use:   "worker --listen ADDR [--etcd-endpoints URLS]",
		Short: "Run a worker: it loads the shard the coordinator assigns and runs steps with its peers (registered in etcd with --etcd-endpoints)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run(cmd.Context(), s)
		},
	}
	cmd.Flags().StringVar(&o.Listen, "listen", "127.0.0.1:0", "address for the worker and peer gRPC services")
	cmd.Flags().StringVar(&o.Device, "device", "cpu", "compute device: cpu or cuda:N (CUDA needs a -tags cuda build)")
	cmd.Flags().StringVar(&o.Compute, "compute", "f32", computeFlagUsage)
	cmd.Flags().BoolVar(&o.ExitOnStdinClose, "exit-on-stdin-close", false, "exit when standard input closes (used by the local cluster launcher)")
	cmd.Flags().StringVar(&o.LogLevel, "log-level", "warn", "debug, info, warn or error")
	cmd.Flags().StringVar(&o.Advertise, "advertise", "", "address peers and the coordinator reach this worker at (default: the listening address)")
	cmd.Flags().StringVar(&o.ID, "id", "", "worker name in etcd and the memberlist (default: w-<hostname>-<port>)")
	cmd.Flags().StringVar(&o.GossipAddr, "gossip-addr", "127.0.0.1:0", "memberlist address (host:port; port 0 picks one)")
	cmd.Flags().DurationVar(&o.LeaseTTL, "lease-ttl", agent.DefaultConfig().LeaseTTL, "registration lease in etcd: a worker that stops answering is removed (fenced) within it")
	cmd.Flags().DurationVar(&o.StatsInterval, "expert-stats-interval", agent.DefaultConfig().StatsInterval, "how often the worker publishes its routed-token counts to etcd")
	cmd.Flags().DurationVar(&o.StatsWindow, "expert-stats-window", agent.DefaultConfig().StatsWindow, "the window the published counts sum over")
	o.Etcd.AddFlags(cmd)
	o.TLS.AddFlags(cmd)
	o.Roots.AddFlags(cmd)
	return cmd
}

func (o *workerOptions) Run(ctx context.Context, s IOStreams) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	backend, err := parseDevice(o.Device, o.Compute)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(s.ErrOut, &slog.HandlerOptions{Level: level}))
	wc := worker.Config{Backend: backend, Log: log}
	if wc.ServerOptions, wc.PeerDialOptions, err = o.TLS.workerTLS(log); err != nil {
		return err
	}
	if wc.ModelRoots, err = o.Roots.roots(log); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.Listen, err)
	}
	srv := worker.Serve(lis, wc)
	fmt.Fprintf(s.Out, "%s%s\n", listenPrefix, srv.Addr())

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.ExitOnStdinClose {
		go func() {
			_, _ = io.Copy(io.Discard, s.In)
			stop()
		}()
	}
	agentDone := make(chan error, 1)
	agentRunning := false
	if len(o.Etcd.Endpoints) > 0 {
		st, err := o.Etcd.open(log)
		if err != nil {
			srv.Stop(time.Second)
			return err
		}
		defer st.Close()
		a := agent.DefaultConfig()
		if a.Gossip, err = gossipConfig(o.GossipAddr); err != nil {
			srv.Stop(time.Second)
			return err
		}
		if err := o.TLS.gossip(log, &a.Gossip); err != nil {
			srv.Stop(time.Second)
			return err
		}
		a.Store, a.Worker, a.Addr, a.Device, a.Log, a.LeaseTTL = st, srv.Worker, srv.Addr(), o.Device, log, o.LeaseTTL
		a.StatsInterval, a.StatsWindow = o.StatsInterval, o.StatsWindow
		if o.Advertise != "" {
			a.Addr = o.Advertise
		}
		a.ID = o.ID
		if a.ID == "" {
			h, _ := os.Hostname()
			_, port, _ := net.SplitHostPort(a.Addr)
			a.ID = fmt.Sprintf("w-%s-%s", h, port)
		}
		if mem, err := sysmem.Available(); err == nil {
			a.MemoryBytes = uint64(mem)
		}
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		agentRunning = true
		go func() { agentDone <- agent.Run(actx, a) }()
	}
	select {
	case <-ctx.Done():
	case <-srv.Done():
	case err := <-agentDone:
		agentRunning = false
		if err != nil {
			log.Error("control plane agent", "err", err)
		}
	}
	stop()
	if agentRunning {
		select { // leaves the memberlist and revokes the registration
		case <-agentDone:
		case <-time.After(3 * time.Second):
		}
	}
	srv.Stop(5 * time.Second)
	return nil
}
