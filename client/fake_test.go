package client_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/moemesh/moemesh/proto/moemesh/inference/v1"
)

// fakeVocab is the fake model's vocabulary size.
const fakeVocab = 1000

// fakeServer is an InferenceService whose generation is a deterministic
// function of (seed, prompt, every earlier generated token): a resumed
// request that lost or repeated a token continues differently, so
// comparing with an uninterrupted run checks the resume.
type fakeServer struct {
	pb.UnimplementedInferenceServiceServer

	// standby answers every RPC UNAVAILABLE, as a standby coordinator.
	standby bool
	// failFirst answers the first calls UNAVAILABLE.
	failFirst int
	// code, when set, answers every call with it.
	code codes.Code
	// cutAfter, when > 0, ends the first stream with UNAVAILABLE (or, with
	// cutEOF, with a clean end) after that many tokens; hangAfter instead
	// blocks after that many tokens, signalling hung, until the stream's
	// context ends (the test then kills the server).
	cutAfter, hangAfter int
	cutEOF              bool
	hung                chan struct{}
	// block makes streams wait for their context before sending anything.
	block bool
	// perMsg is the number of tokens per response (default 1).
	perMsg int

	mu    sync.Mutex
	calls int
	gens  []*pb.GenerateRequest
	chats []*pb.ChatRequest
	md    []metadata.MD
}

var _ pb.InferenceServiceServer = (*fakeServer)(nil)

// enter records a call and returns the error the configuration asks for.
func (f *fakeServer) enter(ctx context.Context, req proto.Message) (first bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	md, _ := metadata.FromIncomingContext(ctx)
	f.md = append(f.md, md)
	switch r := req.(type) {
	case *pb.GenerateRequest:
		f.gens = append(f.gens, proto.Clone(r).(*pb.GenerateRequest))
	case *pb.ChatRequest:
		f.chats = append(f.chats, proto.Clone(r).(*pb.ChatRequest))
	}
	switch {
	case f.standby:
		return false, status.Error(codes.Unavailable, "fake: not the leader")
	case f.code != codes.OK:
		return false, status.Errorf(f.code, "fake: configured %v", f.code)
	case f.calls <= f.failFirst:
		return false, status.Error(codes.Unavailable, "fake: starting")
	}
	return f.calls == f.failFirst+1, nil
}

func (f *fakeServer) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeServer) Gens() []*pb.GenerateRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.GenerateRequest(nil), f.gens...)
}

func (f *fakeServer) Chats() []*pb.ChatRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.ChatRequest(nil), f.chats...)
}

func (f *fakeServer) MD() []metadata.MD {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]metadata.MD(nil), f.md...)
}

// nextToken is the fake model: a hash of the state, which absorbs the seed,
// the prompt and every generated token.
func mix(h uint64, t int32) uint64 {
	h ^= uint64(uint32(t)) + 0x9e3779b97f4a7c15 + h<<6 + h>>2
	return h * 0xff51afd7ed558ccd
}

func initState(seed uint64, prompt []int32) uint64 {
	h := seed ^ 0xcbf29ce484222325
	for _, t := range prompt {
		h = mix(h, t)
	}
	return h
}

func tokenText(t int32) string { return fmt.Sprintf("t%d ", t) }

// reference is the uninterrupted completion: n tokens and their text.
func reference(seed uint64, prompt []int32, n int) ([]int32, string) {
	h := initState(seed, prompt)
	var ids []int32
	var text strings.Builder
	for range n {
		t := int32(h % fakeVocab)
		ids = append(ids, t)
		text.WriteString(tokenText(t))
		h = mix(h, t)
	}
	return ids, text.String()
}

func promptTokens(r *pb.GenerateRequest) []int32 {
	if len(r.PromptTokenIds) > 0 {
		return r.PromptTokenIds
	}
	ids := make([]int32, len(r.Prompt))
	for i := range len(r.Prompt) {
		ids[i] = int32(r.Prompt[i])
	}
	return ids
}

func chatTokens(r *pb.ChatRequest) []int32 {
	var ids []int32
	for _, m := range r.Messages {
		for i := range len(m.Content) {
			ids = append(ids, int32(m.Content[i]))
		}
	}
	return ids
}

// piece is one response's worth of generation.
type piece struct {
	ids    []int32
	text   string
	finish string
	usage  *pb.Usage
}

// run generates after resume up to max tokens in all, calling send per
// piece; it applies the cut, hang and block settings.
func (f *fakeServer) run(ctx context.Context, first bool, seed uint64, prompt, resume []int32, maxTokens uint32, send func(piece) error) error {
	if f.block {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if maxTokens == 0 {
		maxTokens = 16
	}
	per := max(f.perMsg, 1)
	h := initState(seed, prompt)
	for _, t := range resume {
		h = mix(h, t)
	}
	done := len(resume)
	sent := 0
	for done < int(maxTokens) {
		if first && f.cutAfter > 0 && sent >= f.cutAfter {
			if f.cutEOF {
				return nil
			}
			return status.Error(codes.Unavailable, "fake: lost leadership")
		}
		if first && f.hangAfter > 0 && sent >= f.hangAfter {
			close(f.hung)
			<-ctx.Done()
			return status.FromContextError(ctx.Err()).Err()
		}
		var p piece
		for range per {
			if done == int(maxTokens) {
				break
			}
			t := int32(h % fakeVocab)
			h = mix(h, t)
			p.ids = append(p.ids, t)
			p.text += tokenText(t)
			done++
			sent++
		}
		if done == int(maxTokens) {
			p.finish = "length"
			p.usage = &pb.Usage{PromptTokens: uint32(len(prompt)), CompletionTokens: maxTokens}
		}
		if err := send(p); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeServer) Generate(req *pb.GenerateRequest, srv grpc.ServerStreamingServer[pb.GenerateResponse]) error {
	first, err := f.enter(srv.Context(), req)
	if err != nil {
		return err
	}
	return f.run(srv.Context(), first, req.GetSampling().GetSeed(), promptTokens(req), req.ResumeTokenIds, req.MaxTokens, func(p piece) error {
		return srv.Send(&pb.GenerateResponse{TokenIds: p.ids, Text: p.text, FinishReason: p.finish, Usage: p.usage})
	})
}

func (f *fakeServer) Chat(req *pb.ChatRequest, srv grpc.ServerStreamingServer[pb.ChatResponse]) error {
	first, err := f.enter(srv.Context(), req)
	if err != nil {
		return err
	}
	pos := len(req.ResumeTokenIds)
	return f.run(srv.Context(), first, req.GetSampling().GetSeed(), chatTokens(req), req.ResumeTokenIds, req.MaxTokens, func(p piece) error {
		// The first two tokens are the "thinking", the rest the answer.
		m := &pb.ChatResponse{TokenIds: p.ids, FinishReason: p.finish, Usage: p.usage}
		for _, t := range p.ids {
			if pos < 2 {
				m.ReasoningContent += tokenText(t)
			} else {
				m.Content += tokenText(t)
			}
			pos++
		}
		return srv.Send(m)
	})
}

func (f *fakeServer) Tokenize(ctx context.Context, req *pb.TokenizeRequest) (*pb.TokenizeResponse, error) {
	if _, err := f.enter(ctx, req); err != nil {
		return nil, err
	}
	return &pb.TokenizeResponse{TokenIds: promptTokens(&pb.GenerateRequest{Prompt: req.Prompt}), Prompt: req.Prompt, MaxModelLen: 4096}, nil
}

func (f *fakeServer) Detokenize(ctx context.Context, req *pb.DetokenizeRequest) (*pb.DetokenizeResponse, error) {
	if _, err := f.enter(ctx, req); err != nil {
		return nil, err
	}
	var b strings.Builder
	for _, t := range req.TokenIds {
		b.WriteString(tokenText(t))
	}
	return &pb.DetokenizeResponse{Text: b.String()}, nil
}

func (f *fakeServer) ListModels(ctx context.Context, req *pb.ListModelsRequest) (*pb.ListModelsResponse, error) {
	if _, err := f.enter(ctx, req); err != nil {
		return nil, err
	}
	return &pb.ListModelsResponse{Models: []*pb.Model{{Id: "fake", MaxModelLen: 4096, OwnedBy: "moemesh"}}}, nil
}

// serve runs f on a loopback port until stop.
func serve(f *fakeServer, opts ...grpc.ServerOption) (addr string, stop func(), err error) {
	return serveAt("127.0.0.1:0", f, opts...)
}

// serveAt runs f at addr until stop.
func serveAt(addr string, f *fakeServer, opts ...grpc.ServerOption) (string, func(), error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterInferenceServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	return lis.Addr().String(), func() { srv.Stop(); <-done }, nil
}
