package cuda

// Launch planning: pure functions of the call's shape, kept free of CUDA
// so that they are tested in every build.

// gemvMaxRows is the largest m that takes the GEMV path: up to this many
// rows (decode batches), streaming each weight row once beats the tiled
// kernel, which reads weights with 2-byte scalar loads.
const gemvMaxRows = 16

// gemvWarps is the number of warps in a GEMV block (256 threads).
const gemvWarps = 8

// gemvCols is the number of output columns one warp computes in the vector
// GEMV variant for the given row count (csrc/matmul.cu gemv_shape): two
// from 4 rows up, so that each x vector loaded serves two weight rows.
func gemvCols(variant int) int {
	if variant >= 4 {
		return 2
	}
	return 1
}

// gemvBlocks is the grid width of a vector GEMV over n columns.
func gemvBlocks(variant, n int) int { return ceilDiv(n, gemvWarps*gemvCols(variant)) }

// gemvRows picks the kernel variant (accumulator count) for m rows.
func gemvRows(m int) int {
	switch {
	case m <= 1:
		return 1
	case m <= 2:
		return 2
	case m <= 4:
		return 4
	case m <= 8:
		return 8
	}
	return 16
}

// Attention context splitting: positions per block step (8 warps × 4) and
// the fewest positions worth a split of their own.
const (
	attnStep     = 32
	attnMinChunk = 256
)

// attnSplits divides a context of n positions so that pairs·splits blocks
// give every multiprocessor about two, each split holding at least
// attnMinChunk positions; chunk is the split length, a multiple of attnStep.
func attnSplits(pairs, n, sms int) (splits, chunk int) {
	splits = max(1, min(ceilDiv(2*sms, pairs), n/attnMinChunk))
	chunk = ceilDiv(ceilDiv(n, splits), attnStep) * attnStep
	return ceilDiv(n, chunk), chunk
}

// groupByRow returns the distinct destination rows in order of first
// appearance, and for destination u the inputs order[start[u]:start[u+1]]
// in increasing index.
func groupByRow(rows []int32) (dst, start, order []int32) {
	slot := make(map[int32]int32, len(rows))
	var count []int32
	for _, r := range rows {
		u, ok := slot[r]
		if !ok {
			u = int32(len(dst))
			slot[r] = u
			dst = append(dst, r)
			count = append(count, 0)
		}
		count[u]++
	}
	start = make([]int32, len(dst)+1)
	for u, c := range count {
		start[u+1] = start[u] + c
	}
	order = make([]int32, len(rows))
	fill := append([]int32(nil), start[:len(dst)]...)
	for i, r := range rows {
		u := slot[r]
		order[fill[u]] = int32(i)
		fill[u]++
	}
	return dst, start, order
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
