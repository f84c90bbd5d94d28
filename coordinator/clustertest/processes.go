package clustertest

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	"github.com/moemesh/moemesh/internal/pki"
	"github.com/moemesh/moemesh/internal/syncio"
)

// Build compiles the moemesh command into dir and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "moemesh")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/moemesh/moemesh/cmd/moemesh").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("clustertest: building moemesh: %v\n%s", err, out)
	}
	return bin, nil
}

// Processes runs every member as a moemesh process of binary bin.
func Processes(bin string) Runner { return processes{bin: bin} }

type processes struct{ bin string }

func (processes) Name() string { return "processes" }

func (r processes) Start(t testing.TB, cfg Config) Cluster {
	t.Helper()
	cfg.defaults()
	checkLeaks(t)
	c := &procCluster{cfg: cfg, bin: r.bin, etcd: storetest.Start(t, cfg.Etcd), pki: newPKI(t, cfg.Workers+cfg.Spares)}
	c.gossipKeyFile = filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(c.gossipKeyFile, []byte(base64.StdEncoding.EncodeToString(newGossipKey(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	c.adminTokenFile = filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(c.adminTokenFile, []byte(cfg.AdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
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

type procCluster struct {
	cfg  Config
	bin  string
	etcd *storetest.Etcd
	st   *store.Store
	pki  *pki.LocalPKI
	// gossipKeyFile is every member's --gossip-key-file.
	gossipKeyFile string
	// adminTokenFile is every coordinator's --admin-token-file.
	adminTokenFile string
	workers        []Member
	coords         []Member
}

func (c *procCluster) Config() Config         { return c.cfg }
func (c *procCluster) Etcd() *storetest.Etcd  { return c.etcd }
func (c *procCluster) Store() *store.Store    { return c.st }
func (c *procCluster) Workers() []Member      { return c.workers }
func (c *procCluster) Coordinators() []Member { return c.coords }
func (c *procCluster) PKI() *pki.LocalPKI     { return c.pki }

// proc is one member process.
type proc struct {
	id, addr, http string
	cmd            *exec.Cmd
	stdin          io.Closer
	log            *syncio.Buffer
	once           sync.Once
	waited         chan struct{}
}

var (
	workerLine = regexp.MustCompile(`^moemesh worker listening on (\S+)$`)
	coordLine  = regexp.MustCompile(`gRPC API on (\S+), HTTP on http://(\S+) `)
)

func (c *procCluster) start(t testing.TB, id string, args []string, ready *regexp.Regexp) *proc {
	t.Helper()
	p := &proc{id: id, log: &syncio.Buffer{Limit: 1 << 20}, waited: make(chan struct{})}
	p.cmd = exec.Command(c.bin, args...)
	p.cmd.Stderr = p.log
	p.cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	in, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = in
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.waited) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s's log:\n%s", id, p.log.String())
		}
	})
	lines := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			if m := ready.FindStringSubmatch(sc.Text()); m != nil && !sent {
				lines <- m
				sent = true
			}
		}
		if !sent {
			close(lines)
		}
	}()
	select {
	case m, ok := <-lines:
		if !ok {
			t.Fatalf("%s exited before listening:\n%s", id, p.log.String())
		}
		p.addr = m[1]
		if len(m) > 2 {
			p.http = m[2]
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not listening after 60 s:\n%s", id, p.log.String())
	}
	return p
}

// startWorker starts worker i with its certificate, confined to
// Config.ModelRoot.
func (c *procCluster) startWorker(t testing.TB, i int) *proc {
	id := memberName("w", i)
	return c.start(t, id, []string{"worker", "--listen", "127.0.0.1:0", "--exit-on-stdin-close", "--log-level", "info",
		"--etcd-endpoints", strings.Join(c.etcd.Endpoints(), ","), "--id", id, "--lease-ttl", c.cfg.WorkerTTL.String(),
		"--cluster-tls-dir", filepath.Dir(c.pki.Workers[i].Cert), "--model-root", c.cfg.ModelRoot,
		"--gossip-key-file", c.gossipKeyFile, "--expert-stats-interval", c.cfg.StatsInterval.String(), "--expert-stats-window", "1m"}, workerLine)
}

func (c *procCluster) startCoordinator(t testing.TB, id string) *proc {
	return c.start(t, id, []string{"coordinator", "--log-level", "info", "--etcd-endpoints", strings.Join(c.etcd.Endpoints(), ","),
		"--id", id, "--model", c.cfg.Model, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--min-workers", fmt.Sprint(c.cfg.Workers), "--tp", fmt.Sprint(c.cfg.TP), "--context", fmt.Sprint(c.cfg.Context),
		"--lease-ttl", c.cfg.LeaseTTL.String(), "--cluster-tls-dir", filepath.Dir(c.pki.Coordinator.Cert),
		"--gossip-key-file", c.gossipKeyFile, "--expert-spare-slots", fmt.Sprint(c.cfg.SpareSlots), "--admin-token-file", c.adminTokenFile}, coordLine)
}

// stop ends the process: SIGTERM (and stdin closed), then SIGKILL after
// 10 s; a paused process is resumed first so it can exit.
func (p *proc) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		p.stdin.Close()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.waited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.waited
		}
	})
}

func (p *proc) ID() string       { return p.id }
func (p *proc) Addr() string     { return p.addr }
func (p *proc) HTTPAddr() string { return p.http }

// Log is the member's stderr so far.
func (p *proc) Log() string { return p.log.String() }

func (p *proc) Kill(t testing.TB) {
	p.once.Do(func() {
		if err := p.cmd.Process.Kill(); err != nil {
			t.Errorf("killing %s: %v", p.id, err)
		}
		<-p.waited
	})
}

func (p *proc) Pause(testing.TB) error  { return p.cmd.Process.Signal(syscall.SIGSTOP) }
func (p *proc) Resume(testing.TB) error { return p.cmd.Process.Signal(syscall.SIGCONT) }
