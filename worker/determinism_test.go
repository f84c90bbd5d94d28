package worker

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/sharding"
)

// sumLayout is a cluster shape for the summation-order tests.
type sumLayout struct{ n, tp, replicas int }

func (l sumLayout) String() string { return fmt.Sprintf("N%d_T%d_R%d", l.n, l.tp, l.replicas) }

// sumCluster starts l.n workers, loads tinyA on them (extra replicas placed
// by sharding.PlaceExperts) and returns a function that runs one logits
// step for seqs and returns every sequence's logits rows by id.
func sumCluster(t *testing.T, l sumLayout, layoutInvariant bool) func(step uint64, seqs []model.SeqInput) map[uint64][][]float32 {
	t.Helper()
	c := newTestCluster(t, tinyA, l.n, func(int) Config { return Config{LayoutInvariantMoE: layoutInvariant} })
	place, err := sharding.PlaceExperts(c.cfg.NumExperts, l.n, l.replicas, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	members := make([]int, l.n)
	for i := range members {
		members[i] = i
	}
	if _, err := c.load(context.Background(), loadSpec{members: members, tp: l.tp, place: placementProto(1, place), meshEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	vocab := c.cfg.VocabSize
	return func(step uint64, seqs []model.SeqInput) map[uint64][][]float32 {
		t.Helper()
		// With more than one attention group only group 0's sequences come
		// back from worker 0: put every sequence in group 0.
		req := logitsRequest(step, 1, seqs)
		got, err := c.step(context.Background(), members, req)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		out := map[uint64][][]float32{}
		for _, s := range seqs {
			data := got[s.ID].GetLogits().GetData()
			if len(data) != len(s.Tokens)*vocab*4 {
				t.Fatalf("step %d sequence %d: %d logits bytes, want %d rows of %d", step, s.ID, len(data), len(s.Tokens), vocab)
			}
			for i := range s.Tokens {
				row := make([]float32, vocab)
				for j := range row {
					row[j] = math.Float32frombits(binary.LittleEndian.Uint32(data[(i*vocab+j)*4:]))
				}
				out[s.ID] = append(out[s.ID], row)
			}
		}
		return out
	}
}

// bitwiseDiff reports the first position where got and want differ in any
// bit, or "" when they are identical.
func bitwiseDiff(got, want [][]float32) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			return fmt.Sprintf("row %d: %d values, want %d", i, len(got[i]), len(want[i]))
		}
		for j := range want[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
				return fmt.Sprintf("row %d col %d: %v (%#x), want %v (%#x); relative error of the row %.3g",
					i, j, got[i][j], math.Float32bits(got[i][j]), want[i][j], math.Float32bits(want[i][j]), relErr(got[i], want[i]))
			}
		}
	}
	return ""
}

// sumLayouts have replicated experts and several partial sums per token
// (tinyA: 16 experts, top 4), where map order or the token's place in the
// step would show.
var sumLayouts = []sumLayout{{2, 1, 4}, {3, 1, 5}, {4, 2, 8}, {4, 4, 6}, {8, 2, 16}}

// TestDistributedDeterministic: the same step run again on the same
// cluster gives bitwise-identical logits, on layouts with replicas.
func TestDistributedDeterministic(t *testing.T) {
	checkLeaks(t)
	for _, l := range sumLayouts {
		t.Run(l.String(), func(t *testing.T) {
			run := sumCluster(t, l, false)
			seqs := testSeqs(t, vocabOf(t))
			first := run(1, seqs)
			for step := uint64(2); step <= 4; step++ {
				again := run(step, seqs)
				for _, s := range seqs {
					if d := bitwiseDiff(again[s.ID], first[s.ID]); d != "" {
						t.Errorf("step %d, sequence %d differs from step 1: %s", step, s.ID, d)
					}
				}
			}
		})
	}
}

// TestDistributedBatchInvariant: a sequence's logits are bitwise the same
// alone, in a batch, and at another place in the batch.
func TestDistributedBatchInvariant(t *testing.T) {
	checkLeaks(t)
	for _, l := range sumLayouts {
		t.Run(l.String(), func(t *testing.T) {
			run := sumCluster(t, l, false)
			seqs := testSeqs(t, vocabOf(t))
			batch := run(1, seqs)
			for i, variant := range [][]model.SeqInput{{seqs[2]}, {seqs[2], seqs[0]}, {seqs[1]}, {seqs[1], seqs[2]}} {
				got := run(uint64(2+i), variant)
				for _, s := range variant {
					if d := bitwiseDiff(got[s.ID], batch[s.ID]); d != "" {
						t.Errorf("batch %d: sequence %d differs from the full batch: %s", i, s.ID, d)
					}
				}
			}
		})
	}
}

// vocabOf is tinyA's vocabulary size.
func vocabOf(t *testing.T) int {
	t.Helper()
	cfg, err := model.LoadConfig(tinyA)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.VocabSize
}

// TestLayoutInvariantEqualsOneProcess: with LayoutInvariantMoE the MoE
// sums follow one process's order whatever the placement, so with expert
// parallelism alone (T = 1) the logits equal one process's bitwise, with
// and without replicas. With T > 1 the attention all-reduce adds the ranks'
// partial o_proj outputs (docs/wire.md), which one process computes as one
// dot product: the logits then equal, bitwise, those of every other
// placement and group count with the same T, and one process's within
// 1e-5.
func TestLayoutInvariantEqualsOneProcess(t *testing.T) {
	checkLeaks(t)
	want := localLogits(t, tinyA)
	byTP := map[int][][]float32{} // the first result per T
	for _, l := range []sumLayout{{2, 1, 0}, {2, 1, 4}, {4, 1, 7}, {8, 1, 9}, {2, 2, 0}, {4, 2, 0}, {4, 2, 8}, {8, 2, 16}, {8, 8, 0}, {8, 8, 12}} {
		t.Run(l.String(), func(t *testing.T) {
			run := sumCluster(t, l, true)
			seqs := testSeqs(t, vocabOf(t))
			got := run(1, seqs)
			var rows [][]float32
			for _, s := range seqs {
				rows = append(rows, got[s.ID]...)
			}
			if l.tp == 1 {
				if d := bitwiseDiff(rows, want); d != "" {
					t.Errorf("differs from one process: %s", d)
				}
				return
			}
			for i := range want {
				if e := relErr(rows[i], want[i]); math.IsNaN(e) || e > 1e-5 {
					t.Errorf("row %d: relative error %.3g from one process", i, e)
				}
			}
			if first, ok := byTP[l.tp]; ok {
				if d := bitwiseDiff(rows, first); d != "" {
					t.Errorf("differs from the first layout with T = %d: %s", l.tp, d)
				}
			} else {
				byTP[l.tp] = rows
			}
		})
	}
}
