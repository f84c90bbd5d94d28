package kernels

import (
	"fmt"
	"math"
)

// xBlockBytes bounds the rows of x one pass over a block of weight rows
// works on, so that they stay in the L2 cache while the weights stream by.
const xBlockBytes = 1 << 20

// MatMul computes out[m,n] = x[m,k] · w[n,k]ᵀ. Each weight row is read from
// memory once per call: a thread takes a range of output columns and, for
// each group of four weight rows, dots them against every row of x while
// they are in the L1 cache.
func (c *CPU) MatMul(out, x, w Buffer, m, n, k int) {
	o, xs, wb := f32Of(out, "MatMul out"), f32Of(x, "MatMul x"), host(w)
	need("MatMul out", len(o), m*n)
	need("MatMul x", len(xs), m*k)
	need("MatMul w", wb.Len(), n*k)
	checkFP8("MatMul w", wb, n, k)
	if k == 0 {
		clear(o[:m*n])
		return
	}
	if c.useDP(wb.dt, m) {
		xb := c.dpX(xs[:m*k])
		tasks := c.pool.split((n+3)/4, 4*m*k)
		c.pool.run(tasks, func(_, t int) {
			lo, hi := chunk(n, tasks, t, 4)
			matmulDPRange(o, xb, wb.bf16, m, k, lo, hi, n)
		})
		return
	}
	if wb.dt == BF16 {
		xs = c.roundedX(xs[:m*k])
	}
	tasks := c.pool.split((n+3)/4, 4*m*k)
	c.pool.run(tasks, func(_, t int) {
		lo, hi := chunk(n, tasks, t, 4)
		matmulRange(o, xs, wb, m, n, k, lo, hi, n)
	})
}

// GroupedMatMul runs out_g = x_g · w_gᵀ for every group g in one dispatch;
// see the GroupedMatMul interface.
func (c *CPU) GroupedMatMul(out, x Buffer, w []Buffer, rowOff, rows []int, n, k int) {
	o, xs := f32Of(out, "GroupedMatMul out"), f32Of(x, "GroupedMatMul x")
	if len(rowOff) != len(w) || len(rows) != len(w) {
		panic(fmt.Sprintf("kernels: GroupedMatMul with %d weights, %d offsets, %d row counts", len(w), len(rowOff), len(rows)))
	}
	if c.roundX {
		var bf bool
		for _, wg := range w {
			bf = bf || wg.DType() == BF16
		}
		if bf {
			xs = c.roundedX(xs)
		}
	}
	// Tasks are cut by work, not per matrix: a group gets a share of the
	// tasks in proportion to its multiply-adds, so with many small groups
	// (experts at decode) each task streams whole matrices.
	var total int
	for g := range w {
		if rows[g] < 0 || rowOff[g] < 0 {
			panic(fmt.Sprintf("kernels: GroupedMatMul group %d has rows [%d, %d)", g, rowOff[g], rowOff[g]+rows[g]))
		}
		need("GroupedMatMul out", len(o), (rowOff[g]+rows[g])*n)
		need("GroupedMatMul x", len(xs), (rowOff[g]+rows[g])*k)
		need("GroupedMatMul w", w[g].Len(), n*k)
		checkFP8("GroupedMatMul w", host(w[g]), n, k)
		total += rows[g] * n * k
	}
	// x in bfloat16 for the groups on the bf16 dot kernels, as far as
	// the last row any group reads.
	var xb []uint16
	end, dp := 0, false
	for g, wg := range w {
		end = max(end, (rowOff[g]+rows[g])*k)
		dp = dp || c.useDP(wg.DType(), rows[g])
	}
	if dp {
		xb = c.dpX(xs[:end])
	}
	if k == 0 {
		for g := range w {
			clear(o[rowOff[g]*n : (rowOff[g]+rows[g])*n])
		}
		return
	}
	tasks := c.groupTasks(rows, n, k, total)
	c.pool.run(len(tasks), func(_, i int) {
		tk := tasks[i]
		r0, m := rowOff[tk.g], rows[tk.g]
		if wb := host(w[tk.g]); c.useDP(wb.dt, m) {
			matmulDPRange(o[r0*n:], xb[r0*k:], wb.bf16, m, k, tk.lo, tk.hi, n)
			return
		}
		matmulRange(o[r0*n:], xs[r0*k:], host(w[tk.g]), m, n, k, tk.lo, tk.hi, n)
	})
}

// groupTask is columns [lo, hi) of group g of a GroupedMatMul.
type groupTask struct{ g, lo, hi int }

// groupTasks cuts a GroupedMatMul of total multiply-adds into tasks: a
// group gets a share in proportion to its work, aiming at four tasks per
// thread in all, so that one hot expert is split across every thread and
// many cold ones are taken whole. Columns are cut in multiples of 4.
func (c *CPU) groupTasks(rows []int, n, k, total int) []groupTask {
	target := max(total/(4*c.threads), 1)
	var tasks []groupTask
	for g, r := range rows {
		if r == 0 {
			continue
		}
		parts := min(c.pool.split((n+3)/4, 4*r*k), (r*n*k+target-1)/target)
		for t := range parts {
			lo, hi := chunk(n, parts, t, 4)
			tasks = append(tasks, groupTask{g, lo, hi})
		}
	}
	return tasks
}

// checkFP8 panics unless an F8E4M3 weight is exactly [n, k]: its scale
// grid is laid out for its own width.
func checkFP8(what string, wb *HostBuffer, n, k int) {
	if wb.dt == F8E4M3 && (wb.fp8 == nil || wb.fp8.Rows < n || wb.fp8.Cols != k) {
		panic(fmt.Sprintf("kernels: %s is an FP8 weight of a shape other than [%d, %d]", what, n, k))
	}
}

// roundedX returns x unchanged, or with WithBF16Activations a copy rounded
// to bfloat16 precision.
func (c *CPU) roundedX(x []float32) []float32 {
	if !c.roundX {
		return x
	}
	if cap(c.xbf) < len(x) {
		c.xbf = make([]float32, len(x))
	}
	r := c.xbf[:len(x)]
	for i, v := range x {
		r[i] = roundBF16(v)
	}
	return r
}

// roundBF16 rounds v to the nearest bfloat16, ties to even; NaN stays NaN.
func roundBF16(v float32) float32 {
	b := math.Float32bits(v)
	if v != v {
		return v
	}
	b += 0x7fff + (b>>16)&1
	return math.Float32frombits(b &^ 0xffff)
}

// matmulRange computes columns [lo, hi) of out[m, ldo] = x[m,k] · w[n,k]ᵀ.
// lo is a multiple of 4.
func matmulRange(o, x []float32, wb *HostBuffer, m, n, k, lo, hi, ldo int) {
	if wb.dt == F8E4M3 {
		matmulFP8Range(o, x, wb.fp8, m, k, lo, hi, ldo)
		return
	}
	if m == 1 && wb.dt == BF16 {
		// One row of x: the weights are a single linear stream.
		gemvBF16(o[lo:hi], x[:k], wb.bf16[lo*k:hi*k], k)
		return
	}
	mb := m
	if m*k*4 > xBlockBytes {
		mb = max(4, xBlockBytes/(k*4)&^3)
	}
	var acc16 [16]float32
	var acc4 [4]float32
	for i0 := 0; i0 < m; i0 += mb {
		i1 := min(m, i0+mb)
		j := lo
		for ; j+4 <= hi; j += 4 {
			i := i0
			for ; i+4 <= i1; i += 4 {
				if wb.dt == BF16 {
					dot4x4BF16(&acc16, x[i*k:], k, wb.bf16[j*k:], k, k)
				} else {
					dot4x4F32(&acc16, x[i*k:], k, wb.f32[j*k:], k, k)
				}
				for a := range 4 {
					copy(o[(i+a)*ldo+j:(i+a)*ldo+j+4], acc16[4*a:4*a+4])
				}
			}
			for ; i < i1; i++ {
				if wb.dt == BF16 {
					dot1x4BF16(&acc4, x[i*k:], wb.bf16[j*k:], k, k)
				} else {
					dot1x4F32(&acc4, x[i*k:], wb.f32[j*k:], k, k)
				}
				copy(o[i*ldo+j:i*ldo+j+4], acc4[:])
			}
		}
		for ; j < hi; j++ {
			for i := i0; i < i1; i++ {
				if wb.dt == BF16 {
					o[i*ldo+j] = dotBF16(x[i*k:(i+1)*k], wb.bf16[j*k:(j+1)*k])
				} else {
					o[i*ldo+j] = dotF32(x[i*k:(i+1)*k], wb.f32[j*k:(j+1)*k])
				}
			}
		}
	}
}
