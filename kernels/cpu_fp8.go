package kernels

import (
	"fmt"
	"math"
)

// FP8Matrix describes a block-quantized weight [Rows, Cols] in the layout of
// Hugging Face FP8 checkpoints (quant_method fp8, fmt e4m3): one E4M3FN
// code per weight and one float32 scale per BlockRows×BlockCols block,
//
//	W[i, j] = e4m3(Codes[i·Cols + j]) × Scales[bi·ScaleCols + bj]
//	bi = (RowOff + i) / BlockRows, bj = (ColOff + j) / BlockCols
//
// where ScaleCols = ceil((ColOff+Cols)/BlockCols). RowOff and ColOff place
// element (0, 0) inside its block: a tensor-parallel slice that starts
// inside a block keeps the checkpoint's grid. Edge blocks may be partial.
type FP8Matrix struct {
	Codes                []byte    // Rows×Cols E4M3FN codes, row-major
	Scales               []float32 // ceil((RowOff+Rows)/BlockRows) × ScaleCols
	Rows, Cols           int
	BlockRows, BlockCols int
	RowOff, ColOff       int // in [0, BlockRows) and [0, BlockCols)
}

// ScaleCols is the width of the scale grid.
func (f *FP8Matrix) ScaleCols() int { return (f.ColOff + f.Cols + f.BlockCols - 1) / f.BlockCols }

// ScaleRows is the height of the scale grid.
func (f *FP8Matrix) ScaleRows() int { return (f.RowOff + f.Rows + f.BlockRows - 1) / f.BlockRows }

// Check reports the first inconsistency of f's sizes.
func (f *FP8Matrix) Check() error {
	switch {
	case f.Rows < 0 || f.Cols < 0:
		return fmt.Errorf("kernels: FP8 matrix of shape [%d, %d]", f.Rows, f.Cols)
	case f.BlockRows <= 0 || f.BlockCols <= 0:
		return fmt.Errorf("kernels: FP8 block size [%d, %d] must be positive", f.BlockRows, f.BlockCols)
	case f.RowOff < 0 || f.RowOff >= f.BlockRows || f.ColOff < 0 || f.ColOff >= f.BlockCols:
		return fmt.Errorf("kernels: FP8 block offset (%d, %d) outside the block [%d, %d]", f.RowOff, f.ColOff, f.BlockRows, f.BlockCols)
	case int64(len(f.Codes)) != int64(f.Rows)*int64(f.Cols):
		return fmt.Errorf("kernels: FP8 matrix [%d, %d] has %d codes", f.Rows, f.Cols, len(f.Codes))
	case int64(len(f.Scales)) != int64(f.ScaleRows())*int64(f.ScaleCols()):
		return fmt.Errorf("kernels: FP8 matrix [%d, %d] in blocks of [%d, %d] needs %d×%d scales, has %d",
			f.Rows, f.Cols, f.BlockRows, f.BlockCols, f.ScaleRows(), f.ScaleCols(), len(f.Scales))
	}
	return nil
}

// FP8Weights is implemented by backends that multiply with block-quantized
// FP8 weights directly (see FP8Matrix). MatMul and GroupedMatMul accept the
// returned buffer as w, with n = Rows and k = Cols.
type FP8Weights interface {
	// WrapFP8 returns an F8E4M3 buffer over f's memory, without a copy;
	// the caller keeps Codes and Scales alive and unmodified while it is used.
	WrapFP8(f FP8Matrix) (Buffer, error)
}

var _ FP8Weights = (*CPU)(nil)

// WrapFP8 returns an F8E4M3 buffer using f's codes and scales (see FP8Weights).
func (c *CPU) WrapFP8(f FP8Matrix) (Buffer, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	return &HostBuffer{dt: F8E4M3, fp8: &f, view: true}, nil
}

// E4M3ToF32 decodes an FP8 E4M3FN code (1 sign, 4 exponent bits of bias 7,
// 3 mantissa bits; no infinities, ±448 the largest finite values, S.1111.111
// a NaN) exactly.
func E4M3ToF32(b byte) float32 { return e4m3Table[b] }

var e4m3Table = func() (t [256]float32) {
	for i := range t {
		exp, mant := (i>>3)&0xf, i&7
		var v float64
		switch {
		case exp == 0xf && mant == 7:
			v = math.NaN()
		case exp == 0:
			v = float64(mant) / 8 * math.Ldexp(1, -6)
		default:
			v = (1 + float64(mant)/8) * math.Ldexp(1, exp-7)
		}
		if i&0x80 != 0 {
			v = -v
		}
		t[i] = float32(v)
	}
	return t
}()

// dequantFP8Row writes row r of f, dequantized, into dst[:f.Cols]: the
// only float32 copy of the weights the matmul makes is of the rows it is
// working on.
func dequantFP8Row(dst []float32, f *FP8Matrix, r int) {
	codes := f.Codes[r*f.Cols : (r+1)*f.Cols]
	sc := f.ScaleCols()
	srow := f.Scales[((f.RowOff+r)/f.BlockRows)*sc : ((f.RowOff+r)/f.BlockRows+1)*sc]
	j := 0
	for bj := range sc {
		end := min(f.Cols, (bj+1)*f.BlockCols-f.ColOff)
		s := srow[bj]
		for ; j < end; j++ {
			dst[j] = e4m3Table[codes[j]] * s
		}
	}
}

// matmulFP8Range computes columns [lo, hi) of out[m, ldo] = x[m,k] · Wᵀ
// for the FP8 weight f [n, k]. Per group of four weight rows it
// dequantizes them into a small scratch and runs the float32 dot kernels
// (assembly where available) over every row of x:
//
//	for j := lo; j < hi; j++ {
//		for i := range m {
//			out[i*ldo+j] = Σ_kk x[i*k+kk] · e4m3(code[j,kk]) · scale[j, kk]
//		}
//	}
func matmulFP8Range(o, x []float32, f *FP8Matrix, m, k, lo, hi, ldo int) {
	w := make([]float32, 4*k)
	var acc16 [16]float32
	var acc4 [4]float32
	j := lo
	for ; j+4 <= hi; j += 4 {
		for a := range 4 {
			dequantFP8Row(w[a*k:(a+1)*k], f, j+a)
		}
		i := 0
		for ; i+4 <= m; i += 4 {
			dot4x4F32(&acc16, x[i*k:], k, w, k, k)
			for a := range 4 {
				copy(o[(i+a)*ldo+j:(i+a)*ldo+j+4], acc16[4*a:4*a+4])
			}
		}
		for ; i < m; i++ {
			dot1x4F32(&acc4, x[i*k:], w, k, k)
			copy(o[i*ldo+j:i*ldo+j+4], acc4[:])
		}
	}
	for ; j < hi; j++ {
		dequantFP8Row(w[:k], f, j)
		for i := range m {
			o[i*ldo+j] = dotF32(x[i*k:(i+1)*k], w[:k])
		}
	}
}
