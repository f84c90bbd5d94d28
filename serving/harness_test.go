package serving

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/moemesh/moemesh/coordinator/control"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/tokenizer"
)

func TestMain(m *testing.M) {
	// Every test model is Qwen3's tokenizer: share the embedded one
	// instead of parsing tokenizer.json per server.
	loadTokenizer = func(string) (*tokenizer.Tokenizer, error) { return tokenizer.Qwen3() }
	os.Exit(m.Run())
}

// modelDir makes a model directory named qwen3-test, with
// generation_config.json when genConfig is not "" (the tokenizer is the
// shared one of TestMain).
func modelDir(t testing.TB, genConfig string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "qwen3-test")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if genConfig != "" {
		if err := os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(genConfig), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func qwen3(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Qwen3()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func ids32(v []int) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

type fakeModel struct {
	dir string
	ctx int
}

func (m fakeModel) ModelDir() string   { return m.dir }
func (m fakeModel) ContextTokens() int { return m.ctx }

type readyHealth struct{}

func (readyHealth) Health() control.Health { return control.Health{Ready: true, Role: "leader"} }

// fakeSub is a scheduler.Submitter whose model answers reply(request):
// the stream emits it from len(Generated) on, chunk tokens a call, ending
// at a stop id (emitted), at MaxTokens, or at the end of the reply; with
// hold it then waits for the request's context instead.
type fakeSub struct {
	reply func(r scheduler.Request) []scheduler.Token
	chunk int
	hold  bool
	err   error

	mu        sync.Mutex
	reqs      []scheduler.Request
	cancelled int
	running   int
}

func (f *fakeSub) Submit(ctx context.Context, r scheduler.Request) (scheduler.Stream, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.running++
	f.mu.Unlock()
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		f.cancelled++
		f.running--
		f.mu.Unlock()
	})
	toks := f.reply(r)
	n := max(f.chunk, 1)
	return &fakeStream{f: f, ctx: ctx, r: r, toks: toks, pos: len(r.Generated), chunk: n}, nil
}

func (f *fakeSub) lastRequest(t *testing.T) scheduler.Request {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		t.Fatal("no request was submitted")
	}
	return f.reqs[len(f.reqs)-1]
}

func (f *fakeSub) counts() (submitted, cancelled, running int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs), f.cancelled, f.running
}

type fakeStream struct {
	f     *fakeSub
	ctx   context.Context
	r     scheduler.Request
	toks  []scheduler.Token
	pos   int
	chunk int
	done  bool
}

func (s *fakeStream) Next(ctx context.Context) ([]scheduler.Token, bool, string, error) {
	if s.done {
		return nil, true, "", context.Canceled
	}
	if s.pos >= len(s.toks) || s.pos >= s.r.MaxTokens {
		if s.pos < s.r.MaxTokens && s.f.hold {
			select {
			case <-ctx.Done():
				return nil, true, "", ctx.Err()
			case <-s.ctx.Done():
				return nil, true, "", s.ctx.Err()
			}
		}
		s.done = true
		if s.pos >= s.r.MaxTokens {
			return nil, true, scheduler.FinishLength, nil
		}
		return nil, true, scheduler.FinishStop, nil
	}
	if err := s.ctx.Err(); err != nil {
		return nil, true, "", err
	}
	var out []scheduler.Token
	for len(out) < s.chunk && s.pos < len(s.toks) && s.pos < s.r.MaxTokens {
		t := s.toks[s.pos]
		s.pos++
		out = append(out, t)
		for _, id := range s.r.Stop {
			if t.ID == id {
				s.done = true
				return out, true, scheduler.FinishStop, nil
			}
		}
	}
	if s.pos >= s.r.MaxTokens {
		s.done = true
		return out, true, scheduler.FinishLength, nil
	}
	return out, false, "", nil
}

// textReply answers text then <|im_end|>, with logprob -0.5 and one
// candidate per token.
func textReply(tok *tokenizer.Tokenizer, text string) func(scheduler.Request) []scheduler.Token {
	return func(r scheduler.Request) []scheduler.Token {
		ids := append(tok.Encode(text), tok.EOSIDs()[0])
		out := make([]scheduler.Token, len(ids))
		for i, id := range ids {
			out[i] = scheduler.Token{ID: int32(id)}
			if r.Logprobs {
				out[i].Logprob = -0.5
				for range r.TopLogprobs {
					out[i].TopIDs = append(out[i].TopIDs, int32(id))
					out[i].TopLogprobs = append(out[i].TopLogprobs, -0.5)
				}
			}
		}
		return out
	}
}

// testServer is a Server on loopback listeners with a gRPC client.
type testServer struct {
	s      *Server
	sub    *fakeSub
	dir    string
	http   string // base URL
	client infpb.InferenceServiceClient
	conn   *grpc.ClientConn
}

func startServer(t *testing.T, cfg Config, sub *fakeSub, ctxTokens int) *testServer {
	t.Helper()
	dir := modelDir(t, "")
	s, err := New(cfg, Deps{Submitter: sub, Model: fakeModel{dir, ctxTokens}, Health: readyHealth{}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(l)
	ts := &testServer{s: s, sub: sub, dir: dir, http: "http://" + l.HTTP.Addr().String()}
	if cfg.TLSCertFile == "" {
		ts.conn, err = grpc.NewClient(l.GRPC.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ts.client = infpb.NewInferenceServiceClient(ts.conn)
	}
	t.Cleanup(func() {
		if ts.conn != nil {
			ts.conn.Close()
		}
		if err := s.Close(time.Second); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ts
}

// testConfig is DefaultConfig without keys from the environment.
func testConfig() Config {
	c := DefaultConfig()
	c.APIKeyEnv, c.AdminTokenEnv = "", ""
	return c
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func rpcCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func asError[T error](err error, target *T) bool { return errors.As(err, target) }
