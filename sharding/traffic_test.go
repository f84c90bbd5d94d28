package sharding

import (
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMoEDispatch(t *testing.T) {
	// Worker 0 hosts 0 and 1; worker 1 hosts 0 and 2; worker 2 hosts 0 and 3.
	p := &Placement{Workers: 3, Experts: 4,
		Slots:  [][]int{{0, 1}, {0, 2}, {0, 3}},
		Owners: [][]int{{0, 1, 2}, {0}, {1}, {2}},
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		worker    int
		chosen    [][]int
		keys      []uint64
		want      []int
		wantBytes int64
	}{
		{"all local", 0, [][]int{{0, 1}, {1, 0}}, nil, []int{2, 0, 0}, 0},
		{"two experts on one peer count once", 0, [][]int{{2, 1}, {2, 3}}, nil, []int{1, 2, 1}, 3 * 8 * 2},
		{"replicated expert stays local", 1, [][]int{{0, 1}}, []uint64{2}, []int{1, 1, 0}, 8 * 2},
		{"no tokens", 2, nil, nil, []int{0, 0, 0}, 0},
		{"keys pick nothing for local replicas", 2, [][]int{{0}, {0}, {0}}, []uint64{0, 1, 2}, []int{0, 0, 3}, 0},
		{"every peer", 0, [][]int{{3, 2, 1}}, nil, []int{1, 1, 1}, 2 * 8 * 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := MoEDispatch(p, tc.worker, tc.chosen, tc.keys)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("MoEDispatch (-want +got):\n%s", diff)
			}
			if b := MoETrafficBytes(p, tc.worker, tc.chosen, tc.keys, 8, 2); b != tc.wantBytes {
				t.Errorf("MoETrafficBytes = %d, want %d", b, tc.wantBytes)
			}
		})
	}
}

// TestMoETrafficBruteForce compares MoETrafficBytes with a direct count over
// random placements with replicas and random top-k choices.
func TestMoETrafficBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const hidden, bpe = 4096, 2
	for i := range 300 {
		experts := 8 + rng.IntN(120)
		workers := 1 + rng.IntN(16)
		extra := rng.IntN(experts*(workers-1)/4 + 1)
		p, err := PlaceExperts(experts, workers, extra, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		topk := 1 + rng.IntN(min(8, experts))
		tokens := rng.IntN(50)
		chosen := make([][]int, tokens)
		keys := make([]uint64, tokens)
		for j := range chosen {
			chosen[j] = rng.Perm(experts)[:topk]
			keys[j] = rng.Uint64()
		}
		worker := rng.IntN(workers)
		var want int64
		for j, es := range chosen {
			dest := map[int]bool{}
			for _, e := range es {
				d := -1
				for _, o := range p.Owners[e] {
					if o == worker {
						d = worker
					}
				}
				if d < 0 {
					d = p.Owners[e][keys[j]%uint64(len(p.Owners[e]))]
				}
				if d != worker {
					dest[d] = true
				}
			}
			want += int64(len(dest))
		}
		want *= hidden * bpe
		got := MoETrafficBytes(p, worker, chosen, keys, hidden, bpe)
		if got != want {
			t.Fatalf("case %d (E%d W%d X%d k%d): %d bytes, want %d", i, experts, workers, extra, topk, got, want)
		}
		if bound := int64(tokens) * int64(min(topk, workers-1)) * hidden * bpe; got > bound {
			t.Fatalf("case %d: %d bytes above the bound %d", i, got, bound)
		}
	}
}

// TestMoETrafficQwen3 checks the QWEN3.md bound for one 235B-A22B token:
// at most 8 × 4096 × 2 B = 64 KiB of dispatch per MoE layer, none on one
// worker.
func TestMoETrafficQwen3(t *testing.T) {
	shape := Qwen3_235B_A22B()
	chosen := [][]int{{0, 1, 2, 3, 4, 5, 6, 7}, {8, 16, 24, 32, 40, 48, 56, 64}}
	for _, tc := range []struct {
		workers int
		want    int64
	}{
		{1, 0},
		{8, (7 + 0) * 4096 * 2},  // token 0: seven peers; token 1: all experts on worker 0
		{16, (7 + 1) * 4096 * 2}, // token 1: experts on workers 0 and 8
		{64, (7 + 7) * 4096 * 2},
	} {
		p, err := PlaceExperts(shape.Experts, tc.workers, 0, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := MoETrafficBytes(p, 0, chosen, nil, shape.Hidden, shape.BytesPerParam)
		if got != tc.want || got > int64(len(chosen))*64<<10 {
			t.Errorf("%d workers: %d bytes, want %d (at most 64 KiB a token)", tc.workers, got, tc.want)
		}
	}
}

func TestMoEDispatchKeyMismatchPanics(t *testing.T) {
	p, _ := PlaceExperts(4, 2, 0, 0, nil)
	defer func() {
		if recover() == nil {
			t.Error("MoEDispatch with 1 key for 2 tokens did not panic")
		}
	}()
	MoEDispatch(p, 0, [][]int{{0}, {1}}, []uint64{7})
}
