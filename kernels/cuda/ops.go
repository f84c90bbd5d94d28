//go:build cuda

package cuda

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/moemesh/moemesh/kernels"
)

// rowWarpMax is the longest row handled one warp per row; longer rows get
// a block each.
const rowWarpMax = 1024

// Add computes out[i] = a[i] + b[i] for i in [0, n).
func (b *Backend) Add(out, x, y kernels.Buffer, n int) {
	o := b.f32(out, "Add out", n)
	xb := b.f32(x, "Add a", n)
	yb := b.f32(y, "Add b", n)
	if n == 0 {
		return
	}
	defer b.enter()()
	b.launch("add_f32", b.gridFor(int64(n)), 1, 1, 256, new(launchArgs).ptr(o.ptr).ptr(xb.ptr).ptr(yb.ptr).num(n))
}

// SiLUMul computes out[i] = silu(gate[i]) * up[i] for i in [0, n).
func (b *Backend) SiLUMul(out, gate, up kernels.Buffer, n int) {
	o := b.f32(out, "SiLUMul out", n)
	g := b.f32(gate, "SiLUMul gate", n)
	u := b.f32(up, "SiLUMul up", n)
	if n == 0 {
		return
	}
	defer b.enter()()
	b.launch("silu_mul_f32", b.gridFor(int64(n)), 1, 1, 256, new(launchArgs).ptr(o.ptr).ptr(g.ptr).ptr(u.ptr).num(n))
}

// RMSNorm normalises rows of x[rows, dim] and scales them by w[dim].
func (b *Backend) RMSNorm(out, x, w kernels.Buffer, rows, dim int, eps float32) {
	if rows < 0 || dim < 0 {
		panic(fmt.Sprintf("cuda: RMSNorm of shape %d×%d", rows, dim))
	}
	o := b.f32(out, "RMSNorm out", rows*dim)
	xb := b.f32(x, "RMSNorm x", rows*dim)
	wb := b.f32(w, "RMSNorm w", dim)
	if rows == 0 || dim == 0 {
		return
	}
	defer b.enter()()
	a := new(launchArgs).ptr(o.ptr).ptr(xb.ptr).ptr(wb.ptr).num(rows).num(dim).f32(eps)
	if dim <= rowWarpMax {
		b.launch("rmsnorm_warp", ceilDiv(rows, 8), 1, 1, 256, a)
	} else {
		b.launch("rmsnorm_block", rows, 1, 1, 256, a)
	}
}

// RoPE rotates every head of x[rows, heads*headDim] in place, NeoX form.
func (b *Backend) RoPE(x kernels.Buffer, rows, heads, headDim int, pos []int32, theta float64) {
	if rows < 0 || heads < 0 || headDim < 0 || headDim%2 != 0 {
		panic(fmt.Sprintf("cuda: RoPE of shape rows=%d heads=%d headDim=%d", rows, heads, headDim))
	}
	xb := b.f32(x, "RoPE x", rows*heads*headDim)
	need("RoPE pos", len(pos), rows)
	total := int64(rows) * int64(heads) * int64(headDim/2)
	if total == 0 {
		return
	}
	defer b.enter()()
	mc := b.metaBegin(4 * rows)
	pp := mc.i32(pos[:rows])
	mc.upload()
	b.launch("rope_neox", b.gridFor(total), 1, 1, 256,
		new(launchArgs).ptr(xb.ptr).num(rows).num(heads).num(headDim).ptr(pp).f64(theta))
}

// Softmax normalises each row of x[rows, n] in place.
func (b *Backend) Softmax(x kernels.Buffer, rows, n int) {
	if rows < 0 || n < 0 {
		panic(fmt.Sprintf("cuda: Softmax of shape %d×%d", rows, n))
	}
	xb := b.f32(x, "Softmax x", rows*n)
	if rows == 0 || n == 0 {
		return
	}
	defer b.enter()()
	a := new(launchArgs).ptr(xb.ptr).num(rows).num(n)
	if n <= rowWarpMax {
		b.launch("softmax_warp", ceilDiv(rows, 8), 1, 1, 256, a)
	} else {
		b.launch("softmax_block", rows, 1, 1, 256, a)
	}
}

// TopK writes the indices and values of the k largest entries of every row
// of x[rows, n] (largest first, ties to the lower index, NaN last) into the
// host slices idx and val. It waits for the result.
func (b *Backend) TopK(x kernels.Buffer, rows, n, k int, idx []int32, val []float32) error {
	if rows < 0 || n < 0 || k < 0 || k > n {
		panic(fmt.Sprintf("cuda: TopK of k=%d over rows=%d n=%d", k, rows, n))
	}
	xb := b.f32(x, "TopK x", rows*n)
	need("TopK idx", len(idx), rows*k)
	need("TopK val", len(val), rows*k)
	defer b.enter()()
	if rows == 0 || k == 0 {
		return b.sync()
	}
	c := rows * k
	mc := b.metaBegin(4*c, 4*c)
	di, hi := mc.out(4 * c)
	dv, hv := mc.out(4 * c)
	threads := 32
	for threads < n && threads < 256 {
		threads *= 2
	}
	b.launch("topk_rows", rows, 1, 1, threads,
		new(launchArgs).ptr(xb.ptr).num(rows).num(n).num(k).ptr(di).ptr(dv))
	if err := cu.MemcpyDtoHAsync(hi, di, int64(4*c), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: TopK read: %w", err))
	}
	if err := cu.MemcpyDtoHAsync(hv, dv, int64(4*c), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: TopK read: %w", err))
	}
	if err := b.sync(); err != nil {
		return err
	}
	copy(idx[:c], unsafe.Slice((*int32)(hi), c))
	copy(val[:c], unsafe.Slice((*float32)(hv), c))
	return nil
}

// checkRows panics unless every entry of ids is in [0, limit).
func checkRows(what string, ids []int32, limit int) {
	for i, r := range ids {
		if r < 0 || int(r) >= limit {
			panic(fmt.Sprintf("cuda: %s[%d] = %d out of range [0, %d)", what, i, r, limit))
		}
	}
}

// Embed gathers out[i,:] = table[ids[i],:] (table F32 or BF16, out F32).
func (b *Backend) Embed(out, table kernels.Buffer, ids []int32, dim int) {
	if dim <= 0 {
		panic(fmt.Sprintf("cuda: Embed of dim %d", dim))
	}
	o := b.f32(out, "Embed out", len(ids)*dim)
	t := b.buf(table)
	checkRows("Embed ids", ids, t.n/dim)
	if len(ids) == 0 {
		return
	}
	defer b.enter()()
	mc := b.metaBegin(4 * len(ids))
	ip := mc.i32(ids)
	mc.upload()
	b.launch("embed_"+dtSuffix(t.dt), len(ids), 1, 1, 256, new(launchArgs).ptr(o.ptr).ptr(t.ptr).ptr(ip).num(dim))
}

// Gather copies out[i,:] = x[rows[i],:]; out and x share a dtype.
func (b *Backend) Gather(out, x kernels.Buffer, rows []int32, dim int) {
	if dim <= 0 {
		panic(fmt.Sprintf("cuda: Gather of dim %d", dim))
	}
	o, xb := b.buf(out), b.buf(x)
	if o.dt != xb.dt {
		panic(fmt.Sprintf("cuda: Gather from %v into %v", xb.dt, o.dt))
	}
	need("Gather out", o.n, len(rows)*dim)
	checkRows("Gather rows", rows, xb.n/dim)
	if len(rows) == 0 {
		return
	}
	defer b.enter()()
	mc := b.metaBegin(4 * len(rows))
	rp := mc.i32(rows)
	mc.upload()
	name := "gather_b32"
	if o.dt.Size() == 2 {
		name = "gather_b16"
	}
	b.launch(name, len(rows), 1, 1, 256, new(launchArgs).ptr(o.ptr).ptr(xb.ptr).ptr(rp).num(dim))
}

// ScatterAdd accumulates out[rows[i],:] += scale[i] * x[i,:] in order of i.
// The host groups the inputs by destination row; each output element then
// receives its additions in increasing i, so results do not depend on
// scheduling.
func (b *Backend) ScatterAdd(out, x kernels.Buffer, rows []int32, scale []float32, dim int) {
	if dim <= 0 {
		panic(fmt.Sprintf("cuda: ScatterAdd of dim %d", dim))
	}
	need("ScatterAdd scale", len(scale), len(rows))
	o := b.f32(out, "ScatterAdd out", 0)
	xb := b.f32(x, "ScatterAdd x", len(rows)*dim)
	checkRows("ScatterAdd rows", rows, o.n/dim)
	if len(rows) == 0 {
		return
	}
	dst, start, order := groupByRow(rows)
	defer b.enter()()
	mc := b.metaBegin(4*len(dst), 4*len(start), 4*len(order), 4*len(rows))
	dp := mc.i32(dst)
	sp := mc.i32(start)
	op := mc.i32(order)
	cp := mc.f32(scale[:len(rows)])
	mc.upload()
	for u0 := 0; u0 < len(dst); u0 += 65535 {
		nu := min(len(dst)-u0, 65535)
		b.launch("scatter_add_f32", ceilDiv(dim, 256), nu, 1, 256,
			new(launchArgs).ptr(o.ptr).ptr(xb.ptr).ptr(dp+cu.DevicePtr(4*u0)).ptr(sp+cu.DevicePtr(4*u0)).ptr(op).ptr(cp).num(dim))
	}
}

// KVWrite stores k[i,:] and v[i,:] at cache rows slots[i] of kc and vc.
func (b *Backend) KVWrite(kc, vc, k, v kernels.Buffer, slots []int32, width int) {
	if width <= 0 {
		panic(fmt.Sprintf("cuda: KVWrite of width %d", width))
	}
	kcb := b.f32(kc, "KVWrite kc", 0)
	vcb := b.f32(vc, "KVWrite vc", 0)
	kb := b.f32(k, "KVWrite k", len(slots)*width)
	vb := b.f32(v, "KVWrite v", len(slots)*width)
	checkRows("KVWrite slots", slots, min(kcb.n, vcb.n)/width)
	if len(slots) == 0 {
		return
	}
	defer b.enter()()
	mc := b.metaBegin(4 * len(slots))
	sp := mc.i32(slots)
	mc.upload()
	b.launch("kv_write_f32", len(slots), 1, 1, 256,
		new(launchArgs).ptr(kcb.ptr).ptr(vcb.ptr).ptr(kb.ptr).ptr(vb.ptr).ptr(sp).num(width))
}

// attnMaxHeadDim is the largest head dimension the attention kernels hold
// in registers. Head dimension 128 with 16-byte aligned buffers (Qwen3)
// takes attention_paged_d128, which splits long contexts across blocks;
// other sizes take attention_paged_f32, one block per (token, head).
const attnMaxHeadDim = 256

// Attention computes causal paged attention for every token and query head.
func (b *Backend) Attention(out, q, kc, vc kernels.Buffer, p kernels.AttnParams) {
	if p.Heads <= 0 || p.KVHeads <= 0 || p.Heads%p.KVHeads != 0 || p.HeadDim <= 0 || p.HeadDim > attnMaxHeadDim || p.BlockSize <= 0 {
		panic(fmt.Sprintf("cuda: Attention with heads=%d kvHeads=%d headDim=%d (at most %d) blockSize=%d",
			p.Heads, p.KVHeads, p.HeadDim, attnMaxHeadDim, p.BlockSize))
	}
	tokens := len(p.Pos)
	need("Attention SeqOf", len(p.SeqOf), tokens)
	qw := p.Heads * p.HeadDim
	o := b.f32(out, "Attention out", tokens*qw)
	qb := b.f32(q, "Attention q", tokens*qw)
	width := p.KVHeads * p.HeadDim
	kcb := b.f32(kc, "Attention kc", 0)
	vcb := b.f32(vc, "Attention vc", 0)
	cacheRows := min(kcb.n, vcb.n) / width
	if tokens == 0 {
		return
	}
	if int64(tokens)*int64(p.Heads) > 1<<31-1 {
		panic(fmt.Sprintf("cuda: Attention over %d tokens × %d heads", tokens, p.Heads))
	}
	// Validate every block a token reads, then flatten the tables.
	off := make([]int32, len(p.BlockTables))
	var flat []int32
	for s, tab := range p.BlockTables {
		off[s] = int32(len(flat))
		flat = append(flat, tab...)
	}
	for t := 0; t < tokens; t++ {
		s, pos := p.SeqOf[t], p.Pos[t]
		if s < 0 || int(s) >= len(p.BlockTables) || pos < 0 {
			panic(fmt.Sprintf("cuda: Attention token %d: sequence %d position %d", t, s, pos))
		}
		tab := p.BlockTables[s]
		nb := int(pos)/p.BlockSize + 1
		if nb > len(tab) {
			panic(fmt.Sprintf("cuda: Attention token %d at position %d needs %d blocks, sequence %d has %d", t, pos, nb, s, len(tab)))
		}
		for _, blk := range tab[:nb] {
			if blk < 0 || (int(blk)+1)*p.BlockSize > cacheRows {
				panic(fmt.Sprintf("cuda: Attention block %d outside a cache of %d rows", blk, cacheRows))
			}
		}
	}
	if len(flat) == 0 {
		flat = []int32{0}
	}
	defer b.enter()()
	mc := b.metaBegin(4*tokens, 4*tokens, 4*len(off), 4*len(flat))
	sp := mc.i32(p.SeqOf[:tokens])
	pp := mc.i32(p.Pos)
	op := mc.i32(off)
	bp := mc.i32(flat)
	mc.upload()
	pairs := tokens * p.Heads
	if p.HeadDim != 128 || (o.ptr|qb.ptr|kcb.ptr|vcb.ptr)%16 != 0 {
		b.launch("attention_paged_f32", pairs, 1, 1, 128,
			new(launchArgs).ptr(o.ptr).ptr(qb.ptr).ptr(kcb.ptr).ptr(vcb.ptr).
				ptr(sp).ptr(pp).ptr(op).ptr(bp).
				num(p.Heads).num(p.KVHeads).num(p.HeadDim).f32(p.Scale).num(p.BlockSize))
		return
	}
	maxPos := int32(0)
	for _, v := range p.Pos {
		maxPos = max(maxPos, v)
	}
	splits, chunk := attnSplits(pairs, int(maxPos)+1, b.sms)
	var part cu.DevicePtr
	if splits > 1 {
		part = b.scratch(4 * pairs * splits * (128 + 2))
	}
	b.launch("attention_paged_d128", pairs, splits, 1, 256,
		new(launchArgs).ptr(o.ptr).ptr(part).ptr(qb.ptr).ptr(kcb.ptr).ptr(vcb.ptr).
			ptr(sp).ptr(pp).ptr(op).ptr(bp).
			num(p.Heads).num(p.KVHeads).f32(p.Scale).num(p.BlockSize).num(chunk))
	if splits > 1 {
		b.launch("attention_combine_d128", pairs, 1, 1, 128, new(launchArgs).ptr(o.ptr).ptr(part).num(splits))
	}
}
