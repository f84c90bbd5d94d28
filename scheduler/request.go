package scheduler

import (
	"context"
	"time"

	"github.com/moemesh/moemesh/sampling"
)

// Request is one sequence to generate.
type Request struct {
	// Prompt is the prompt's token ids (at least one).
	Prompt []int32
	// Generated are tokens an earlier attempt of this request already
	// produced (a client resuming after a failover): they are fed after
	// the prompt, count as generated for the penalties, MaxTokens and the
	// thinking budget, and are not emitted again.
	Generated []int32
	// MaxTokens bounds the generated tokens, Generated included (> 0).
	MaxTokens int
	Params    sampling.Params
	// Stop ends the sequence when sampled (the stop id is emitted).
	Stop []int32
	// Logprobs asks for each emitted token's log-probability and for the
	// TopLogprobs most likely tokens at its position.
	Logprobs    bool
	TopLogprobs int
	// Budget, when set, caps the thinking.
	Budget *ThinkingBudget
}

// ThinkingBudget caps a thinking phase that starts at the first generated
// token: once Tokens generated tokens (Generated included) hold no End,
// the scheduler forces Insert (which contains End) and sampling resumes
// after it. A sequence that samples End first is never forced.
type ThinkingBudget struct {
	Tokens int
	End    int32
	Insert []int32
}

// Token is one emitted token.
type Token struct {
	ID int32
	// Logprob, TopIDs and TopLogprobs are set when Request.Logprobs.
	Logprob     float32
	TopIDs      []int32
	TopLogprobs []float32
	// Forced marks a token of ThinkingBudget.Insert (not sampled).
	Forced bool
}

// Finish reasons.
const (
	FinishStop   = "stop"
	FinishLength = "length"
)

// Stats describe one step, for metrics.
type Stats struct {
	// Running and Waiting count sequences after the step.
	Running, Waiting int
	// KVUsage is the fraction of KV blocks in use, in [0, 1].
	KVUsage float64
	// PromptTokens and GenerationTokens were computed this step (prompt
	// tokens include recomputed ones after a preemption).
	PromptTokens, GenerationTokens int
	// Preemptions happened before this step.
	Preemptions int
	// Queues marks a report of a change of the queues without a step (a
	// request cancelled while nothing else runs): only Running, Waiting
	// and KVUsage are set.
	Queues bool
	// Duration is the step's wall time at the scheduler.
	Duration time.Duration
	// WorkerTime is each worker's wall time for the step, by worker index.
	WorkerTime []time.Duration
	// ExpertTokens is the step's routed tokens per [MoE layer][expert],
	// summed over workers (nil for a dense model or when unknown).
	ExpertTokens [][]uint32
}

// Observer receives the scheduler's events; calls come from the scheduling
// goroutine and must not block.
type Observer interface {
	// Step is called after every step.
	Step(Stats)
	// Scheduled is called when a request first runs, with its time in
	// the queue.
	Scheduled(queue time.Duration)
}

// Submitter starts requests: the scheduler's Service (which answers with
// control.ErrNotLeader or ErrNotReady while this coordinator cannot serve),
// or a test's fake.
type Submitter interface {
	Submit(ctx context.Context, r Request) (Stream, error)
}

// Stream is a running request. Next returns the tokens emitted since the
// last call, waiting while there are none; done is true once the request
// ended: finish then holds FinishStop or FinishLength, or err the failure
// (ctx's error when ctx ended first), and no more tokens follow. Ending the
// context the request was submitted with cancels it and frees its
// sequence.
type Stream interface {
	Next(ctx context.Context) (toks []Token, done bool, finish string, err error)
}
