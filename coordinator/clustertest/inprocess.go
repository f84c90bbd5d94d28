package clustertest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/moemesh/moemesh/coordinator/agent"
	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	"github.com/moemesh/moemesh/internal/pki"
	"github.com/moemesh/moemesh/internal/syncio"
	"github.com/moemesh/moemesh/membership"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/serving"
	"github.com/moemesh/moemesh/worker"
)

// InProcess runs every member in the test process.
var InProcess Runner = inProcess{}

type inProcess struct{}

func (inProcess) Name() string { return "in-process" }

// testGossip is a loopback memberlist configuration encrypted with key.
func testGossip(key []byte) membership.Config {
	g := membership.DefaultConfig()
	g.BindAddr, g.BindPort, g.SecretKey = "127.0.0.1", 0, key
	return g
}

func openStore(t testing.TB, e *storetest.Etcd) *store.Store {
	t.Helper()
	c := store.DefaultConfig()
	c.Endpoints = e.Endpoints()
	st, err := store.Open(c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (inProcess) Start(t testing.TB, cfg Config) Cluster {
	t.Helper()
	cfg.defaults()
	checkLeaks(t)
	c := &ipCluster{cfg: cfg, etcd: storetest.Start(t, cfg.Etcd), logs: &syncio.Buffer{Limit: 4 << 20}, pki: newPKI(t, max(0, cfg.Workers+cfg.Spares)), gossipKey: newGossipKey(t)}
	c.log = slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log:\n%s", c.logs.String())
		}
	})
	c.st = openStore(t, c.etcd)
	t.Cleanup(func() { c.st.Close() })
	for i := range cfg.Workers + cfg.Spares {
		c.workers = append(c.workers, c.startWorker(t, i))
	}
	for i := range cfg.Coordinators {
		c.coords = append(c.coords, c.startCoordinator(t, memberName("c", i)))
	}
	return c
}

type ipCluster struct {
	cfg       Config
	logs      *syncio.Buffer
	log       *slog.Logger
	etcd      *storetest.Etcd
	st        *store.Store
	pki       *pki.LocalPKI
	gossipKey []byte
	workers   []Member
	coords    []Member
}

func (c *ipCluster) PKI() *pki.LocalPKI     { return c.pki }
func (c *ipCluster) Config() Config         { return c.cfg }
func (c *ipCluster) Etcd() *storetest.Etcd  { return c.etcd }
func (c *ipCluster) Store() *store.Store    { return c.st }
func (c *ipCluster) Workers() []Member      { return c.workers }
func (c *ipCluster) Coordinators() []Member { return c.coords }

// ipWorker is a worker server and its agent.
type ipWorker struct {
	id     string
	srv    *worker.Server
	st     *store.Store
	cancel context.CancelFunc
	crash  chan struct{}
	done   chan struct{}
	once   sync.Once
}

// startWorker starts worker i with its certificate, confined to
// Config.ModelRoot.
func (c *ipCluster) startWorker(t testing.TB, i int) *ipWorker {
	t.Helper()
	id := memberName("w", i)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	src := Source(t, c.pki.Workers[i])
	wc := worker.Config{Log: c.log, ServerOptions: src.ServerOptions(pki.WorkerPolicy()),
		PeerDialOptions: []grpc.DialOption{src.DialOption(pki.RoleWorker)}, ModelRoots: []string{c.cfg.ModelRoot}}
	w := &ipWorker{id: id, srv: worker.Serve(lis, wc), st: openStore(t, c.etcd), crash: make(chan struct{}), done: make(chan struct{})}
	a := agent.DefaultConfig()
	a.ID, a.Store, a.Worker, a.Addr, a.LeaseTTL, a.Gossip, a.Crash = id, w.st, w.srv.Worker, w.srv.Addr(), c.cfg.WorkerTTL, testGossip(c.gossipKey), w.crash
	a.Log = c.log
	a.StatsInterval, a.StatsWindow = c.cfg.StatsInterval, time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		_ = agent.Run(ctx, a)
	}()
	t.Cleanup(func() { w.stop(false) })
	return w
}

func (w *ipWorker) stop(crash bool) {
	w.once.Do(func() {
		if crash {
			close(w.crash)
			<-w.done
			w.srv.Kill()
		} else {
			w.cancel()
			<-w.done
			w.srv.Stop(time.Second)
		}
		w.cancel()
		w.st.Close()
	})
}

func (w *ipWorker) ID() string              { return w.id }
func (w *ipWorker) Addr() string            { return w.srv.Addr() }
func (w *ipWorker) HTTPAddr() string        { return "" }
func (w *ipWorker) Kill(testing.TB)         { w.stop(true) }
func (w *ipWorker) Pause(testing.TB) error  { return ErrUnsupported }
func (w *ipWorker) Resume(testing.TB) error { return ErrUnsupported }

// ipCoordinator is a control plane and its front doors.
type ipCoordinator struct {
	id        string
	c         *control.Coordinator
	srv       *serving.Server
	st        *store.Store
	grpc, htp string
	once      sync.Once
}

func (c *ipCluster) startCoordinator(t testing.TB, id string) *ipCoordinator {
	t.Helper()
	l, err := serving.Listen("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &ipCoordinator{id: id, st: openStore(t, c.etcd), grpc: l.GRPC.Addr().String(), htp: l.HTTP.Addr().String()}
	cfg := control.DefaultConfig()
	cfg.ID, cfg.Store, cfg.ModelDir, cfg.Gossip, cfg.Log = id, m.st, c.cfg.Model, testGossip(c.gossipKey), c.log
	cfg.Workers, cfg.TP, cfg.KVTokens, cfg.LeaseTTL = c.cfg.Workers, c.cfg.TP, c.cfg.Context, c.cfg.LeaseTTL
	cfg.SpareSlots, cfg.StatsMaxAge = c.cfg.SpareSlots, 20*c.cfg.StatsInterval
	cfg.GRPCAddr, cfg.HTTPAddr = m.grpc, m.htp
	cfg.DialOptions = []grpc.DialOption{Source(t, c.pki.Coordinator).DialOption(pki.RoleWorker)}
	sc := scheduler.DefaultConfig()
	sc.Log = c.log
	sched, err := scheduler.New(sc)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	cfg.Lead = sched
	m.c, err = control.Start(context.Background(), cfg)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	sched.SetHealth(m.c.Health)
	sv := serving.DefaultConfig()
	sv.AdminTokenFile = filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(sv.AdminTokenFile, []byte(c.cfg.AdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	m.srv, err = serving.New(sv, serving.Deps{Submitter: sched, Model: m.c, Health: m.c, Admin: m.c})
	if err != nil {
		m.c.Close()
		l.Close()
		t.Fatal(err)
	}
	m.srv.Serve(l)
	t.Cleanup(func() { m.stop(false) })
	return m
}

func (m *ipCoordinator) stop(crash bool) {
	m.once.Do(func() {
		if crash {
			m.c.Abandon()
			m.srv.Close(0)
		} else {
			m.c.Close()
			m.srv.Close(time.Second)
		}
		m.st.Close()
	})
}

func (m *ipCoordinator) ID() string              { return m.id }
func (m *ipCoordinator) Addr() string            { return m.grpc }
func (m *ipCoordinator) HTTPAddr() string        { return m.htp }
func (m *ipCoordinator) Kill(testing.TB)         { m.stop(true) }
func (m *ipCoordinator) Pause(testing.TB) error  { return ErrUnsupported }
func (m *ipCoordinator) Resume(testing.TB) error { return ErrUnsupported }
