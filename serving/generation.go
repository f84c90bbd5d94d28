package serving

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/moemesh/moemesh/chat"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/tokenizer"
)

// genSpec is one generation as both APIs describe it, before validation.
type genSpec struct {
	prompt []int32
	// maxTokens bounds the generated tokens; 0 means up to the context.
	maxTokens   int64
	sampling    sampling.Overrides
	stop        []string
	stopIDs     []int32
	ignoreEOS   bool
	logprobs    bool
	topLogprobs int
	resume      []int32
	// chat parses the reply into reasoning, content and tool calls;
	// thinking says the prompt leaves the model thinking.
	chat, thinking bool
	// budget caps the thinking in tokens (chat with thinking only).
	budget *int64
}

// maxTopLogprobs is OpenAI's bound on top_logprobs.
const maxTopLogprobs = 20

// request validates spec against the model and the limits and builds the
// scheduler's request. Every message names the numbers at fault.
func (s *Server) request(m *served, spec genSpec) (scheduler.Request, error) {
	var r scheduler.Request
	n, ctxTokens := len(spec.prompt), m.ctxTokens
	if n == 0 {
		return r, fmt.Errorf("%w: the prompt is empty", ErrInvalid)
	}
	if lim := s.cfg.MaxPromptTokens; lim > 0 && n > lim {
		return r, fmt.Errorf("%w: the prompt has %d tokens, this server accepts at most %d", ErrPromptLimit, n, lim)
	}
	if ctxTokens > 0 && n >= ctxTokens {
		return r, fmt.Errorf("%w: the prompt has %d tokens and the context holds %d, leaving no room to generate", ErrInvalid, n, ctxTokens)
	}
	maxTokens := spec.maxTokens
	switch {
	case maxTokens < 0:
		return r, fmt.Errorf("%w: max_tokens must be at least 1, got %d", ErrInvalid, maxTokens)
	case maxTokens == 0 && ctxTokens <= 0:
		return r, fmt.Errorf("%w: max_tokens is required (the context size is unknown)", ErrInvalid)
	case maxTokens == 0:
		maxTokens = int64(ctxTokens - n)
	case ctxTokens > 0 && maxTokens > int64(ctxTokens-n):
		return r, fmt.Errorf("%w: %d prompt tokens + max_tokens %d exceed the context of %d tokens (max_tokens can be at most %d)",
			ErrInvalid, n, maxTokens, ctxTokens, ctxTokens-n)
	}
	if int64(len(spec.resume)) >= maxTokens {
		return r, fmt.Errorf("%w: resume_token_ids has %d tokens, max_tokens %d leaves none to generate", ErrInvalid, len(spec.resume), maxTokens)
	}
	if spec.topLogprobs < 0 || spec.topLogprobs > maxTopLogprobs {
		return r, fmt.Errorf("%w: top_logprobs must be in [0, %d], got %d", ErrInvalid, maxTopLogprobs, spec.topLogprobs)
	}
	for what, ids := range map[string][]int32{"prompt": spec.prompt, "resume_token_ids": spec.resume, "stop_token_ids": spec.stopIDs} {
		if err := checkIDs(m.tok, ids); err != nil {
			return r, fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
		}
	}
	params, err := sampling.Resolve(m.gc, spec.sampling)
	if err != nil {
		return r, err
	}
	r = scheduler.Request{Prompt: spec.prompt, Generated: spec.resume, MaxTokens: int(maxTokens), Params: params,
		Logprobs: spec.logprobs, TopLogprobs: spec.topLogprobs}
	r.Stop = append(r.Stop, spec.stopIDs...)
	if !spec.ignoreEOS {
		for _, id := range m.tok.EOSIDs() {
			r.Stop = append(r.Stop, int32(id))
		}
	}
	if spec.budget != nil && spec.chat && spec.thinking {
		if *spec.budget < 0 || *spec.budget > maxTokens {
			return r, fmt.Errorf("%w: thinking_budget must be in [0, max_tokens %d], got %d", ErrInvalid, maxTokens, *spec.budget)
		}
		ins, end, err := chat.BudgetInsert(m.tok)
		if err != nil {
			return r, err
		}
		r.Budget = &scheduler.ThinkingBudget{Tokens: int(*spec.budget), End: end, Insert: ins}
	}
	return r, nil
}

func checkIDs(tok *tokenizer.Tokenizer, ids []int32) error {
	if len(ids) == 0 {
		return nil
	}
	v := make([]int, len(ids))
	for i, id := range ids {
		v[i] = int(id)
	}
	return tok.CheckIDs(v)
}

// piece is what a generation produced since the last call.
type piece struct {
	toks []scheduler.Token
	// text is the completion's text (Generate) or the answer's (Chat).
	text, reasoning string
	calls           []chat.ToolCall
	// finish is set on the last piece.
	finish string
}

// usage counts a finished generation's tokens.
type usage struct {
	prompt, completion, reasoning int
}

// generation is one running request, turning the scheduler's tokens into
// text pieces. Not safe for concurrent use.
type generation struct {
	s       *Server
	m       *served
	spec    genSpec
	st      scheduler.Stream
	cancel  context.CancelFunc
	release func()
	stopIDs map[int32]bool

	dec    *tokenizer.StreamDecoder
	parser *chat.Parser
	stop   *stopMatcher

	thinkEnd   int32
	inThinking bool
	usage      usage
	finish     string
	calls      int

	start, last time.Time
	ttft        time.Duration
	first       bool
	closed      bool
	// byString: a stop string ended the text (what follows is dropped).
	byString bool
}

// startGeneration validates spec, primes the decoders with the resumed
// tokens and submits the request. The caller must call close.
func (s *Server) startGeneration(ctx context.Context, m *served, spec genSpec) (*generation, error) {
	start := time.Now()
	req, err := s.request(m, spec)
	if err != nil {
		return nil, err
	}
	stop, err := newStopMatcher(spec.stop)
	if err != nil {
		return nil, err
	}
	g := &generation{s: s, m: m, spec: spec, stop: stop, start: start, last: start, first: true, stopIDs: map[int32]bool{},
		usage: usage{prompt: len(req.Prompt)}, release: func() {}}
	for _, id := range req.Stop {
		g.stopIDs[id] = true
	}
	if spec.chat {
		g.parser = chat.NewParser(m.tok, spec.thinking)
		g.inThinking = spec.thinking
		if id, ok := m.tok.TokenID("</think>"); ok {
			g.thinkEnd = int32(id)
		} else {
			g.thinkEnd = -1
		}
	} else {
		g.dec = m.tok.NewStreamDecoder()
	}
	// The client has the resumed tokens' text: prime the decoders and drop
	// what they emit (what they hold back the client has not seen).
	for _, id := range spec.resume {
		var p piece
		if g.push(&p, scheduler.Token{ID: id}) {
			g.finish = "stop"
			return g, nil
		}
	}
	release, err := s.auth.acquire(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	st, err := s.sub.Submit(ctx, req)
	if err != nil {
		cancel()
		release()
		return nil, err
	}
	g.st, g.cancel, g.release = st, cancel, release
	s.metrics.requestStarted(len(req.Prompt), req.MaxTokens)
	return g, nil
}

// push adds one token to p; it reports a stop string found.
func (g *generation) push(p *piece, t scheduler.Token) (hit bool) {
	g.usage.completion++
	if g.inThinking {
		g.usage.reasoning++
		if t.ID == g.thinkEnd {
			g.inThinking = false
		}
	}
	if g.stopIDs[t.ID] {
		return false
	}
	var text string
	if g.parser != nil {
		d := g.parser.Push(t.ID)
		p.reasoning += d.Reasoning
		p.calls = append(p.calls, d.ToolCalls...)
		text = d.Content
	} else if !g.m.tok.IsSpecial(int(t.ID)) {
		text = g.dec.Push(int(t.ID))
	}
	out, hit := g.stop.push(text)
	p.text += out
	return hit
}

// flush ends the text: what the decoders and the stop matcher held.
func (g *generation) flush(p *piece) {
	var text string
	if g.parser != nil {
		d := g.parser.Flush()
		p.reasoning += d.Reasoning
		p.calls = append(p.calls, d.ToolCalls...)
		text = d.Content
	} else {
		text = g.dec.Flush()
	}
	out, hit := g.stop.push(text)
	p.text += out
	if !hit {
		p.text += g.stop.flush()
	}
}

// next waits for the next piece; the last one has finish set, and next
// must not be called after it.
func (g *generation) next(ctx context.Context) (piece, error) {
	var p piece
	if g.finish != "" { // ended while priming
		p.finish = g.finish
		g.end(p.finish)
		return p, nil
	}
	toks, done, finish, err := g.st.Next(ctx)
	if err != nil {
		g.end("")
		return p, err
	}
	now := time.Now()
	if len(toks) > 0 {
		if g.first {
			g.ttft = now.Sub(g.start)
			g.s.metrics.firstToken(g.ttft)
			g.first = false
		} else {
			g.s.metrics.interToken(now.Sub(g.last), len(toks))
		}
		g.last = now
	}
	for i, t := range toks {
		if g.push(&p, t) {
			p.toks = toks[:i+1]
			done, finish, g.byString = true, "stop", true
			g.cancel() // the scheduler frees the sequence
			break
		}
	}
	if p.toks == nil {
		p.toks = toks
	}
	if done {
		if !g.byString {
			g.flush(&p)
		}
		if finish == "stop" && g.parser != nil && g.parser.ToolCalled() {
			finish = "tool_calls"
		}
		p.finish = finish
		g.end(finish)
	}
	for i := range p.calls {
		if p.calls[i].ID == "" {
			p.calls[i].ID = "call_" + rand.Text()[:24]
		}
	}
	return p, nil
}

// end records the end once.
func (g *generation) end(finish string) {
	if g.closed {
		return
	}
	g.closed = true
	g.release()
	if g.cancel != nil {
		g.cancel()
	}
	g.s.metrics.requestEnded(finish, time.Since(g.start), g.ttft, g.usage.completion)
}

// close ends the request if it still runs (the client went away).
func (g *generation) close() { g.end("") }
