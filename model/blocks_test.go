package model_test

import (
	"testing"

	"github.com/moemesh/moemesh/model"
)

// kvBlocks hands out the block ids of a model's KV cache to the tests'
// sequences, lowest id first, and takes them back. The model only stores
// the cache; in serving the scheduler's BlockPool does this bookkeeping.
type kvBlocks struct {
	size int
	free []int32 // popped from the end
}

func newKVBlocks(m *model.Model) *kvBlocks {
	k := &kvBlocks{size: m.KV.BlockSize}
	for i := m.KV.NumBlocks - 1; i >= 0; i-- {
		k.free = append(k.free, int32(i))
	}
	return k
}

// reserve grows the block table *b to hold positions [0, n).
func (k *kvBlocks) reserve(t testing.TB, b *[]int32, n int) {
	t.Helper()
	need := (n+k.size-1)/k.size - len(*b)
	if need > len(k.free) {
		t.Fatalf("KV cache full: %d positions need %d more blocks of %d, %d free", n, need, k.size, len(k.free))
	}
	for range max(need, 0) {
		*b = append(*b, k.free[len(k.free)-1])
		k.free = k.free[:len(k.free)-1]
	}
}

// release returns *b's blocks and empties it.
func (k *kvBlocks) release(b *[]int32) {
	for i := len(*b) - 1; i >= 0; i-- {
		k.free = append(k.free, (*b)[i])
	}
	*b = nil
}

// blocksFor is a fresh model's block table for one sequence of n positions.
func blocksFor(t testing.TB, m *model.Model, n int) []int32 {
	t.Helper()
	var b []int32
	newKVBlocks(m).reserve(t, &b, n)
	return b
}
