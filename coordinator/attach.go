package coordinator

import (
	"context"
	"fmt"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/sharding"
)

// Attach points the driver at workers that already hold the shards of
// placement epoch (loaded by the control plane, not by Load). Step numbers
// continue after lastStep: every worker's steps strictly increase, across
// placement epochs and coordinator changes.
func (d *Driver) Attach(layout sharding.Layout, vocab int, epoch, lastStep uint64) {
	d.layout, d.vocab, d.epoch = layout, vocab, epoch
	d.step = max(d.step, lastStep)
}

// LastStep is the number of the last step sent.
func (d *Driver) LastStep() uint64 { return d.step }

// Epoch is the placement epoch the driver routes with.
func (d *Driver) Epoch() uint64 { return d.epoch }

// Layout is the layout the driver runs.
func (d *Driver) Layout() sharding.Layout { return d.layout }

// Step runs one step of seqs, whose ids, attention groups and sampling the
// caller chose, and returns the results of rank 0 of each group by
// sequence id. finished lists sequences that ended since the last step.
//
// The caller's attention groups are what the workers obey (each group's
// workers run the sequences whose attn_group names it); Group, the id mod
// DP rule, is only Forward's and ForwardSample's choice.
func (d *Driver) Step(ctx context.Context, seqs []*pb.SeqStep, finished []uint64) (map[uint64]*pb.SeqResult, error) {
	for _, s := range seqs {
		if int(s.AttnGroup) >= max(d.layout.DP, 1) {
			return nil, fmt.Errorf("%w: sequence %d assigned to attention group %d of %d", ErrStep, s.SeqId, s.AttnGroup, d.layout.DP)
		}
	}
	d.step++
	req := &pb.StepRequest{Step: d.step, PlacementEpoch: d.epoch, Seqs: seqs, FinishedSeqIds: finished}
	return d.run(ctx, req)
}

// SamplingProto is the wire form of p.
func SamplingProto(p sampling.Params) *pb.Sampling {
	return &pb.Sampling{
		Temperature: p.Temperature, TopK: int32(p.TopK), TopP: p.TopP, MinP: p.MinP,
		PresencePenalty: p.PresencePenalty, FrequencyPenalty: p.FrequencyPenalty,
		RepetitionPenalty: p.RepetitionPenalty, Seed: p.Seed,
	}
}
