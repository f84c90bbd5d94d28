package serving

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/moemesh/moemesh/chat"
)

func post(t *testing.T, ts *testServer, path, body string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(rpcCtx(t), http.MethodPost, ts.http+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func decodeBody(t *testing.T, resp *http.Response, v any) {
	t.Helper()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// sseEvents reads an event stream strictly: every event one "data: "
// line and a blank line, the last one [DONE].
func sseEvents(t *testing.T, resp *http.Response) []json.RawMessage {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	var out []json.RawMessage
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended without [DONE]: %v", err)
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line %q is not a data line", line)
		}
		if blank, _ := r.ReadString('\n'); blank != "\n" {
			t.Fatalf("event not followed by a blank line: %q", blank)
		}
		data = strings.TrimSuffix(data, "\n")
		if data == "[DONE]" {
			if rest, _ := io.ReadAll(r); len(rest) != 0 {
				t.Errorf("bytes after [DONE]: %q", rest)
			}
			return out
		}
		out = append(out, json.RawMessage(data))
	}
}

func TestChatCompletions(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, chatReply), chunk: 3}
	ts := startServer(t, testConfig(), sub, 4096)
	wr, wc, wcalls := parseReference(t, chatReply, true)
	body := `{"model": "qwen3-test", "messages": [
		{"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
		{"role": "user", "content": "Weather?"},
		{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
		{"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
		{"role": "user", "content": "And Paris?"}],
		"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
		"tool_choice": "auto", "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "presence_penalty": 0.5, "seed": 3,
		"max_completion_tokens": 200, "thinking_token_budget": 50, "logprobs": true, "top_logprobs": 1, "stop_token_ids": [11]}`
	t.Run("non-streaming", func(t *testing.T) {
		resp := post(t, ts, "/v1/chat/completions", body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var got struct {
			Object  string
			Model   string
			Choices []struct {
				Message struct {
					Role             string
					Content          *string
					ReasoningContent string `json:"reasoning_content"`
					Reasoning        string
					ToolCalls        []oaToolCall `json:"tool_calls"`
				}
				Logprobs     oaChatLogprobs
				FinishReason string `json:"finish_reason"`
			}
			Usage oaUsage
		}
		decodeBody(t, resp, &got)
		c := got.Choices[0]
		if got.Object != "chat.completion" || got.Model != "qwen3-test" || c.Message.Role != "assistant" || c.FinishReason != "tool_calls" {
			t.Errorf("response %+v", got)
		}
		if c.Message.ReasoningContent != wr || c.Message.Reasoning != wr || c.Message.Content == nil || *c.Message.Content != wc {
			t.Errorf("message %+v, want reasoning %q content %q", c.Message, wr, wc)
		}
		if len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Name != wcalls[0].Name ||
			string(c.Message.ToolCalls[0].Function.Arguments) != wcalls[0].Arguments || c.Message.ToolCalls[0].Type != "function" {
			t.Errorf("tool calls %+v, want %v", c.Message.ToolCalls, wcalls)
		}
		if n := len(tok.Encode(chatReply)) + 1; got.Usage.CompletionTokens != n || len(c.Logprobs.Content) != n || got.Usage.CompletionTokensDetails.ReasoningTokens == 0 {
			t.Errorf("usage %+v, %d logprobs, want %d tokens", got.Usage, len(c.Logprobs.Content), n)
		}
		r := sub.lastRequest(t)
		if r.MaxTokens != 200 || r.Params.TopK != 20 || r.Params.MinP != 0.05 || r.Params.RepetitionPenalty != 1.1 || r.Params.PresencePenalty != 0.5 ||
			r.Params.Seed != 3 || r.Budget == nil || r.Budget.Tokens != 50 || !containsID(r.Stop, 11) || r.TopLogprobs != 1 {
			t.Errorf("request %+v", r)
		}
		want, err := chat.Render(tok, chat.Conversation{Messages: []chat.Message{
			{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Weather?"},
			{Role: "assistant", ToolCalls: []chat.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city": "Rome"}`}}},
			{Role: "tool", ToolCallID: "call_1", Content: "sunny"}, {Role: "user", Content: "And Paris?"}},
			Tools:               []json.RawMessage{json.RawMessage(`{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}`)},
			AddGenerationPrompt: true})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want.IDs, r.Prompt); diff != "" {
			t.Errorf("prompt (-want +got):\n%s", diff)
		}
	})
	t.Run("streaming", func(t *testing.T) {
		resp := post(t, ts, "/v1/chat/completions", strings.Replace(body, `"model"`, `"stream": true, "stream_options": {"include_usage": true}, "model"`, 1))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		events := sseEvents(t, resp)
		var reasoning, reasoning2, content, finish string
		var calls []oaToolCall
		var usage *oaUsage
		for i, e := range events {
			var c oaChatResponse
			if err := json.Unmarshal(e, &c); err != nil {
				t.Fatal(err)
			}
			if c.Object != "chat.completion.chunk" {
				t.Errorf("event %d object %q", i, c.Object)
			}
			if c.Usage != nil {
				if i != len(events)-1 || len(c.Choices) != 0 {
					t.Errorf("usage in event %d of %d with %d choices", i, len(events), len(c.Choices))
				}
				usage = c.Usage
				continue
			}
			d := c.Choices[0].Delta
			if i == 0 && d.Role != "assistant" {
				t.Errorf("first delta %+v has no role", d)
			}
			if d.Content != nil {
				content += *d.Content
			}
			if d.ReasoningContent != nil {
				reasoning += *d.ReasoningContent
				reasoning2 += *d.Reasoning
			}
			calls = append(calls, d.ToolCalls...)
			if f := c.Choices[0].FinishReason; f != nil {
				finish = *f
			}
		}
		if reasoning != wr || reasoning2 != wr || content != wc || finish != "tool_calls" || usage == nil {
			t.Errorf("reasoning %q content %q finish %q usage %v", reasoning, content, finish, usage)
		}
		if len(calls) != 1 || calls[0].Index == nil || *calls[0].Index != 0 || calls[0].ID == "" || string(calls[0].Function.Arguments) != wcalls[0].Arguments {
			t.Errorf("streamed calls %+v", calls)
		}
	})
}

func TestCompletions(t *testing.T) {
	tok := qwen3(t)
	const reply = "one two three four five six seven"
	sub := &fakeSub{reply: textReply(tok, reply), chunk: 2}
	ts := startServer(t, testConfig(), sub, 4096)
	resp := post(t, ts, "/v1/completions", `{"model": "qwen3-test", "prompt": "Count:", "max_tokens": 100, "stop": " five", "logprobs": 1, "temperature": 0}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got oaCompletionResponse
	decodeBody(t, resp, &got)
	c := got.Choices[0]
	if c.Text != "one two three four" || *c.FinishReason != "stop" || got.Object != "text_completion" {
		t.Errorf("completion %+v", got)
	}
	if c.Logprobs == nil || len(c.Logprobs.Tokens) != got.Usage.CompletionTokens || strings.Join(c.Logprobs.Tokens, "")[:len(c.Text)] != c.Text {
		t.Errorf("logprobs %+v for %d tokens", c.Logprobs, got.Usage.CompletionTokens)
	}
	if r := sub.lastRequest(t); r.Params.Temperature != 0 || r.MaxTokens != 100 || !cmp.Equal(r.Prompt, ids32(tok.Encode("Count:"))) {
		t.Errorf("request %+v", r)
	}
	// Default max_tokens 16, token-id prompt, streaming with usage.
	resp = post(t, ts, "/v1/completions", `{"prompt": [1, 2, 3], "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true}`)
	var text string
	var usage *oaUsage
	for _, e := range sseEvents(t, resp) {
		var c oaCompletionResponse
		if err := json.Unmarshal(e, &c); err != nil {
			t.Fatal(err)
		}
		if c.Usage != nil {
			usage = c.Usage
		} else {
			text += c.Choices[0].Text
		}
	}
	if r := sub.lastRequest(t); r.MaxTokens != defaultCompletionTokens || text != reply || usage == nil || usage.PromptTokens != 3 {
		t.Errorf("text %q usage %+v, MaxTokens %d", text, usage, r.MaxTokens)
	}
}

func TestModelsAndHealth(t *testing.T) {
	tok := qwen3(t)
	ts := startServer(t, testConfig(), &fakeSub{reply: textReply(tok, "ok")}, 1024)
	resp, err := http.Get(ts.http + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Object string
		Data   []struct {
			ID          string
			Object      string
			MaxModelLen int `json:"max_model_len"`
		}
	}
	decodeBody(t, resp, &got)
	if got.Object != "list" || len(got.Data) != 1 || got.Data[0].ID != "qwen3-test" || got.Data[0].MaxModelLen != 1024 {
		t.Errorf("models %+v", got)
	}
	h, err := http.Get(ts.http + "/health")
	if err != nil {
		t.Fatal(err)
	}
	h.Body.Close()
	if h.StatusCode != 200 {
		t.Errorf("/health %d", h.StatusCode)
	}
}

func TestHTTPErrors(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "ok")}
	cfg := testConfig()
	cfg.MaxBodyBytes = 4096
	ts := startServer(t, cfg, sub, 64)
	user := `"messages": [{"role": "user", "content": "Hi"}]`
	longPrompt := strings.Repeat("word ", 80)
	for _, tc := range []struct {
		name, path, body string
		status           int
		errType, param   string
		numbers          []string // the message names these
	}{
		{"malformed JSON", "/v1/chat/completions", `{"messages": [`, 400, "invalid_request_error", "", nil},
		{"field of the wrong type", "/v1/chat/completions", `{"max_tokens": "ten", ` + user + `}`, 400, "invalid_request_error", "max_tokens", nil},
		{"stop of the wrong type", "/v1/completions", `{"prompt": "a", "stop": 5}`, 400, "invalid_request_error", "", nil},
		{"unknown model", "/v1/chat/completions", `{"model": "gpt-4o", ` + user + `}`, 404, "not_found_error", "", nil},
		{"negative max_tokens", "/v1/chat/completions", `{"max_tokens": -5, ` + user + `}`, 400, "invalid_request_error", "max_completion_tokens", []string{"-5"}},
		{"huge max_tokens", "/v1/completions", `{"prompt": "a", "max_tokens": 1000000000000}`, 400, "invalid_request_error", "", []string{"1000000000000", "64"}},
		{"max_tokens over the context", "/v1/completions", `{"prompt": "a", "max_tokens": 64}`, 400, "invalid_request_error", "", []string{"64", "63"}},
		{"prompt over the context", "/v1/completions", `{"prompt": "` + longPrompt + `"}`, 400, "invalid_request_error", "", []string{strconv.Itoa(len(tok.Encode(longPrompt))), "64"}},
		{"invalid UTF-8", "/v1/completions", "{\"prompt\": \"\xff\xfe\"}", 400, "invalid_request_error", "", nil},
		{"empty message list", "/v1/chat/completions", `{"messages": []}`, 400, "invalid_request_error", "", nil},
		{"bad role", "/v1/chat/completions", `{"messages": [{"role": "wizard", "content": "Hi"}]}`, 400, "invalid_request_error", "", nil},
		{"tool schema not JSON", "/v1/chat/completions", `{"tools": ["{\"type\": "], ` + user + `}`, 400, "invalid_request_error", "", nil},
		{"tool without a function", "/v1/chat/completions", `{"tools": [{"type": "function"}], ` + user + `}`, 400, "invalid_request_error", "", nil},
		{"enable_thinking not a bool", "/v1/chat/completions", `{"chat_template_kwargs": {"enable_thinking": "yes"}, ` + user + `}`, 400, "invalid_request_error", "chat_template_kwargs.enable_thinking", nil},
		{"tool_choice required", "/v1/chat/completions", `{"tool_choice": "required", ` + user + `}`, 400, "invalid_request_error", "tool_choice", nil},
		{"n = 2", "/v1/chat/completions", `{"n": 2, ` + user + `}`, 400, "invalid_request_error", "n", nil},
		{"image content", "/v1/chat/completions", `{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`, 400, "invalid_request_error", "", nil},
		{"body too large", "/v1/completions", `{"prompt": "` + strings.Repeat("a", 5000) + `"}`, 413, "invalid_request_error", "", nil},
		{"no such endpoint", "/v1/embeddings", `{}`, 404, "not_found_error", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, ts, tc.path, tc.body)
			var e oaError
			decodeBody(t, resp, &e)
			if resp.StatusCode != tc.status || e.Error.Type != tc.errType || e.Error.Code != tc.status || e.Error.Message == "" {
				t.Fatalf("status %d, error %+v; want %d %s", resp.StatusCode, e.Error, tc.status, tc.errType)
			}
			if tc.param != "" && (e.Error.Param == nil || *e.Error.Param != tc.param) {
				t.Errorf("param %v, want %q", e.Error.Param, tc.param)
			}
			for _, n := range tc.numbers {
				if !strings.Contains(e.Error.Message, n) {
					t.Errorf("message %q does not say %s", e.Error.Message, n)
				}
			}
		})
	}
	if n, _, _ := sub.counts(); n != 0 {
		t.Errorf("%d bad requests reached the scheduler", n)
	}
	resp := post(t, ts, "/v1/completions", `{"prompt": "still serving", "max_tokens": 2}`)
	if resp.StatusCode != 200 {
		t.Errorf("a good request after the bad ones: %d", resp.StatusCode)
	}
}

func TestHTTPDisconnectCancels(t *testing.T) {
	tok := qwen3(t)
	sub := &fakeSub{reply: textReply(tok, "a b c"), hold: true}
	ts := startServer(t, testConfig(), sub, 4096)
	for _, path := range []string{"/v1/chat/completions", "/v1/completions"} {
		t.Run(path, func(t *testing.T) {
			_, before, _ := sub.counts()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			body := `{"stream": true, "ignore_eos": true, "prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]}`
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.http+path, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "data: ") {
				t.Fatalf("first line %q, %v", line, err)
			}
			cancel()
			eventually(t, "the request's cancellation", func() bool { _, c, r := sub.counts(); return c == before+1 && r == 0 })
		})
	}
}

func TestOpenAIClient(t *testing.T) {
	tok := qwen3(t)
	const reply = "<think>\nShort thought.\n</think>\n\nThe capital is Paris."
	sub := &fakeSub{reply: textReply(tok, reply), chunk: 2}
	cfg := testConfig()
	cfg.APIKeys = []string{"sk-test"}
	ts := startServer(t, cfg, sub, 4096)
	client := openai.NewClient(option.WithBaseURL(ts.http+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	ctx := rpcCtx(t)
	wr, wc, _ := parseReference(t, reply, true)

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "qwen3-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Capital of France?")},
		Seed:     openai.Int(1), MaxCompletionTokens: openai.Int(100),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, option.WithJSONSet("chat_template_kwargs", map[string]any{"enable_thinking": true}), option.WithJSONSet("top_k", 20))
	var content, reasoning string
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		c := stream.Current()
		acc.AddChunk(c)
		if len(c.Choices) == 0 {
			continue
		}
		content += c.Choices[0].Delta.Content
		if f, ok := c.Choices[0].Delta.JSON.ExtraFields["reasoning_content"]; ok {
			var s string
			if err := json.Unmarshal([]byte(f.Raw()), &s); err != nil {
				t.Fatal(err)
			}
			reasoning += s
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if content != wc || reasoning != wr {
		t.Errorf("content %q reasoning %q, want %q %q", content, reasoning, wc, wr)
	}
	if acc.Usage.CompletionTokens != int64(len(tok.Encode(reply))+1) || acc.Choices[0].FinishReason != "stop" {
		t.Errorf("usage %+v finish %q", acc.Usage, acc.Choices[0].FinishReason)
	}
	if r := sub.lastRequest(t); r.Params.TopK != 20 || r.Params.Seed != 1 {
		t.Errorf("request %+v", r)
	}

	cs := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model: "qwen3-test", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("The capital")}, MaxTokens: openai.Int(50),
	})
	var text string
	for cs.Next() {
		if c := cs.Current(); len(c.Choices) > 0 {
			text += c.Choices[0].Text
		}
	}
	if err := cs.Err(); err != nil {
		t.Fatal(err)
	}
	if text != reply {
		t.Errorf("completion %q, want %q", text, reply)
	}

	bad := openai.NewClient(option.WithBaseURL(ts.http+"/v1/"), option.WithAPIKey("sk-wrong"), option.WithMaxRetries(0))
	_, err := bad.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "qwen3-test", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")}})
	var apiErr *openai.Error
	if !asError(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong key: %v", err)
	}
}
