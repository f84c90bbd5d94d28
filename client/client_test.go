package client_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/moemesh/moemesh/client"
	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastRetry keeps tests quick: failover and backoff in milliseconds.
var fastRetry = client.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Multiplier: 2, Jitter: 0.2, MaxRetryTime: 20 * time.Second}

// start serves f on loopback for the test; the returned stop may be called
// early (it is also a cleanup).
func start(t *testing.T, f *fakeServer, opts ...grpc.ServerOption) (string, func()) {
	t.Helper()
	addr, stop, err := serve(f, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	s := func() { once.Do(stop) }
	t.Cleanup(s)
	return addr, s
}

func dial(t *testing.T, addrs []string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(addrs, append([]client.Option{client.WithInsecure(), client.WithRetryPolicy(fastRetry)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func seed(v uint64) *pb.SamplingParams { return &pb.SamplingParams{Seed: proto.Uint64(v)} }

func TestGenerateCollect(t *testing.T) {
	f := &fakeServer{perMsg: 3}
	addr, _ := start(t, f)
	c := dial(t, []string{addr})
	prompt := []int32{5, 6, 7}
	st, err := c.Generate(ctxT(t), &pb.GenerateRequest{PromptTokenIds: prompt, MaxTokens: 10, Sampling: seed(42)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Collect()
	if err != nil {
		t.Fatal(err)
	}
	ids, text := reference(42, prompt, 10)
	want := &client.GenerateResult{TokenIDs: ids, Text: text, FinishReason: "length", Usage: &pb.Usage{PromptTokens: 3, CompletionTokens: 10}}
	if d := cmp.Diff(want, res, cmp.Comparer(proto.Equal)); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
	if st.Seed() != 42 || st.Attempts() != 1 {
		t.Errorf("seed %d attempts %d, want 42 and 1", st.Seed(), st.Attempts())
	}
	// Recv after the end keeps returning io.EOF.
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after end: %v, want io.EOF", err)
	}
}

func TestUnary(t *testing.T) {
	f := &fakeServer{}
	addr, _ := start(t, f)
	c := dial(t, []string{addr})
	ctx := ctxT(t)
	tok, err := c.Tokenize(ctx, &pb.TokenizeRequest{Prompt: "ab"})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]int32{'a', 'b'}, tok.TokenIds); d != "" {
		t.Errorf("Tokenize (-want +got):\n%s", d)
	}
	det, err := c.Detokenize(ctx, &pb.DetokenizeRequest{TokenIds: []int32{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if det.Text != "t1 t2 " {
		t.Errorf("Detokenize = %q, want %q", det.Text, "t1 t2 ")
	}
	ms, err := c.ListModels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Models) != 1 || ms.Models[0].Id != "fake" {
		t.Errorf("ListModels = %v", ms)
	}
}

func TestRetryUnavailableThenSuccess(t *testing.T) {
	t.Run("generate", func(t *testing.T) {
		f := &fakeServer{failFirst: 3}
		addr, _ := start(t, f)
		c := dial(t, []string{addr})
		st, err := c.Generate(ctxT(t), &pb.GenerateRequest{PromptTokenIds: []int32{1}, MaxTokens: 4, Sampling: seed(1)})
		if err != nil {
			t.Fatal(err)
		}
		res, err := st.Collect()
		if err != nil {
			t.Fatal(err)
		}
		ids, _ := reference(1, []int32{1}, 4)
		if d := cmp.Diff(ids, res.TokenIDs); d != "" {
			t.Errorf("tokens (-want +got):\n%s", d)
		}
		if f.Calls() != 4 || st.Attempts() != 4 {
			t.Errorf("server calls %d, attempts %d, want 4 and 4", f.Calls(), st.Attempts())
		}
	})
	t.Run("unary", func(t *testing.T) {
		f := &fakeServer{failFirst: 2}
		addr, _ := start(t, f)
		c := dial(t, []string{addr})
		if _, err := c.ListModels(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if f.Calls() != 3 {
			t.Errorf("server calls %d, want 3", f.Calls())
		}
	})
	t.Run("server not up yet", func(t *testing.T) {
		// A connection refused is retried like UNAVAILABLE: reserve a port,
		// dial it while nothing listens, then serve on it.
		f := &fakeServer{}
		addr, stop := start(t, f)
		stop()
		c := dial(t, []string{addr})
		errc := make(chan error, 1)
		go func() { _, err := c.ListModels(ctxT(t)); errc <- err }()
		f2 := &fakeServer{}
		lisAddr, stop2, err := serveAt(addr, f2)
		if err != nil {
			t.Skipf("port %s taken again: %v", addr, err)
		}
		t.Cleanup(stop2)
		if lisAddr != addr {
			t.Fatalf("served at %s, want %s", lisAddr, addr)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

func TestStandbyFailover(t *testing.T) {
	standby := &fakeServer{standby: true}
	leader := &fakeServer{}
	sAddr, _ := start(t, standby)
	lAddr, _ := start(t, leader)
	c := dial(t, []string{sAddr, lAddr})
	ctx := ctxT(t)
	for i := range 3 {
		st, err := c.Generate(ctx, &pb.GenerateRequest{Prompt: "hi", MaxTokens: 3})
		if err != nil {
			t.Fatal(err)
		}
		res, err := st.Collect()
		if err != nil {
			t.Fatal(err)
		}
		ids, _ := reference(st.Seed(), []int32{'h', 'i'}, 3)
		if d := cmp.Diff(ids, res.TokenIDs); d != "" {
			t.Errorf("call %d tokens (-want +got):\n%s", i, d)
		}
	}
	// The standby was asked once; later calls go straight to the leader.
	if standby.Calls() != 1 || leader.Calls() != 3 {
		t.Errorf("standby calls %d, leader calls %d, want 1 and 3", standby.Calls(), leader.Calls())
	}
	if _, err := c.Tokenize(ctx, &pb.TokenizeRequest{Prompt: "x"}); err != nil {
		t.Fatal(err)
	}
	if standby.Calls() != 1 {
		t.Errorf("standby calls %d after Tokenize, want 1", standby.Calls())
	}
}

// TestResume cuts the stream on the first coordinator mid-way; the second
// one must get the received tokens and the same seed and max_tokens, and
// the caller must read exactly the uninterrupted completion.
func TestResume(t *testing.T) {
	prompt := []int32{9, 8, 7, 6}
	const maxTokens = 12
	for _, tc := range []struct {
		name     string
		first    func() *fakeServer
		hardKill bool
		sampling *pb.SamplingParams
	}{
		{name: "unavailable mid-stream, seed unset", first: func() *fakeServer { return &fakeServer{cutAfter: 5} }},
		{name: "unavailable mid-stream, seed set", first: func() *fakeServer { return &fakeServer{cutAfter: 5} },
			sampling: &pb.SamplingParams{Seed: proto.Uint64(77), Temperature: proto.Float32(0.7)}},
		{name: "pieces of several tokens", first: func() *fakeServer { return &fakeServer{cutAfter: 4, perMsg: 2} }},
		{name: "stream ends early", first: func() *fakeServer { return &fakeServer{cutAfter: 3, cutEOF: true} }},
		{name: "coordinator killed", first: func() *fakeServer { return &fakeServer{hangAfter: 6, hung: make(chan struct{})} }, hardKill: true},
		{name: "unavailable before any token", first: func() *fakeServer { return &fakeServer{failFirst: 1} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.first()
			b := &fakeServer{}
			aAddr, stopA := start(t, a)
			bAddr, _ := start(t, b)
			c := dial(t, []string{aAddr, bAddr})
			req := &pb.GenerateRequest{PromptTokenIds: prompt, MaxTokens: maxTokens, Sampling: tc.sampling}
			orig := proto.Clone(req)
			st, err := c.Generate(ctxT(t), req)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int32
			var text string
			for {
				m, err := st.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, m.TokenIds...)
				text += m.Text
				if tc.hardKill && len(ids) == a.hangAfter {
					// Kill the coordinator once the client holds its tokens
					// (tokens still in flight would be lost, and resent).
					<-a.hung
					stopA()
				}
			}
			if !proto.Equal(orig, req) {
				t.Errorf("the caller's request was modified: %v", req)
			}
			if tc.sampling != nil && st.Seed() != tc.sampling.GetSeed() {
				t.Errorf("seed %d, want the caller's %d", st.Seed(), tc.sampling.GetSeed())
			}
			wantIDs, wantText := reference(st.Seed(), prompt, maxTokens)
			if d := cmp.Diff(wantIDs, ids); d != "" {
				t.Errorf("tokens (-want +got):\n%s", d)
			}
			if text != wantText {
				t.Errorf("text %q, want %q", text, wantText)
			}
			ga, gb := a.Gens(), b.Gens()
			if len(ga) != 1 || len(gb) != 1 {
				t.Fatalf("requests: %d to the first, %d to the second; want 1 and 1", len(ga), len(gb))
			}
			sentA := 0
			switch {
			case a.cutAfter > 0:
				sentA = a.cutAfter
			case a.hangAfter > 0:
				sentA = a.hangAfter
			}
			if d := cmp.Diff(wantIDs[:sentA], gb[0].ResumeTokenIds, cmp.Comparer(func(x, y []int32) bool { return len(x) == 0 && len(y) == 0 || cmp.Equal(x, y) })); d != "" {
				t.Errorf("resume_token_ids (-want +got):\n%s", d)
			}
			if ga[0].Sampling.Seed == nil || gb[0].GetSampling().GetSeed() != ga[0].GetSampling().GetSeed() {
				t.Errorf("seeds %v then %v, want one seed set on both", ga[0].GetSampling(), gb[0].GetSampling())
			}
			if ga[0].MaxTokens != maxTokens || gb[0].MaxTokens != maxTokens {
				t.Errorf("max_tokens %d then %d, want %d on both", ga[0].MaxTokens, gb[0].MaxTokens, maxTokens)
			}
			if len(ga[0].ResumeTokenIds) != 0 {
				t.Errorf("the first attempt sent resume_token_ids %v", ga[0].ResumeTokenIds)
			}
			if !proto.Equal(gb[0].Sampling, ga[0].Sampling) {
				t.Errorf("sampling changed across the resume: %v then %v", ga[0].Sampling, gb[0].Sampling)
			}
		})
	}
}

func TestChatResume(t *testing.T) {
	a := &fakeServer{cutAfter: 3}
	b := &fakeServer{}
	aAddr, _ := start(t, a)
	bAddr, _ := start(t, b)
	c := dial(t, []string{aAddr, bAddr})
	msgs := []*pb.ChatMessage{{Role: "user", Content: "hey"}}
	st, err := c.Chat(ctxT(t), &pb.ChatRequest{Messages: msgs, MaxTokens: 6})
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Collect()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := reference(st.Seed(), []int32{'h', 'e', 'y'}, 6)
	want := &client.ChatResult{TokenIDs: ids, ReasoningContent: tokenText(ids[0]) + tokenText(ids[1]),
		Content:      tokenText(ids[2]) + tokenText(ids[3]) + tokenText(ids[4]) + tokenText(ids[5]),
		FinishReason: "length", Usage: &pb.Usage{PromptTokens: 3, CompletionTokens: 6}}
	if d := cmp.Diff(want, res, cmp.Comparer(proto.Equal)); d != "" {
		t.Errorf("chat (-want +got):\n%s", d)
	}
	if gb := b.Chats(); len(gb) != 1 || !cmp.Equal(ids[:3], gb[0].ResumeTokenIds) {
		t.Errorf("resumed chat requests %v, want one with resume %v", gb, ids[:3])
	}
}

func TestDeadline(t *testing.T) {
	t.Run("stream", func(t *testing.T) {
		f := &fakeServer{block: true}
		addr, _ := start(t, f)
		c := dial(t, []string{addr})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		st, err := c.Generate(ctx, &pb.GenerateRequest{Prompt: "x"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.Collect()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("err %v, want DEADLINE_EXCEEDED", err)
		}
		if f.Calls() != 1 {
			t.Errorf("server calls %d, want 1 (no retry after the deadline)", f.Calls())
		}
	})
	t.Run("bounds retries", func(t *testing.T) {
		f := &fakeServer{standby: true}
		addr, _ := start(t, f)
		c := dial(t, []string{addr})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := c.ListModels(ctx)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("err %v, want DEADLINE_EXCEEDED", err)
		}
		if f.Calls() < 2 {
			t.Errorf("server calls %d, want retries before the deadline", f.Calls())
		}
	})
	t.Run("max retry time", func(t *testing.T) {
		f := &fakeServer{standby: true}
		addr, _ := start(t, f)
		p := fastRetry
		p.MaxRetryTime = 50 * time.Millisecond
		c := dial(t, []string{addr}, client.WithRetryPolicy(p))
		st, err := c.Generate(ctxT(t), &pb.GenerateRequest{Prompt: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Collect(); status.Code(err) != codes.Unavailable {
			t.Errorf("err %v, want UNAVAILABLE after MaxRetryTime", err)
		}
	})
	t.Run("call timeout", func(t *testing.T) {
		f := &fakeServer{standby: true}
		addr, _ := start(t, f)
		c := dial(t, []string{addr}, client.WithCallTimeout(50*time.Millisecond))
		if _, err := c.Detokenize(context.Background(), &pb.DetokenizeRequest{}); status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("err %v, want DEADLINE_EXCEEDED from the default call timeout", err)
		}
	})
}

func TestNonRetryable(t *testing.T) {
	for _, code := range []codes.Code{codes.InvalidArgument, codes.NotFound, codes.Unauthenticated, codes.ResourceExhausted,
		codes.PermissionDenied, codes.FailedPrecondition, codes.Internal, codes.DeadlineExceeded, codes.Canceled} {
		t.Run(code.String(), func(t *testing.T) {
			f := &fakeServer{code: code}
			addr, _ := start(t, f)
			other := &fakeServer{}
			oAddr, _ := start(t, other)
			c := dial(t, []string{addr, oAddr})
			st, err := c.Generate(ctxT(t), &pb.GenerateRequest{Prompt: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Collect(); status.Code(err) != code {
				t.Errorf("Generate err %v, want %v", err, code)
			}
			if _, err := c.Tokenize(ctxT(t), &pb.TokenizeRequest{Prompt: "x"}); status.Code(err) != code {
				t.Errorf("Tokenize err %v, want %v", err, code)
			}
			if f.Calls() != 2 || other.Calls() != 0 {
				t.Errorf("calls %d and %d, want 2 and 0: no retry, no failover", f.Calls(), other.Calls())
			}
		})
	}
}

func TestCallerCancel(t *testing.T) {
	f := &fakeServer{hangAfter: 1, hung: make(chan struct{})}
	addr, _ := start(t, f)
	c := dial(t, []string{addr})
	ctx, cancel := context.WithCancel(ctxT(t))
	st, err := c.Generate(ctx, &pb.GenerateRequest{Prompt: "x", MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	<-f.hung
	cancel()
	if _, err := st.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("err %v, want CANCELLED", err)
	}
	if f.Calls() != 1 {
		t.Errorf("server calls %d, want 1", f.Calls())
	}
}

func TestClose(t *testing.T) {
	f := &fakeServer{hangAfter: 1, hung: make(chan struct{})}
	addr, _ := start(t, f)
	c := dial(t, []string{addr})
	st, err := c.Generate(ctxT(t), &pb.GenerateRequest{Prompt: "x", MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	<-f.hung
	st.Close()
	if _, err := st.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after stream Close: %v, want CANCELLED", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Generate(ctxT(t), &pb.GenerateRequest{Prompt: "x"}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Generate after Close: %v, want ErrClosed", err)
	}
	if _, err := c.ListModels(ctxT(t)); !errors.Is(err, client.ErrClosed) {
		t.Errorf("ListModels after Close: %v, want ErrClosed", err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
		opts  []client.Option
	}{
		{"no address", nil, []client.Option{client.WithInsecure()}},
		{"empty address", []string{"a:1", " "}, []client.Option{client.WithInsecure()}},
		{"empty key", []string{"a:1"}, []client.Option{client.WithInsecure(), client.WithAPIKey("")}},
		{"nil tls", []string{"a:1"}, []client.Option{client.WithTLSConfig(nil)}},
		{"insecure and CA", []string{"a:1"}, []client.Option{client.WithInsecure(), client.WithCAFile("ca.pem")}},
		{"missing CA file", []string{"a:1"}, []client.Option{client.WithCAFile(t.TempDir() + "/none.pem")}},
		{"bad timeout", []string{"a:1"}, []client.Option{client.WithInsecure(), client.WithCallTimeout(0)}},
		{"bad retry", []string{"a:1"}, []client.Option{client.WithInsecure(), client.WithRetryPolicy(client.RetryPolicy{})}},
		{"bad jitter", []string{"a:1"}, []client.Option{client.WithInsecure(), client.WithRetryPolicy(client.RetryPolicy{InitialBackoff: 1, MaxBackoff: 1, Multiplier: 1, Jitter: 2})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.Dial(tc.addrs, tc.opts...)
			if !errors.Is(err, client.ErrConfig) {
				t.Errorf("err %v, want ErrConfig", err)
			}
			if c != nil {
				c.Close()
			}
		})
	}
	c, err := client.Dial([]string{"a:1"}, client.WithInsecure(), client.WithRetryPolicy(client.DefaultRetryPolicy()))
	if err != nil {
		t.Fatalf("DefaultRetryPolicy rejected: %v", err)
	}
	c.Close()
}
