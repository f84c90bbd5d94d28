package serving

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/moemesh/moemesh/chat"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	"github.com/moemesh/moemesh/scheduler"
)

type genResult struct {
	text   string
	ids    []int32
	finish string
	usage  *infpb.Usage
	lps    []*infpb.TokenLogprob
}

func collectGenerate(t *testing.T, ts *testServer, req *infpb.GenerateRequest) (genResult, error) {
	t.Helper()
	st, err := ts.client.Generate(rpcCtx(t), req)
	if err != nil {
		return genResult{}, err
	}
	var r genResult
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return r, nil
		}
		if err != nil {
			return r, err
		}
		r.text += resp.Text
		r.ids = append(r.ids, resp.TokenIds...)
		r.lps = append(r.lps, resp.Logprobs...)
		if resp.FinishReason != "" {
			r.finish, r.usage = resp.FinishReason, resp.Usage
		}
	}
}

func TestGenerate(t *testing.T) {
	tok := qwen3(t)
	const reply = "Hello, world. The answer is 42, isn't it? Done."
	replyIDs := append(ids32(tok.Encode(reply)), int32(tok.EOSIDs()[0]))
	for _, tc := range []struct {
		name       string
		req        *infpb.GenerateRequest
		chunk      int
		wantText   string
		wantIDs    []int32
		wantFinish string
	}{
		{name: "whole reply", req: &infpb.GenerateRequest{Prompt: "Hi"}, chunk: 3, wantText: reply, wantIDs: replyIDs, wantFinish: "stop"},
		{name: "max tokens", req: &infpb.GenerateRequest{Prompt: "Hi", MaxTokens: 4}, chunk: 3,
			wantText: tok.Decode([]int{int(replyIDs[0]), int(replyIDs[1]), int(replyIDs[2]), int(replyIDs[3])}), wantIDs: replyIDs[:4], wantFinish: "length"},
		{name: "stop string cuts the text", req: &infpb.GenerateRequest{Prompt: "Hi", Stop: []string{"42"}}, chunk: 1,
			wantText: "Hello, world. The answer is ", wantFinish: "stop"},
		{name: "earliest stop string across tokens", req: &infpb.GenerateRequest{Prompt: "Hi", Stop: []string{"Done", "answer is"}}, chunk: 2,
			wantText: "Hello, world. The ", wantFinish: "stop"},
		{name: "stop string never seen", req: &infpb.GenerateRequest{Prompt: "Hi", Stop: []string{"Done!"}}, chunk: 5,
			wantText: reply, wantIDs: replyIDs, wantFinish: "stop"},
		{name: "prompt ids", req: &infpb.GenerateRequest{PromptTokenIds: []int32{1, 2, 3}}, chunk: 100, wantText: reply, wantIDs: replyIDs, wantFinish: "stop"},
		{name: "resume sends only the rest", req: &infpb.GenerateRequest{Prompt: "Hi", ResumeTokenIds: replyIDs[:5]}, chunk: 2,
			wantText: strings.TrimPrefix(reply, tok.Decode(toInts(replyIDs[:5]))), wantIDs: replyIDs[5:], wantFinish: "stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := &fakeSub{reply: textReply(tok, reply), chunk: tc.chunk}
			ts := startServer(t, testConfig(), sub, 4096)
			got, err := collectGenerate(t, ts, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got.text != tc.wantText || got.finish != tc.wantFinish {
				t.Errorf("text %q finish %q, want %q %q", got.text, got.finish, tc.wantText, tc.wantFinish)
			}
			if tc.wantIDs != nil {
				if diff := cmp.Diff(tc.wantIDs, got.ids); diff != "" {
					t.Errorf("token ids (-want +got):\n%s", diff)
				}
			}
			if int(got.usage.GetCompletionTokens()) != len(tc.req.ResumeTokenIds)+len(got.ids) {
				t.Errorf("usage %v, %d tokens received", got.usage, len(got.ids))
			}
			r := sub.lastRequest(t)
			if len(tc.req.Stop) > 0 && got.finish == "stop" && !strings.HasSuffix(got.text, ".") {
				// a stop string cancels the request
				eventually(t, "the request's cancellation", func() bool { _, c, _ := sub.counts(); return c == 1 })
			}
			if diff := cmp.Diff(tc.req.ResumeTokenIds, r.Generated); diff != "" {
				t.Errorf("Generated (-want +got):\n%s", diff)
			}
			for _, eos := range tok.EOSIDs() {
				if !containsID(r.Stop, int32(eos)) {
					t.Errorf("Stop %v lacks EOS %d", r.Stop, eos)
				}
			}
		})
	}
}

func toInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

func containsID(v []int32, id int32) bool {
	for _, x := range v {
		if x == id {
			return true
		}
	}
	return false
}

func TestGenerateRequestFields(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "ok")}
	ts := startServer(t, testConfig(), sub, 4096)
	temp, topK, seed := float32(0.7), int32(-1), uint64(7)
	lp := uint32(2)
	got, err := collectGenerate(t, ts, &infpb.GenerateRequest{Prompt: "Hi", ChatTemplate: true, MaxTokens: 9, IgnoreEos: true,
		StopTokenIds: []int32{13}, Logprobs: &lp, Sampling: &infpb.SamplingParams{Temperature: &temp, TopK: &topK, Seed: &seed}})
	if err != nil {
		t.Fatal(err)
	}
	r := sub.lastRequest(t)
	thinking := false
	want, err := chat.Render(tok, chat.Conversation{Messages: []chat.Message{{Role: "user", Content: "Hi"}}, EnableThinking: &thinking, AddGenerationPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.IDs, r.Prompt); diff != "" {
		t.Errorf("templated prompt (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int32{13}, r.Stop); diff != "" {
		t.Errorf("Stop with ignore_eos (-want +got):\n%s", diff)
	}
	if r.MaxTokens != 9 || r.Params.Temperature != 0.7 || r.Params.TopK != -1 || r.Params.Seed != 7 || !r.Logprobs || r.TopLogprobs != 2 {
		t.Errorf("request %+v", r)
	}
	if len(got.lps) != len(got.ids) || len(got.lps) == 0 {
		t.Fatalf("%d logprobs for %d tokens", len(got.lps), len(got.ids))
	}
	for i, l := range got.lps {
		if l.TokenId != got.ids[i] || l.Logprob != -0.5 || len(l.Top) != 2 || l.Token != tokenText(tok, got.ids[i]) {
			t.Errorf("logprob %d: %v", i, l)
		}
	}
	// The unset max_tokens is the rest of the context.
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{PromptTokenIds: []int32{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if r := sub.lastRequest(t); r.MaxTokens != 4096-3 || r.Params.Seed == 7 {
		t.Errorf("defaults: MaxTokens %d (want %d)", r.MaxTokens, 4096-3)
	}
}

func TestGenerateErrors(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "ok")}
	ts := startServer(t, testConfig(), sub, 64)
	long := make([]int32, 64)
	for _, tc := range []struct {
		name string
		req  *infpb.GenerateRequest
		want codes.Code
	}{
		{"empty prompt", &infpb.GenerateRequest{}, codes.InvalidArgument},
		{"prompt over the context", &infpb.GenerateRequest{PromptTokenIds: long}, codes.InvalidArgument},
		{"max_tokens over the context", &infpb.GenerateRequest{Prompt: "Hi", MaxTokens: 64}, codes.InvalidArgument},
		{"huge max_tokens", &infpb.GenerateRequest{Prompt: "Hi", MaxTokens: 1 << 31}, codes.InvalidArgument},
		{"token outside the vocabulary", &infpb.GenerateRequest{PromptTokenIds: []int32{1, 1 << 30}}, codes.InvalidArgument},
		{"negative token", &infpb.GenerateRequest{PromptTokenIds: []int32{-1}}, codes.InvalidArgument},
		{"unknown model", &infpb.GenerateRequest{Prompt: "Hi", Model: "gpt-4"}, codes.NotFound},
		{"bad sampling", &infpb.GenerateRequest{Prompt: "Hi", Sampling: &infpb.SamplingParams{TopP: proto.Float32(2)}}, codes.InvalidArgument},
		{"too many top logprobs", &infpb.GenerateRequest{Prompt: "Hi", Logprobs: proto.Uint32(21)}, codes.InvalidArgument},
		{"empty stop string", &infpb.GenerateRequest{Prompt: "Hi", Stop: []string{""}}, codes.InvalidArgument},
		{"resume fills max_tokens", &infpb.GenerateRequest{Prompt: "Hi", MaxTokens: 2, ResumeTokenIds: []int32{5, 6}}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := collectGenerate(t, ts, tc.req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			if status.Convert(err).Message() == "" {
				t.Error("no message")
			}
		})
	}
	if n, _, _ := sub.counts(); n != 0 {
		t.Errorf("%d requests reached the scheduler", n)
	}
	// The server still serves.
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{Prompt: "Hi"}); err != nil {
		t.Fatal(err)
	}
}

// chatReply is a thinking reply with a tool call, tokenized for real.
const chatReply = "<think>\nThe user wants the weather.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2.50}}\n</tool_call>"

// parseReference runs the chat parser over the reply's tokens: what the
// server must return.
func parseReference(t *testing.T, text string, thinking bool) (reasoning, content string, calls []chat.ToolCall) {
	tok := qwen3(t)
	p := chat.NewParser(tok, thinking)
	for _, id := range tok.Encode(text) {
		d := p.Push(int32(id))
		reasoning, content, calls = reasoning+d.Reasoning, content+d.Content, append(calls, d.ToolCalls...)
	}
	d := p.Flush()
	return reasoning + d.Reasoning, content + d.Content, append(calls, d.ToolCalls...)
}

func TestChat(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, chatReply), chunk: 2}
	ts := startServer(t, testConfig(), sub, 4096)
	tool := `{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"days": {"type": "number", "maximum": 1e3}}}}}`
	st, err := ts.client.Chat(rpcCtx(t), &infpb.ChatRequest{
		Messages: []*infpb.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Weather in Paris?"}},
		Tools:    []string{tool}, ThinkingBudget: proto.Uint32(100),
	})
	if err != nil {
		t.Fatal(err)
	}
	var reasoning, content, finish string
	var calls []*infpb.ToolCall
	var usage *infpb.Usage
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		reasoning, content = reasoning+resp.ReasoningContent, content+resp.Content
		calls = append(calls, resp.ToolCalls...)
		if resp.FinishReason != "" {
			finish, usage = resp.FinishReason, resp.Usage
		}
	}
	wr, wc, wcalls := parseReference(t, chatReply, true)
	if reasoning != wr || content != wc {
		t.Errorf("reasoning %q content %q, want %q %q", reasoning, content, wr, wc)
	}
	if finish != "tool_calls" || len(calls) != len(wcalls) || len(calls) != 1 {
		t.Fatalf("finish %q calls %v, want tool_calls and %v", finish, calls, wcalls)
	}
	if c := calls[0]; c.Name != wcalls[0].Name || c.Arguments != wcalls[0].Arguments || !strings.HasPrefix(c.Id, "call_") || c.Type != "function" {
		t.Errorf("call %v, want %v", c, wcalls[0])
	}
	if usage.ReasoningTokens == 0 || usage.ReasoningTokens >= usage.CompletionTokens {
		t.Errorf("usage %v", usage)
	}
	r := sub.lastRequest(t)
	ins, end, err := chat.BudgetInsert(tok)
	if err != nil {
		t.Fatal(err)
	}
	if r.Budget == nil || r.Budget.Tokens != 100 || r.Budget.End != end || !cmp.Equal(r.Budget.Insert, ins) {
		t.Errorf("Budget %+v, want 100 tokens, end %d, insert %v", r.Budget, end, ins)
	}
	// The tool reaches the template as written (numbers and key order).
	want, err := chat.Render(tok, chat.Conversation{Messages: []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Weather in Paris?"}},
		Tools: []json.RawMessage{json.RawMessage(tool)}, AddGenerationPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.IDs, r.Prompt); diff != "" {
		t.Errorf("prompt (-want +got):\n%s", diff)
	}
}

func TestChatErrors(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "ok")}
	ts := startServer(t, testConfig(), sub, 4096)
	user := []*infpb.ChatMessage{{Role: "user", Content: "Hi"}}
	for _, tc := range []struct {
		name string
		req  *infpb.ChatRequest
		want codes.Code
	}{
		{"no messages", &infpb.ChatRequest{}, codes.InvalidArgument},
		{"bad role", &infpb.ChatRequest{Messages: []*infpb.ChatMessage{{Role: "wizard", Content: "Hi"}}}, codes.InvalidArgument},
		{"tool not JSON", &infpb.ChatRequest{Messages: user, Tools: []string{`{"type": "function",`}}, codes.InvalidArgument},
		{"tool not an object", &infpb.ChatRequest{Messages: user, Tools: []string{`[1, 2]`}}, codes.InvalidArgument},
		{"unknown model", &infpb.ChatRequest{Messages: user, Model: "nope"}, codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ts.client.Chat(rpcCtx(t), tc.req)
			if err == nil {
				_, err = st.Recv()
			}
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func TestThinkingOffHasNoBudget(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "Paris.")}
	ts := startServer(t, testConfig(), sub, 4096)
	st, err := ts.client.Chat(rpcCtx(t), &infpb.ChatRequest{Messages: []*infpb.ChatMessage{{Role: "user", Content: "Capital of France?"}},
		EnableThinking: proto.Bool(false), ThinkingBudget: proto.Uint32(5)})
	if err != nil {
		t.Fatal(err)
	}
	var content string
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		content += resp.Content
		if resp.ReasoningContent != "" {
			t.Errorf("reasoning %q with thinking off", resp.ReasoningContent)
		}
	}
	if _, want, _ := parseReference(t, "Paris.", false); content != want {
		t.Errorf("content %q, want %q", content, want)
	}
	if r := sub.lastRequest(t); r.Budget != nil {
		t.Errorf("a budget %+v with thinking off", r.Budget)
	}
}

func TestTokenizeDetokenizeListModels(t *testing.T) {
	tok := qwen3(t)
	ts := startServer(t, testConfig(), &fakeSub{reply: textReply(tok, "ok")}, 2048)
	ctx := rpcCtx(t)
	tr, err := ts.client.Tokenize(ctx, &infpb.TokenizeRequest{Prompt: "Hello world"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ids32(tok.Encode("Hello world")), tr.TokenIds); diff != "" || tr.MaxModelLen != 2048 {
		t.Errorf("Tokenize (-want +got):\n%s, max_model_len %d", diff, tr.MaxModelLen)
	}
	msgs := []*infpb.ChatMessage{{Role: "user", Content: "Hi"}}
	tr, err = ts.client.Tokenize(ctx, &infpb.TokenizeRequest{Messages: msgs, AddGenerationPrompt: proto.Bool(false)})
	if err != nil {
		t.Fatal(err)
	}
	want, err := chat.Render(tok, chat.Conversation{Messages: []chat.Message{{Role: "user", Content: "Hi"}}})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Prompt != want.Text || !cmp.Equal(tr.TokenIds, want.IDs) {
		t.Errorf("chat Tokenize %q, want %q", tr.Prompt, want.Text)
	}
	dr, err := ts.client.Detokenize(ctx, &infpb.DetokenizeRequest{TokenIds: tr.TokenIds})
	if err != nil || dr.Text != want.Text {
		t.Errorf("Detokenize = %q, %v; want %q", dr.GetText(), err, want.Text)
	}
	if _, err := ts.client.Detokenize(ctx, &infpb.DetokenizeRequest{TokenIds: []int32{1 << 29}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Detokenize of a bad id: %v", err)
	}
	if _, err := ts.client.Tokenize(ctx, &infpb.TokenizeRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty Tokenize: %v", err)
	}
	lm, err := ts.client.ListModels(ctx, &infpb.ListModelsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(lm.Models) != 1 || lm.Models[0].Id != "qwen3-test" || lm.Models[0].MaxModelLen != 2048 {
		t.Errorf("ListModels %v", lm.Models)
	}
	hc := healthpb.NewHealthClient(ts.conn)
	eventually(t, "gRPC health SERVING", func() bool {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "moemesh.inference.v1.InferenceService"})
		return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
	})
	if _, ok := ts.s.GRPC().GetServiceInfo()["grpc.reflection.v1.ServerReflection"]; !ok {
		t.Error("no reflection service")
	}
}

func TestServedModelName(t *testing.T) {
	tok := qwen3(t)
	cfg := testConfig()
	cfg.ModelName = "Qwen/Qwen3-235B-A22B"
	ts := startServer(t, cfg, &fakeSub{reply: textReply(tok, "ok")}, 2048)
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{Prompt: "Hi", Model: "Qwen/Qwen3-235B-A22B"}); err != nil {
		t.Fatal(err)
	}
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{Prompt: "Hi", Model: "qwen3-test"}); status.Code(err) != codes.NotFound {
		t.Fatalf("the directory's name once renamed: %v", err)
	}
}

func TestGRPCCancelFreesTheRequest(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "a b c"), hold: true}
	ts := startServer(t, testConfig(), sub, 4096)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := ts.client.Generate(ctx, &infpb.GenerateRequest{Prompt: "Hi", IgnoreEos: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	eventually(t, "the scheduler request's cancellation", func() bool { _, c, r := sub.counts(); return c == 1 && r == 0 })
}

func TestStreamErrorIsUnavailable(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "ok"), err: ErrUnavailable}
	ts := startServer(t, testConfig(), sub, 4096)
	if _, err := collectGenerate(t, ts, &infpb.GenerateRequest{Prompt: "Hi"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("%v, want UNAVAILABLE", err)
	}
}

var _ = scheduler.FinishStop
