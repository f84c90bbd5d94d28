package model_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/kernels"
	"github.com/moemesh/moemesh/model"
)

// TestAddAndDropExperts: a model opened with half of the experts, given
// the other half with LoadExperts and AddExperts, computes the logits of
// the whole model; DropExperts brings the resident bytes back.
func TestAddAndDropExperts(t *testing.T) {
	dir := filepath.Join("testdata", "tiny-a")
	open := func(experts [][]int) *model.Model {
		t.Helper()
		m, err := model.Open(dir, kernels.NewCPU(), model.OpenOptions{Shard: model.Shard{Experts: experts}, BlockSize: 4, ContextTokens: 64, CloseBackend: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return m
	}
	full := open(nil)
	layers, n := full.Cfg.NumHiddenLayers, full.Cfg.NumExperts
	lo, hi := make([][]int, layers), make([][]int, layers)
	for l := range layers {
		for e := range n {
			if e < n/2 {
				lo[l] = append(lo[l], e)
			} else {
				hi[l] = append(hi[l], e)
			}
		}
	}
	part := open(lo)
	before := part.W.ResidentBytes()
	add, err := part.LoadExperts(context.Background(), hi, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := part.W.ResidentBytes(); got != before {
		t.Errorf("LoadExperts changed the model: %d resident bytes, was %d", got, before)
	}
	part.AddExperts(add)
	if got, want := part.W.ResidentBytes(), full.W.ResidentBytes(); got != want {
		t.Errorf("after AddExperts %d resident bytes, the whole model has %d", got, want)
	}
	forward := func(m *model.Model) [][]float32 {
		t.Helper()
		rows, err := m.Forward(context.Background(), []model.SeqInput{{ID: 1, Tokens: []int32{3, 1, 4, 1, 5}, Blocks: blocksFor(t, m, 5), AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	want, got := forward(full), forward(part)
	for i := range want {
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("row %d id %d: %v, the whole model gives %v", i, j, got[i][j], want[i][j])
			}
		}
	}
	part.DropExperts(hi)
	if got := part.W.ResidentBytes(); got != before {
		t.Errorf("after DropExperts %d resident bytes, want %d", got, before)
	}
}
