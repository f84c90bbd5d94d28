package client

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// resumable is one streamed generation that survives coordinator
// failover: after UNAVAILABLE, a transport failure or an early end of the
// stream it resends the request, with the tokens received so far as
// resume_token_ids, to the next address, and goes on reading there.
type resumable[Resp any] struct {
	c      *Client
	ctx    context.Context // the caller's context, with Close's cancel
	cancel context.CancelFunc
	// open starts one attempt; resume is the whole resume_token_ids.
	open   func(ctx context.Context, s pb.InferenceServiceClient, resume []int32) (grpc.ServerStreamingClient[Resp], error)
	tokens func(*Resp) []int32
	finish func(*Resp) string

	base     []int32 // the caller's own resume_token_ids
	received []int32 // token ids received by this stream, in order
	cur      grpc.ServerStreamingClient[Resp]
	stop     context.CancelFunc // ends the current attempt
	idx      int                // its address
	r        retrier
	finished bool  // the response with a finish reason arrived
	err      error // sticky: io.EOF or the error returned
	attempts int
}

func newResumable[Resp any](ctx context.Context, c *Client, base []int32) *resumable[Resp] {
	sctx, cancel := context.WithCancel(ctx)
	return &resumable[Resp]{c: c, ctx: sctx, cancel: cancel, base: base, r: retrier{c: c}}
}

// recv returns the next response, retrying and resuming where it can.
func (s *resumable[Resp]) recv() (*Resp, error) {
	if s.err != nil {
		return nil, s.err
	}
	for {
		if s.cur == nil {
			if s.c.closed.Load() {
				return nil, s.end(ErrClosed)
			}
			s.idx = s.c.pick()
			actx, stop := context.WithCancel(s.ctx)
			resume := append(append(make([]int32, 0, len(s.base)+len(s.received)), s.base...), s.received...)
			s.attempts++
			st, err := s.open(actx, s.c.rpcs[s.idx], resume)
			if err != nil {
				stop()
				if err := s.retry(err); err != nil {
					return nil, s.end(err)
				}
				continue
			}
			s.cur, s.stop = st, stop
		}
		m, err := s.cur.Recv()
		if err == nil {
			s.received = append(s.received, s.tokens(m)...)
			if s.finish(m) != "" {
				s.finished = true
			}
			s.r.progress()
			return m, nil
		}
		s.stop()
		s.cur, s.stop = nil, nil
		if err := s.retry(err); err != nil {
			return nil, s.end(err)
		}
	}
}

// retry decides on a failed attempt: nil to try again, else the error
// (io.EOF when the stream is complete) to end with.
func (s *resumable[Resp]) retry(err error) error {
	if s.finished {
		// The last response arrived: whatever cut the stream after it
		// lost nothing.
		return io.EOF
	}
	if errors.Is(err, io.EOF) {
		err = status.Error(codes.Unavailable, "client: the stream ended before its finish reason")
	}
	if s.ctx.Err() != nil {
		return ctxStatus(s.ctx, nil)
	}
	if !retryable(err) {
		return err
	}
	s.c.failed(s.idx)
	return s.r.wait(s.ctx, err)
}

// end makes err the stream's outcome and frees its context.
func (s *resumable[Resp]) end(err error) error {
	s.err = err
	s.cancel()
	return err
}

// close may run on any goroutine: it only cancels, and recv sees it.
func (s *resumable[Resp]) close() { s.cancel() }

// withSeed returns sp (cloned) with a seed: the caller's, or a random one
// kept for every attempt, so a resumed stream samples as the first did.
func withSeed(sp *pb.SamplingParams) *pb.SamplingParams {
	if sp == nil {
		sp = &pb.SamplingParams{}
	} else {
		sp = proto.Clone(sp).(*pb.SamplingParams)
	}
	if sp.Seed == nil {
		seed := rand.Uint64()
		sp.Seed = &seed
	}
	return sp
}

func nilRequest() error { return status.Error(codes.InvalidArgument, "client: nil request") }

// GenerateStream is the stream of one Generate call. Recv it until io.EOF
// or an error; call Close (or cancel the context) to stop early. A
// GenerateStream is for one goroutine; Close may be called from any.
type GenerateStream struct {
	s    *resumable[pb.GenerateResponse]
	seed uint64
}

// Generate streams the completion of req. A coordinator failover during
// the stream is invisible to the caller: the SDK resumes on the new leader
// from the tokens received, with the same seed (a random one is chosen
// here when req has none) and the same max_tokens. req is not modified.
// Errors of the RPC come from Recv.
func (c *Client) Generate(ctx context.Context, req *pb.GenerateRequest) (*GenerateStream, error) {
	if req == nil {
		return nil, nilRequest()
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	base := proto.Clone(req).(*pb.GenerateRequest)
	base.Sampling = withSeed(base.Sampling)
	s := newResumable[pb.GenerateResponse](ctx, c, base.ResumeTokenIds)
	s.open = func(ctx context.Context, rpc pb.InferenceServiceClient, resume []int32) (grpc.ServerStreamingClient[pb.GenerateResponse], error) {
		r := proto.Clone(base).(*pb.GenerateRequest)
		r.ResumeTokenIds = resume
		return rpc.Generate(ctx, r)
	}
	s.tokens = func(m *pb.GenerateResponse) []int32 { return m.GetTokenIds() }
	s.finish = func(m *pb.GenerateResponse) string { return m.GetFinishReason() }
	return &GenerateStream{s: s, seed: base.Sampling.GetSeed()}, nil
}

// Recv returns the next piece of the completion, io.EOF after the last.
// Errors carry a gRPC status (status.Code).
func (g *GenerateStream) Recv() (*pb.GenerateResponse, error) { return g.s.recv() }

// Close ends the stream (the server stops generating); Recv then returns
// CANCELLED. Closing a finished stream does nothing.
func (g *GenerateStream) Close() { g.s.close() }

// Seed is the sampling seed every attempt sends.
func (g *GenerateStream) Seed() uint64 { return g.seed }

// Attempts counts the RPCs made so far (1 without retries or resumes).
func (g *GenerateStream) Attempts() int { return g.s.attempts }

// GenerateResult is a whole completion.
type GenerateResult struct {
	TokenIDs     []int32
	Text         string
	FinishReason string
	Usage        *pb.Usage
	Logprobs     []*pb.TokenLogprob
}

// Collect reads the stream to its end and joins its pieces.
func (g *GenerateStream) Collect() (*GenerateResult, error) {
	var res GenerateResult
	var text strings.Builder
	for {
		m, err := g.Recv()
		if errors.Is(err, io.EOF) {
			res.Text = text.String()
			return &res, nil
		}
		if err != nil {
			return nil, err
		}
		res.TokenIDs = append(res.TokenIDs, m.GetTokenIds()...)
		text.WriteString(m.GetText())
		res.Logprobs = append(res.Logprobs, m.GetLogprobs()...)
		if m.GetFinishReason() != "" {
			res.FinishReason = m.GetFinishReason()
		}
		if m.GetUsage() != nil {
			res.Usage = m.GetUsage()
		}
	}
}

// ChatStream is the stream of one Chat call, with GenerateStream's
// contract.
type ChatStream struct {
	s    *resumable[pb.ChatResponse]
	seed uint64
}

// Chat streams the assistant's reply to req, resuming across coordinator
// failovers as Generate does.
func (c *Client) Chat(ctx context.Context, req *pb.ChatRequest) (*ChatStream, error) {
	if req == nil {
		return nil, nilRequest()
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	base := proto.Clone(req).(*pb.ChatRequest)
	base.Sampling = withSeed(base.Sampling)
	s := newResumable[pb.ChatResponse](ctx, c, base.ResumeTokenIds)
	s.open = func(ctx context.Context, rpc pb.InferenceServiceClient, resume []int32) (grpc.ServerStreamingClient[pb.ChatResponse], error) {
		r := proto.Clone(base).(*pb.ChatRequest)
		r.ResumeTokenIds = resume
		return rpc.Chat(ctx, r)
	}
	s.tokens = func(m *pb.ChatResponse) []int32 { return m.GetTokenIds() }
	s.finish = func(m *pb.ChatResponse) string { return m.GetFinishReason() }
	return &ChatStream{s: s, seed: base.Sampling.GetSeed()}, nil
}

// Recv returns the next piece of the reply, io.EOF after the last.
func (c *ChatStream) Recv() (*pb.ChatResponse, error) { return c.s.recv() }

// Close ends the stream; Recv then returns CANCELLED.
func (c *ChatStream) Close() { c.s.close() }

// Seed is the sampling seed every attempt sends.
func (c *ChatStream) Seed() uint64 { return c.seed }

// Attempts counts the RPCs made so far.
func (c *ChatStream) Attempts() int { return c.s.attempts }

// ChatResult is a whole reply.
type ChatResult struct {
	TokenIDs         []int32
	Content          string
	ReasoningContent string
	ToolCalls        []*pb.ToolCall
	FinishReason     string
	Usage            *pb.Usage
	Logprobs         []*pb.TokenLogprob
}

// Collect reads the stream to its end and joins its pieces.
func (c *ChatStream) Collect() (*ChatResult, error) {
	var res ChatResult
	var content, reasoning strings.Builder
	for {
		m, err := c.Recv()
		if errors.Is(err, io.EOF) {
			res.Content, res.ReasoningContent = content.String(), reasoning.String()
			return &res, nil
		}
		if err != nil {
			return nil, err
		}
		res.TokenIDs = append(res.TokenIDs, m.GetTokenIds()...)
		content.WriteString(m.GetContent())
		reasoning.WriteString(m.GetReasoningContent())
		res.ToolCalls = append(res.ToolCalls, m.GetToolCalls()...)
		res.Logprobs = append(res.Logprobs, m.GetLogprobs()...)
		if m.GetFinishReason() != "" {
			res.FinishReason = m.GetFinishReason()
		}
		if m.GetUsage() != nil {
			res.Usage = m.GetUsage()
		}
	}
}
