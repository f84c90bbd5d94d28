package scheduler

import "fmt"

// BlockPool hands out the KV blocks of one attention group to sequences.
// It holds no memory itself: every worker of the group holds the storage
// (model.KVCache) of its share of heads for the same block ids. It is the
// one block allocator: Service keeps one per group, and Pools gives
// Generate one per group.
//
// BlockPool is not safe for concurrent use.
type BlockPool struct {
	BlockSize int
	total     int
	free      []int32
}

// NewBlockPool returns a pool of numBlocks blocks of blockSize positions.
func NewBlockPool(blockSize, numBlocks int) *BlockPool {
	p := &BlockPool{BlockSize: max(blockSize, 1), total: max(numBlocks, 0), free: make([]int32, max(numBlocks, 0))}
	for i := range p.free {
		p.free[i] = int32(len(p.free) - 1 - i) // pop from the end: block 0 first
	}
	return p
}

// Free returns the number of free blocks.
func (p *BlockPool) Free() int { return len(p.free) }

// Total returns the number of blocks.
func (p *BlockPool) Total() int { return p.total }

// Capacity is the most positions one sequence can hold: every block.
func (p *BlockPool) Capacity() int { return p.total * p.BlockSize }

// Blocks is a sequence's block table: block i holds positions
// [i*BlockSize, (i+1)*BlockSize).
type Blocks []int32

// Reserve makes room for positions [0, n) in *b, taking blocks from the
// pool. On ErrKVFull nothing is taken.
func (p *BlockPool) Reserve(b *Blocks, n int) error {
	need := (n+p.BlockSize-1)/p.BlockSize - len(*b)
	if need <= 0 {
		return nil
	}
	if need > len(p.free) {
		return fmt.Errorf("%w: %d more blocks of %d positions needed, %d free", ErrKVFull, need, p.BlockSize, len(p.free))
	}
	for range need {
		*b = append(*b, p.free[len(p.free)-1])
		p.free = p.free[:len(p.free)-1]
	}
	return nil
}

// Release returns all of *b's blocks to the pool and empties it.
func (p *BlockPool) Release(b *Blocks) {
	for i := len(*b) - 1; i >= 0; i-- {
		p.free = append(p.free, (*b)[i])
	}
	*b = nil
}
