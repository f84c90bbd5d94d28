//go:build cuda

package cuda

// #cgo LDFLAGS: -lcuda
// #include <cuda.h>
import "C"

import (
	"fmt"
	"unsafe"
)

// hostAlloc returns n bytes of page-locked host memory in the current
// context, which the copy engines read and write directly. gorgonia.org/cu
// v0.9.6 does not wrap cuMemHostAlloc.
func hostAlloc(n int) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	if r := C.cuMemHostAlloc(&p, C.size_t(n), 0); r != C.CUDA_SUCCESS {
		return nil, fmt.Errorf("cuda: cuMemHostAlloc(%d bytes): CUresult %d", n, int(r))
	}
	return p, nil
}

// hostFree releases memory from hostAlloc.
func hostFree(p unsafe.Pointer) {
	if p != nil {
		C.cuMemFreeHost(p)
	}
}
