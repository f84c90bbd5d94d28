// Package kernels holds the compute backend interface the forward pass is
// written against, and its CPU implementation.
//
// Buffers are opaque handles owned by a Backend, so the same model code runs
// on host memory (the CPU backend, pure Go plus AVX2/AVX-512 assembly) and on
// device memory (the CUDA backend in kernels/cuda, behind the cuda build tag).
// Every backend must pass the conformance suite in kernels/kernelstest, which
// checks each operation against a float64 reference.
package kernels
