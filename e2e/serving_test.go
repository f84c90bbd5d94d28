package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/moemesh/moemesh/chat"
	"github.com/moemesh/moemesh/client"
	"github.com/moemesh/moemesh/coordinator/clustertest"
	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

func f32(v float32) *float32 { return &v }
func i32(v int32) *int32     { return &v }
func u32(v uint32) *uint32   { return &v }
func u64(v uint64) *uint64   { return &v }
func boolp(v bool) *bool     { return &v }

// seeded is the model card's thinking-mode sampling with every other
// parameter neutral, spelled out so no server default applies.
func seeded(seed uint64) *pb.SamplingParams {
	return &pb.SamplingParams{Temperature: f32(0.6), TopP: f32(0.95), TopK: i32(20), MinP: f32(0),
		PresencePenalty: f32(0), FrequencyPenalty: f32(0), RepetitionPenalty: f32(1), Seed: u64(seed)}
}

func greedy() *pb.SamplingParams { return &pb.SamplingParams{Temperature: f32(0)} }

// TestLocalServing runs one `moemesh local` cluster of two workers (two
// attention groups of 1024 tokens each) and drives it through the SDK, the
// OpenAI Go client and the moemesh command.
func TestLocalServing(t *testing.T) {
	l := startLocal(t, "--workers", "2", "--context", "1024")
	c := dial(t, l.grpc)

	t.Run("ChatEqualsGenerate", func(t *testing.T) { chatEqualsGenerate(t, l, c) })
	t.Run("Thinking", func(t *testing.T) { thinking(t, c) })
	t.Run("Tools", func(t *testing.T) { tools(t, l, c) })
	t.Run("BadInput", func(t *testing.T) { badInput(t, l, c) })
	t.Run("Concurrent64", func(t *testing.T) { concurrent64(t, l, c) })
}

// chatEqualsGenerate: the SDK and the OpenAI client stream the same chat,
// and the text equals a one-process `moemesh generate` with the seed.
func chatEqualsGenerate(t *testing.T, l *local, c *client.Client) {
	const prompt, seed, maxTokens = "Tell me about mixtures of experts.", 7, 32
	ctx := ctxFor(t, 2*time.Minute)
	st, err := c.Chat(ctx, &pb.ChatRequest{Messages: []*pb.ChatMessage{{Role: "user", Content: prompt}}, MaxTokens: maxTokens, Sampling: seeded(seed)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.TokenIDs) == 0 {
		t.Fatal("no tokens")
	}
	// The one-process run prints the decoded text of every token but the
	// end-of-sequence ones, then a newline.
	want := moemesh(t, "generate", "--model", modelDir, "--prompt", prompt, "--max-tokens", fmt.Sprint(maxTokens),
		"--seed", fmt.Sprint(seed), "--temperature", "0.6", "--top-p", "0.95", "--top-k", "20", "--min-p", "0",
		"--presence-penalty", "0", "--repetition-penalty", "1")
	ids := slices.DeleteFunc(slices.Clone(res.TokenIDs), func(id int32) bool { return id == 151645 || id == 151643 })
	text, err := c.Detokenize(ctx, &pb.DetokenizeRequest{TokenIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	if got := text.Text + "\n"; got != want {
		t.Errorf("SDK chat tokens decode to %q; moemesh generate printed %q", got, want)
	}

	// The OpenAI client, streaming and not, gets the SDK's reasoning and
	// content.
	oc := openai.NewClient(option.WithBaseURL("http://"+l.http+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{
		Model:       "model",
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		MaxTokens:   openai.Int(maxTokens),
		Seed:        openai.Int(seed),
		Temperature: openai.Float(0.6),
		TopP:        openai.Float(0.95),
	}
	extra := []option.RequestOption{option.WithJSONSet("top_k", 20), option.WithJSONSet("min_p", 0), option.WithJSONSet("repetition_penalty", 1)}
	stream := oc.Chat.Completions.NewStreaming(ctx, params, extra...)
	var content, reasoning, reasoning2 strings.Builder
	var finish string
	for stream.Next() {
		ch := stream.Current()
		for _, choice := range ch.Choices {
			content.WriteString(choice.Delta.Content)
			reasoning.WriteString(extraString(t, choice.Delta.JSON.ExtraFields, "reasoning_content"))
			reasoning2.WriteString(extraString(t, choice.Delta.JSON.ExtraFields, "reasoning"))
			if choice.FinishReason != "" {
				finish = choice.FinishReason
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("OpenAI client stream: %v", err)
	}
	if content.String() != res.Content || reasoning.String() != res.ReasoningContent || reasoning2.String() != res.ReasoningContent || finish != res.FinishReason {
		t.Errorf("OpenAI stream: content %q reasoning %q / %q finish %q; SDK: content %q reasoning %q finish %q",
			content.String(), reasoning.String(), reasoning2.String(), finish, res.Content, res.ReasoningContent, res.FinishReason)
	}
	whole, err := oc.Chat.Completions.New(ctx, params, extra...)
	if err != nil {
		t.Fatalf("OpenAI client: %v", err)
	}
	if len(whole.Choices) != 1 || whole.Choices[0].Message.Content != res.Content ||
		extraString(t, whole.Choices[0].Message.JSON.ExtraFields, "reasoning_content") != res.ReasoningContent ||
		int(whole.Usage.CompletionTokens) != len(res.TokenIDs) {
		t.Errorf("OpenAI non-streaming: %+v; SDK content %q reasoning %q, %d tokens", whole, res.Content, res.ReasoningContent, len(res.TokenIDs))
	}
}

// extraString reads an extra JSON field the OpenAI client does not know.
func extraString[F interface{ Raw() string }](t *testing.T, fields map[string]F, name string) string {
	t.Helper()
	f, ok := fields[name]
	if !ok || f.Raw() == "" || f.Raw() == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal([]byte(f.Raw()), &s); err != nil {
		t.Fatalf("field %s = %s: %v", name, f.Raw(), err)
	}
	return s
}

// thinking checks the token sequences of QWEN3.md: thinking on leaves the
// think block to the model; off and /no_think open the answer with an
// empty one; a budget inserts the stop-thinking text exactly when the
// thinking reaches it, and never when thinking is off.
func thinking(t *testing.T, c *client.Client) {
	ctx := ctxFor(t, 3*time.Minute)
	const maxTokens, budget = 40, 8
	user := func(s string) []*pb.ChatMessage { return []*pb.ChatMessage{{Role: "user", Content: s}} }
	run := func(msgs []*pb.ChatMessage, think *bool, budget *uint32) *client.ChatResult {
		t.Helper()
		st, err := c.Chat(ctx, &pb.ChatRequest{Messages: msgs, EnableThinking: think, ThinkingBudget: budget, MaxTokens: maxTokens, IgnoreEos: true, Sampling: greedy()})
		if err != nil {
			t.Fatal(err)
		}
		r, err := st.Collect()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	promptOf := func(msgs []*pb.ChatMessage, think *bool) []int32 {
		t.Helper()
		r, err := c.Tokenize(ctx, &pb.TokenizeRequest{Messages: msgs, EnableThinking: think})
		if err != nil {
			t.Fatal(err)
		}
		return r.TokenIds
	}
	tokensOf := func(text string) []int32 {
		t.Helper()
		r, err := c.Tokenize(ctx, &pb.TokenizeRequest{Prompt: text})
		if err != nil {
			t.Fatal(err)
		}
		return r.TokenIds
	}
	const thinkEnd = 151668
	msgs := user("Why is the sky blue?")
	onPrompt := promptOf(msgs, nil)
	if !slices.Equal(onPrompt[len(onPrompt)-3:], tokensOf("<|im_start|>assistant\n")) {
		t.Errorf("thinking on: the prompt ends %v, want the bare assistant opening", onPrompt[len(onPrompt)-5:])
	}
	emptyThink := tokensOf("<think>\n\n</think>\n\n")
	offPrompt := promptOf(msgs, boolp(false))
	if !slices.Equal(offPrompt[len(offPrompt)-len(emptyThink):], emptyThink) {
		t.Errorf("thinking off: the prompt does not end with the empty think block")
	}
	noThink := user("Why is the sky blue? /no_think")
	if got, want := promptOf(noThink, nil), promptOf(noThink, boolp(false)); !slices.Equal(got, want) {
		t.Errorf("/no_think renders %v, want the thinking-off prompt %v", got, want)
	}

	free := run(msgs, nil, nil)
	if slices.Contains(free.TokenIDs[:budget], thinkEnd) {
		t.Fatalf("the model ended thinking within %d tokens by itself; pick another prompt", budget)
	}
	capped := run(msgs, nil, u32(budget))
	insert := tokensOf(chat.BudgetText())
	if len(capped.TokenIDs) != maxTokens {
		t.Fatalf("budget run: %d tokens, want %d", len(capped.TokenIDs), maxTokens)
	}
	if !slices.Equal(capped.TokenIDs[:budget], free.TokenIDs[:budget]) {
		t.Errorf("budget run's first %d tokens %v differ from the free run's %v", budget, capped.TokenIDs[:budget], free.TokenIDs[:budget])
	}
	if got := capped.TokenIDs[budget : budget+len(insert)]; !slices.Equal(got, insert) {
		t.Errorf("after %d thinking tokens: %v, want the stop-thinking text %v", budget, got, insert)
	}
	// The answer continues as the model would from that text.
	prefix := append(slices.Clone(onPrompt), capped.TokenIDs[:budget+len(insert)]...)
	gst, err := c.Generate(ctx, &pb.GenerateRequest{PromptTokenIds: prefix, MaxTokens: uint32(maxTokens - budget - len(insert)), IgnoreEos: true, Sampling: greedy()})
	if err != nil {
		t.Fatal(err)
	}
	cont, err := gst.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(capped.TokenIDs[budget+len(insert):], cont.TokenIDs) {
		t.Errorf("after the inserted text: %v, want %v", capped.TokenIDs[budget+len(insert):], cont.TokenIDs)
	}
	if !strings.HasSuffix(capped.ReasoningContent, "directly now.\n") || !strings.HasPrefix(capped.Content, ".\n\n") {
		t.Errorf("budget run: reasoning %q, content %q; want the reasoning to end with the stop-thinking text and the answer to follow", capped.ReasoningContent, capped.Content)
	}

	// Thinking off or /no_think: a budget changes nothing.
	for name, r := range map[string][2]*client.ChatResult{
		"off":       {run(msgs, boolp(false), nil), run(msgs, boolp(false), u32(budget))},
		"/no_think": {run(noThink, nil, nil), run(noThink, nil, u32(budget))},
	} {
		if !slices.Equal(r[0].TokenIDs, r[1].TokenIDs) {
			t.Errorf("%s: a budget changed the tokens: %v, without %v", name, r[1].TokenIDs, r[0].TokenIDs)
		}
		if r[1].ReasoningContent != "" {
			t.Errorf("%s: reasoning %q, want none", name, r[1].ReasoningContent)
		}
	}
}

const weatherTool = `{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1.0}}, "required": ["city"]}}}`

// tools: a conversation with tools, an assistant tool call and the tool's
// result renders as the template does and is answered, through the SDK and
// through the OpenAI client (streaming and not).
func tools(t *testing.T, l *local, c *client.Client) {
	ctx := ctxFor(t, 2*time.Minute)
	msgs := []*pb.ChatMessage{
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", ToolCalls: []*pb.ToolCall{{Id: "call_1", Type: "function", Name: "get_weather", Arguments: `{"city": "Paris"}`}}},
		{Role: "tool", ToolCallId: "call_1", Content: `{"temp": 21}`},
	}
	tk, err := c.Tokenize(ctx, &pb.TokenizeRequest{Messages: msgs, Tools: []string{weatherTool}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"<tools>\n" + `{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1.0}}, "required": ["city"]}}}` + "\n</tools>",
		"<tool_call>\n" + `{"name": "get_weather", "arguments": {"city": "Paris"}}` + "\n</tool_call>",
		"<|im_start|>user\n<tool_response>\n" + `{"temp": 21}` + "\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
	} {
		if !strings.Contains(tk.Prompt, want) {
			t.Errorf("rendered prompt lacks %q:\n%s", want, tk.Prompt)
		}
	}
	st, err := c.Chat(ctx, &pb.ChatRequest{Messages: msgs, Tools: []string{weatherTool}, MaxTokens: 16, Sampling: greedy()})
	if err != nil {
		t.Fatal(err)
	}
	sdk, err := st.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if sdk.Usage.GetPromptTokens() != uint32(len(tk.TokenIds)) {
		t.Errorf("chat used %d prompt tokens; Tokenize gave %d", sdk.Usage.GetPromptTokens(), len(tk.TokenIds))
	}
	body := `{"model": "model", "max_tokens": 16, "temperature": 0, "tools": [` + weatherTool + `], "messages": [
		{"role": "user", "content": "Weather in Paris?"},
		{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
		{"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"}]}`
	var resp struct {
		Choices []struct {
			Message struct {
				Content          string `json:"content"`
				ReasoningContent string `json:"reasoning_content"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	code, raw := postJSON(t, l, "/v1/chat/completions", body)
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, raw)
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != sdk.Content || resp.Choices[0].Message.ReasoningContent != sdk.ReasoningContent || resp.Usage.PromptTokens != len(tk.TokenIds) {
		t.Errorf("HTTP answer %s; SDK content %q reasoning %q (%d prompt tokens)", raw, sdk.Content, sdk.ReasoningContent, len(tk.TokenIds))
	}
}

func postJSON(t *testing.T, l *local, path, body string) (int, []byte) {
	t.Helper()
	r, err := http.Post("http://"+l.http+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r.StatusCode, raw
}

// badInput sends each malformed request over HTTP: each gets its status
// and OpenAI's error shape, and the server keeps serving.
func badInput(t *testing.T, l *local, c *client.Client) {
	long := strings.Repeat("hello ", 1100)
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"malformed JSON", `{"model": "model", "messages": [`, 400},
		{"unknown model", `{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}`, 404},
		{"field of the wrong type", `{"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}`, 400},
		{"negative max_tokens", `{"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}`, 400},
		{"huge max_tokens", `{"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000000}`, 400},
		{"prompt over the context", `{"model": "model", "messages": [{"role": "user", "content": "` + long + `"}]}`, 400},
		{"invalid UTF-8", "{\"model\": \"model\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}", 400},
		{"empty message list", `{"model": "model", "messages": []}`, 400},
		{"bad role", `{"model": "model", "messages": [{"role": "wizard", "content": "hi"}]}`, 400},
		{"tool schema not JSON", `{"model": "model", "messages": [{"role": "user", "content": "hi"}], "tools": ["get_weather"]}`, 400},
	} {
		code, raw := postJSON(t, l, "/v1/chat/completions", tc.body)
		var e struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Error.Message == "" || code != tc.status {
			t.Errorf("%s: HTTP %d %s; want %d with an OpenAI error", tc.name, code, raw, tc.status)
		}
	}
	// A client that goes away mid-stream frees its sequence.
	req, _ := http.NewRequest(http.MethodPost, "http://"+l.http+"/v1/completions",
		strings.NewReader(`{"model": "model", "prompt": "Count:", "max_tokens": 500, "stream": true, "ignore_eos": true, "temperature": 0}`))
	req.Header.Set("Content-Type", "application/json")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := io.ReadAtLeast(r.Body, buf, 1); err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	clustertest.Eventually(t, 30*time.Second, func() error {
		if n := metric(t, l, "moemesh:num_requests_running"); n != 0 {
			return fmt.Errorf("%v requests still running after the client left", n)
		}
		return nil
	})
	// Still serving.
	code, raw := postJSON(t, l, "/v1/completions", `{"model": "model", "prompt": "Hi", "max_tokens": 4}`)
	if code != 200 {
		t.Errorf("after the bad requests: HTTP %d %s", code, raw)
	}
}

// metric reads one sample of /metrics, summed over its label sets.
func metric(t *testing.T, l *local, name string) float64 {
	t.Helper()
	r, err := http.Get("http://" + l.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	raw, _ := io.ReadAll(r.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:\{[^}]*\})? (\S+)$`)
	sum, found := 0.0, false
	for _, m := range re.FindAllSubmatch(raw, -1) {
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		t.Fatalf("/metrics has no %s:\n%s", name, bytes.TrimSpace(raw))
	}
	return sum
}

// concurrent64: 64 streaming clients with different prompt lengths and
// max tokens all complete with the tokens each gets alone (greedy), on KV
// pools small enough that the scheduler must preempt; the server's
// goroutines return to their baseline.
func concurrent64(t *testing.T, l *local, c *client.Client) {
	ctx := ctxFor(t, 5*time.Minute)
	reqs := make([]*pb.GenerateRequest, 64)
	for i := range reqs {
		prompt := make([]int32, 40+(i*37)%160)
		for j := range prompt {
			prompt[j] = int32(1000 + (i*131+j*17)%5000)
		}
		reqs[i] = &pb.GenerateRequest{PromptTokenIds: prompt, MaxTokens: uint32(4 + (i*7)%28), IgnoreEos: true, Sampling: greedy()}
	}
	run := func(r *pb.GenerateRequest) ([]int32, error) {
		st, err := c.Generate(ctx, r)
		if err != nil {
			return nil, err
		}
		res, err := st.Collect()
		if err != nil {
			return nil, err
		}
		return res.TokenIDs, nil
	}
	alone := make([][]int32, len(reqs))
	for i, r := range reqs {
		var err error
		if alone[i], err = run(r); err != nil {
			t.Fatalf("request %d alone: %v", i, err)
		}
	}
	baseline := metric(t, l, "go_goroutines")
	preempted := metric(t, l, "moemesh:num_preemptions_total")
	got := make([][]int32, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { got[i], errs[i] = run(r) })
	}
	wg.Wait()
	for i := range reqs {
		if errs[i] != nil {
			t.Errorf("request %d: %v", i, errs[i])
		} else if diff := cmp.Diff(alone[i], got[i]); diff != "" {
			t.Errorf("request %d concurrent vs alone (-alone +concurrent):\n%s", i, diff)
		}
	}
	if n := metric(t, l, "moemesh:num_preemptions_total") - preempted; n == 0 {
		t.Errorf("no preemption: the KV pools were meant to be too small for 64 requests at once")
	} else {
		t.Logf("%v preemptions", n)
	}
	clustertest.Eventually(t, 30*time.Second, func() error {
		if n := metric(t, l, "go_goroutines"); n > baseline {
			return fmt.Errorf("%v goroutines, %v before the 64 clients", n, baseline)
		}
		return nil
	})
}
