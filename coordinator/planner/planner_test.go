package planner

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/model"
)

func tinyConfig(t *testing.T) *model.Config {
	t.Helper()
	cfg, err := model.LoadConfig("../../model/testdata/tiny-a")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func workers(ids ...string) []Worker {
	var out []Worker
	for _, id := range ids {
		out = append(out, Worker{ID: id})
	}
	return out
}

func TestInitial(t *testing.T) {
	cfg := tinyConfig(t) // 8 query heads, 2 KV heads, 16 experts
	tests := []struct {
		name        string
		cands       []Worker
		o           Options
		wantIDs     []string
		wantSpares  int
		wantTP, wDP int
		wantErr     error
	}{
		{name: "all", cands: workers("w2", "w10", "w1"), o: Options{}, wantIDs: []string{"w1", "w2", "w10"}, wantTP: 1, wDP: 3},
		{name: "spares", cands: workers("w3", "w1", "w2", "w4"), o: Options{Workers: 2, TP: 2}, wantIDs: []string{"w1", "w2"}, wantSpares: 2, wantTP: 2, wDP: 1},
		{name: "too few", cands: workers("w1"), o: Options{Workers: 2}, wantErr: ErrNotEnough},
		{name: "none", cands: nil, o: Options{}, wantErr: ErrNotEnough},
		{name: "tp does not divide", cands: workers("w1", "w2", "w3"), o: Options{Workers: 3, TP: 2}, wantErr: ErrNoFit},
		{name: "memory", cands: []Worker{{ID: "w1", MemoryBytes: 1000}}, o: Options{}, wantErr: ErrNoFit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Initial(cfg, tc.cands, tc.o)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Initial: error %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.wantIDs, p.IDs()); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			if len(p.Spares) != tc.wantSpares || p.Layout.TP != tc.wantTP || p.Layout.DP != tc.wDP {
				t.Errorf("spares %d tp %d dp %d, want %d %d %d", len(p.Spares), p.Layout.TP, p.Layout.DP, tc.wantSpares, tc.wantTP, tc.wDP)
			}
			if err := p.Placement.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestReplan(t *testing.T) {
	cfg := tinyConfig(t)
	prev, err := Initial(cfg, workers("w1", "w2", "w3", "w4"), Options{Workers: 4, TP: 2})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dead    []string
		spares  []Worker
		wantIDs []string
		wantTP  int
	}{
		{name: "spare takes the index", dead: []string{"w2"}, spares: workers("w9"), wantIDs: []string{"w1", "w9", "w3", "w4"}, wantTP: 2},
		{name: "shrink: most workers first", dead: []string{"w2"}, wantIDs: []string{"w1", "w3", "w4"}, wantTP: 1},
		{name: "shrink keeps tp when it can", dead: []string{"w2", "w3"}, wantIDs: []string{"w1", "w4"}, wantTP: 2},
		{name: "shrink to one", dead: []string{"w1", "w2", "w3"}, wantIDs: []string{"w4"}, wantTP: 1},
		{name: "dead spare ignored", dead: []string{"w2", "w9"}, spares: workers("w9"), wantIDs: []string{"w1", "w3", "w4"}, wantTP: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dead := map[string]bool{}
			for _, d := range tc.dead {
				dead[d] = true
			}
			p, err := Replan(cfg, prev, dead, tc.spares, Options{Epoch: 2})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantIDs, p.IDs()); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			if p.Layout.TP != tc.wantTP || p.Placement.Epoch != 2 {
				t.Errorf("tp %d epoch %d, want %d 2", p.Layout.TP, p.Placement.Epoch, tc.wantTP)
			}
		})
	}
	if _, err := Replan(cfg, prev, map[string]bool{"w1": true, "w2": true, "w3": true, "w4": true}, nil, Options{}); !errors.Is(err, ErrNoFit) {
		t.Errorf("everyone dead: %v, want ErrNoFit", err)
	}
}

// TestSpareSlotsCountInMemory: spare expert slots are reserved in each
// worker's memory, so a worker that holds the placement but not its spare
// slots does not fit.
func TestSpareSlotsCountInMemory(t *testing.T) {
	cfg := tinyConfig(t)
	p, err := Initial(cfg, []Worker{{ID: "w1"}, {ID: "w2"}}, Options{KVTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	need := uint64(p.Memory[0].Total)
	fits := []Worker{{ID: "w1", MemoryBytes: need}, {ID: "w2", MemoryBytes: need}}
	if _, err := Initial(cfg, fits, Options{KVTokens: 16}); err != nil {
		t.Fatalf("without spare slots: %v", err)
	}
	if _, err := Initial(cfg, fits, Options{KVTokens: 16, SpareSlots: 1}); !errors.Is(err, ErrNoFit) {
		t.Errorf("one spare slot per layer on a worker with no room for it: %v, want ErrNoFit", err)
	}
}
