package kernels

import (
	"fmt"
	"runtime"
)

// CPU is the host-memory Backend: pure Go with AVX2/AVX-512 assembly for
// the inner loops when the processor has them (see Features). Operations run
// synchronously on the calling goroutine plus a fixed pool of worker
// goroutines, so results are visible as soon as a call returns.
//
// A CPU is not safe for concurrent use: one goroutine drives it, as the
// Backend contract says. Close stops its workers; an unreachable CPU stops
// them on its own.
type CPU struct {
	pool    *pool
	threads int
	roundX  bool      // round x to bfloat16 before BF16 matmuls
	xbf     []float32 // scratch for the rounded x
	compute Compute   // arithmetic of BF16 matmuls with m ≥ 2
	xdp     []uint16  // scratch for x in bfloat16 (ComputeBF16)
}

var (
	_ Backend       = (*CPU)(nil)
	_ HostWrapper   = (*CPU)(nil)
	_ GroupedMatMul = (*CPU)(nil)
	_ FreqRoPE      = (*CPU)(nil)
)

// CPUOption configures NewCPU.
type CPUOption func(*cpuConfig)

type cpuConfig struct {
	threads int
	roundX  bool
	compute Compute
}

// WithThreads sets the number of threads that run each operation, the
// calling goroutine included. n < 1 means runtime.GOMAXPROCS(0).
func WithThreads(n int) CPUOption {
	return func(c *cpuConfig) { c.threads = n }
}

// WithBF16Activations makes MatMul and GroupedMatMul round x to the nearest
// bfloat16 (ties to even) before multiplying it with BF16 weights, as
// llama.cpp's CPU backend does (it converts activations to the weights'
// type). Use it to compare logits with llama.cpp; it loses precision.
func WithBF16Activations() CPUOption {
	return func(c *cpuConfig) { c.roundX = true }
}

// NewCPU returns a CPU backend. By default it uses runtime.GOMAXPROCS(0)
// threads.
func NewCPU(opts ...CPUOption) *CPU {
	cfg := cpuConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.threads < 1 {
		cfg.threads = runtime.GOMAXPROCS(0)
	}
	c := &CPU{pool: newPool(cfg.threads), threads: cfg.threads, roundX: cfg.roundX, compute: cfg.compute}
	// The workers reference only the pool, so c can become unreachable
	// while they run; stop them then.
	runtime.AddCleanup(c, func(p *pool) { p.close() }, c.pool)
	return c
}

// Close stops the worker goroutines. The CPU must not be used afterwards.
func (c *CPU) Close() { c.pool.close() }

// Threads reports how many threads run each operation.
func (c *CPU) Threads() int { return c.threads }

// Name returns "cpu", or "cpu-noasm" when built with the noasm tag or run
// on a processor without AVX2 and FMA.
func (c *CPU) Name() string {
	if Features() == "generic" {
		return "cpu-noasm"
	}
	return "cpu"
}

// HostBuffer is the Buffer type of the CPU backend: a slice of host memory
// holding either float32 or raw bfloat16 values.
type HostBuffer struct {
	dt   DType
	f32  []float32
	bf16 []uint16
	fp8  *FP8Matrix
	view bool
}

// DType returns F32, BF16 or F8E4M3.
func (b *HostBuffer) DType() DType { return b.dt }

// Len returns the number of elements.
func (b *HostBuffer) Len() int {
	switch b.dt {
	case BF16:
		return len(b.bf16)
	case F8E4M3:
		if b.fp8 == nil {
			return 0
		}
		return len(b.fp8.Codes)
	}
	return len(b.f32)
}

// F32 returns the elements of an F32 buffer (nil for BF16), sharing memory.
func (b *HostBuffer) F32() []float32 { return b.f32 }

// BF16 returns the raw bits of a BF16 buffer (nil for F32), sharing memory.
func (b *HostBuffer) BF16() []uint16 { return b.bf16 }

func (c *CPU) Alloc(dt DType, n int) (Buffer, error) {
	if n < 0 {
		return nil, fmt.Errorf("kernels: alloc of %d elements", n)
	}
	switch dt {
	case F32:
		return &HostBuffer{dt: F32, f32: make([]float32, n)}, nil
	case BF16:
		return &HostBuffer{dt: BF16, bf16: make([]uint16, n)}, nil
	}
	return nil, fmt.Errorf("kernels: alloc of unknown dtype %v", dt)
}

// Free drops the backend's reference to b's memory. Using b afterwards
// panics; views of b keep the memory alive but are invalid by contract.
func (c *CPU) Free(b Buffer) {
	hb := host(b)
	if hb.view {
		return
	}
	hb.f32, hb.bf16, hb.fp8 = nil, nil, nil
}

func (c *CPU) View(b Buffer, off, n int) Buffer {
	hb := host(b)
	if hb.dt == F8E4M3 {
		panic("kernels: View of an F8E4M3 weight")
	}
	if off < 0 || n < 0 || off+n > hb.Len() {
		panic(fmt.Sprintf("kernels: view [%d, %d) of a buffer of %d elements", off, off+n, hb.Len()))
	}
	v := &HostBuffer{dt: hb.dt, view: true}
	if hb.dt == BF16 {
		v.bf16 = hb.bf16[off : off+n : off+n]
	} else {
		v.f32 = hb.f32[off : off+n : off+n]
	}
	return v
}

// WrapF32 returns a buffer that uses s as its memory, without a copy.
func (c *CPU) WrapF32(s []float32) Buffer {
	return &HostBuffer{dt: F32, f32: s[:len(s):len(s)], view: true}
}

// WrapBF16 returns a buffer that uses s as its memory, without a copy.
func (c *CPU) WrapBF16(s []uint16) Buffer {
	return &HostBuffer{dt: BF16, bf16: s[:len(s):len(s)], view: true}
}

func (c *CPU) WriteF32(dst Buffer, off int, src []float32) error {
	d := f32Of(dst, "WriteF32 dst")
	if off < 0 || off+len(src) > len(d) {
		return fmt.Errorf("kernels: WriteF32 of [%d, %d) into %d elements", off, off+len(src), len(d))
	}
	copy(d[off:], src)
	return nil
}

func (c *CPU) WriteBF16(dst Buffer, off int, src []uint16) error {
	d := bf16Of(dst, "WriteBF16 dst")
	if off < 0 || off+len(src) > len(d) {
		return fmt.Errorf("kernels: WriteBF16 of [%d, %d) into %d elements", off, off+len(src), len(d))
	}
	copy(d[off:], src)
	return nil
}

func (c *CPU) ReadF32(src Buffer, off int, dst []float32) error {
	s := f32Of(src, "ReadF32 src")
	if off < 0 || off+len(dst) > len(s) {
		return fmt.Errorf("kernels: ReadF32 of [%d, %d) from %d elements", off, off+len(dst), len(s))
	}
	copy(dst, s[off:])
	return nil
}

// Sync returns nil: CPU operations complete before they return.
func (c *CPU) Sync() error { return nil }

func host(b Buffer) *HostBuffer {
	hb, ok := b.(*HostBuffer)
	if !ok {
		panic(fmt.Sprintf("kernels: buffer of type %T is not a CPU buffer", b))
	}
	return hb
}

func f32Of(b Buffer, what string) []float32 {
	hb := host(b)
	if hb.dt != F32 {
		panic(fmt.Sprintf("kernels: %s must be F32, is %v", what, hb.dt))
	}
	return hb.f32
}

func bf16Of(b Buffer, what string) []uint16 {
	hb := host(b)
	if hb.dt != BF16 {
		panic(fmt.Sprintf("kernels: %s must be BF16, is %v", what, hb.dt))
	}
	return hb.bf16
}

// need panics unless a buffer of n elements can hold want elements.
func need(what string, n, want int) {
	if want < 0 || n < want {
		panic(fmt.Sprintf("kernels: %s has %d elements, need %d", what, n, want))
	}
}
