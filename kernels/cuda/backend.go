//go:build cuda

package cuda

import (
	"bytes"
	"fmt"
	"math"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/moemesh/moemesh/kernels"
)

// Built reports whether this binary includes the CUDA backend.
const Built = true

// Backend runs kernels.Backend operations on one CUDA device. All work is
// queued on a single non-blocking stream in call order.
//
// A Backend is not safe for concurrent use, like every kernels.Backend;
// it may be driven from any goroutine: each call binds the device's
// context to the calling OS thread for its duration.
type Backend struct {
	device int
	dev    cu.Device
	ctx    cu.CUContext
	stream cu.Stream
	mod    cu.Module
	fns    map[string]cu.Function

	arch    int // compute capability major*10+minor
	sms     int // multiprocessors
	devName string
	jitTime time.Duration // module load, including the driver's PTX compilation
	jitLog  string        // the driver's informational JIT log

	meta  metaRing
	stage [2]staging
	next  int // staging buffer for the next chunk of a large write

	scr      cu.DevicePtr // device scratch for partial results (attention splits)
	scrBytes int

	err    error // first asynchronous failure, reported by Sync and Read*
	closed bool
}

var (
	_ kernels.Backend       = (*Backend)(nil)
	_ kernels.GroupedMatMul = (*Backend)(nil)
)

// Sizes of the host staging areas.
const (
	metaBytes  = 4 << 20 // pinned ring for per-call metadata and small writes
	stageBytes = 8 << 20 // each of two pinned buffers for large copies
	smallCopy  = 64 << 10
)

// New opens device (an ordinal, 0 first) and returns its Backend, which
// also implements kernels.GroupedMatMul; Open returns the concrete type.
// It fails with ErrNoDevice when there is no such device and with
// ErrUnsupported for GPUs older than compute capability 8.0.
//
// The CUDA driver itself is initialised when the program starts: a cuda
// build run on a host without a driver exits before New is reached.
func New(device int) (kernels.Backend, error) {
	b, err := Open(device)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Open is New returning *Backend.
func Open(device int) (*Backend, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cuda: counting devices: %w", err)
	}
	if device < 0 || device >= n {
		return nil, fmt.Errorf("%w: device %d requested, %d present", ErrNoDevice, device, n)
	}
	dev, err := cu.GetDevice(device)
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", device, err)
	}
	major, minor, err := dev.ComputeCapability()
	if err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", device, err)
	}
	if major < 8 {
		return nil, fmt.Errorf("%w: device %d is %d.%d", ErrUnsupported, device, major, minor)
	}
	b := &Backend{device: device, dev: dev, arch: major*10 + minor}
	if b.devName, err = dev.Name(); err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", device, err)
	}
	if b.sms, err = dev.Attribute(cu.MultiprocessorCount); err != nil {
		return nil, fmt.Errorf("cuda: device %d: %w", device, err)
	}
	if b.ctx, err = dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("cuda: device %d: context: %w", device, err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := b.init(); err != nil {
		b.release()
		return nil, err
	}
	return b, nil
}

// init runs with the context's OS thread locked.
func (b *Backend) init() error {
	var err error
	if err = cu.SetCurrentContext(b.ctx); err != nil {
		return fmt.Errorf("cuda: set context: %w", err)
	}
	if b.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		return fmt.Errorf("cuda: stream: %w", err)
	}
	ptx := ptxSM80
	if b.arch >= 90 {
		ptx = ptxSM90
	}
	// The driver compiles the PTX here (cached under CUDA_CACHE_PATH);
	// its error log names the offending kernel and line when it refuses.
	infoLog, errLog := make([]byte, 16<<10), make([]byte, 16<<10)
	t0 := time.Now()
	b.mod, err = cu.LoadDataEx(ptx, &cu.JITInfoLogBuffer{Buffer: infoLog}, &cu.JITErrorLogBuffer{Buffer: errLog})
	b.jitTime = time.Since(t0)
	if err != nil {
		return fmt.Errorf("cuda: loading the kernel module for compute capability %d.%d (after %v): %w: %s",
			b.arch/10, b.arch%10, b.jitTime.Round(time.Millisecond), err, cString(errLog))
	}
	b.jitLog = cString(infoLog)
	b.fns = make(map[string]cu.Function, len(kernelNames))
	for _, name := range kernelNames {
		f, err := b.mod.Function(name)
		if err != nil {
			return fmt.Errorf("cuda: kernel %s: %w", name, err)
		}
		b.fns[name] = f
	}
	if err := b.meta.init(metaBytes); err != nil {
		return err
	}
	for i := range b.stage {
		if err := b.stage[i].init(stageBytes); err != nil {
			return err
		}
	}
	return nil
}

// release frees whatever init managed to create; the thread must hold the context.
func (b *Backend) release() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cu.SetCurrentContext(b.ctx) == nil {
		if b.stream != (cu.Stream{}) {
			_ = b.stream.Synchronize()
		}
		b.meta.free()
		if b.scr != 0 {
			_ = cu.MemFree(b.scr)
		}
		for i := range b.stage {
			b.stage[i].free()
		}
		if b.mod != (cu.Module{}) {
			_ = b.mod.Unload()
		}
		if b.stream != (cu.Stream{}) {
			_ = b.stream.Destroy()
		}
	}
	_ = b.dev.ReleasePrimaryCtx()
}

// Close waits for queued work, then releases the stream, the module and
// the staging memory. Buffers must be freed before; the Backend must not be
// used afterwards.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	err := b.Sync()
	b.closed = true
	b.release()
	return err
}

// Name returns "cuda:N".
func (b *Backend) Name() string { return fmt.Sprintf("cuda:%d", b.device) }

// Info describes the device: name, compute capability, multiprocessors,
// and how long loading the kernel module (the PTX JIT) took.
func (b *Backend) Info() string {
	return fmt.Sprintf("%s (compute capability %d.%d, %d SMs; kernel module loaded in %v)",
		b.devName, b.arch/10, b.arch%10, b.sms, b.jitTime.Round(time.Millisecond))
}

// JITLog returns the driver's informational log from compiling the PTX.
func (b *Backend) JITLog() string { return b.jitLog }

// cString returns the text of a NUL-terminated log buffer.
func cString(buf []byte) string {
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	return strings.TrimSpace(string(buf))
}

// enter binds the context to the calling thread; the caller defers the
// returned function.
func (b *Backend) enter() func() {
	if b.closed {
		panic("cuda: use of a closed Backend")
	}
	runtime.LockOSThread()
	if err := cu.SetCurrentContext(b.ctx); err != nil {
		b.fail(fmt.Errorf("cuda: set context: %w", err))
	}
	return runtime.UnlockOSThread
}

// fail records the first asynchronous failure.
func (b *Backend) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// sync waits for the stream and resets the metadata ring; the thread must
// hold the context.
func (b *Backend) sync() error {
	if err := b.stream.Synchronize(); err != nil {
		b.fail(fmt.Errorf("cuda: %w", err))
	}
	b.meta.off = 0
	return b.err
}

// Sync waits for all queued work and returns the first failure since the
// Backend was opened. Errors are sticky: CUDA cannot recover a context
// after a kernel fault.
func (b *Backend) Sync() error {
	defer b.enter()()
	return b.sync()
}

// Buffer is device memory: Len elements of DType at a device address.
// Views share their parent's memory and are not freed on their own.
type Buffer struct {
	ptr  cu.DevicePtr
	dt   kernels.DType
	n    int
	view bool
	be   *Backend
}

// DType returns F32 or BF16.
func (d *Buffer) DType() kernels.DType { return d.dt }

// Len returns the number of elements.
func (d *Buffer) Len() int { return d.n }

// Ptr returns the device address of the first element.
func (d *Buffer) Ptr() uintptr { return uintptr(d.ptr) }

func (b *Backend) buf(x kernels.Buffer) *Buffer {
	d, ok := x.(*Buffer)
	if !ok || d.be != b {
		panic(fmt.Sprintf("cuda: buffer of type %T does not belong to %s", x, b.Name()))
	}
	if d.ptr == 0 && d.n > 0 {
		panic("cuda: use of a freed buffer")
	}
	return d
}

func (b *Backend) f32(x kernels.Buffer, what string, want int) *Buffer {
	d := b.buf(x)
	if d.dt != kernels.F32 {
		panic(fmt.Sprintf("cuda: %s must be F32, is %v", what, d.dt))
	}
	need(what, d.n, want)
	return d
}

// need panics unless a buffer of n elements can hold want elements.
func need(what string, n, want int) {
	if want < 0 || n < want {
		panic(fmt.Sprintf("cuda: %s has %d elements, need %d", what, n, want))
	}
}

// Alloc returns n zeroed elements of device memory.
func (b *Backend) Alloc(dt kernels.DType, n int) (kernels.Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("cuda: alloc of %d elements", n)
	}
	if dt.Size() == 0 {
		return nil, fmt.Errorf("cuda: alloc of unknown dtype %v", dt)
	}
	d := &Buffer{dt: dt, n: n, be: b}
	if n == 0 {
		return d, nil
	}
	defer b.enter()()
	bytes := int64(n) * int64(dt.Size())
	ptr, err := cu.MemAlloc(bytes)
	if err != nil {
		return nil, fmt.Errorf("cuda: alloc of %d bytes: %w", bytes, err)
	}
	if err := cu.MemsetD8Async(ptr, 0, bytes, b.stream); err != nil {
		_ = cu.MemFree(ptr)
		return nil, fmt.Errorf("cuda: zeroing %d bytes: %w", bytes, err)
	}
	d.ptr = ptr
	return d, nil
}

// Free releases x's device memory after the work queued so far; freeing a
// view is a no-op.
func (b *Backend) Free(x kernels.Buffer) {
	d := b.buf(x)
	if d.view || d.ptr == 0 {
		return
	}
	defer b.enter()()
	// cuMemFree does not wait for the stream, which may still use d.
	if err := b.stream.Synchronize(); err != nil {
		b.fail(fmt.Errorf("cuda: %w", err))
	}
	if err := cu.MemFree(d.ptr); err != nil {
		b.fail(fmt.Errorf("cuda: free: %w", err))
	}
	d.ptr = 0
}

// View returns elements [off, off+n) of x, sharing its memory.
func (b *Backend) View(x kernels.Buffer, off, n int) kernels.Buffer {
	d := b.buf(x)
	if off < 0 || n < 0 || off+n > d.n {
		panic(fmt.Sprintf("cuda: view [%d, %d) of a buffer of %d elements", off, off+n, d.n))
	}
	return &Buffer{ptr: d.ptr + cu.DevicePtr(off*d.dt.Size()), dt: d.dt, n: n, view: true, be: b}
}

// launchArgs holds kernel parameters. gorgonia.org/cu copies 8 bytes from
// each parameter's address, so every value sits in its own 8-byte slot;
// the kernel reads the low 4 bytes of an int or float slot.
type launchArgs struct {
	vals [16]uint64
	n    int
}

func (a *launchArgs) put(v uint64) *launchArgs {
	a.vals[a.n] = v
	a.n++
	return a
}

func (a *launchArgs) ptr(p cu.DevicePtr) *launchArgs { return a.put(uint64(p)) }
func (a *launchArgs) num(v int) *launchArgs          { return a.put(uint64(int64(v))) }
func (a *launchArgs) f32(v float32) *launchArgs      { return a.put(uint64(math.Float32bits(v))) }
func (a *launchArgs) f64(v float64) *launchArgs      { return a.put(math.Float64bits(v)) }

// launch queues kernel name on the stream; the thread must hold the context.
func (b *Backend) launch(name string, gx, gy, gz, block int, a *launchArgs) {
	fn, ok := b.fns[name]
	if !ok {
		panic("cuda: unknown kernel " + name)
	}
	params := make([]unsafe.Pointer, a.n)
	for i := range params {
		params[i] = unsafe.Pointer(&a.vals[i])
	}
	if err := fn.Launch(gx, gy, gz, block, 1, 1, 0, b.stream, params); err != nil {
		b.fail(fmt.Errorf("cuda: launch %s grid (%d,%d,%d) block %d: %w", name, gx, gy, gz, block, err))
	}
}

// gridFor returns a grid-stride launch width for n elements.
func (b *Backend) gridFor(n int64) int {
	g := (n + 255) / 256
	if lim := int64(b.sms) * 32; g > lim {
		g = lim
	}
	if g < 1 {
		g = 1
	}
	return int(g)
}

// scratch returns at least n bytes of device memory for intermediate
// results of one call; the next call may reuse it, which stream order makes
// safe. Growing it waits for the stream first. The thread must hold the context.
func (b *Backend) scratch(n int) cu.DevicePtr {
	if n <= b.scrBytes {
		return b.scr
	}
	_ = b.sync()
	size := max(n, 2*b.scrBytes, 1<<20)
	if b.scr != 0 {
		_ = cu.MemFree(b.scr)
		b.scr, b.scrBytes = 0, 0
	}
	p, err := cu.MemAlloc(int64(size))
	if err != nil {
		panic(fmt.Sprintf("cuda: scratch of %d bytes: %v", size, err))
	}
	b.scr, b.scrBytes = p, size
	return p
}
