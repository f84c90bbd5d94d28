package worker

import (
	"context"
	"slices"
	"testing"

	pb "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// TestResubmittedSequenceSamplesTheSame: a sequence resubmitted from its
// prompt and the tokens generated so far, as one prefill with prompt_len,
// samples the same next tokens as the uninterrupted run, with a presence
// penalty (which reads only generated tokens) and a seed. Both the
// full-logits path (one rank) and the candidates path (a vocabulary split
// over two ranks) are checked.
func TestResubmittedSequenceSamplesTheSame(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name        string
		workers, tp int
	}{
		{"one worker", 1, 1},
		{"two ranks, candidates", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, tinyA, tc.workers, nil)
			members := make([]int, tc.workers)
			for i := range members {
				members[i] = i
			}
			ctx := context.Background()
			if _, err := c.load(ctx, loadSpec{members: members, tp: tc.tp, place: placementProto(1, uniform(c.cfg, tc.workers, 0)), meshEpoch: 1}); err != nil {
				t.Fatal(err)
			}
			params := &pb.Sampling{Temperature: 0.9, TopK: 40, TopP: 0.95, PresencePenalty: 2, RepetitionPenalty: 1.1, Seed: 17}
			var pool testBlocks
			prompt := []int32{5, 77, 301, 9, 1400}
			const gen, cut = 10, 4
			step := uint64(0)
			// run feeds tokens of sequence id from start and returns the token
			// sampled after them.
			run := func(id uint64, blocks *[]int32, tokens []int32, start int, promptLen int32) int32 {
				t.Helper()
				pool.reserve(t, blocks, start+len(tokens))
				step++
				req := &pb.StepRequest{Step: step, PlacementEpoch: 1, Sampling: params, Seqs: []*pb.SeqStep{{
					SeqId: id, Tokens: tokens, StartPos: int32(start), BlockTable: *blocks, Sample: true, PromptLen: promptLen,
				}}}
				res, err := c.step(ctx, members, req)
				if err != nil {
					t.Fatal(err)
				}
				return res[id].Token
			}
			// The uninterrupted run, without prompt_len.
			var a []int32
			want := []int32{run(1, &a, prompt, 0, 0)}
			for i := 1; i < gen; i++ {
				want = append(want, run(1, &a, want[i-1:i], len(prompt)+i-1, 0))
			}
			// Resubmitted after cut generated tokens.
			var b []int32
			hist := append(slices.Clone(prompt), want[:cut]...)
			got := append(slices.Clone(want[:cut]), run(2, &b, hist, 0, int32(len(prompt))))
			for i := cut + 1; i < gen; i++ {
				got = append(got, run(2, &b, got[i-1:i], len(prompt)+i-1, int32(len(prompt))))
			}
			if !slices.Equal(got, want) {
				t.Errorf("resubmitted after %d tokens (-want +got):\n-%v\n+%v", cut, want, got)
			}
		})
	}
}
