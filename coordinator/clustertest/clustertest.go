// Package clustertest is the one contract the cluster tests are written
// against: a Cluster of Members (coordinators and workers around an etcd)
// and two runners that start one: InProcess (every member a set of
// goroutines in the test process, so the race detector sees the control
// plane) and Processes (real moemesh processes, killed with real signals).
// Both run the internal services over mutual TLS with a per-cluster CA
// (Cluster.PKI). Every cluster registers its cleanup and a goroutine-leak
// check.
package clustertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	"github.com/moemesh/moemesh/internal/pki"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// ErrUnsupported: the runner cannot do this to a member.
var ErrUnsupported = errors.New("clustertest: not supported by this runner")

// Config describes a test cluster.
type Config struct {
	// Model is the checkpoint directory (with a tokenizer).
	Model string
	// ModelRoot is the workers' --model-root (Model when empty).
	ModelRoot string
	// Workers in the layout, TP size, and extra spare workers.
	Workers, TP, Spares int
	// Coordinators is the number of coordinators (1 when 0).
	Coordinators int
	// Context is each attention group's KV cache in tokens (1024 when 0).
	Context int
	// Etcd is the etcd kind to run against.
	Etcd storetest.Kind
	// LeaseTTL is the election lease (2 s when 0); WorkerTTL the workers'
	// registration lease (2 s when 0).
	LeaseTTL, WorkerTTL time.Duration
	// SpareSlots are the coordinators' --expert-spare-slots.
	SpareSlots int
	// StatsInterval paces the workers' expert statistics (200 ms when 0).
	StatsInterval time.Duration
	// AdminToken is the coordinators' admin token (AdminTokenDefault
	// when empty).
	AdminToken string
}

// AdminTokenDefault is the admin token of test clusters.
const AdminTokenDefault = "test-admin-token"

func (c *Config) defaults() {
	if c.ModelRoot == "" {
		c.ModelRoot = c.Model
	}
	if c.TP == 0 {
		c.TP = 1
	}
	if c.Coordinators == 0 {
		c.Coordinators = 1
	}
	if c.Context == 0 {
		c.Context = 1024
	}
	if c.Etcd == "" {
		c.Etcd = storetest.Embedded
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 2 * time.Second
	}
	if c.WorkerTTL == 0 {
		c.WorkerTTL = 2 * time.Second
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = 200 * time.Millisecond
	}
	if c.AdminToken == "" {
		c.AdminToken = AdminTokenDefault
	}
}

// Member is one coordinator or worker.
type Member interface {
	ID() string
	// Addr is a worker's WorkerService address or a coordinator's gRPC
	// inference address.
	Addr() string
	// HTTPAddr is a coordinator's HTTP address ("" for a worker).
	HTTPAddr() string
	// Kill stops the member as SIGKILL would: no goodbye to anyone.
	Kill(t testing.TB)
	// Pause and Resume freeze and thaw it (SIGSTOP, SIGCONT).
	Pause(t testing.TB) error
	Resume(t testing.TB) error
}

// Cluster is a running test cluster.
type Cluster interface {
	Config() Config
	Etcd() *storetest.Etcd
	// Store is a client of the cluster's etcd for assertions.
	Store() *store.Store
	Workers() []Member
	Coordinators() []Member
	// PKI is the cluster's CA and certificates: every member's internal
	// services speak mutual TLS with them (internal/pki).
	PKI() *pki.LocalPKI
}

// Runner starts clusters.
type Runner interface {
	Name() string
	Start(t testing.TB, cfg Config) Cluster
}

// newPKI makes a cluster's ephemeral CA with a certificate per worker,
// removed with the test.
func newPKI(t testing.TB, workers int) *pki.LocalPKI {
	t.Helper()
	lp, err := pki.NewLocal(t.TempDir(), workers)
	if err != nil {
		t.Fatal(err)
	}
	return lp
}

// newGossipKey is a random memberlist key for one cluster.
func newGossipKey(t testing.TB) []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// Source loads a certificate set of the cluster's PKI.
func Source(t testing.TB, f pki.Files) *pki.Source {
	t.Helper()
	s, err := pki.NewSource(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// WorkerConn connects to a worker's services as the coordinator does
// (its certificate; only a worker certificate accepted from the server).
// The connection is closed with the test.
func WorkerConn(t testing.TB, c Cluster, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, Source(t, c.PKI().Coordinator).DialOption(pki.RoleWorker))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Leader waits until a coordinator answers /health with 200 and returns it.
func Leader(t testing.TB, c Cluster, timeout time.Duration) Member {
	t.Helper()
	var got Member
	Eventually(t, timeout, func() error {
		for _, m := range c.Coordinators() {
			if Healthy(m) {
				got = m
				return nil
			}
		}
		return errors.New("no coordinator is ready")
	})
	return got
}

// Healthy reports whether m's /health answers 200.
func Healthy(m Member) bool {
	hc := &http.Client{Timeout: time.Second}
	r, err := hc.Get("http://" + m.HTTPAddr() + "/health")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode == http.StatusOK
}

// Eventually polls f every 20 ms until it returns nil, failing the test
// with f's last error after timeout.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Output is a finished generation.
type Output struct {
	Tokens []int32
	Text   string
	Finish string
}

// Generate runs req on the coordinator at addr. onToken, when set, sees
// the count of tokens received after every response (tests kill members
// from it).
func Generate(ctx context.Context, addr string, req *infpb.GenerateRequest, onToken func(n int)) (*Output, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st, err := infpb.NewInferenceServiceClient(conn).Generate(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &Output{}
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out.Tokens = append(out.Tokens, r.TokenIds...)
		out.Text += r.Text
		if r.FinishReason != "" {
			out.Finish = r.FinishReason
		}
		if onToken != nil && len(r.TokenIds) > 0 {
			onToken(len(out.Tokens))
		}
	}
}

// checkLeaks registers, as the cluster's last cleanup, a check that every
// goroutine started since is gone. It polls for up to 15 s: memberlist
// cannot cancel a probe in flight, which ends by its own deadline (at most
// 8 probe intervals) after Shutdown.
func checkLeaks(t testing.TB) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := goleak.Find(ignore)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left after the cluster stopped: %v", err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// memberName formats member ids.
func memberName(kind string, i int) string { return fmt.Sprintf("%s%d", kind, i) }
