//go:build !noasm

package kernels

// Features names the instruction set the kernels use.
func Features() string { return "generic" }

func dotF32(x, y []float32) float32                         { return dotF32Go(x, y) }
func dotBF16(x []float32, w []uint16) float32               { return dotBF16Go(x, w) }
func dot1x4F32(out *[4]float32, x, w []float32, ldw, k int) { dot1x4F32Go(out, x, w, ldw, k) }
func dot1x4BF16(out *[4]float32, x []float32, w []uint16, ldw, k int) {
	dot1x4BF16Go(out, x, w, ldw, k)
}
func dot4x4F32(out *[16]float32, x []float32, ldx int, w []float32, ldw, k int) {
	dot4x4F32Go(out, x, ldx, w, ldw, k)
}
func dot4x4BF16(out *[16]float32, x []float32, ldx int, w []uint16, ldw, k int) {
	dot4x4BF16Go(out, x, ldx, w, ldw, k)
}
func axpy(a float32, x, y []float32) { axpyGo(a, x, y) }
