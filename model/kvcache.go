package model

import (
	"errors"
	"fmt"

	"github.com/moemesh/moemesh/kernels"
)

// ErrKVFull reports that the KV cache has no free block left.
var ErrKVFull = errors.New("model: KV cache full")

// KVCache is a paged key/value cache: every layer's keys and values live in
// one pool of NumBlocks blocks of BlockSize token rows, each row Width =
// local KV heads × head_dim floats. Sequences own lists of blocks (their
// block table), so sequences of different lengths share one pool. Position p
// of a sequence lives in row Blocks[p/BlockSize]*BlockSize + p%BlockSize.
//
// KVCache is not safe for concurrent use.
type KVCache struct {
	BlockSize, NumBlocks, Width int
	K, V                        []kernels.Buffer // per layer: [NumBlocks*BlockSize, Width] F32
}

// NewKVCache allocates the pool for layers layers in backend b.
func NewKVCache(b kernels.Backend, layers, width, blockSize, numBlocks int) (*KVCache, error) {
	if blockSize <= 0 || numBlocks <= 0 || width <= 0 {
		return nil, fmt.Errorf("model: KV cache needs positive block size, block count and width (got %d, %d, %d)", blockSize, numBlocks, width)
	}
	c := &KVCache{BlockSize: blockSize, NumBlocks: numBlocks, Width: width}
	rows := blockSize * numBlocks
	for range layers {
		k, err := b.Alloc(kernels.F32, rows*width)
		if err != nil {
			return nil, fmt.Errorf("model: allocating KV cache (%d rows × %d): %w", rows, width, err)
		}
		v, err := b.Alloc(kernels.F32, rows*width)
		if err != nil {
			return nil, fmt.Errorf("model: allocating KV cache (%d rows × %d): %w", rows, width, err)
		}
		c.K, c.V = append(c.K, k), append(c.V, v)
	}
	return c, nil
}

// BlockPool hands out the blocks of a KV cache to sequences. It holds no
// memory itself: in a cluster the scheduler owns the pool and every worker
// holds the storage of its share of heads for the same block ids.
//
// BlockPool is not safe for concurrent use.
type BlockPool struct {
	BlockSize int
	free      []int32
}

// NewBlockPool returns a pool of numBlocks blocks of blockSize positions.
func NewBlockPool(blockSize, numBlocks int) *BlockPool {
	p := &BlockPool{BlockSize: blockSize, free: make([]int32, numBlocks)}
	for i := range p.free {
		p.free[i] = int32(numBlocks - 1 - i) // pop from the end: block 0 first
	}
	return p
}

// Free returns the number of free blocks.
func (c *BlockPool) Free() int { return len(c.free) }

// Seq is a sequence's state in the cache: its length and block table.
type Seq struct {
	ID     uint64
	Len    int     // positions [0, Len) are in the cache
	Blocks []int32 // block table
}

// Reserve makes room for positions [0, n) of s, taking blocks from the pool.
// On ErrKVFull nothing is taken.
func (c *BlockPool) Reserve(s *Seq, n int) error {
	need := (n+c.BlockSize-1)/c.BlockSize - len(s.Blocks)
	if need <= 0 {
		return nil
	}
	if need > len(c.free) {
		return fmt.Errorf("%w: sequence %d needs %d more blocks of %d tokens, %d free", ErrKVFull, s.ID, need, c.BlockSize, len(c.free))
	}
	for range need {
		s.Blocks = append(s.Blocks, c.free[len(c.free)-1])
		c.free = c.free[:len(c.free)-1]
	}
	return nil
}

// Release returns s's blocks to the pool.
func (c *BlockPool) Release(s *Seq) {
	for i := len(s.Blocks) - 1; i >= 0; i-- {
		c.free = append(c.free, s.Blocks[i])
	}
	s.Blocks, s.Len = nil, 0
}

// Close frees the pool's buffers.
func (c *KVCache) Close(b kernels.Backend) {
	for i := range c.K {
		b.Free(c.K[i])
		b.Free(c.V[i])
	}
	c.K, c.V = nil, nil
}
