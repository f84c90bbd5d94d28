package model

import (
	"fmt"

	"github.com/moemesh/moemesh/kernels"
)

// KVCache is a paged key/value cache: every layer's keys and values live in
// one pool of NumBlocks blocks of BlockSize token rows, each row Width =
// local KV heads × head_dim floats. Sequences own lists of blocks (their
// block table), so sequences of different lengths share one pool. Position p
// of a sequence lives in row Blocks[p/BlockSize]*BlockSize + p%BlockSize.
// KVCache only stores: which sequence owns which block is the caller's
// bookkeeping (scheduler.BlockPool).
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

// Close frees the pool's buffers.
func (c *KVCache) Close(b kernels.Backend) {
	for i := range c.K {
		b.Free(c.K[i])
		b.Free(c.V[i])
	}
	c.K, c.V = nil, nil
}
