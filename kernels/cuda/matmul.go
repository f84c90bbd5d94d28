//go:build cuda

package cuda

import (
	"fmt"

	"github.com/moemesh/moemesh/kernels"
)

// vecElems is the number of weight elements in a 16-byte load.
func vecElems(dt kernels.DType) int { return 16 / dt.Size() }

func dtSuffix(dt kernels.DType) string {
	if dt == kernels.BF16 {
		return "bf16"
	}
	return "f32"
}

// MatMul computes out[m,n] = x[m,k] · w[n,k]ᵀ (x, out F32; w F32 or BF16).
func (b *Backend) MatMul(out, x, w kernels.Buffer, m, n, k int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("cuda: MatMul of negative shape %d×%d×%d", m, n, k))
	}
	o := b.f32(out, "MatMul out", m*n)
	xb := b.f32(x, "MatMul x", m*k)
	wb := b.buf(w)
	need("MatMul w", wb.n, n*k)
	if m == 0 || n == 0 {
		return
	}
	defer b.enter()()
	sfx := dtSuffix(wb.dt)
	a := new(launchArgs).ptr(o.ptr).ptr(xb.ptr).ptr(wb.ptr).num(m).num(n).num(k)
	switch {
	case m <= gemvMaxRows && xb.ptr%16 == 0 && wb.ptr%16 == 0 && k%vecElems(wb.dt) == 0:
		v := gemvRows(m)
		b.launch(fmt.Sprintf("mm_gemv_%s_m%d", sfx, v), gemvBlocks(v, n), 1, 1, 256, a)
	case m <= gemvMaxRows:
		b.launch("mm_gemv_scalar_"+sfx, ceilDiv(n, gemvWarps), 1, 1, 256, a)
	default:
		b.launch("mm_tiled_"+sfx, ceilDiv(n, 64), ceilDiv(m, 64), 1, 256, a)
	}
}

// GroupedMatMul runs, in one launch, out_g[m_g, n] = x_g[m_g, k] · w_gᵀ for
// every group g, where x_g and out_g are rows [rowOff[g], rowOff[g]+rows[g])
// of x and out. All weights share one dtype. Groups with no rows are skipped.
func (b *Backend) GroupedMatMul(out, x kernels.Buffer, w []kernels.Buffer, rowOff, rows []int, n, k int) {
	if len(rowOff) != len(w) || len(rows) != len(w) {
		panic(fmt.Sprintf("cuda: GroupedMatMul with %d weights, %d offsets, %d counts", len(w), len(rowOff), len(rows)))
	}
	if n < 0 || k < 0 {
		panic(fmt.Sprintf("cuda: GroupedMatMul of negative shape n=%d k=%d", n, k))
	}
	o := b.f32(out, "GroupedMatMul out", 0)
	xb := b.f32(x, "GroupedMatMul x", 0)
	meta := make([]int64, 0, 3*len(w))
	var dt kernels.DType
	maxRows, aligned := 0, xb.ptr%16 == 0
	for g, wg := range w {
		if rows[g] < 0 || rowOff[g] < 0 {
			panic(fmt.Sprintf("cuda: GroupedMatMul group %d: rows [%d, %d)", g, rowOff[g], rowOff[g]+rows[g]))
		}
		if rows[g] == 0 {
			continue
		}
		need(fmt.Sprintf("GroupedMatMul x (group %d)", g), xb.n, (rowOff[g]+rows[g])*k)
		need(fmt.Sprintf("GroupedMatMul out (group %d)", g), o.n, (rowOff[g]+rows[g])*n)
		wb := b.buf(wg)
		need(fmt.Sprintf("GroupedMatMul w[%d]", g), wb.n, n*k)
		if dt == 0 {
			dt = wb.dt
		} else if wb.dt != dt {
			panic(fmt.Sprintf("cuda: GroupedMatMul weights mix %v and %v", dt, wb.dt))
		}
		aligned = aligned && wb.ptr%16 == 0
		maxRows = max(maxRows, rows[g])
		meta = append(meta, int64(wb.ptr), int64(rowOff[g]), int64(rows[g]))
	}
	groups := len(meta) / 3
	if groups == 0 || n == 0 {
		return
	}
	if groups > 65535 {
		panic(fmt.Sprintf("cuda: GroupedMatMul of %d groups (at most 65535)", groups))
	}
	defer b.enter()()
	mc := b.metaBegin(8 * len(meta))
	mp := mc.i64(meta)
	mc.upload()
	sfx := dtSuffix(dt)
	a := new(launchArgs).ptr(o.ptr).ptr(xb.ptr).ptr(mp).num(n).num(k)
	switch {
	case maxRows <= gemvMaxRows && aligned && k%vecElems(dt) == 0:
		v := gemvRows(maxRows)
		b.launch(fmt.Sprintf("gmm_gemv_%s_m%d", sfx, v), gemvBlocks(v, n), groups, 1, 256, a)
	case maxRows <= gemvMaxRows:
		b.launch("gmm_gemv_scalar_"+sfx, ceilDiv(n, gemvWarps), groups, 1, 256, a)
	default:
		b.launch("gmm_tiled_"+sfx, ceilDiv(n, 64), ceilDiv(maxRows, 64), groups, 256, a)
	}
}
