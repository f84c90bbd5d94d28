package kernels

import "fmt"

// DType is the element type of a Buffer.
type DType uint8

const (
	// F32 is IEEE-754 binary32.
	F32 DType = iota + 1
	// BF16 is bfloat16: the upper 16 bits of an F32, stored as uint16.
	BF16
	// F8E4M3 is a block-quantized FP8 E4M3FN weight with its scales
	// (see FP8Matrix); only MatMul and GroupedMatMul read it.
	F8E4M3
)

// String returns the safetensors spelling of the type.
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case F8E4M3:
		return "F8_E4M3"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case BF16:
		return 2
	case F8E4M3:
		return 1
	}
	return 0
}

// Buffer is an opaque handle to memory owned by a Backend: host memory for
// the CPU backend, device memory for a GPU backend. A Buffer is only valid
// with the Backend that made it. Len counts elements, not bytes.
type Buffer interface {
	DType() DType
	Len() int
}

// AttnParams describes one batched attention call over a paged KV cache.
//
// Token t belongs to sequence SeqOf[t] and sits at position Pos[t]; it
// attends causally to positions [0, Pos[t]] of its own sequence. Position p
// of sequence s is stored in cache row BlockTables[s][p/BlockSize]*BlockSize
// + p%BlockSize. Query head h reads KV head h/(Heads/KVHeads).
type AttnParams struct {
	Heads, KVHeads, HeadDim int
	Scale                   float32 // usually 1/sqrt(HeadDim)
	BlockSize               int
	SeqOf                   []int32   // [tokens]
	Pos                     []int32   // [tokens]
	BlockTables             [][]int32 // [sequences][blocks]
}

// Backend is the compute interface the forward pass is written against.
//
// All matrices are row-major. Shapes in the doc comments are in elements;
// weight matrices follow the checkpoint convention [out, in]. Operations may
// run asynchronously: results are guaranteed visible to Read* calls, which
// synchronise, and to Sync. Shape mismatches are programming errors and
// panic; Sync and Read* report device failures as errors.
//
// A Backend is not safe for concurrent use unless the implementation says so.
type Backend interface {
	// Name identifies the backend ("cpu", "cpu-noasm", "cuda:0").
	Name() string

	// Alloc returns a zeroed buffer of n elements.
	Alloc(dt DType, n int) (Buffer, error)
	// Free releases b; views of b become invalid. Freeing a view is a no-op.
	Free(b Buffer)
	// View returns elements [off, off+n) of b, sharing its memory.
	View(b Buffer, off, n int) Buffer
	// WriteF32 copies src into dst[off:off+len(src)]; dst must be F32.
	WriteF32(dst Buffer, off int, src []float32) error
	// WriteBF16 copies raw bfloat16 bits into dst[off:off+len(src)]; dst must be BF16.
	WriteBF16(dst Buffer, off int, src []uint16) error
	// ReadF32 copies src[off:off+len(dst)] into dst, after all queued work; src must be F32.
	ReadF32(src Buffer, off int, dst []float32) error
	// Sync waits for all queued work and reports any asynchronous failure.
	Sync() error

	// MatMul computes out[m,n] = x[m,k] · w[n,k]ᵀ. x and out are F32; w is
	// F32 or BF16, or F8E4M3 on backends that implement FP8Weights.
	MatMul(out, x, w Buffer, m, n, k int)
	// Add computes out[i] = a[i] + b[i] for i in [0, n). out may alias a or b.
	Add(out, a, b Buffer, n int)
	// RMSNorm computes out[r,:] = w ⊙ x[r,:] / sqrt(mean(x[r,:]²) + eps) for
	// rows r in [0, rows); w is F32 [dim]. out may alias x.
	RMSNorm(out, x, w Buffer, rows, dim int, eps float32)
	// RoPE rotates x[r, h*headDim:(h+1)*headDim] in place for every row r and
	// head h in rotate-half (NeoX) form at position pos[r]:
	// inv_freq[j] = theta^(-2j/headDim), j in [0, headDim/2).
	RoPE(x Buffer, rows, heads, headDim int, pos []int32, theta float64)
	// Softmax normalises each row of x[rows, n] in place.
	Softmax(x Buffer, rows, n int)
	// SiLUMul computes out[i] = silu(gate[i]) * up[i] for i in [0, n). out may alias gate.
	SiLUMul(out, gate, up Buffer, n int)
	// TopK writes, for every row of x[rows, n], the indices of its k largest
	// values (largest first, ties to the lower index) into idx[r*k:(r+1)*k]
	// and the values into val[r*k:(r+1)*k]. Results land in host slices.
	TopK(x Buffer, rows, n, k int, idx []int32, val []float32) error
	// Embed gathers out[i,:] = table[ids[i],:] (table F32 or BF16, out F32).
	Embed(out, table Buffer, ids []int32, dim int)
	// Gather copies out[i,:] = x[rows[i],:] for i in [0, len(rows)).
	Gather(out, x Buffer, rows []int32, dim int)
	// ScatterAdd accumulates out[rows[i],:] += scale[i] * x[i,:] in order of i.
	ScatterAdd(out, x Buffer, rows []int32, scale []float32, dim int)
	// KVWrite stores k[i,:] and v[i,:] at cache rows slots[i] of kc and vc
	// ([cacheRows, width] F32).
	KVWrite(kc, vc, k, v Buffer, slots []int32, width int)
	// Attention computes out[t, h*HeadDim:(h+1)*HeadDim] for every token t
	// and head h: softmax(Scale · q·Kᵀ) · V over the token's visible cache
	// rows. q and out are [tokens, Heads*HeadDim]; kc and vc are
	// [cacheRows, KVHeads*HeadDim]. Accumulation is F32.
	Attention(out, q, kc, vc Buffer, p AttnParams)
}

// HostWrapper is implemented by backends whose buffers live in host memory.
// A model loader uses it to hand memory-mapped weights to the backend without
// a copy; the caller keeps the slice alive and unmodified while the Buffer is used.
type HostWrapper interface {
	WrapF32(s []float32) Buffer
	WrapBF16(s []uint16) Buffer
}

// FreqRoPE is implemented by backends that rotate with inverse frequencies
// the caller computes (YaRN and other scaled RoPE variants).
type FreqRoPE interface {
	// RoPEFreq is RoPE with inv_freq given: pair (j, j+headDim/2) of every
	// head of row r turns by pos[r]·invFreq[j]; len(invFreq) ≥ headDim/2.
	RoPEFreq(x Buffer, rows, heads, headDim int, pos []int32, invFreq []float64)
}

// GroupedMatMul is implemented by backends that can run many small matmuls
// with different weights in one launch (the experts of a MoE layer).
// For each group g: out_g[m_g, n] = x_g[m_g, k] · w_gᵀ, where x_g and out_g are
// rows [RowOff[g], RowOff[g]+Rows[g]) of x and out.
type GroupedMatMul interface {
	GroupedMatMul(out, x Buffer, w []Buffer, rowOff, rows []int, n, k int)
}
