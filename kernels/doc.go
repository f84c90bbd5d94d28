// Package kernels holds the compute backend interface the forward pass is
// written against, and its CPU implementation.
//
// Buffers are opaque handles owned by a Backend, so the same model code runs
// on host memory (the CPU backend, pure Go plus AVX2/AVX-512 assembly) and on
// device memory (the CUDA backend in kernels/cuda, behind the cuda build tag).
// Every backend must pass the conformance suite in kernels/kernelstest, which
// checks each operation against a float64 reference.
//
// # The CPU backend
//
// NewCPU returns a Backend whose buffers (HostBuffer) are Go slices of
// float32 or raw bfloat16 bits; it also implements HostWrapper, so
// memory-mapped weights are used in place, and GroupedMatMul, so the experts
// of a MoE layer run in one dispatch. Each operation runs on the calling
// goroutine plus a fixed pool of workers (WithThreads; GOMAXPROCS by
// default), with small operations kept on the caller. MatMul streams every
// weight row from memory once per call whatever the number of rows of x,
// which is what bounds decoding speed.
//
// The inner loops (dot products of f32 with f32 or bf16, a 4×4 register
// tile for batches, axpy) are Go assembly for AVX-512 and AVX2+FMA, chosen at
// run time (Features); the noasm build tag or an older processor selects the
// pure-Go versions in simd_generic.go, whose loops are the reference for the
// assembly. All kernels accumulate a dot product the same way, so a row's
// result does not depend on the batch it is in. Reductions that llama.cpp
// does in double (RMSNorm's sum of squares, softmax denominators) are done in
// float64 here too; RoPE angles are computed in float64. See
// docs/kernels.md for the design and measured bandwidth.
package kernels
