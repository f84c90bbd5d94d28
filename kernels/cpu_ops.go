package kernels

import (
	"fmt"
	"math"
)

// Add computes out[i] = a[i] + b[i] for i in [0, n).
func (c *CPU) Add(out, a, b Buffer, n int) {
	o, as, bs := f32Of(out, "Add out"), f32Of(a, "Add a"), f32Of(b, "Add b")
	need("Add out", len(o), n)
	need("Add a", len(as), n)
	need("Add b", len(bs), n)
	o, as, bs = o[:n], as[:n], bs[:n]
	for i := range o {
		o[i] = as[i] + bs[i]
	}
}

// RMSNorm computes out[r,:] = (x[r,:] · s) ⊙ w with s = 1/sqrt(mean(x²)+eps),
// squares summed in float64 and the scale rounded to float32, as ggml does.
func (c *CPU) RMSNorm(out, x, w Buffer, rows, dim int, eps float32) {
	o, xs, ws := f32Of(out, "RMSNorm out"), f32Of(x, "RMSNorm x"), f32Of(w, "RMSNorm w")
	need("RMSNorm out", len(o), rows*dim)
	need("RMSNorm x", len(xs), rows*dim)
	need("RMSNorm w", len(ws), dim)
	ws = ws[:dim]
	tasks := c.pool.split(rows, 4*dim)
	c.pool.run(tasks, func(_, t int) {
		lo, hi := chunk(rows, tasks, t, 1)
		for r := lo; r < hi; r++ {
			xr, or := xs[r*dim:(r+1)*dim], o[r*dim:(r+1)*dim]
			var sum float64
			for _, v := range xr {
				sum += float64(v * v)
			}
			mean := float32(sum / float64(dim))
			s := float32(1 / math.Sqrt(float64(mean+eps)))
			for i, v := range xr {
				or[i] = (v * s) * ws[i]
			}
		}
	})
}

// RoPE rotates pairs (j, j+headDim/2) of every head by pos·inv_freq[j],
// the angle computed in float64 and its cosine and sine rounded to float32.
func (c *CPU) RoPE(x Buffer, rows, heads, headDim int, pos []int32, theta float64) {
	xs := f32Of(x, "RoPE x")
	need("RoPE x", len(xs), rows*heads*headDim)
	need("RoPE pos", len(pos), rows)
	if headDim%2 != 0 {
		panic(fmt.Sprintf("kernels: RoPE head dimension %d is odd", headDim))
	}
	half := headDim / 2
	invFreq := make([]float64, half)
	for j := range invFreq {
		invFreq[j] = math.Pow(theta, -float64(2*j)/float64(headDim))
	}
	c.rope(xs, rows, heads, headDim, pos, invFreq)
}

// RoPEFreq is RoPE with the inverse frequencies given (see FreqRoPE).
func (c *CPU) RoPEFreq(x Buffer, rows, heads, headDim int, pos []int32, invFreq []float64) {
	xs := f32Of(x, "RoPEFreq x")
	need("RoPEFreq x", len(xs), rows*heads*headDim)
	need("RoPEFreq pos", len(pos), rows)
	if headDim%2 != 0 {
		panic(fmt.Sprintf("kernels: RoPE head dimension %d is odd", headDim))
	}
	need("RoPEFreq invFreq", len(invFreq), headDim/2)
	c.rope(xs, rows, heads, headDim, pos, invFreq[:headDim/2])
}

func (c *CPU) rope(xs []float32, rows, heads, headDim int, pos []int32, invFreq []float64) {
	half := headDim / 2
	tasks := c.pool.split(rows, 8*heads*headDim)
	c.pool.run(tasks, func(_, t int) {
		lo, hi := chunk(rows, tasks, t, 1)
		cs := make([]float32, 2*half)
		cos, sin := cs[:half], cs[half:]
		for r := lo; r < hi; r++ {
			p := float64(pos[r])
			for j, f := range invFreq {
				s, c := math.Sincos(p * f)
				cos[j], sin[j] = float32(c), float32(s)
			}
			row := xs[r*heads*headDim : (r+1)*heads*headDim]
			for h := range heads {
				a := row[h*headDim : h*headDim+half]
				b := row[h*headDim+half : (h+1)*headDim]
				for j := range a {
					x0, x1 := a[j], b[j]
					a[j] = x0*cos[j] - x1*sin[j]
					b[j] = x0*sin[j] + x1*cos[j]
				}
			}
		}
	})
}

// Softmax normalises each row of x[rows, n] in place: exponentials of
// x - max rounded to float32, their sum accumulated in float64.
func (c *CPU) Softmax(x Buffer, rows, n int) {
	xs := f32Of(x, "Softmax x")
	need("Softmax x", len(xs), rows*n)
	tasks := c.pool.split(rows, 16*n)
	c.pool.run(tasks, func(_, t int) {
		lo, hi := chunk(rows, tasks, t, 1)
		for r := lo; r < hi; r++ {
			softmaxRow(xs[r*n : (r+1)*n])
		}
	})
}

func softmaxRow(x []float32) {
	if len(x) == 0 {
		return
	}
	mx := float32(math.Inf(-1))
	for _, v := range x {
		if v > mx {
			mx = v
		}
	}
	s := float32(1 / expSum(x, x, 1, mx))
	for i := range x {
		x[i] *= s
	}
}

// SiLUMul computes out[i] = gate[i] / (1 + exp(-gate[i])) * up[i].
func (c *CPU) SiLUMul(out, gate, up Buffer, n int) {
	o, g, u := f32Of(out, "SiLUMul out"), f32Of(gate, "SiLUMul gate"), f32Of(up, "SiLUMul up")
	need("SiLUMul out", len(o), n)
	need("SiLUMul gate", len(g), n)
	need("SiLUMul up", len(u), n)
	tasks := c.pool.split(n, 16)
	c.pool.run(tasks, func(_, t int) {
		lo, hi := chunk(n, tasks, t, 16)
		var e [256]float32 // exp(-gate) of a block; out may alias gate
		for b := lo; b < hi; b += len(e) {
			m := min(len(e), hi-b)
			expSum(e[:m], g[b:b+m], -1, 0)
			for i, ei := range e[:m] {
				o[b+i] = g[b+i] / (1 + ei) * u[b+i]
			}
		}
	})
}

// TopK selects the k largest values of each row, largest first, ties to
// the lower index. NaN compares below every number.
func (c *CPU) TopK(x Buffer, rows, n, k int, idx []int32, val []float32) error {
	xs := f32Of(x, "TopK x")
	need("TopK x", len(xs), rows*n)
	if k < 0 || k > n {
		panic(fmt.Sprintf("kernels: TopK of %d from rows of %d", k, n))
	}
	need("TopK idx", len(idx), rows*k)
	need("TopK val", len(val), rows*k)
	if k == 0 {
		return nil
	}
	for r := range rows {
		row := xs[r*n : (r+1)*n]
		ix, vs := idx[r*k:(r+1)*k], val[r*k:(r+1)*k]
		kept := 0
		for i, v := range row {
			if kept == k && !above(v, vs[k-1]) {
				continue
			}
			// Insert after every kept value that v does not beat: equal
			// values keep index order.
			p := min(kept, k-1)
			for p > 0 && above(v, vs[p-1]) {
				vs[p], ix[p] = vs[p-1], ix[p-1]
				p--
			}
			vs[p], ix[p] = v, int32(i)
			kept = min(kept+1, k)
		}
	}
	return nil
}

// above reports whether a ranks strictly before b: NaN ranks last.
func above(a, b float32) bool {
	if a != a {
		return false
	}
	return a > b || b != b
}

// Embed gathers out[i,:] = table[ids[i],:], widening bfloat16.
func (c *CPU) Embed(out, table Buffer, ids []int32, dim int) {
	o, tb := f32Of(out, "Embed out"), host(table)
	need("Embed out", len(o), len(ids)*dim)
	rows := tb.Len() / max(dim, 1)
	for i, id := range ids {
		if id < 0 || int(id) >= rows {
			panic(fmt.Sprintf("kernels: Embed id %d outside table of %d rows", id, rows))
		}
		dst := o[i*dim : (i+1)*dim]
		if tb.dt == BF16 {
			src := tb.bf16[int(id)*dim : (int(id)+1)*dim]
			for j, h := range src {
				dst[j] = bf16ToF32(h)
			}
		} else {
			copy(dst, tb.f32[int(id)*dim:(int(id)+1)*dim])
		}
	}
}

// Gather copies out[i,:] = x[rows[i],:]; out and x have the same dtype.
func (c *CPU) Gather(out, x Buffer, rows []int32, dim int) {
	ob, xb := host(out), host(x)
	if ob.dt != xb.dt {
		panic(fmt.Sprintf("kernels: Gather from %v into %v", xb.dt, ob.dt))
	}
	need("Gather out", ob.Len(), len(rows)*dim)
	n := xb.Len() / max(dim, 1)
	for i, r := range rows {
		if r < 0 || int(r) >= n {
			panic(fmt.Sprintf("kernels: Gather row %d outside %d rows", r, n))
		}
		if ob.dt == BF16 {
			copy(ob.bf16[i*dim:(i+1)*dim], xb.bf16[int(r)*dim:(int(r)+1)*dim])
		} else {
			copy(ob.f32[i*dim:(i+1)*dim], xb.f32[int(r)*dim:(int(r)+1)*dim])
		}
	}
}

// ScatterAdd accumulates out[rows[i],:] += scale[i] * x[i,:] in order of i.
// A nil scale means 1 for every row. Threads split the columns, so every
// element still sees the additions in order of i.
func (c *CPU) ScatterAdd(out, x Buffer, rows []int32, scale []float32, dim int) {
	o, xs := f32Of(out, "ScatterAdd out"), f32Of(x, "ScatterAdd x")
	need("ScatterAdd x", len(xs), len(rows)*dim)
	if scale != nil {
		need("ScatterAdd scale", len(scale), len(rows))
	}
	n := len(o) / max(dim, 1)
	for _, r := range rows {
		if r < 0 || int(r) >= n {
			panic(fmt.Sprintf("kernels: ScatterAdd row %d outside %d rows", r, n))
		}
	}
	tasks := c.pool.split(dim, 2*len(rows))
	c.pool.run(tasks, func(_, t int) {
		lo, hi := chunk(dim, tasks, t, 16)
		for i, r := range rows {
			s := float32(1)
			if scale != nil {
				s = scale[i]
			}
			axpy(s, xs[i*dim+lo:i*dim+hi], o[int(r)*dim+lo:int(r)*dim+hi])
		}
	})
}

// KVWrite stores k[i,:] and v[i,:] at cache rows slots[i].
func (c *CPU) KVWrite(kc, vc, k, v Buffer, slots []int32, width int) {
	kcs, vcs := f32Of(kc, "KVWrite kc"), f32Of(vc, "KVWrite vc")
	ks, vs := f32Of(k, "KVWrite k"), f32Of(v, "KVWrite v")
	need("KVWrite k", len(ks), len(slots)*width)
	need("KVWrite v", len(vs), len(slots)*width)
	n := min(len(kcs), len(vcs)) / max(width, 1)
	for i, s := range slots {
		if s < 0 || int(s) >= n {
			panic(fmt.Sprintf("kernels: KVWrite slot %d outside %d cache rows", s, n))
		}
		copy(kcs[int(s)*width:(int(s)+1)*width], ks[i*width:(i+1)*width])
		copy(vcs[int(s)*width:(int(s)+1)*width], vs[i*width:(i+1)*width])
	}
}
