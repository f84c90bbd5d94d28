package kernels

import "testing"

// memBenchBytes is the array size of the bandwidth benchmarks: far above
// the caches, small enough to allocate quickly.
const memBenchBytes = 256 << 20

// BenchmarkMemRead measures read-only bandwidth with all threads summing
// their share of a large array with the dot kernel, the bound for a
// memory-bound MatMul. Compare MatMul's MB/s with it in the same run.
func BenchmarkMemRead(b *testing.B) {
	c := NewCPU()
	defer c.Close()
	x := make([]float32, memBenchBytes/4)
	for i := range x {
		x[i] = 1
	}
	tasks := c.Threads()
	sums := make([]float32, tasks)
	b.SetBytes(memBenchBytes)
	for b.Loop() {
		c.pool.run(tasks, func(_, t int) {
			lo, hi := chunk(len(x), tasks, t, 16)
			sums[t] = dotF32(x[lo:hi], x[lo:hi])
		})
	}
	var s float32
	for _, v := range sums {
		s += v
	}
	if s <= 0 {
		b.Fatalf("sum %g", s)
	}
}

// BenchmarkMemCopy measures copy bandwidth with all threads, counting the
// bytes read and written.
func BenchmarkMemCopy(b *testing.B) {
	c := NewCPU()
	defer c.Close()
	src := make([]float32, memBenchBytes/4)
	dst := make([]float32, memBenchBytes/4)
	for i := range src {
		src[i] = float32(i)
	}
	tasks := c.Threads()
	b.SetBytes(2 * memBenchBytes)
	for b.Loop() {
		c.pool.run(tasks, func(_, t int) {
			lo, hi := chunk(len(src), tasks, t, 16)
			copy(dst[lo:hi], src[lo:hi])
		})
	}
	if dst[len(dst)-1] != src[len(src)-1] {
		b.Fatal("copy incomplete")
	}
}
