package kernels

import (
	"bytes"
	"fmt"
	"math"
	"sync"
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

	hasNaN bool // set by WrapFP8: some code is a NaN (S.1111.111)
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
	// The SIMD kernels widen codes without a NaN test; a matrix holding a
	// NaN code (none in a real checkpoint) takes the table path instead.
	f.hasNaN = bytes.IndexByte(f.Codes, 0x7f) >= 0 || bytes.IndexByte(f.Codes, 0xff) >= 0
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

// fp8RawTable holds E4M3ToF32(c)·2⁻¹²⁰ for every code but the NaNs: the
// float32 with the code's sign and its 7 exponent and mantissa bits at
// bits 20..26, which the SIMD kernels build by shifts (fp8_amd64.s).
var fp8RawTable = func() (t [256]float32) {
	for i := range t {
		t[i] = math.Float32frombits(uint32(i&0x80)<<24 | uint32(i&0x7f)<<20)
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
// for the FP8 weight f [n, k]:
//
//	for j := lo; j < hi; j++ {
//		for i := range m {
//			out[i*ldo+j] = Σ_kk x[i*k+kk] · e4m3(code[j,kk]) · scale[j, kk]
//		}
//	}
//
// The weight rows of one block row share their scales, so for each block
// row it multiplies x by the scales of the column blocks once (k
// multiplies for up to BlockRows·k multiply-adds) and the dot kernels
// read the one-byte codes directly, widening them in registers. A row's
// result does not depend on m. A matrix with NaN codes takes
// matmulFP8TableRange.
func matmulFP8Range(o, x []float32, f *FP8Matrix, m, k, lo, hi, ldo int) {
	if f.hasNaN {
		matmulFP8TableRange(o, x, f, m, k, lo, hi, ldo)
		return
	}
	mb := m
	if m*k*4 > xBlockBytes {
		mb = min(m, max(4, xBlockBytes/(k*4)&^3))
	}
	sp := fp8Scratch.Get().(*[]float32)
	defer fp8Scratch.Put(sp)
	if cap(*sp) < mb*k {
		*sp = make([]float32, mb*k)
	}
	xs := (*sp)[:mb*k]
	sc := f.ScaleCols()
	var acc16 [16]float32
	var acc4 [4]float32
	for i0 := 0; i0 < m; i0 += mb {
		i1 := min(m, i0+mb)
		for r0 := lo; r0 < hi; {
			bi := (f.RowOff + r0) / f.BlockRows
			r1 := min(hi, (bi+1)*f.BlockRows-f.RowOff)
			e := scaleFP8X(xs, x[i0*k:i1*k], f.Scales[bi*sc:(bi+1)*sc], k, f.BlockCols, f.ColOff)
			j := r0
			for ; j+4 <= r1; j += 4 {
				c := f.Codes[j*k:]
				i := i0
				for ; i+4 <= i1; i += 4 {
					dot4x4FP8(&acc16, xs[(i-i0)*k:], k, c, k, k)
					for a := range 4 {
						copy(o[(i+a)*ldo+j:(i+a)*ldo+j+4], acc16[4*a:4*a+4])
					}
				}
				for ; i < i1; i++ {
					dot1x4FP8(&acc4, xs[(i-i0)*k:], c, k, k)
					copy(o[i*ldo+j:i*ldo+j+4], acc4[:])
				}
			}
			for ; j < r1; j++ {
				// One row: the same kernel with the row four times, so
				// the sum is the one a group of four would give.
				c := f.Codes[j*k : (j+1)*k]
				for i := i0; i < i1; i++ {
					dot1x4FP8(&acc4, xs[(i-i0)*k:], c, 0, k)
					o[i*ldo+j] = acc4[0]
				}
			}
			if e != 0 {
				p := float32(math.Ldexp(1, e))
				for i := i0; i < i1; i++ {
					for j := r0; j < r1; j++ {
						o[i*ldo+j] *= p
					}
				}
			}
			r0 = r1
		}
	}
}

// fp8Scratch holds the scaled rows of x of matmulFP8Range.
var fp8Scratch = sync.Pool{New: func() any { return new([]float32) }}

// scaleFP8X writes each row of x [·, k] into dst multiplied by the scale
// of its column block (column j has scale s[(coff+j)/bc]) and by
// 2^(120-e), for the kernels that read codes as E4M3·2⁻¹²⁰; it returns e,
// by which the dot products are then scaled back: 0 unless some |x·s| ≥ 2⁷
// would overflow, so the powers of two are exact.
func scaleFP8X(dst, x, s []float32, k, bc, coff int) (e int) {
	var amax float32
	for r := 0; r < len(x); r += k {
		xr, dr := x[r:r+k], dst[r:r+k]
		j := 0
		for bj, v := range s {
			end := min(k, (bj+1)*bc-coff)
			for ; j < end; j++ {
				d := xr[j] * v
				dr[j] = d
				if a := math.Float32frombits(math.Float32bits(d) & 0x7fffffff); a > amax && a <= math.MaxFloat32 {
					amax = a // finite values only: ±Inf and NaN stay so
				}
			}
		}
	}
	if amax >= 1<<7 {
		e = math.Ilogb(float64(amax)) - 6
	}
	p := float32(math.Ldexp(1, 120-e))
	for i := range dst[:len(x)] {
		dst[i] *= p
	}
	return e
}

// dot1x4FP8Go and dot4x4FP8Go are the pure-Go references of dot1x4FP8
// and dot4x4FP8 (fp8_amd64.go, fp8_noasm.go).
func dot1x4FP8Go(out *[4]float32, x []float32, c []byte, ldc, k int) {
	x = x[:k]
	for j := range 4 {
		cr := c[j*ldc : j*ldc+k]
		var s float32
		for i, v := range x {
			s += v * fp8RawTable[cr[i]]
		}
		out[j] = s
	}
}

func dot4x4FP8Go(out *[16]float32, x []float32, ldx int, c []byte, ldc, k int) {
	for i := range 4 {
		dot1x4FP8Go((*[4]float32)(out[4*i:]), x[i*ldx:], c, ldc, k)
	}
}

// matmulFP8TableRange is matmulFP8Range for matrices with NaN codes: per
// group of four weight rows it dequantizes them through the table into a
// small scratch and runs the float32 dot kernels.
func matmulFP8TableRange(o, x []float32, f *FP8Matrix, m, k, lo, hi, ldo int) {
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
