package sharding

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestModelShape(t *testing.T) {
	tests := []struct {
		name                 string
		shape                ModelShape
		wantParams           int64
		wantMoELayers        int
		wantAttn, wantExpert int64
	}{
		{"235B-A22B", Qwen3_235B_A22B(), 235_093_634_560, 94, 71_307_520, 18_874_368},
		{"30B-A3B", Qwen3_30B_A3B(), 30_532_122_624, 48, 18_876_672, 4_718_592},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.shape.Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			got := []int64{tc.shape.Params(), int64(tc.shape.MoELayers()), tc.shape.AttentionParams(), tc.shape.ExpertParams()}
			want := []int64{tc.wantParams, int64(tc.wantMoELayers), tc.wantAttn, tc.wantExpert}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("[params, MoE layers, attention, expert] (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIsMoELayer(t *testing.T) {
	s := ModelShape{Layers: 8, Experts: 4, DecoderSparseStep: 2, MLPOnlyLayers: []int{5}}
	var got []int
	for i := range s.Layers {
		if s.IsMoELayer(i) {
			got = append(got, i)
		}
	}
	if diff := cmp.Diff([]int{1, 3, 7}, got); diff != "" {
		t.Errorf("MoE layers (-want +got):\n%s", diff)
	}
	if s.MoELayers() != 3 {
		t.Errorf("MoELayers() = %d, want 3", s.MoELayers())
	}
	dense := ModelShape{Layers: 4}
	if dense.MoELayers() != 0 {
		t.Errorf("dense MoELayers() = %d, want 0", dense.MoELayers())
	}
}

func TestModelShapeValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*ModelShape)
		wantErr error
	}{
		{"zero layers", func(s *ModelShape) { s.Layers = 0 }, ErrInvalid},
		{"zero bytes", func(s *ModelShape) { s.BytesPerParam = 0 }, ErrInvalid},
		{"topk above experts", func(s *ModelShape) { s.TopK = 200 }, ErrInvalid},
		{"negative experts", func(s *ModelShape) { s.Experts = -1 }, ErrInvalid},
		{"dense layers without width", func(s *ModelShape) { s.MLPOnlyLayers = []int{0}; s.Intermediate = 0 }, ErrInvalid},
		{"heads not multiple of kv", func(s *ModelShape) { s.KVHeads = 5 }, ErrIndivisible},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := Qwen3_235B_A22B()
			tc.mutate(&s)
			if err := s.Validate(); !errors.Is(err, tc.wantErr) {
				t.Errorf("Validate() = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestWorkerMemoryWhole checks that one worker holding everything needs
// exactly Params × BytesPerParam, and the KV cache matches QWEN3.md:
// 188 KiB a token for 235B-A22B.
func TestWorkerMemoryWhole(t *testing.T) {
	for _, tc := range []struct {
		shape      ModelShape
		kvPerToken int64
	}{
		{Qwen3_235B_A22B(), 188 << 10},
		{Qwen3_30B_A3B(), 96 << 10},
	} {
		layout, _ := NewLayout(1, 1)
		p, err := PlaceExperts(tc.shape.Experts, 1, 0, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := WorkerMemory(tc.shape, layout, p, 0, 1000)
		if want := tc.shape.Params() * int64(tc.shape.BytesPerParam); m.Weights != want {
			t.Errorf("%d layers: weights %d, want %d", tc.shape.Layers, m.Weights, want)
		}
		if m.KVCache != 1000*tc.kvPerToken || m.Total != m.Weights+m.KVCache {
			t.Errorf("%d layers: KV cache %d, total %d; want %d, %d", tc.shape.Layers, m.KVCache, m.Total, 1000*tc.kvPerToken, m.Weights+1000*tc.kvPerToken)
		}
	}
}

// TestPlanMemoryQwen3 covers Qwen3-235B-A22B and Qwen3-30B-A3B for T in
// {1,2,4,8,16} and N up to 64: per-group sums follow the split formulas and
// the flagship's weights per worker match the sizing in QWEN3.md.
func TestPlanMemoryQwen3(t *testing.T) {
	const kvTokens = 32768
	for _, shape := range []ModelShape{Qwen3_235B_A22B(), Qwen3_30B_A3B()} {
		perWorker := map[[2]int]int64{}  // (N, T) -> max weights
		perExperts := map[[2]int]int64{} // (N, T) -> max expert bytes
		for _, tp := range []int{1, 2, 4, 8, 16} {
			for n := tp; n <= 64; n += tp {
				t.Run(fmt.Sprintf("%dL/N%d/T%d", shape.Layers, n, tp), func(t *testing.T) {
					layout, err := NewLayout(n, tp)
					if err != nil {
						t.Fatal(err)
					}
					p, err := PlaceExperts(shape.Experts, n, 0, 0, nil)
					if err != nil {
						t.Fatal(err)
					}
					plan, err := PlanMemory(shape, layout, p, kvTokens)
					if err != nil {
						t.Fatalf("PlanMemory = %v", err)
					}
					checkPlan(t, shape, layout, p, plan, kvTokens)
					var most, mostExperts int64
					for _, m := range plan {
						most = max(most, m.Weights)
						mostExperts = max(mostExperts, m.Experts)
					}
					perWorker[[2]int{n, tp}] = most
					perExperts[[2]int{n, tp}] = mostExperts
				})
			}
		}
		if shape.Layers != 94 {
			continue
		}
		for _, tp := range []int{1, 2, 4, 8} {
			w8, w16 := perWorker[[2]int{8, tp}], perWorker[[2]int{16, tp}]
			if w8 <= 55e9 {
				t.Errorf("235B on 8 workers, T=%d: %.1f GB weights per worker, want > 55 GB", tp, float64(w8)/1e9)
			}
			// Experts halve exactly; replicated attention and embeddings at
			// T=1 keep the whole a little above half.
			if r := float64(w16) / float64(w8); r < 0.45 || r > 0.65 {
				t.Errorf("235B, T=%d: 16 workers need %.2f of 8 workers' weights, want about half", tp, r)
			}
			if e8, e16 := perExperts[[2]int{8, tp}], perExperts[[2]int{16, tp}]; 2*e16 != e8 {
				t.Errorf("235B, T=%d: expert bytes %d on 16 workers, want half of %d", tp, e16, e8)
			}
		}
	}
}

// checkPlan checks per-worker fields against whole-model totals.
func checkPlan(t *testing.T, shape ModelShape, layout Layout, p *Placement, plan []MemoryEstimate, kvTokens int) {
	t.Helper()
	b := int64(shape.BytesPerParam)
	h, hd := int64(shape.Hidden), int64(shape.HeadDim)
	layers, moe := int64(shape.Layers), int64(shape.MoELayers())
	tp := int64(layout.TP)
	repl := int64(KVReplicas(shape.KVHeads, layout.TP))
	var experts int64
	for _, m := range plan {
		experts += m.Experts
		if m.Weights != m.Attention+m.DenseMLP+m.Experts+m.Router+m.Embeddings || m.Total != m.Weights+m.KVCache {
			t.Errorf("worker %d: fields do not add up: %+v", m.Worker, m)
		}
		if want := moe * int64(shape.Experts) * h * b; m.Router != want {
			t.Errorf("worker %d: router %d, want %d", m.Worker, m.Router, want)
		}
		if want := int64(len(p.Slots[m.Worker])) * shape.ExpertParams() * moe * b; m.Experts != want {
			t.Errorf("worker %d: experts %d, want %d", m.Worker, m.Experts, want)
		}
	}
	slots := 0
	for _, s := range p.Slots {
		slots += len(s)
	}
	if want := int64(slots) * shape.ExpertParams() * moe * b; experts != want {
		t.Errorf("experts over all workers %d, want %d", experts, want)
	}
	for g := range layout.DP {
		var attn, emb, dense, kv int64
		for _, w := range layout.GroupWorkers(g) {
			attn += plan[w].Attention
			emb += plan[w].Embeddings
			dense += plan[w].DenseMLP
			kv += plan[w].KVCache
		}
		q := int64(shape.Heads) * hd
		kvw := int64(shape.KVHeads) * hd * repl
		if want := layers * (2*h*q + 2*h*kvw + tp*(2*hd+2*h)) * b; attn != want {
			t.Errorf("group %d: attention %d, want %d", g, attn, want)
		}
		tables := int64(2)
		if shape.TieEmbeddings {
			tables = 1
		}
		if want := (tables*int64(shape.Vocab)*h + tp*h) * b; emb != want {
			t.Errorf("group %d: embeddings %d, want %d", g, emb, want)
		}
		if want := (layers - moe) * 3 * h * int64(shape.Intermediate) * b; dense != want {
			t.Errorf("group %d: dense MLP %d, want %d", g, dense, want)
		}
		if want := int64(kvTokens) * layers * kvw * 2 * b; kv != want {
			t.Errorf("group %d: KV cache %d, want %d", g, kv, want)
		}
	}
}

func TestPlanMemoryDense(t *testing.T) {
	// A small dense Qwen3-like shape: 12 heads over 4 KV heads, every layer dense.
	shape := ModelShape{Layers: 4, Hidden: 64, Heads: 12, KVHeads: 4, HeadDim: 16,
		Intermediate: 150, Vocab: 1001, BytesPerParam: 4, TieEmbeddings: true}
	for _, tp := range []int{1, 2, 4} {
		layout, err := NewLayout(2*tp, tp)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := PlanMemory(shape, layout, nil, 10)
		if err != nil {
			t.Fatalf("T=%d: PlanMemory = %v", tp, err)
		}
		var emb int64
		for _, w := range layout.GroupWorkers(0) {
			emb += plan[w].Embeddings
			if plan[w].Experts != 0 || plan[w].Router != 0 {
				t.Errorf("T=%d worker %d: dense model with expert bytes %+v", tp, w, plan[w])
			}
		}
		if want := int64(1001*64+tp*64) * 4; emb != want {
			t.Errorf("T=%d: tied embeddings %d over the group, want %d", tp, emb, want)
		}
		checkPlan(t, shape, layout, &Placement{Slots: make([][]int, layout.Workers)}, plan, 10)
	}
}

func TestPlanMemoryErrors(t *testing.T) {
	shape := Qwen3_235B_A22B()
	l8, _ := NewLayout(8, 8)
	l6, _ := NewLayout(6, 3)
	p8, _ := PlaceExperts(128, 8, 0, 0, nil)
	p6, _ := PlaceExperts(128, 6, 0, 0, nil)
	p16, _ := PlaceExperts(16, 8, 0, 0, nil)
	broken, _ := PlaceExperts(128, 8, 0, 0, nil)
	broken.Owners[5] = nil
	bad := shape
	bad.Hidden = 0
	tests := []struct {
		name     string
		shape    ModelShape
		layout   Layout
		p        *Placement
		kvTokens int
		wantErr  error
	}{
		{"ok", shape, l8, p8, 0, nil},
		{"tp 3 splits no heads", shape, l6, p6, 0, ErrIndivisible},
		{"placement for other workers", shape, l8, p6, 0, ErrInconsistent},
		{"placement for other experts", shape, l8, p16, 0, ErrInconsistent},
		{"no placement", shape, l8, nil, 0, ErrInconsistent},
		{"broken placement", shape, l8, broken, 0, ErrInconsistent},
		{"bad shape", bad, l8, p8, 0, ErrInvalid},
		{"bad layout", shape, Layout{Workers: 8, DP: 2, TP: 2}, p8, 0, ErrInvalid},
		{"negative tokens", shape, l8, p8, -1, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PlanMemory(tc.shape, tc.layout, tc.p, tc.kvTokens)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("PlanMemory error = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestWorkerMemoryPanics(t *testing.T) {
	l8, _ := NewLayout(8, 8)
	p8, _ := PlaceExperts(128, 8, 0, 0, nil)
	for _, w := range []int{-1, 8} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("WorkerMemory(worker %d of 8) did not panic", w)
				}
			}()
			WorkerMemory(Qwen3_235B_A22B(), l8, p8, w, 0)
		}()
	}
}

// TestKVCacheBytes checks the cluster-wide KV cache against the per-worker
// figures of PlanMemory and against hand-computed sizes.
func TestKVCacheBytes(t *testing.T) {
	tiny := ModelShape{Layers: 4, Hidden: 64, Heads: 8, KVHeads: 2, HeadDim: 16, Vocab: 2048, BytesPerParam: 4, Intermediate: 128}
	for _, tc := range []struct {
		name          string
		shape         ModelShape
		workers, tp   int
		tokens, bytes int
		want          int64
		wantErr       error
	}{
		{"tiny one process", tiny, 1, 1, 8192, 4, 8192 * 4 * 2 * 2 * 16 * 4, nil},
		{"tiny zero tokens", tiny, 1, 1, 0, 4, 0, nil},
		{"tiny two groups", tiny, 2, 1, 100, 4, 2 * 100 * 4 * 2 * 2 * 16 * 4, nil},
		{"tiny tp 2 splits heads", tiny, 2, 2, 100, 4, 100 * 4 * 2 * 2 * 16 * 4, nil},
		{"tiny tp 4 replicates kv heads", tiny, 4, 4, 100, 4, 100 * 4 * 2 * 4 * 16 * 4, nil},
		{"235B per token bf16", Qwen3_235B_A22B(), 1, 1, 1, 2, 188 << 10, nil},
		{"30B 32k tokens f32", Qwen3_30B_A3B(), 8, 8, 32768, 4, 32768 * 2 * (96 << 10) * 2, nil},
		{"negative tokens", tiny, 1, 1, -100, 4, 0, ErrInvalid},
		{"zero bytes per value", tiny, 1, 1, 1, 0, 0, ErrInvalid},
		{"overflow", tiny, 1, 1, math.MaxInt, 4, 0, ErrInvalid},
		{"tp does not divide heads", ModelShape{Layers: 1, Hidden: 8, Heads: 12, KVHeads: 4, HeadDim: 2, Vocab: 8, BytesPerParam: 2, Intermediate: 8}, 8, 8, 1, 4, 0, ErrIndivisible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layout, err := NewLayout(tc.workers, tc.tp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := KVCacheBytes(tc.shape, layout, tc.tokens, tc.bytes)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("KVCacheBytes() error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("KVCacheBytes() = %d, %v; want %d", got, err, tc.want)
			}
			// With the weights' own type the sum equals PlanMemory's.
			if tc.bytes == tc.shape.BytesPerParam && tc.shape.Experts == 0 {
				plan, err := PlanMemory(tc.shape, layout, nil, tc.tokens)
				if err != nil {
					t.Fatal(err)
				}
				var sum int64
				for _, m := range plan {
					sum += m.KVCache
				}
				if sum != got {
					t.Errorf("PlanMemory KV sum %d, KVCacheBytes %d", sum, got)
				}
			}
		})
	}
}
