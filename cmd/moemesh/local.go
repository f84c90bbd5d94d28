package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/coordinator/agent"
	"github.com/moemesh/moemesh/coordinator/etcdembed"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/internal/syncio"
)

func init() { register(newLocalCmd) }

type localOptions struct {
	coord    coordinatorOptions
	Workers  int
	Spares   int
	DataDir  string
	Device   string
	WorkerTT time.Duration
	TLS      localTLSFlags // clustertls.go
	// StatsInterval and StatsWindow are passed to every worker.
	StatsInterval, StatsWindow time.Duration
}

// adminTokenPrefix starts the line naming the admin token file.
const adminTokenPrefix = "admin-token-file: "

// newAdminToken writes a random admin token to a private temporary file.
func newAdminToken() (file string, clean func(), err error) {
	dir, err := os.MkdirTemp("", "moemesh-admin-")
	if err != nil {
		return "", nil, err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	file = filepath.Join(dir, "admin-token")
	if err := os.WriteFile(file, []byte(hex.EncodeToString(b[:])+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return file, func() { os.RemoveAll(dir) }, nil
}

// readyPrefix starts the line `moemesh local` prints once /health is 200.
const readyPrefix = "moemesh local: ready"

func newLocalCmd(s IOStreams) *cobra.Command {
	o := &localOptions{}
	cmd := &cobra.Command{
		Use:   "local [--model DIR] [--workers N] [--tp T] [--spares S]",
		Short: "Run a whole cluster on this machine: embedded etcd, a coordinator and N(+S) worker processes on loopback",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.coord.MinWorkers = o.Workers
			if err := o.coord.Validate(); err != nil {
				return err
			}
			if o.Spares < 0 {
				return usagef("--spares must be non-negative, got %d", o.Spares)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return o.Run(ctx, s)
		},
	}
	o.coord.AddFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.coord.Etcd.Prefix, "etcd-prefix", store.DefaultConfig().Prefix, "prefix of every key the cluster keeps in etcd")
	f.Lookup("min-workers").Hidden = true
	f.IntVar(&o.Workers, "workers", 2, "worker processes in the layout")
	f.IntVar(&o.Spares, "spares", 0, "extra worker processes that wait as spares (one takes a dead worker's place)")
	f.StringVar(&o.DataDir, "data-dir", "", "embedded etcd's data directory (default: a temporary one, removed at exit)")
	f.StringVar(&o.Device, "device", "cpu", "compute device of every worker: cpu or cuda:N (CUDA needs a -tags cuda build)")
	f.DurationVar(&o.WorkerTT, "worker-lease-ttl", 5*time.Second, "workers' registration lease in etcd")
	f.DurationVar(&o.StatsInterval, "expert-stats-interval", agent.DefaultConfig().StatsInterval, "how often each worker publishes its routed-token counts to etcd")
	f.DurationVar(&o.StatsWindow, "expert-stats-window", agent.DefaultConfig().StatsWindow, "the window the published counts sum over")
	o.TLS.AddFlags(cmd)
	return cmd
}

func (o *localOptions) Run(ctx context.Context, s IOStreams) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.coord.Model == "" {
		dir, err := demoModelDir(s)
		if err != nil {
			return err
		}
		o.coord.Model = dir
	}
	dataDir := o.DataDir
	if dataDir == "" {
		d, err := os.MkdirTemp("", "moemesh-etcd-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dataDir = d
	}
	log, err := newLogger(s, o.coord.LogLevel)
	if err != nil {
		return err
	}
	cleanPKI, err := o.TLS.setup(&o.coord.TLS, o.Workers+o.Spares)
	if err != nil {
		return err
	}
	defer cleanPKI()
	if o.coord.AdminTokenFile == "" && os.Getenv("MOEMESH_ADMIN_TOKEN") == "" {
		// An operator token for moemeshctl, readable only by this user
		// and removed at exit.
		file, clean, err := newAdminToken()
		if err != nil {
			return err
		}
		defer clean()
		o.coord.AdminTokenFile = file
		fmt.Fprintf(s.Out, "%s%s\n", adminTokenPrefix, file)
	}
	ec := etcdembed.DefaultConfig(dataDir)
	ec.Log = log
	etcd, err := etcdembed.Start(ctx, ec)
	if err != nil {
		return err
	}
	defer etcd.Close()
	sc := store.DefaultConfig()
	sc.Endpoints, sc.Prefix, sc.Log = etcd.Endpoints(), o.coord.Etcd.Prefix, log
	st, err := store.Open(sc)
	if err != nil {
		return err
	}
	defer st.Close()

	procs, err := o.startWorkers(s, etcd.Endpoints())
	defer procs.stop()
	if err != nil {
		return err
	}
	ready := func(grpcAddr, httpAddr string) {
		fmt.Fprintf(s.Out, "coordinator: %s\n", grpcAddr)
		fmt.Fprintf(s.Out, "moemesh local: gRPC API on %s, HTTP on http://%s (GET /health); etcd on %s; %d workers + %d spares\n",
			grpcAddr, httpAddr, etcd.Endpoints()[0], o.Workers, o.Spares)
		go func() {
			if waitHealthy(ctx, "http://"+httpAddr+"/health") {
				fmt.Fprintf(s.Out, "%s: try  moemesh generate --server %s --prompt Hello\n", readyPrefix, grpcAddr)
			}
		}()
	}
	o.coord.Etcd.Endpoints = etcd.Endpoints()
	return o.coord.Run(ctx, s, st, ready)
}

// waitHealthy polls url until it answers 200 or ctx ends.
func waitHealthy(ctx context.Context, url string) bool {
	c := &http.Client{Timeout: time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if r, err := c.Get(url); err == nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// workerEnv is this process's environment without the MOEMESH_<FLAG>
// variables meant for this command (a worker has flags of the same names,
// e.g. --gossip-addr); the cache directory stays.
func workerEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MOEMESH_") && !strings.HasPrefix(kv, "MOEMESH_CACHE=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// workerProcs are the worker processes of a local cluster.
type workerProcs struct {
	procs  []*exec.Cmd
	stdins []io.Closer
}

// stop closes every worker's stdin (they exit, deregistering), waits up to
// 5 s, then kills what is left: no process outlives the command.
func (w *workerProcs) stop() {
	for _, in := range w.stdins {
		in.Close()
	}
	deadline := time.After(5 * time.Second)
	for _, p := range w.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-deadline:
			p.Process.Kill()
			<-done
		}
	}
}

func (o *localOptions) startWorkers(s IOStreams, endpoints []string) (*workerProcs, error) {
	exe, err := os.Executable()
	if err != nil {
		return &workerProcs{}, err
	}
	n := o.Workers + o.Spares
	w := &workerProcs{}
	stderr := &syncio.Writer{W: s.ErrOut}
	for i := range n {
		cmd := exec.Command(exe, append([]string{"worker", "--listen", "127.0.0.1:0", "--exit-on-stdin-close",
			"--etcd-endpoints", endpoints[0], "--etcd-prefix", o.coord.Etcd.Prefix, "--id", fmt.Sprintf("w%d", i),
			"--log-level", o.coord.LogLevel, "--device", o.Device, "--lease-ttl", o.WorkerTT.String(),
			"--expert-stats-interval", o.StatsInterval.String(), "--expert-stats-window", o.StatsWindow.String(),
			// The workers load only the model this command serves.
			"--model-root", o.coord.Model}, o.TLS.workerArgs(i)...)...)
		cmd.Stderr = stderr
		cmd.Env = append(workerEnv(), fmt.Sprintf("GOMAXPROCS=%d", max(1, runtime.NumCPU()/max(o.Workers, 1))))
		in, err := cmd.StdinPipe()
		if err != nil {
			return w, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return w, err
		}
		if err := cmd.Start(); err != nil {
			return w, fmt.Errorf("starting worker %d: %w", i, err)
		}
		w.procs, w.stdins = append(w.procs, cmd), append(w.stdins, in)
		if workerStarted != nil {
			workerStarted(i, cmd)
		}
		addr, err := readListenAddr(out, 30*time.Second)
		if err != nil {
			return w, fmt.Errorf("worker %d: %w", i, err)
		}
		fmt.Fprintf(s.Out, "worker %d: %s\n", i, addr)
	}
	return w, nil
}
