package serving

import (
	"context"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/moemesh/moemesh/chat"
	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	"github.com/moemesh/moemesh/sampling"
)

// inference implements the public InferenceService; errors become codes
// in toStatus.
type inference struct {
	infpb.UnimplementedInferenceServiceServer
	s *Server
}

var _ infpb.InferenceServiceServer = (*inference)(nil)

func overridesOf(p *infpb.SamplingParams) sampling.Overrides {
	var o sampling.Overrides
	if p == nil {
		return o
	}
	o.Temperature, o.TopP, o.MinP = p.Temperature, p.TopP, p.MinP
	o.PresencePenalty, o.FrequencyPenalty, o.RepetitionPenalty = p.PresencePenalty, p.FrequencyPenalty, p.RepetitionPenalty
	o.Seed = p.Seed
	if p.TopK != nil {
		k := int(*p.TopK)
		o.TopK = &k
	}
	return o
}

func logprobSpec(spec *genSpec, lp *uint32) {
	if lp != nil {
		spec.logprobs, spec.topLogprobs = true, int(*lp)
	}
}

func pbLogprobs(lps []logprob) []*infpb.TokenLogprob {
	out := make([]*infpb.TokenLogprob, len(lps))
	for i, l := range lps {
		out[i] = &infpb.TokenLogprob{TokenId: l.id, Token: l.text, Logprob: l.lp, Forced: l.forced}
		for _, t := range l.top {
			out[i].Top = append(out[i].Top, &infpb.TopLogprob{TokenId: t.id, Token: t.text, Logprob: t.lp})
		}
	}
	return out
}

// Generate implements InferenceService.
func (x *inference) Generate(req *infpb.GenerateRequest, srv infpb.InferenceService_GenerateServer) error {
	ctx := srv.Context()
	m, err := x.s.models.get(req.Model)
	if err != nil {
		return toStatus(err)
	}
	spec := genSpec{prompt: req.PromptTokenIds, maxTokens: int64(req.MaxTokens), sampling: overridesOf(req.Sampling),
		stop: req.Stop, stopIDs: req.StopTokenIds, ignoreEOS: req.IgnoreEos, resume: req.ResumeTokenIds}
	logprobSpec(&spec, req.Logprobs)
	if len(spec.prompt) == 0 {
		if req.Prompt == "" {
			return toStatus(fmt.Errorf("%w: prompt and prompt_token_ids are both empty", ErrInvalid))
		}
		if req.ChatTemplate {
			thinking := req.EnableThinking
			p, err := conversation(m, []chat.Message{{Role: "user", Content: req.Prompt}}, nil, &thinking, true)
			if err != nil {
				return toStatus(err)
			}
			spec.prompt = p.IDs
		} else {
			spec.prompt = encode(m, req.Prompt)
		}
	}
	g, err := x.s.startGeneration(ctx, m, spec)
	if err != nil {
		return toStatus(err)
	}
	defer g.close()
	for {
		p, err := g.next(ctx)
		if err != nil {
			return toStatus(err)
		}
		resp := &infpb.GenerateResponse{TokenIds: ids(p), Text: p.text, FinishReason: p.finish}
		if spec.logprobs {
			resp.Logprobs = pbLogprobs(logprobs(m.tok, p.toks))
		}
		if p.finish != "" {
			resp.Usage = &infpb.Usage{PromptTokens: uint32(g.usage.prompt), CompletionTokens: uint32(g.usage.completion)}
		}
		if err := srv.Send(resp); err != nil {
			return err
		}
		if p.finish != "" {
			return nil
		}
	}
}

// chatMessages converts the proto messages.
func chatMessages(in []*infpb.ChatMessage) []chat.Message {
	out := make([]chat.Message, len(in))
	for i, m := range in {
		out[i] = chat.Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent, ToolCallID: m.ToolCallId, Name: m.Name}
		for _, tc := range m.ToolCalls {
			out[i].ToolCalls = append(out[i].ToolCalls, chat.ToolCall{ID: tc.Id, Name: tc.Name, Arguments: tc.Arguments})
		}
	}
	return out
}

func rawTools(in []string) []json.RawMessage {
	out := make([]json.RawMessage, len(in))
	for i, t := range in {
		out[i] = json.RawMessage(t)
	}
	return out
}

// Chat implements InferenceService.
func (x *inference) Chat(req *infpb.ChatRequest, srv infpb.InferenceService_ChatServer) error {
	ctx := srv.Context()
	m, err := x.s.models.get(req.Model)
	if err != nil {
		return toStatus(err)
	}
	p, err := conversation(m, chatMessages(req.Messages), rawTools(req.Tools), req.EnableThinking, true)
	if err != nil {
		return toStatus(err)
	}
	spec := genSpec{prompt: p.IDs, maxTokens: int64(req.MaxTokens), sampling: overridesOf(req.Sampling), stop: req.Stop,
		stopIDs: req.StopTokenIds, ignoreEOS: req.IgnoreEos, resume: req.ResumeTokenIds, chat: true, thinking: p.Thinking}
	if req.ThinkingBudget != nil {
		b := int64(*req.ThinkingBudget)
		spec.budget = &b
	}
	logprobSpec(&spec, req.Logprobs)
	g, err := x.s.startGeneration(ctx, m, spec)
	if err != nil {
		return toStatus(err)
	}
	defer g.close()
	for {
		pc, err := g.next(ctx)
		if err != nil {
			return toStatus(err)
		}
		resp := &infpb.ChatResponse{TokenIds: ids(pc), Content: pc.text, ReasoningContent: pc.reasoning, FinishReason: pc.finish}
		for _, c := range pc.calls {
			resp.ToolCalls = append(resp.ToolCalls, &infpb.ToolCall{Id: c.ID, Type: "function", Name: c.Name, Arguments: c.Arguments, Index: uint32(g.calls)})
			g.calls++
		}
		if spec.logprobs {
			resp.Logprobs = pbLogprobs(logprobs(m.tok, pc.toks))
		}
		if pc.finish != "" {
			resp.Usage = &infpb.Usage{PromptTokens: uint32(g.usage.prompt), CompletionTokens: uint32(g.usage.completion), ReasoningTokens: uint32(g.usage.reasoning)}
		}
		if err := srv.Send(resp); err != nil {
			return err
		}
		if pc.finish != "" {
			return nil
		}
	}
}

func ids(p piece) []int32 {
	out := make([]int32, len(p.toks))
	for i, t := range p.toks {
		out[i] = t.ID
	}
	return out
}

func encode(m *served, text string) []int32 {
	v := m.tok.Encode(text)
	out := make([]int32, len(v))
	for i, id := range v {
		out[i] = int32(id)
	}
	return out
}

// Tokenize implements InferenceService.
func (x *inference) Tokenize(ctx context.Context, req *infpb.TokenizeRequest) (*infpb.TokenizeResponse, error) {
	m, err := x.s.models.get(req.Model)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &infpb.TokenizeResponse{MaxModelLen: uint32(m.ctxTokens)}
	switch {
	case len(req.Messages) > 0:
		gen := req.AddGenerationPrompt == nil || *req.AddGenerationPrompt
		p, err := conversation(m, chatMessages(req.Messages), rawTools(req.Tools), req.EnableThinking, gen)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.TokenIds, resp.Prompt = p.IDs, p.Text
	case req.Prompt != "":
		if !utf8.ValidString(req.Prompt) {
			return nil, toStatus(fmt.Errorf("%w: prompt is not valid UTF-8", ErrInvalid))
		}
		resp.TokenIds, resp.Prompt = encode(m, req.Prompt), req.Prompt
	default:
		return nil, toStatus(fmt.Errorf("%w: set prompt or messages", ErrInvalid))
	}
	return resp, nil
}

// Detokenize implements InferenceService.
func (x *inference) Detokenize(ctx context.Context, req *infpb.DetokenizeRequest) (*infpb.DetokenizeResponse, error) {
	m, err := x.s.models.get(req.Model)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := checkIDs(m.tok, req.TokenIds); err != nil {
		return nil, toStatus(fmt.Errorf("%w: token_ids: %w", ErrInvalid, err))
	}
	v := make([]int, len(req.TokenIds))
	for i, id := range req.TokenIds {
		v[i] = int(id)
	}
	return &infpb.DetokenizeResponse{Text: m.tok.Decode(v)}, nil
}

// ListModels implements InferenceService.
func (x *inference) ListModels(ctx context.Context, req *infpb.ListModelsRequest) (*infpb.ListModelsResponse, error) {
	m, err := x.s.models.get("")
	if err != nil {
		return nil, toStatus(err)
	}
	return &infpb.ListModelsResponse{Models: []*infpb.Model{{Id: m.name, MaxModelLen: uint32(m.ctxTokens), Created: m.created, OwnedBy: "moemesh"}}}, nil
}
