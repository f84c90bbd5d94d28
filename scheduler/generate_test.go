package scheduler_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/sampling"
	"github.com/moemesh/moemesh/scheduler"
)

// TestPools: a sequence takes blocks from its group's pool only, a full
// group is ErrKVFull with nothing taken while another group has room,
// Release gives everything back, and a group function out of range is
// ErrBadRequest.
func TestPools(t *testing.T) {
	p := scheduler.NewPools(2, 4, 3, nil) // id mod 2; 3 blocks of 4 each
	a, b, c := &scheduler.Seq{ID: 0}, &scheduler.Seq{ID: 1}, &scheduler.Seq{ID: 2}
	for _, step := range []struct {
		name string
		s    *scheduler.Seq
		n    int
		want error
	}{
		{"a takes 2 of group 0", a, 5, nil},
		{"b takes 3 of group 1", b, 12, nil},
		{"c would need 2 of group 0's 1", c, 8, scheduler.ErrKVFull},
		{"c takes group 0's last", c, 4, nil},
		{"a grows into a full group", a, 9, scheduler.ErrKVFull},
		{"a within its blocks", a, 8, nil},
	} {
		if err := p.Reserve(step.s, step.n); !errors.Is(err, step.want) || (err != nil) != (step.want != nil) {
			t.Fatalf("%s: %v, want %v", step.name, err, step.want)
		}
	}
	if diff := cmp.Diff([][]int32{{0, 1}, {0, 1, 2}, {2}}, [][]int32{a.Blocks, b.Blocks, c.Blocks}); diff != "" {
		t.Errorf("block tables (-want +got):\n%s", diff)
	}
	if got := p.Free(); got != 0 {
		t.Errorf("%d blocks free, want 0", got)
	}
	a.Len = 8
	for _, s := range []*scheduler.Seq{a, b, c} {
		p.Release(s)
	}
	if a.Blocks != nil || a.Len != 0 {
		t.Errorf("released sequence keeps blocks %v and length %d", a.Blocks, a.Len)
	}
	if got := p.Free(); got != 6 {
		t.Errorf("%d blocks free after release, want 6", got)
	}

	bad := scheduler.NewPools(2, 4, 3, func(id uint64) int { return int(id) })
	if err := bad.Reserve(&scheduler.Seq{ID: 2}, 1); !errors.Is(err, scheduler.ErrBadRequest) {
		t.Errorf("group 2 of 2: %v, want ErrBadRequest", err)
	}
}

type goldenPrompt struct {
	Tokens []int32 `json:"tokens"`
	Greedy []int32 `json:"greedy"`
}

// loadGolden reads the tiny-a fixture's Hugging Face greedy continuations.
func loadGolden(t *testing.T) []goldenPrompt {
	t.Helper()
	f, err := os.Open(filepath.Join(tinyDir, "golden.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Prompts []goldenPrompt `json:"prompts"`
	}
	if err := json.NewDecoder(zr).Decode(&g); err != nil {
		t.Fatal(err)
	}
	if len(g.Prompts) == 0 {
		t.Fatal("golden file holds no prompts")
	}
	return g.Prompts
}

func greedyRequests(t *testing.T, g []goldenPrompt) []scheduler.GenerateRequest {
	t.Helper()
	var reqs []scheduler.GenerateRequest
	for _, p := range g {
		smp, err := sampling.New(sampling.Greedy())
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, scheduler.GenerateRequest{Prompt: p.Tokens, MaxTokens: len(p.Greedy), Sampler: smp})
	}
	return reqs
}

// TestGenerateGolden: every golden prompt generated in one batch gives the
// reference's greedy continuation, emit sees each token in order, and the
// pool gets every block back.
func TestGenerateGolden(t *testing.T) {
	g := loadGolden(t)
	m := openTiny(t, 256)
	pool := scheduler.ModelPools(m)
	emitted := make([][]int32, len(g))
	got, err := scheduler.Generate(context.Background(), m, pool, greedyRequests(t, g), func(seq int, id int32) error {
		emitted[seq] = append(emitted[seq], id)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var want [][]int32
	for _, p := range g {
		want = append(want, p.Greedy)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("generated (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, emitted); diff != "" {
		t.Errorf("emitted (-generated +emitted):\n%s", diff)
	}
	if pool.Free() != m.KV.NumBlocks {
		t.Errorf("%d of %d blocks free after Generate", pool.Free(), m.KV.NumBlocks)
	}
}

// remoteStepper samples "where the logits are", as a cluster's workers do:
// a sampler per sequence, fresh when fed from position 0. It records the
// sequences released.
type remoteStepper struct {
	m        *model.Model
	samplers map[uint64]*histSampler
	released []uint64
}

var _ scheduler.SamplingStepper = (*remoteStepper)(nil)

func (r *remoteStepper) Forward(ctx context.Context, seqs []model.SeqInput) ([][]float32, error) {
	return nil, errors.New("remoteStepper: Forward called, want ForwardSample")
}

func (r *remoteStepper) ForwardSample(ctx context.Context, seqs []model.SeqInput, params []sampling.Params) ([]int32, error) {
	rows, err := r.m.Forward(ctx, seqs)
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(seqs))
	for i, s := range seqs {
		if s.StartPos == 0 {
			smp, err := sampling.New(params[i])
			if err != nil {
				return nil, err
			}
			hs := &histSampler{s: smp}
			for _, id := range s.Tokens {
				hs.prompt = append(hs.prompt, int(id))
			}
			r.samplers[s.ID] = hs
		}
		hs := r.samplers[s.ID]
		id := hs.s.Sample(rows[i], hs.prompt, hs.gen)
		hs.gen = append(hs.gen, id)
		out[i] = int32(id)
	}
	return out, nil
}

func (r *remoteStepper) Release(ids []uint64) { r.released = append(r.released, ids...) }

// TestGenerateSamplingStepper: on a SamplingStepper, Generate sends each
// sequence's sampling parameters and gets the tokens a local sampler with
// the same parameters gives; each sequence ends (a stop id or MaxTokens)
// and is released exactly once.
func TestGenerateSamplingStepper(t *testing.T) {
	m := openTiny(t, 256)
	params := sampling.NonThinkingDefaults()
	params.Seed = 5
	reqs := func() []scheduler.GenerateRequest {
		var rs []scheduler.GenerateRequest
		for i, n := range []int{3, 9, 1} {
			p := params
			p.Seed += uint64(i)
			smp, err := sampling.New(p)
			if err != nil {
				t.Fatal(err)
			}
			prompt := make([]int32, n)
			for j := range prompt {
				prompt[j] = int32((i*131 + j*977 + 5) % m.Cfg.VocabSize)
			}
			rs = append(rs, scheduler.GenerateRequest{Prompt: prompt, MaxTokens: 6 + 3*i, Sampler: smp})
		}
		return rs
	}
	want, err := scheduler.Generate(context.Background(), m, scheduler.ModelPools(m), reqs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Stop sequence 1 at its third token: it ends there, the others not.
	rs := reqs()
	rs[1].Stop = []int32{want[1][2]}
	want[1] = want[1][:slices.Index(want[1], want[1][2])+1]
	r := &remoteStepper{m: m, samplers: map[uint64]*histSampler{}}
	got, err := scheduler.Generate(context.Background(), r, scheduler.ModelPools(m), rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sampled remotely (-local +remote):\n%s", diff)
	}
	slices.Sort(r.released)
	if diff := cmp.Diff([]uint64{0, 1, 2}, r.released); diff != "" {
		t.Errorf("released (-want +got):\n%s", diff)
	}
}

// TestGenerateErrors: bad requests and a KV cache too small fail with the
// scheduler's sentinels, and every block taken is returned.
func TestGenerateErrors(t *testing.T) {
	m := openTiny(t, 16) // 4 blocks of 4
	smp, err := sampling.New(sampling.Greedy())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		reqs []scheduler.GenerateRequest
		want error
	}{
		{"empty prompt", []scheduler.GenerateRequest{{Prompt: []int32{1}, MaxTokens: 1, Sampler: smp}, {MaxTokens: 1, Sampler: smp}}, scheduler.ErrBadRequest},
		{"no sampler", []scheduler.GenerateRequest{{Prompt: []int32{1}, MaxTokens: 1}}, scheduler.ErrBadRequest},
		{"prompts over the cache", []scheduler.GenerateRequest{{Prompt: make([]int32, 9), MaxTokens: 1, Sampler: smp}, {Prompt: make([]int32, 9), MaxTokens: 1, Sampler: smp}}, scheduler.ErrKVFull},
		{"generation over the cache", []scheduler.GenerateRequest{{Prompt: make([]int32, 14), MaxTokens: 5, Sampler: smp}}, scheduler.ErrKVFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := scheduler.ModelPools(m)
			if _, err := scheduler.Generate(context.Background(), m, pool, tc.reqs, nil); !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if pool.Free() != m.KV.NumBlocks {
				t.Errorf("%d of %d blocks free after a failed Generate", pool.Free(), m.KV.NumBlocks)
			}
		})
	}
}
