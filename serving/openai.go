package serving

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moemesh/moemesh/chat"
)

// Handler is the HTTP API: the OpenAI-compatible /v1 endpoints (behind
// the API keys), /health and /metrics (open, as in vLLM).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/chat/completions", s.authorized(s.chatCompletions))
	mux.Handle("POST /v1/completions", s.authorized(s.completions))
	mux.Handle("GET /v1/models", s.authorized(s.listModels))
	mux.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%w: %s %s", ErrNoEndpoint, r.Method, r.URL.Path))
	}))
	mux.Handle("/health", HealthHandler(s.health))
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}

func (s *Server) authorized(h func(w http.ResponseWriter, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, err := s.auth.check(r.Header.Get("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="moemesh"`)
			writeError(w, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyIndex{}, k)))
	})
}

// paramError names the request field at fault.
type paramError struct {
	param string
	err   error
}

func (e *paramError) Error() string { return e.err.Error() }
func (e *paramError) Unwrap() error { return e.err }

func paramErr(param string, format string, args ...any) error {
	return &paramError{param, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)}
}

// writeError answers err in OpenAI's error shape, with the status
// classify gives.
func writeError(w http.ResponseWriter, err error) {
	c := classify(err)
	body := oaError{Error: oaErrorBody{Message: err.Error(), Type: c.oaType, Code: c.http}}
	var pe *paramError
	if errors.As(err, &pe) {
		body.Error.Param = &pe.param
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(c.http)
	_ = json.NewEncoder(w).Encode(body)
}

// decode reads a JSON body under the size limit.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("%w: the body is over %d bytes", ErrBodyTooLarge, mbe.Limit)
	}
	if err != nil {
		return fmt.Errorf("%w: reading the body: %v", ErrInvalid, err)
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: the body is not valid UTF-8", ErrInvalid)
	}
	err = json.Unmarshal(b, v)
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		return fmt.Errorf("%w: malformed JSON at byte %d: %v", ErrInvalid, se.Offset, se)
	case errors.As(err, &te):
		field := strings.TrimPrefix(te.Field, "oaSampling.")
		return paramErr(field, "field %q must be %s, got a JSON %s", field, jsonKind(te.Type.String()), te.Value)
	default:
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
}

func jsonKind(goType string) string {
	switch {
	case strings.Contains(goType, "int"), strings.Contains(goType, "float"):
		return "a number"
	case strings.Contains(goType, "bool"):
		return "a boolean"
	case strings.Contains(goType, "string"):
		return "a string"
	case strings.HasPrefix(goType, "[]"), strings.HasPrefix(goType, "serving.stopField"):
		return "a list"
	}
	return "an object"
}

func newID(prefix string) string { return prefix + rand.Text()[:24] }

// sse writes server-sent events.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
}

func (e *sse) send(v any) error {
	if !e.started {
		e.w.Header().Set("Content-Type", "text/event-stream")
		e.w.Header().Set("Cache-Control", "no-cache")
		e.w.Header().Set("X-Accel-Buffering", "no")
		e.w.WriteHeader(http.StatusOK)
		e.started = true
	}
	var b []byte
	if s, ok := v.(string); ok {
		b = []byte(s)
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(e.w, "data: %s\n\n", b); err != nil {
		return err
	}
	return e.rc.Flush()
}

// fail ends a stream with an error event (headers are already sent).
func (e *sse) fail(err error) {
	c := classify(err)
	_ = e.send(oaError{Error: oaErrorBody{Message: err.Error(), Type: c.oaType, Code: c.http}})
	_ = e.send("[DONE]")
}

// maxTokens picks max_completion_tokens over max_tokens; 0: unset.
func maxTokens(name string, vals ...*int64) (int64, error) {
	for _, v := range vals {
		if v != nil {
			if *v < 1 {
				return 0, paramErr(name, "%s must be at least 1, got %d", name, *v)
			}
			return *v, nil
		}
	}
	return 0, nil
}

func checkN(n *int) error {
	if n != nil && *n != 1 {
		return &paramError{"n", fmt.Errorf("%w: n = %d: one choice per request", ErrUnsupported, *n)}
	}
	return nil
}

// chatSpec turns a chat request into a generation.
func (s *Server) chatSpec(m *served, req *chatCompletionRequest) (genSpec, error) {
	var spec genSpec
	if err := checkN(req.N); err != nil {
		return spec, err
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i, om := range req.Messages {
		msgs[i] = chat.Message{Role: om.Role, Content: string(om.Content), ToolCallID: om.ToolCallID, Name: om.Name}
		if om.ReasoningContent != nil {
			msgs[i].ReasoningContent = *om.ReasoningContent
		} else if om.Reasoning != nil {
			msgs[i].ReasoningContent = *om.Reasoning
		}
		for _, tc := range om.ToolCalls {
			msgs[i].ToolCalls = append(msgs[i].ToolCalls, chat.ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: string(tc.Function.Arguments)})
		}
	}
	tools := req.Tools
	if len(req.ToolChoice) > 0 {
		var choice string
		if err := json.Unmarshal(req.ToolChoice, &choice); err != nil || (choice != "auto" && choice != "none") {
			return spec, &paramError{"tool_choice", fmt.Errorf("%w: tool_choice %s: only \"auto\" and \"none\"", ErrUnsupported, req.ToolChoice)}
		}
		if choice == "none" {
			tools = nil
		}
	}
	thinking := req.EnableThinking
	if v, ok := req.ChatTemplateKwargs["enable_thinking"]; ok {
		b, ok := v.(bool)
		if !ok {
			return spec, paramErr("chat_template_kwargs.enable_thinking", "chat_template_kwargs.enable_thinking must be a boolean, got %v", v)
		}
		thinking = &b
	}
	p, err := conversation(m, msgs, tools, thinking, true)
	if err != nil {
		return spec, err
	}
	mt, err := maxTokens("max_completion_tokens", req.MaxCompletionTokens, req.MaxTokens)
	if err != nil {
		return spec, err
	}
	spec = genSpec{prompt: p.IDs, maxTokens: mt, sampling: req.overrides(), stop: req.Stop, stopIDs: req.StopTokenIDs,
		ignoreEOS: req.IgnoreEOS, chat: true, thinking: p.Thinking, logprobs: req.Logprobs}
	if req.TopLogprobs != nil {
		if !req.Logprobs {
			return spec, paramErr("top_logprobs", "top_logprobs needs logprobs: true")
		}
		spec.topLogprobs = *req.TopLogprobs
	}
	spec.budget = req.ThinkingBudget
	if spec.budget == nil {
		spec.budget = req.ThinkingTokenBudget
	}
	return spec, nil
}

func (s *Server) chatLogprobs(m *served, p piece) *oaChatLogprobs {
	out := &oaChatLogprobs{Content: []oaLogprob{}}
	for _, l := range logprobs(m.tok, p.toks) {
		e := oaLogprob{oaTopLogprob: oaTop(m, l), TopLogprobs: []oaTopLogprob{}}
		for _, t := range l.top {
			e.TopLogprobs = append(e.TopLogprobs, oaTop(m, t))
		}
		out.Content = append(out.Content, e)
	}
	return out
}

func oaTop(m *served, l logprob) oaTopLogprob {
	b := tokenBytes(m.tok, l.id)
	ints := make([]int, len(b))
	for i, c := range b {
		ints[i] = int(c)
	}
	return oaTopLogprob{Token: l.text, Logprob: l.lp, Bytes: ints}
}

// begin decodes an HTTP request into req, finds the model it names, makes
// its generation spec and starts the generation: the common opening of the
// OpenAI endpoints. The caller writes the error, if any.
func begin[R any](s *Server, w http.ResponseWriter, r *http.Request, req *R, model func(*R) string,
	makeSpec func(*served, *R) (genSpec, error)) (*served, genSpec, *generation, error) {
	if err := s.decode(w, r, req); err != nil {
		return nil, genSpec{}, nil, err
	}
	m, err := s.models.get(model(req))
	if err != nil {
		return nil, genSpec{}, nil, err
	}
	spec, err := makeSpec(m, req)
	if err != nil {
		return nil, genSpec{}, nil, err
	}
	g, err := s.startGeneration(r.Context(), m, spec)
	if err != nil {
		return nil, genSpec{}, nil, err
	}
	return m, spec, g, nil
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var req chatCompletionRequest
	m, spec, g, err := begin(s, w, r, &req, func(req *chatCompletionRequest) string { return req.Model }, s.chatSpec)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	defer g.close()
	resp := oaChatResponse{ID: newID("chatcmpl-"), Created: time.Now().Unix(), Model: m.name}
	toolCalls := func(p piece) []oaToolCall {
		var out []oaToolCall
		for _, c := range p.calls {
			tc := oaToolCall{ID: c.ID, Type: "function"}
			if req.Stream {
				i := g.calls
				tc.Index = &i
			}
			g.calls++
			tc.Function.Name, tc.Function.Arguments = c.Name, argsField(c.Arguments)
			out = append(out, tc)
		}
		return out
	}
	if !req.Stream {
		var content, reasoning strings.Builder
		var calls []oaToolCall
		var lps *oaChatLogprobs
		for {
			p, err := g.next(ctx)
			if err != nil {
				writeError(w, err)
				return
			}
			content.WriteString(p.text)
			reasoning.WriteString(p.reasoning)
			calls = append(calls, toolCalls(p)...)
			if spec.logprobs {
				l := s.chatLogprobs(m, p)
				if lps == nil {
					lps = l
				} else {
					lps.Content = append(lps.Content, l.Content...)
				}
			}
			if p.finish != "" {
				msg := &oaChatMessage{Role: "assistant", ToolCalls: calls}
				if c := content.String(); c != "" || len(calls) == 0 {
					msg.Content = &c
				}
				if rs := reasoning.String(); rs != "" {
					msg.ReasoningContent, msg.Reasoning = &rs, &rs
				}
				resp.Object = "chat.completion"
				resp.Choices = []oaChatChoice{{Message: msg, Logprobs: lps, FinishReason: &p.finish}}
				resp.Usage = oaUsageOf(g.usage, true)
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(resp)
				return
			}
		}
	}
	ev := &sse{w: w, rc: http.NewResponseController(w)}
	resp.Object = "chat.completion.chunk"
	empty := ""
	resp.Choices = []oaChatChoice{{Delta: &oaChatMessage{Role: "assistant", Content: &empty}}}
	if err := ev.send(resp); err != nil {
		return // the client left; the deferred close cancels
	}
	for {
		p, err := g.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				ev.fail(err)
			}
			return
		}
		d := &oaChatMessage{ToolCalls: toolCalls(p)}
		if p.text != "" {
			d.Content = &p.text
		}
		if p.reasoning != "" {
			d.ReasoningContent, d.Reasoning = &p.reasoning, &p.reasoning
		}
		ch := oaChatChoice{Delta: d}
		if spec.logprobs && len(p.toks) > 0 {
			ch.Logprobs = s.chatLogprobs(m, p)
		}
		if p.finish != "" {
			ch.FinishReason = &p.finish
		}
		if d.Content != nil || d.ReasoningContent != nil || len(d.ToolCalls) > 0 || ch.FinishReason != nil || ch.Logprobs != nil {
			resp.Choices = []oaChatChoice{ch}
			if err := ev.send(resp); err != nil {
				return
			}
		}
		if p.finish != "" {
			if req.includeUsage() {
				resp.Choices, resp.Usage = []oaChatChoice{}, oaUsageOf(g.usage, true)
				if err := ev.send(resp); err != nil {
					return
				}
			}
			_ = ev.send("[DONE]")
			return
		}
	}
}

// completionPrompt reads prompt: a string, a list of one string, or
// token ids (a list of ints or a list of one such list).
func completionPrompt(m *served, raw json.RawMessage) ([]int32, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return nil, paramErr("prompt", "prompt is empty")
		}
		return encode(m, s), nil
	}
	var ss []string
	if err := json.Unmarshal(raw, &ss); err == nil {
		if len(ss) != 1 {
			return nil, &paramError{"prompt", fmt.Errorf("%w: %d prompts: one prompt per request", ErrUnsupported, len(ss))}
		}
		return completionPrompt(m, json.RawMessage(fmt.Sprintf("%q", ss[0])))
	}
	var ids []int32
	if err := json.Unmarshal(raw, &ids); err == nil {
		return ids, nil
	}
	var lists [][]int32
	if err := json.Unmarshal(raw, &lists); err == nil && len(lists) == 1 {
		return lists[0], nil
	}
	return nil, paramErr("prompt", "prompt must be a string or a list of token ids")
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	m, spec, g, err := begin(s, w, r, &req, func(req *completionRequest) string { return req.Model }, s.completionSpec)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	defer g.close()
	resp := oaCompletionResponse{ID: newID("cmpl-"), Object: "text_completion", Created: time.Now().Unix(), Model: m.name}
	offset := 0
	lps := func(p piece) *oaCompletionLogprobs {
		if !spec.logprobs {
			return nil
		}
		out := &oaCompletionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
		for _, l := range logprobs(m.tok, p.toks) {
			out.Tokens = append(out.Tokens, l.text)
			out.TokenLogprobs = append(out.TokenLogprobs, l.lp)
			top := map[string]float32{}
			for _, t := range l.top {
				top[t.text] = t.lp
			}
			out.TopLogprobs = append(out.TopLogprobs, top)
			out.TextOffset = append(out.TextOffset, offset)
			offset += len(l.text)
		}
		return out
	}
	if !req.Stream {
		var text strings.Builder
		var all *oaCompletionLogprobs
		for {
			p, err := g.next(ctx)
			if err != nil {
				writeError(w, err)
				return
			}
			text.WriteString(p.text)
			if l := lps(p); l != nil {
				if all == nil {
					all = l
				} else {
					all.Tokens = append(all.Tokens, l.Tokens...)
					all.TokenLogprobs = append(all.TokenLogprobs, l.TokenLogprobs...)
					all.TopLogprobs = append(all.TopLogprobs, l.TopLogprobs...)
					all.TextOffset = append(all.TextOffset, l.TextOffset...)
				}
			}
			if p.finish != "" {
				resp.Choices = []oaCompletionChoice{{Text: text.String(), Logprobs: all, FinishReason: &p.finish}}
				resp.Usage = oaUsageOf(g.usage, false)
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(resp)
				return
			}
		}
	}
	ev := &sse{w: w, rc: http.NewResponseController(w)}
	for {
		p, err := g.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				if !ev.started {
					writeError(w, err)
					return
				}
				ev.fail(err)
			}
			return
		}
		ch := oaCompletionChoice{Text: p.text, Logprobs: lps(p)}
		if p.finish != "" {
			ch.FinishReason = &p.finish
		}
		if p.text != "" || ch.FinishReason != nil || ch.Logprobs != nil {
			resp.Choices = []oaCompletionChoice{ch}
			if err := ev.send(resp); err != nil {
				return
			}
		}
		if p.finish != "" {
			if req.includeUsage() {
				resp.Choices, resp.Usage = []oaCompletionChoice{}, oaUsageOf(g.usage, false)
				if err := ev.send(resp); err != nil {
					return
				}
			}
			_ = ev.send("[DONE]")
			return
		}
	}
}

// defaultCompletionTokens is max_tokens when a completion request leaves
// it out (OpenAI's and vLLM's default for /v1/completions).
const defaultCompletionTokens = 16

func (s *Server) completionSpec(m *served, req *completionRequest) (genSpec, error) {
	var spec genSpec
	if err := checkN(req.N); err != nil {
		return spec, err
	}
	if req.Echo || req.Suffix != nil {
		return spec, fmt.Errorf("%w: echo and suffix", ErrUnsupported)
	}
	if len(req.Prompt) == 0 {
		return spec, paramErr("prompt", "prompt is required")
	}
	prompt, err := completionPrompt(m, req.Prompt)
	if err != nil {
		return spec, err
	}
	mt, err := maxTokens("max_tokens", req.MaxTokens)
	if err != nil {
		return spec, err
	}
	if mt == 0 {
		mt = min(defaultCompletionTokens, int64(max(m.ctxTokens-len(prompt), 1)))
	}
	spec = genSpec{prompt: prompt, maxTokens: mt, sampling: req.overrides(), stop: req.Stop, stopIDs: req.StopTokenIDs, ignoreEOS: req.IgnoreEOS}
	if req.Logprobs != nil {
		spec.logprobs, spec.topLogprobs = true, *req.Logprobs
	}
	return spec, nil
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	m, err := s.models.get("")
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": []map[string]any{{
		"id": m.name, "object": "model", "created": m.created, "owned_by": "moemesh", "max_model_len": m.ctxTokens,
	}}})
}
