package clustertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	. "github.com/moemesh/moemesh/coordinator/clustertest"
	"github.com/moemesh/moemesh/coordinator/store/storetest"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

var (
	modelDir string
	binary   string
)

// TestMain builds the moemesh command and a tiny model (with the real
// tokenizer) once for every test of the package.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "clustertest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if binary, err = Build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		modelDir = filepath.Join(dir, "model")
		if out, err := exec.Command(binary, "gen-model", "--preset", "tiny", "--out", modelDir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "gen-model: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

func runners() []Runner { return []Runner{InProcess, Processes(binary)} }

// etcdKind runs the in-process clusters on the embedded etcd and the real
// processes on the real etcd server when it is there (scripts/test.sh
// requires it), so both etcds carry every failure scenario.
func etcdKind(t *testing.T, r Runner) storetest.Kind {
	if r.Name() == InProcess.Name() {
		return storetest.Embedded
	}
	kinds := storetest.Kinds(t)
	return kinds[len(kinds)-1]
}

// request is a long generation with a fixed prompt: greedy, or seeded
// sampling with every filter and a penalty.
func request(seeded bool) *infpb.GenerateRequest {
	// Greedy is asked for explicitly: an unset temperature takes the
	// model's generation_config.json value and an unset seed is random.
	r := &infpb.GenerateRequest{Prompt: "Tell me about mixtures of experts.", ChatTemplate: true, MaxTokens: 96, IgnoreEos: true,
		Sampling: &infpb.SamplingParams{Temperature: ptr(float32(0))}}
	if seeded {
		f := func(v float32) *float32 { return &v }
		k, seed := int32(20), uint64(7)
		r.Sampling = &infpb.SamplingParams{Temperature: f(0.8), TopK: &k, TopP: f(0.95), MinP: f(0.01), PresencePenalty: f(0.5), Seed: &seed}
	}
	return r
}

func generate(t *testing.T, addr string, req *infpb.GenerateRequest, onToken func(int)) *Output {
	t.Helper()
	out, err := Generate(context.Background(), addr, req, onToken)
	if err != nil {
		t.Fatalf("generate on %s: %v", addr, err)
	}
	if len(out.Tokens) != int(req.MaxTokens) || out.Finish != "length" {
		t.Fatalf("generate: %d tokens, finish %q; want %d, length", len(out.Tokens), out.Finish, req.MaxTokens)
	}
	return out
}

// killAt returns an onToken callback that kills m once n tokens arrived,
// and reports when it did.
func killAt(t *testing.T, m Member, n int, at *time.Time) func(int) {
	return func(got int) {
		if got >= n && at.IsZero() {
			*at = time.Now()
			m.Kill(t)
		}
	}
}

// TestWorkerDeath kills a worker mid-generation twice: first a spare takes
// its place, then (no spare left) the layout shrinks to the survivors.
// Greedy and seeded outputs equal the uninterrupted ones, and later
// generations still succeed.
func TestWorkerDeath(t *testing.T) {
	for _, r := range runners() {
		t.Run(r.Name(), func(t *testing.T) {
			c := r.Start(t, Config{Model: modelDir, Workers: 2, Spares: 1, Etcd: etcdKind(t, r)})
			lead := Leader(t, c, 60*time.Second)
			greedy := generate(t, lead.Addr(), request(false), nil)
			seeded := generate(t, lead.Addr(), request(true), nil)

			var killed time.Time
			var first time.Time
			got := generate(t, lead.Addr(), request(false), func(n int) {
				if !killed.IsZero() && first.IsZero() {
					first = time.Now()
				}
				killAt(t, c.Workers()[0], 16, &killed)(n)
			})
			if diff := cmp.Diff(greedy.Tokens, got.Tokens); diff != "" {
				t.Errorf("greedy after a worker death with a spare (-want +got):\n%s", diff)
			}
			t.Logf("%s: kill to next token (spare): %v", r.Name(), first.Sub(killed))

			killed, first = time.Time{}, time.Time{}
			got = generate(t, lead.Addr(), request(true), func(n int) {
				if !killed.IsZero() && first.IsZero() {
					first = time.Now()
				}
				killAt(t, c.Workers()[1], 16, &killed)(n)
			})
			if diff := cmp.Diff(seeded.Tokens, got.Tokens); diff != "" {
				t.Errorf("seeded after a worker death without a spare (-want +got):\n%s", diff)
			}
			t.Logf("%s: kill to next token (shrink): %v", r.Name(), first.Sub(killed))

			if diff := cmp.Diff(greedy.Tokens, generate(t, lead.Addr(), request(false), nil).Tokens); diff != "" {
				t.Errorf("greedy on the shrunken layout (-want +got):\n%s", diff)
			}
			cur, err := c.Store().CurrentPlacement(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"w2"}, cur.WorkerIds); diff != "" {
				t.Errorf("final layout (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLeaderFailover kills the leading coordinator mid-generation: the
// stream in flight fails with UNAVAILABLE, the standby leads within the
// lease TTL (plus detection slack), and generates what the old leader did.
func TestLeaderFailover(t *testing.T) {
	for _, r := range runners() {
		t.Run(r.Name(), func(t *testing.T) {
			c := r.Start(t, Config{Model: modelDir, Workers: 2, Coordinators: 2, Etcd: etcdKind(t, r)})
			lead := Leader(t, c, 60*time.Second)
			want := generate(t, lead.Addr(), request(true), nil)
			var killed time.Time
			_, err := Generate(context.Background(), lead.Addr(), request(false), killAt(t, lead, 8, &killed))
			if status.Code(err) != codes.Unavailable {
				t.Errorf("stream on the killed leader: %v, want UNAVAILABLE", err)
			}
			next := Leader(t, c, 30*time.Second)
			t.Logf("%s: failover in %v (lease TTL %v)", r.Name(), time.Since(killed), c.Config().LeaseTTL)
			if next.ID() == lead.ID() {
				t.Fatalf("the killed leader %s still answers", lead.ID())
			}
			if diff := cmp.Diff(want.Tokens, generate(t, next.Addr(), request(true), nil).Tokens); diff != "" {
				t.Errorf("after failover (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEtcdOutage stops etcd for a while: serving continues, and once etcd
// is back a worker death is still recovered from.
func TestEtcdOutage(t *testing.T) {
	for _, kind := range storetest.Kinds(t) {
		t.Run(string(kind), func(t *testing.T) {
			// A leader keeps serving while etcd is away only as long as
			// its election lease would live (the etcd client gives the
			// session up after one TTL without a keep-alive answer, and
			// the leader steps down: the safe choice). The three
			// generations below take a few seconds; on a loaded machine
			// more, so the TTLs leave ample room.
			c := Processes(binary).Start(t, Config{Model: modelDir, Workers: 2, Spares: 1, Etcd: kind, LeaseTTL: 20 * time.Second, WorkerTTL: 20 * time.Second})
			lead := Leader(t, c, 60*time.Second)
			want := generate(t, lead.Addr(), request(true), nil)
			c.Etcd().Stop()
			for range 3 {
				if diff := cmp.Diff(want.Tokens, generate(t, lead.Addr(), request(true), nil).Tokens); diff != "" {
					t.Fatalf("while etcd is down (-want +got):\n%s", diff)
				}
			}
			if !Healthy(lead) {
				t.Errorf("leader unhealthy while etcd is down")
			}
			c.Etcd().Start()
			// Leadership survives a short outage; if the machine was slow
			// enough for the lease to lapse, the coordinator campaigns
			// again, so wait for a leader rather than assume one.
			lead = Leader(t, c, 60*time.Second)
			var killed time.Time
			got := generate(t, lead.Addr(), request(true), killAt(t, c.Workers()[0], 16, &killed))
			if diff := cmp.Diff(want.Tokens, got.Tokens); diff != "" {
				t.Errorf("worker death after the outage (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPartitionedWorkerIsFenced freezes a worker (SIGSTOP) until the
// leader replaced it, then thaws it: it learns its lease was revoked,
// drops its shards, and refuses steps of the old epoch.
func TestPartitionedWorkerIsFenced(t *testing.T) {
	r := Processes(binary)
	c := r.Start(t, Config{Model: modelDir, Workers: 2, Spares: 1, Etcd: etcdKind(t, r)})
	lead := Leader(t, c, 60*time.Second)
	want := generate(t, lead.Addr(), request(false), nil)
	old, err := c.Store().CurrentPlacement(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	victim := c.Workers()[1]
	if err := victim.Pause(t); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, func() error {
		cur, err := c.Store().CurrentPlacement(context.Background())
		if err != nil || cur.Epoch == old.Epoch || !Healthy(lead) {
			return fmt.Errorf("no new placement yet (%v)", err)
		}
		return nil
	})
	if diff := cmp.Diff(want.Tokens, generate(t, lead.Addr(), request(false), nil).Tokens); diff != "" {
		t.Errorf("without the frozen worker (-want +got):\n%s", diff)
	}
	if err := victim.Resume(t); err != nil {
		t.Fatal(err)
	}
	wc := pb.NewWorkerServiceClient(WorkerConn(t, c, victim.Addr()))
	Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		h, err := wc.Health(ctx, &pb.HealthRequest{})
		if err != nil {
			return err
		}
		if h.State != pb.WorkerState_WORKER_STATE_EMPTY {
			return fmt.Errorf("thawed worker is %v, want EMPTY (fenced)", h.State)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = wc.Step(ctx, &pb.StepRequest{Step: 1 << 40, PlacementEpoch: old.Epoch, Seqs: []*pb.SeqStep{{SeqId: 1, Tokens: []int32{1}, BlockTable: []int32{0}, Sample: true}}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a step of the old epoch on the fenced worker: %v, want FAILED_PRECONDITION", err)
	}
	// It registers again, as a spare.
	Eventually(t, 30*time.Second, func() error {
		ws, err := c.Store().Workers(context.Background())
		if err != nil {
			return err
		}
		for _, w := range ws {
			if w.Id == victim.ID() {
				return nil
			}
		}
		return fmt.Errorf("%s not registered again", victim.ID())
	})
}

// healthOf reads a coordinator's /health.
func healthOf(t *testing.T, m Member) (int, map[string]any) {
	t.Helper()
	r, err := http.Get("http://" + m.HTTPAddr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return r.StatusCode, body
}

// TestFrontDoor checks what a client sees of the leader and of a standby,
// and that bad requests get INVALID_ARGUMENT while the others are served.
func TestFrontDoor(t *testing.T) {
	c := InProcess.Start(t, Config{Model: modelDir, Workers: 2, Coordinators: 2, Context: 256})
	lead := Leader(t, c, 60*time.Second)
	var standby Member
	for _, m := range c.Coordinators() {
		if m.ID() != lead.ID() {
			standby = m
		}
	}
	Eventually(t, 10*time.Second, func() error {
		code, body := healthOf(t, standby)
		if code != http.StatusServiceUnavailable || body["role"] != "standby" || body["leader"] != lead.ID() {
			return fmt.Errorf("standby /health: %d %v", code, body)
		}
		return nil
	})
	conn, err := grpc.NewClient(standby.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	Eventually(t, 10*time.Second, func() error {
		h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil || h.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			return fmt.Errorf("standby gRPC health: %v %v", h, err)
		}
		return nil
	})
	if _, err := Generate(context.Background(), standby.Addr(), request(false), nil); status.Code(err) != codes.Unavailable {
		t.Errorf("Generate on the standby: %v, want UNAVAILABLE", err)
	}

	over := request(false)
	over.MaxTokens = 1000
	for _, tc := range []struct {
		name string
		req  *infpb.GenerateRequest
	}{
		{"empty prompt", &infpb.GenerateRequest{}},
		{"token outside the vocabulary", &infpb.GenerateRequest{PromptTokenIds: []int32{1, 1 << 30}, MaxTokens: 4}},
		{"negative token", &infpb.GenerateRequest{PromptTokenIds: []int32{-1}, MaxTokens: 4}},
		{"max tokens over the context", over},
		{"prompt over the context", &infpb.GenerateRequest{PromptTokenIds: make([]int32, 300), MaxTokens: 1}},
		{"bad temperature", &infpb.GenerateRequest{Prompt: "hi", Sampling: &infpb.SamplingParams{Temperature: ptr(float32(-1))}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Generate(context.Background(), lead.Addr(), tc.req, nil); status.Code(err) != codes.InvalidArgument {
				t.Errorf("Generate: %v, want INVALID_ARGUMENT", err)
			}
		})
	}
	generate(t, lead.Addr(), request(false), nil) // still serving
	code, body := healthOf(t, lead)
	if code != http.StatusOK || body["role"] != "leader" || body["etcd"] != "ok" {
		t.Errorf("leader /health: %d %v", code, body)
	}
}

func ptr[T any](v T) *T { return &v }

// TestHealthBeforePlacement: a leader with 2 of the 3 workers it needs
// (Spares -1: one fewer started) answers 503
// and says what it waits for.
func TestHealthBeforePlacement(t *testing.T) {
	c := InProcess.Start(t, Config{Model: modelDir, Workers: 3, Spares: -1})
	m := c.Coordinators()[0]
	Eventually(t, 10*time.Second, func() error {
		code, body := healthOf(t, m)
		reason, _ := body["reason"].(string)
		if code != http.StatusServiceUnavailable || body["role"] != "leader" || !strings.Contains(reason, "needs 3") {
			return fmt.Errorf("/health: %d %v", code, body)
		}
		return nil
	})
}
