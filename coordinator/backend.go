package coordinator

import (
	"context"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Geometry is what a scheduler needs to know of the serving placement.
type Geometry struct {
	// Groups is the number of attention groups (the layout's DP). Every
	// group keeps its own KV storage, so a sequence lives in one group and
	// block ids are unique only inside a group.
	Groups int
	// KVBlocks and BlockSize size each group's KV pool: KVBlocks blocks
	// of BlockSize positions.
	KVBlocks, BlockSize int
	// Vocab is the vocabulary size (token ids are checked against it).
	Vocab int
	// Experts is the number of routed experts per MoE layer (0 for a
	// dense model); it shapes pb.StepStats.expert_tokens.
	Experts int
}

// Backend runs steps on a cluster: the control plane's leader implements
// it for the placement it serves, tests with fakes.
//
// Concurrency: the methods are called from one goroutine at a time (the
// scheduler's loop), never concurrently; Alarm's channel may be read from
// that goroutine while no other method runs.
type Backend interface {
	// Geometry describes the placement steps now run on; it may change
	// after Recover.
	Geometry() Geometry
	// Step runs one step of seqs (their ids, attention groups, block
	// tables and sampling chosen by the caller) and returns the result of
	// every sequence by id. finished lists sequences that ended since the
	// last step, so the workers drop their state.
	Step(ctx context.Context, seqs []*pb.SeqStep, finished []uint64) (map[uint64]*pb.SeqResult, error)
	// StepStats returns each worker's statistics of the last successful
	// Step, by worker index (nil entries when a worker sent none). The
	// slice is valid until the next Step; callers must not modify it.
	StepStats() []*pb.StepStats
	// Recover is called after Step failed with cause. It returns once
	// steps can run again, on a placement whose KV caches hold nothing
	// (every running sequence is resubmitted), or with an error when the
	// cluster cannot serve: the running requests then fail with it.
	Recover(ctx context.Context, cause error) error
	// Alarm delivers failures noticed outside a step (a worker declared
	// dead while the scheduler is idle); the scheduler then calls Recover.
	Alarm() <-chan error
}
