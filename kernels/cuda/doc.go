// Package cuda is the NVIDIA GPU implementation of kernels.Backend, built
// on the CUDA driver API through gorgonia.org/cu.
//
// The GPU code is compiled only with the cuda build tag:
//
//	go build -tags cuda ./cmd/moemesh
//
// Without the tag the package still exports New with the same signature,
// returning ErrNotBuilt, so callers (the worker's --device flag) compile in
// both builds and the default binary never links the CUDA driver. A cuda
// build needs cuda.h and libcuda.so at build time (scripts/install-cuda-headers.sh
// fetches the two files) and only the driver's libcuda.so.1 at run time.
//
// The kernels are CUDA C in csrc/, compiled ahead of time to PTX for
// sm_90 and sm_80 by scripts/gen-ptx.sh and embedded in the binary; the
// driver compiles the module for the GPU it finds. Buffers are device
// memory owned by the Backend; operations are queued on one stream and run
// asynchronously; Sync and the Read methods wait for them and report any
// failure. The Backend also implements kernels.GroupedMatMul, which runs the
// experts of a MoE layer in one launch. docs/cuda.md has the design, the
// build steps and what has been checked on which hardware.
package cuda
