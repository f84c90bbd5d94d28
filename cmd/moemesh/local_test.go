package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/moemesh/moemesh/internal/syncio"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// TestLocal runs `moemesh local` as a user would: it prints where the APIs
// listen, /health turns 200, `generate --server` equals a one-process
// `generate` with the same seed, and stopping it (Ctrl-C) leaves no worker
// process behind, within 10 s.
func TestLocal(t *testing.T) {
	t.Setenv("MOEMESH_CACHE", t.TempDir())
	var mu sync.Mutex
	var procs []*exec.Cmd
	workerStarted = func(_ int, c *exec.Cmd) { mu.Lock(); procs = append(procs, c); mu.Unlock() }
	t.Cleanup(func() { workerStarted = nil })

	out, errOut := &syncio.Buffer{}, &syncio.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := newRootCmd(IOStreams{In: strings.NewReader(""), Out: out, ErrOut: errOut})
	root.SetArgs([]string{"local", "--workers", "2", "--spares", "1", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--context", "512"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	addrs := regexp.MustCompile(`gRPC API on (\S+), HTTP on http://(\S+) `)
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(out.String(), readyPrefix) {
		select {
		case err := <-done:
			t.Fatalf("moemesh local exited: %v\n%s\n%s", err, out.String(), errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 90 s:\n%s\n%s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := addrs.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no addresses printed:\n%s", out.String())
	}
	grpcAddr, httpAddr := m[1], m[2]
	if c := regexp.MustCompile(`(?m)^coordinator: (\S+)$`).FindStringSubmatch(out.String()); c == nil || c[1] != grpcAddr {
		t.Errorf("no line \"coordinator: %s\":\n%s", grpcAddr, out.String())
	}
	workerAddrs := regexp.MustCompile(`(?m)^worker (\d+): (\S+)$`).FindAllStringSubmatch(out.String(), -1)
	if len(workerAddrs) != 3 {
		t.Fatalf("%d \"worker N: ADDR\" lines, want 3:\n%s", len(workerAddrs), out.String())
	}
	// The workers speak mutual TLS: a plaintext caller is refused.
	for _, w := range workerAddrs {
		conn, err := grpc.NewClient(w[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = pb.NewWorkerServiceClient(conn).Health(hctx, &pb.HealthRequest{})
		hcancel()
		conn.Close()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("plaintext Health on worker %s (%s): %v, want UNAVAILABLE (a TLS listener)", w[1], w[2], err)
		}
	}

	r, err := http.Get("http://" + httpAddr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Ready   bool     `json:"ready"`
		Role    string   `json:"role"`
		Workers []string `json:"workers"`
	}
	if err := json.NewDecoder(r.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK || !h.Ready || h.Role != "leader" || len(h.Workers) != 2 {
		t.Errorf("/health: %d %+v, want 200 from a ready leader of 2 workers", r.StatusCode, h)
	}

	gen := func(args ...string) string {
		t.Helper()
		var o, e bytes.Buffer
		if code := run(append([]string{"generate", "--prompt", "Hello", "--max-tokens", "24", "--seed", "3"}, args...), IOStreams{In: strings.NewReader(""), Out: &o, ErrOut: &e}); code != ExitOK {
			t.Fatalf("generate %v: exit %d: %s", args, code, e.String())
		}
		return o.String()
	}
	remote := gen("--server", grpcAddr)
	if local := gen(); remote != local {
		t.Errorf("generate --server = %q, one process = %q", remote, local)
	}
	if greedyRemote, greedyLocal := gen("--server", grpcAddr, "--temperature", "0"), gen("--temperature", "0"); greedyRemote != greedyLocal {
		t.Errorf("greedy: --server %q, one process %q", greedyRemote, greedyLocal)
	}

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("moemesh local: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("moemesh local still running 10 s after Ctrl-C")
	}
	t.Logf("stopped in %v", time.Since(start))
	mu.Lock()
	defer mu.Unlock()
	if len(procs) != 3 {
		t.Errorf("%d worker processes started, want 3", len(procs))
	}
	for i, p := range procs {
		if p.ProcessState == nil {
			t.Errorf("worker %d still running after stop", i)
		}
	}
}
