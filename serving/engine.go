package serving

import (
	"context"
	"fmt"

	"github.com/moemesh/moemesh/coordinator/control"
	"github.com/moemesh/moemesh/coordinator/engine"
	"github.com/moemesh/moemesh/scheduler"
)

// Coordinator is the control plane as it serves today: generations
// through its engine (engine.Request), until the scheduler's Service
// implements scheduler.Submitter.
type Coordinator interface {
	ModelSource
	HealthSource
	Submit(ctx context.Context, r engine.Request) (*engine.Stream, error)
}

var _ Coordinator = (*control.Coordinator)(nil)

// Servers are the running front doors (the name Serve returned before
// Server).
type Servers = Server

// Serve starts the front doors over c with DefaultConfig: the gRPC
// server (inference, health, reflection) and the HTTP server on l.
func Serve(l *Listeners, c Coordinator) *Servers {
	s, err := New(DefaultConfig(), Deps{Submitter: EngineSubmitter(c), Model: c, Health: c})
	if err != nil { // only for nil Deps, which cannot be here
		panic(err)
	}
	s.Serve(l)
	return s
}

// EngineSubmitter adapts the engine's Submit to scheduler.Submitter:
// resumed tokens are appended to the prompt (the penalties then see them
// as prompt), and logprobs and thinking budgets, which the engine does
// not do, are refused with ErrUnsupported.
func EngineSubmitter(c interface {
	Submit(ctx context.Context, r engine.Request) (*engine.Stream, error)
}) scheduler.Submitter {
	return engineSubmitter{c}
}

type engineSubmitter struct {
	c interface {
		Submit(ctx context.Context, r engine.Request) (*engine.Stream, error)
	}
}

func (e engineSubmitter) Submit(ctx context.Context, r scheduler.Request) (scheduler.Stream, error) {
	if r.Logprobs || r.Budget != nil {
		return nil, fmt.Errorf("%w: logprobs and thinking budgets need the scheduler", ErrUnsupported)
	}
	prompt := append(append([]int32(nil), r.Prompt...), r.Generated...)
	st, err := e.c.Submit(ctx, engine.Request{Prompt: prompt, MaxTokens: r.MaxTokens - len(r.Generated), Params: r.Params, Stop: r.Stop})
	if err != nil {
		return nil, err
	}
	return engineStream{st}, nil
}

type engineStream struct{ st *engine.Stream }

func (s engineStream) Next(ctx context.Context) ([]scheduler.Token, bool, string, error) {
	ids, done, finish, err := s.st.Next(ctx)
	toks := make([]scheduler.Token, len(ids))
	for i, id := range ids {
		toks[i].ID = id
	}
	return toks, done, finish, err
}

