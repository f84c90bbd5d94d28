//go:build !cuda

package cuda_test

import (
	"errors"
	"fmt"

	"github.com/moemesh/moemesh/kernels/cuda"
)

// A worker asks for a GPU and falls back to the CPU backend when this
// binary has no CUDA support.
func ExampleNew() {
	be, err := cuda.New(0)
	if errors.Is(err, cuda.ErrNotBuilt) {
		fmt.Println("no CUDA in this build")
		return
	}
	fmt.Println(be.Name())
	// Output: no CUDA in this build
}
