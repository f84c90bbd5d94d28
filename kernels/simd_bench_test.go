package kernels

import "testing"

// The kernel benchmarks run on one thread with data in the L1 and L2
// caches: they measure arithmetic throughput, not memory bandwidth. The
// 1×4 benchmark reports weight bytes per second; the 4×4 one reports
// multiply-adds per second as MB/s.

func BenchmarkKernelDot1x4BF16(b *testing.B) {
	const k = 1024
	x := make([]float32, k)
	w := make([]uint16, 4*k)
	var out [4]float32
	b.SetBytes(2 * 4 * k) // weight bytes per call
	for b.Loop() {
		dot1x4BF16(&out, x, w, k, k)
	}
}

func BenchmarkKernelDot4x4BF16(b *testing.B) {
	const k = 1024
	x := make([]float32, 4*k)
	w := make([]uint16, 4*k)
	var out [16]float32
	b.SetBytes(16 * k) // multiply-adds per call
	for b.Loop() {
		dot4x4BF16(&out, x, k, w, k, k)
	}
}

// BenchmarkPoolDispatch measures the cost of waking the workers for one
// operation and waiting for them: the floor under every parallel call.
func BenchmarkPoolDispatch(b *testing.B) {
	c := NewCPU()
	defer c.Close()
	tasks := 4 * c.Threads()
	var sink [64]int
	for b.Loop() {
		c.pool.run(tasks, func(_, t int) { sink[t%64]++ })
	}
}

// BenchmarkKernelDot4x4DP is BenchmarkKernelDot4x4BF16 on the bf16 dot
// kernel (x in bf16 too): VDPBF16PS where the processor has it.
func BenchmarkKernelDot4x4DP(b *testing.B) {
	const k = 1024
	x := make([]uint16, 4*k)
	w := make([]uint16, 4*k)
	var out [16]float32
	b.SetBytes(16 * k) // multiply-adds per call
	for b.Loop() {
		dot4x4DP(&out, x, k, w, k, k)
	}
}
