package kernels_test

import (
	"fmt"

	"github.com/moemesh/moemesh/kernels"
)

// A forward pass allocates buffers on a backend, runs operations on them
// and reads results back; this one takes the softmax of x·wᵀ for a 2×2 x
// and a 3×2 w.
func Example() {
	var be kernels.Backend = kernels.NewCPU()

	x, _ := be.Alloc(kernels.F32, 2*2) // [m=2, k=2]
	w, _ := be.Alloc(kernels.F32, 3*2) // [n=3, k=2]
	out, _ := be.Alloc(kernels.F32, 2*3)
	_ = be.WriteF32(x, 0, []float32{1, 2, 3, 4})
	_ = be.WriteF32(w, 0, []float32{1, 0, 0, 1, 1, 1})

	be.MatMul(out, x, w, 2, 3, 2)
	be.Softmax(out, 2, 3)

	got := make([]float32, 6)
	if err := be.ReadF32(out, 0, got); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%.4f\n", got)
	// Output: [0.0900 0.2447 0.6652 0.0171 0.0466 0.9362]
}
