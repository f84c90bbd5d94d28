//go:build containers

package containers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/moemesh/moemesh/client"
	"github.com/moemesh/moemesh/coordinator/clustertest"
	"github.com/moemesh/moemesh/coordinator/store"
	"github.com/moemesh/moemesh/internal/pki"
	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	"github.com/moemesh/moemesh/tokenizer"
)

// The cluster every test starts.
const (
	etcdMembers  = 3
	coordinators = 2
	workers      = 3 // the layout (--min-workers)
	spares       = 1
	// leaseTTL is the coordinators' election lease and the workers'
	// registration lease: short, so a failover or a fence is quick, with
	// room for nine containers on two shared cores.
	leaseTTL = 3 * time.Second

	workerPort, gossipPort, grpcPort, httpPort = 7000, 7946, 50051, 8080
)

// cluster is a running containerized cluster.
type cluster struct {
	net     string
	etcd    []*container
	coords  []*container
	workers []*container
	st      *store.Store
	sdk     *client.Client
}

var clusterSeq atomic.Int32

// startCluster starts the etcd members, the workers (w0..w3) and the
// coordinators (c0, c1) on a new private network and waits until a leader
// serves. Everything is removed when the test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	needDocker(t)
	start := time.Now()
	c := &cluster{net: fmt.Sprintf("%s-%d", runID, clusterSeq.Add(1))}
	network(t, c.net)
	var initial, endpoints []string
	for i := range etcdMembers {
		initial = append(initial, fmt.Sprintf("etcd%d=http://etcd%d:2380", i, i))
		endpoints = append(endpoints, fmt.Sprintf("http://etcd%d:2379", i))
	}
	for i := range etcdMembers {
		h := fmt.Sprintf("etcd%d", i)
		c.etcd = append(c.etcd, run(t, c.net, c.net+"-"+h, h, []string{"-e", "GOMAXPROCS=1"}, etcdImage,
			"--name", h, "--initial-cluster-state", "new", "--initial-cluster-token", c.net,
			"--initial-cluster", strings.Join(initial, ","),
			"--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://"+h+":2380",
			"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://"+h+":2379",
			"--log-level", "warn"))
	}
	sc := store.DefaultConfig()
	for _, e := range c.etcd {
		sc.Endpoints = append(sc.Endpoints, "http://"+net.JoinHostPort(e.ip, "2379"))
	}
	st, err := store.Open(sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c.st = st
	common := func(host string) []string {
		return []string{"-e", "GOMAXPROCS=1",
			"-v", modelDir + ":" + modelDir + ":ro",
			"-v", filepath.Join(pkiDir, host) + ":/pki:ro",
			"-v", secretsDir + ":/secrets:ro"}
	}
	etcdFlag := "--etcd-endpoints=" + strings.Join(endpoints, ",")
	for i := range workers + spares {
		h := fmt.Sprintf("w%d", i)
		c.workers = append(c.workers, run(t, c.net, c.net+"-"+h, h, common(h), moemeshImage,
			"worker", etcdFlag, "--id", h, "--log-level", "info",
			"--listen", fmt.Sprintf("0.0.0.0:%d", workerPort), "--advertise", fmt.Sprintf("%s:%d", h, workerPort),
			"--gossip-addr", fmt.Sprintf("0.0.0.0:%d", gossipPort), "--lease-ttl", leaseTTL.String(),
			"--cluster-tls-dir", "/pki", "--gossip-key-file", "/secrets/gossip.key", "--model-root", modelDir))
	}
	for i := range coordinators {
		h := fmt.Sprintf("c%d", i)
		c.coords = append(c.coords, run(t, c.net, c.net+"-"+h, h, common(h), moemeshImage,
			"coordinator", etcdFlag, "--id", h, "--log-level", "info",
			"--model", modelDir, "--min-workers", fmt.Sprint(workers), "--context", "1024",
			"--grpc-addr", fmt.Sprintf("0.0.0.0:%d", grpcPort), "--http-addr", fmt.Sprintf("0.0.0.0:%d", httpPort),
			"--gossip-addr", fmt.Sprintf("0.0.0.0:%d", gossipPort), "--lease-ttl", leaseTTL.String(),
			"--cluster-tls-dir", "/pki", "--gossip-key-file", "/secrets/gossip.key",
			"--api-key-file", "/secrets/api.keys", "--admin-token-file", "/secrets/admin.token"))
	}
	c.leader(t, 3*time.Minute)
	var addrs []string
	for _, m := range c.coords {
		addrs = append(addrs, net.JoinHostPort(m.ip, fmt.Sprint(grpcPort)))
	}
	sdk, err := client.Dial(addrs, client.WithInsecure(), client.WithAPIKey(apiKey))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdk.Close() })
	c.sdk = sdk
	t.Logf("cluster of %d containers serving after %v", len(c.etcd)+len(c.coords)+len(c.workers), time.Since(start).Round(100*time.Millisecond))
	return c
}

// healthy reports whether the coordinator's /health answers 200 (it leads
// and its layout serves).
func healthy(m *container) bool {
	hc := &http.Client{Timeout: time.Second}
	r, err := hc.Get("http://" + net.JoinHostPort(m.ip, fmt.Sprint(httpPort)) + "/health")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode == http.StatusOK
}

// leader waits for a coordinator that answers /health with 200.
func (c *cluster) leader(t *testing.T, timeout time.Duration) *container {
	t.Helper()
	var got *container
	clustertest.Eventually(t, timeout, func() error {
		for _, m := range c.coords {
			if healthy(m) {
				got = m
				return nil
			}
		}
		return errors.New("no coordinator serves")
	})
	return got
}

// worker returns the worker container with host name id.
func (c *cluster) worker(t *testing.T, id string) *container {
	t.Helper()
	for _, w := range c.workers {
		if w.host == id {
			return w
		}
	}
	t.Fatalf("no worker %q", id)
	return nil
}

// layout returns the current placement's epoch and workers.
func (c *cluster) layout(t *testing.T) (uint64, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.st.CurrentPlacement(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return p.Epoch, p.WorkerIds
}

// registered returns the ids of the workers registered in etcd.
func (c *cluster) registered(ctx context.Context) ([]string, error) {
	ws, err := c.st.Workers(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, w := range ws {
		ids = append(ids, w.Id)
	}
	slices.Sort(ids)
	return ids, nil
}

// workerConn connects to a worker's services from the host as a
// coordinator does: c0's certificate, and only the worker's certificate
// (which names its host name) accepted.
func (c *cluster) workerConn(t *testing.T, w *container) *grpc.ClientConn {
	t.Helper()
	src, err := pki.NewSource(pki.FilesIn(filepath.Join(pkiDir, "c0")))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(net.JoinHostPort(w.ip, fmt.Sprint(workerPort)),
		grpc.WithTransportCredentials(credentials.NewTLS(src.ClientTLS(w.host, pki.RoleWorker))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The request every test sends: a chat, greedy, every sampling parameter
// spelled out so no server default applies.
const (
	prompt    = "Tell me about mixtures of experts."
	maxTokens = 256
	// killAt is the token count at which a test breaks something.
	killAt = 8
)

func f32(v float32) *float32 { return &v }

func chatRequest() *pb.ChatRequest {
	return &pb.ChatRequest{Messages: []*pb.ChatMessage{{Role: "user", Content: prompt}}, MaxTokens: maxTokens,
		Sampling: &pb.SamplingParams{Temperature: f32(0), PresencePenalty: f32(0), FrequencyPenalty: f32(0), RepetitionPenalty: f32(1)}}
}

var reference struct {
	once sync.Once
	text string
	eos  []int32
	err  error
}

// singleProcess returns what one `moemesh generate` process prints for the
// request (the decoded text of every token but end-of-sequence ones, and a
// newline), and the model's end-of-sequence ids.
func singleProcess(t *testing.T) (string, []int32) {
	t.Helper()
	reference.once.Do(func() {
		tok, err := tokenizer.Load(modelDir)
		if err != nil {
			reference.err = err
			return
		}
		for _, id := range tok.EOSIDs() {
			reference.eos = append(reference.eos, int32(id))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, "generate", "--model", modelDir, "--prompt", prompt, "--max-tokens", fmt.Sprint(maxTokens),
			"--temperature", "0", "--presence-penalty", "0", "--frequency-penalty", "0", "--repetition-penalty", "1")
		cmd.Env = append(cmd.Environ(), "MOEMESH_CACHE="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%v: %s", err, ee.Stderr)
			}
			reference.err = fmt.Errorf("moemesh generate: %w", err)
		}
		reference.text = string(out)
	})
	if reference.err != nil {
		t.Fatal(reference.err)
	}
	return reference.text, reference.eos
}

// chat streams the request through the SDK; at, when set, is called once
// when killAt tokens have arrived. It returns the tokens and the SDK's
// attempts.
func (c *cluster) chat(t *testing.T, at func()) ([]int32, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := c.sdk.Chat(ctx, chatRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	defer func() { t.Logf("chat: %d tokens in %v", maxTokens, time.Since(start).Round(time.Millisecond)) }()
	var ids []int32
	fired := false
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream after %d tokens: %v", len(ids), err)
		}
		ids = append(ids, m.TokenIds...)
		if at != nil && !fired && len(ids) >= killAt {
			fired = true
			at()
		}
	}
	if at != nil && (!fired || len(ids) <= killAt) {
		t.Fatalf("the stream ended after %d tokens; want more than %d, so that something breaks mid-generation", len(ids), killAt)
	}
	return ids, st.Attempts()
}

// checkOutput fails the test unless ids decode to the single-process text.
func (c *cluster) checkOutput(t *testing.T, what string, ids []int32) {
	t.Helper()
	want, eos := singleProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	text, err := c.sdk.Detokenize(ctx, &pb.DetokenizeRequest{TokenIds: slices.DeleteFunc(slices.Clone(ids), func(id int32) bool { return slices.Contains(eos, id) })})
	if err != nil {
		t.Fatalf("%s: detokenize: %v", what, err)
	}
	if got := text.Text + "\n"; got != want {
		t.Errorf("%s: the cluster's %d tokens decode to %q; moemesh generate printed %q", what, len(ids), got, want)
	}
}
