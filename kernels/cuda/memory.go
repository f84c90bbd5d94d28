//go:build cuda

package cuda

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/moemesh/moemesh/kernels"
)

// metaRing is a pinned host area mirrored by a device area of the same
// size. A call packs its small arrays (ids, positions, slots, block
// tables, scales) at the next free offset of the host side and copies them
// with one asynchronous transfer to the same offset of the device side; the
// kernels read them there. Offsets only grow until the stream is known to
// be idle (Sync, Read*, or a full ring, which synchronises), so no copy
// overwrites bytes a queued transfer or kernel still needs.
type metaRing struct {
	host unsafe.Pointer
	dev  cu.DevicePtr
	size int
	off  int
}

func (r *metaRing) init(size int) error {
	h, err := hostAlloc(size)
	if err != nil {
		return err
	}
	d, err := cu.MemAlloc(int64(size))
	if err != nil {
		hostFree(h)
		return fmt.Errorf("cuda: metadata area of %d bytes: %w", size, err)
	}
	r.host, r.dev, r.size, r.off = h, d, size, 0
	return nil
}

func (r *metaRing) free() {
	hostFree(r.host)
	if r.dev != 0 {
		_ = cu.MemFree(r.dev)
	}
	*r = metaRing{}
}

func align16(n int) int { return (n + 15) &^ 15 }

// metaCall is one call's slice of the ring: [start, end).
type metaCall struct {
	b          *Backend
	start, off int
	end        int
}

// metaBegin reserves room for arrays of the given byte sizes (each
// 16-byte aligned), waiting for the stream or growing the ring if needed.
func (b *Backend) metaBegin(sizes ...int) *metaCall {
	total := 0
	for _, s := range sizes {
		total += align16(s)
	}
	r := &b.meta
	if r.off+total > r.size {
		_ = b.sync() // failure stays recorded in b.err
		if total > r.size {
			n := r.size
			for n < total {
				n *= 2
			}
			r.free()
			if err := r.init(n); err != nil {
				panic(fmt.Sprintf("cuda: growing the metadata area to %d bytes: %v", n, err))
			}
		}
	}
	mc := &metaCall{b: b, start: r.off, off: r.off, end: r.off + total}
	r.off += total
	return mc
}

// put copies n bytes from p into the call's area and returns their device address.
func (mc *metaCall) put(p unsafe.Pointer, n int) cu.DevicePtr {
	r := &mc.b.meta
	if mc.off+align16(n) > mc.end {
		panic("cuda: metadata reservation too small")
	}
	if n > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Add(r.host, mc.off)), n), unsafe.Slice((*byte)(p), n))
	}
	d := r.dev + cu.DevicePtr(mc.off)
	mc.off += align16(n)
	return d
}

func (mc *metaCall) i32(s []int32) cu.DevicePtr {
	return mc.put(unsafe.Pointer(unsafe.SliceData(s)), 4*len(s))
}

func (mc *metaCall) f32(s []float32) cu.DevicePtr {
	return mc.put(unsafe.Pointer(unsafe.SliceData(s)), 4*len(s))
}

func (mc *metaCall) i64(s []int64) cu.DevicePtr {
	return mc.put(unsafe.Pointer(unsafe.SliceData(s)), 8*len(s))
}

// out reserves n bytes of device output space, uploaded as garbage.
func (mc *metaCall) out(n int) (cu.DevicePtr, unsafe.Pointer) {
	r := &mc.b.meta
	d, h := r.dev+cu.DevicePtr(mc.off), unsafe.Add(r.host, mc.off)
	mc.off += align16(n)
	return d, h
}

// upload queues the transfer of what put wrote.
func (mc *metaCall) upload() {
	r := &mc.b.meta
	n := mc.off - mc.start
	if n == 0 {
		return
	}
	err := cu.MemcpyHtoDAsync(r.dev+cu.DevicePtr(mc.start), unsafe.Add(r.host, mc.start), int64(n), mc.b.stream)
	if err != nil {
		mc.b.fail(fmt.Errorf("cuda: metadata upload: %w", err))
	}
}

// staging is a pinned host buffer for large copies, with an event marking
// the end of the last transfer that used it.
type staging struct {
	host unsafe.Pointer
	size int
	ev   cu.Event
}

func (s *staging) init(size int) error {
	h, err := hostAlloc(size)
	if err != nil {
		return err
	}
	ev, err := cu.MakeEvent(cu.DisableTiming)
	if err != nil {
		hostFree(h)
		return fmt.Errorf("cuda: event: %w", err)
	}
	s.host, s.size, s.ev = h, size, ev
	return nil
}

func (s *staging) free() {
	hostFree(s.host)
	if s.ev != (cu.Event{}) {
		_ = cu.DestroyEvent(&s.ev)
	}
	*s = staging{}
}

// upload queues a copy of n bytes at src to dst. Small copies go through
// the metadata ring; large ones through the two staging buffers in turn,
// so filling one overlaps the transfer from the other. It returns once src
// may be reused; the transfer itself is ordered on the stream.
func (b *Backend) upload(dst cu.DevicePtr, src unsafe.Pointer, n int) error {
	if n <= smallCopy {
		mc := b.metaBegin(n)
		_, h := mc.out(n)
		copy(unsafe.Slice((*byte)(h), n), unsafe.Slice((*byte)(src), n))
		if err := cu.MemcpyHtoDAsync(dst, h, int64(n), b.stream); err != nil {
			return fmt.Errorf("cuda: write: %w", err)
		}
		return nil
	}
	for done := 0; done < n; {
		s := &b.stage[b.next]
		b.next ^= 1
		c := min(n-done, s.size)
		if err := s.ev.Synchronize(); err != nil {
			return fmt.Errorf("cuda: write: %w", err)
		}
		copy(unsafe.Slice((*byte)(s.host), c), unsafe.Slice((*byte)(unsafe.Add(src, done)), c))
		if err := cu.MemcpyHtoDAsync(dst+cu.DevicePtr(done), s.host, int64(c), b.stream); err != nil {
			return fmt.Errorf("cuda: write: %w", err)
		}
		if err := s.ev.Record(b.stream); err != nil {
			return fmt.Errorf("cuda: write: %w", err)
		}
		done += c
	}
	return nil
}

// download copies n bytes at src to dst after all queued work.
func (b *Backend) download(dst unsafe.Pointer, src cu.DevicePtr, n int) error {
	if err := b.sync(); err != nil {
		return err
	}
	s := &b.stage[0]
	for done := 0; done < n; {
		c := min(n-done, s.size)
		if err := cu.MemcpyDtoHAsync(s.host, src+cu.DevicePtr(done), int64(c), b.stream); err != nil {
			b.fail(fmt.Errorf("cuda: read: %w", err))
			return b.err
		}
		if err := b.sync(); err != nil {
			return err
		}
		copy(unsafe.Slice((*byte)(unsafe.Add(dst, done)), c), unsafe.Slice((*byte)(s.host), c))
		done += c
	}
	return nil
}

func (b *Backend) writeRange(dst kernels.Buffer, dt kernels.DType, off, n int, what string) (*Buffer, error) {
	d := b.buf(dst)
	if d.dt != dt {
		panic(fmt.Sprintf("cuda: %s dst must be %v, is %v", what, dt, d.dt))
	}
	if off < 0 || off+n > d.n {
		return nil, fmt.Errorf("cuda: %s of [%d, %d) into %d elements", what, off, off+n, d.n)
	}
	return d, nil
}

// WriteF32 copies src into dst[off:off+len(src)]. The copy is queued on the
// stream; src may be reused when WriteF32 returns.
func (b *Backend) WriteF32(dst kernels.Buffer, off int, src []float32) error {
	d, err := b.writeRange(dst, kernels.F32, off, len(src), "WriteF32")
	if err != nil || len(src) == 0 {
		return err
	}
	defer b.enter()()
	return b.upload(d.ptr+cu.DevicePtr(4*off), unsafe.Pointer(unsafe.SliceData(src)), 4*len(src))
}

// WriteBF16 copies raw bfloat16 bits into dst[off:off+len(src)], like WriteF32.
func (b *Backend) WriteBF16(dst kernels.Buffer, off int, src []uint16) error {
	d, err := b.writeRange(dst, kernels.BF16, off, len(src), "WriteBF16")
	if err != nil || len(src) == 0 {
		return err
	}
	defer b.enter()()
	return b.upload(d.ptr+cu.DevicePtr(2*off), unsafe.Pointer(unsafe.SliceData(src)), 2*len(src))
}

// ReadF32 waits for all queued work, then copies src[off:off+len(dst)] into dst.
func (b *Backend) ReadF32(src kernels.Buffer, off int, dst []float32) error {
	d := b.buf(src)
	if d.dt != kernels.F32 {
		panic(fmt.Sprintf("cuda: ReadF32 src must be F32, is %v", d.dt))
	}
	if off < 0 || off+len(dst) > d.n {
		return fmt.Errorf("cuda: ReadF32 of [%d, %d) from %d elements", off, off+len(dst), d.n)
	}
	defer b.enter()()
	if len(dst) == 0 {
		return b.sync()
	}
	return b.download(unsafe.Pointer(unsafe.SliceData(dst)), d.ptr+cu.DevicePtr(4*off), 4*len(dst))
}

// Copy queues dst[0:n) = src[0:n) on the device, n = src.Len(); both
// buffers have one dtype and dst holds at least n elements.
func (b *Backend) Copy(dst, src kernels.Buffer) {
	d, s := b.buf(dst), b.buf(src)
	if d.dt != s.dt {
		panic(fmt.Sprintf("cuda: Copy from %v into %v", s.dt, d.dt))
	}
	need("Copy dst", d.n, s.n)
	if s.n == 0 {
		return
	}
	defer b.enter()()
	if err := cu.MemcpyDtoDAsync(d.ptr, s.ptr, int64(s.n*s.dt.Size()), b.stream); err != nil {
		b.fail(fmt.Errorf("cuda: copy: %w", err))
	}
}
