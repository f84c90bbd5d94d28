// Package serving holds the coordinator's front doors: the public gRPC
// inference service (moemesh.inference.v1), the standard gRPC health
// service and the HTTP /health endpoint. It turns text into tokens and
// back and maps the control plane's errors to status codes in one place
// (errors.go).
package serving

import (
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	infpb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
	"github.com/moemesh/moemesh/tokenizer"
)

// Backend runs generations: the scheduler (Submit) beside the control
// plane (the rest).
type Backend interface {
	scheduler.Submitter
	// ModelDir is the served checkpoint (for its tokenizer); "" while
	// unknown.
	ModelDir() string
	// ContextTokens is the KV cache of one sequence's attention group.
	ContextTokens() int
}

// Inference implements the public InferenceService.
type Inference struct {
	infpb.UnimplementedInferenceServiceServer
	b Backend

	mu  sync.Mutex
	tok *tokenizer.Tokenizer
	dir string
}

var _ infpb.InferenceServiceServer = (*Inference)(nil)

// NewInference returns the service over b.
func NewInference(b Backend) *Inference { return &Inference{b: b} }

// tokenizer loads the served model's tokenizer once.
func (s *Inference) tokenizer() (*tokenizer.Tokenizer, error) {
	dir := s.b.ModelDir()
	if dir == "" {
		return nil, fmt.Errorf("%w: no model served yet", ErrUnavailable)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.dir == dir {
		return s.tok, nil
	}
	t, err := tokenizer.Load(dir)
	if err != nil {
		return nil, err
	}
	s.tok, s.dir = t, dir
	return t, nil
}

// Generate implements InferenceService.
func (s *Inference) Generate(req *infpb.GenerateRequest, srv infpb.InferenceService_GenerateServer) error {
	ctx := srv.Context()
	tok, err := s.tokenizer()
	if err != nil {
		return toStatus(err)
	}
	prompt := req.PromptTokenIds
	if len(prompt) == 0 {
		if req.Prompt == "" {
			return status.Error(codes.InvalidArgument, "serving: prompt and prompt_token_ids are both empty")
		}
		text := req.Prompt
		if req.ChatTemplate {
			thinking := req.EnableThinking
			text, err = tok.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: req.Prompt}},
				tokenizer.TemplateOptions{AddGenerationPrompt: true, EnableThinking: &thinking})
			if err != nil {
				return status.Errorf(codes.InvalidArgument, "serving: chat template: %v", err)
			}
		}
		for _, id := range tok.Encode(text) {
			prompt = append(prompt, int32(id))
		}
	}
	params, err := samplingParams(req.Sampling)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "serving: %v", err)
	}
	ctxTokens := s.b.ContextTokens()
	if ctxTokens > 0 && len(prompt) >= ctxTokens {
		return status.Errorf(codes.InvalidArgument, "serving: the prompt has %d tokens, the context holds %d", len(prompt), ctxTokens)
	}
	maxTokens := int(req.MaxTokens)
	if limit := ctxTokens - len(prompt); maxTokens == 0 || (ctxTokens > 0 && maxTokens > limit) {
		if req.MaxTokens > 0 && ctxTokens > 0 && maxTokens > limit {
			return status.Errorf(codes.InvalidArgument, "serving: %d prompt tokens + max_tokens %d exceed the context of %d", len(prompt), maxTokens, ctxTokens)
		}
		maxTokens = limit
	}
	var stop []int32
	if !req.IgnoreEos {
		for _, id := range tok.EOSIDs() {
			stop = append(stop, int32(id))
		}
	}
	st, err := s.b.Submit(ctx, scheduler.Request{Prompt: prompt, MaxTokens: maxTokens, Params: params, Stop: stop})
	if err != nil {
		return toStatus(err)
	}
	dec := tok.NewStreamDecoder()
	completion := 0
	for {
		toks, done, finish, err := st.Next(ctx)
		if err != nil {
			return toStatus(err)
		}
		ids := make([]int32, len(toks))
		for i, t := range toks {
			ids[i] = t.ID
		}
		completion += len(ids)
		resp := &infpb.GenerateResponse{TokenIds: ids}
		for _, id := range ids {
			if !slices.Contains(stop, id) {
				resp.Text += dec.Push(int(id))
			}
		}
		if done {
			resp.Text += dec.Flush()
			resp.FinishReason = finish
			resp.Usage = &infpb.Usage{PromptTokens: uint32(len(prompt)), CompletionTokens: uint32(completion)}
		}
		if err := srv.Send(resp); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// samplingParams converts the request's parameters; unset fields are
// greedy (temperature) or off (filters and penalties).
func samplingParams(p *infpb.SamplingParams) (sampling.Params, error) {
	out := sampling.Greedy()
	if p == nil {
		return out, nil
	}
	if p.Temperature != nil {
		out.Temperature = *p.Temperature
	}
	if p.TopK != nil {
		out.TopK = int(*p.TopK)
	}
	if p.TopP != nil {
		out.TopP = *p.TopP
	}
	if p.MinP != nil {
		out.MinP = *p.MinP
	}
	if p.PresencePenalty != nil {
		out.PresencePenalty = *p.PresencePenalty
	}
	if p.RepetitionPenalty != nil {
		out.RepetitionPenalty = *p.RepetitionPenalty
	}
	if p.Seed != nil {
		out.Seed = *p.Seed
	}
	return out, out.Validate()
}
