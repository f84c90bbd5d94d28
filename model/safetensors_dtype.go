package model

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// Safetensors element types moemesh reads. Other types defined by the
// format (I64, U8, F8_E4M3, ...) may appear in a checkpoint and be listed
// by Info, but reading them returns ErrUnsupportedDType.
const (
	DTypeF32  = "F32"
	DTypeBF16 = "BF16"
	DTypeF16  = "F16"
)

// dtypeSizes holds the element size in bytes of every dtype the
// safetensors format defines with a whole-byte size.
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
	"U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4,
	"U64": 8, "I64": 8, "F64": 8,
}

// DTypeSize returns the size in bytes of one element of dtype, or 0 when the
// safetensors format does not define dtype.
func DTypeSize(dtype string) int64 { return dtypeSizes[dtype] }

func readableDType(dtype string) bool {
	return dtype == DTypeF32 || dtype == DTypeBF16 || dtype == DTypeF16
}

// hostLittleEndian reports whether the host stores numbers little-endian,
// as safetensors does; only then can tensor bytes be aliased as numbers.
var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// BF16ToF32 widens a bfloat16 (the upper 16 bits of a float32) exactly.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds f to the nearest bfloat16, ties to even. Infinities are
// kept, finite values too large round to infinity, and a NaN stays a NaN
// (quiet, with its sign and upper payload bits).
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToF32 widens an IEEE 754 binary16 value exactly, subnormals, infinities
// and NaNs included.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		f := float32(mant) * (1.0 / (1 << 24)) // subnormal: mant × 2⁻²⁴, exact in float32
		return math.Float32frombits(math.Float32bits(f) | sign)
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// F32ToF16 rounds f to the nearest IEEE 754 binary16, ties to even. Values
// beyond the binary16 range become infinities; tiny values become
// subnormals or signed zero; a NaN stays a (quiet) NaN.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		r := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // a carry into the exponent is the correct rounding, up to infinity
	}
	return sign | uint16(r)
}

// decodeToF32 converts little-endian elements of a readable dtype in src
// into dst; len(dst) elements are read.
func decodeToF32(dst []float32, src []byte, dtype string) {
	switch dtype {
	case DTypeF32:
		if a := aliasF32(src[:4*len(dst)]); a != nil {
			copy(dst, a)
			return
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case DTypeBF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case DTypeF16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	}
}

// decodeU16 copies little-endian 16-bit elements of src into dst.
func decodeU16(dst []uint16, src []byte) {
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint16(src[2*i:])
	}
}

// aliasF32 views b as float32s without copying, or returns nil when the host
// byte order or the alignment of b does not allow it.
func aliasF32(b []byte) []float32 {
	if !hostLittleEndian || len(b)%4 != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		return nil
	}
	if len(b) == 0 {
		return []float32{}
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// aliasU16 is aliasF32 for 16-bit elements.
func aliasU16(b []byte) []uint16 {
	if !hostLittleEndian || len(b)%2 != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%2 != 0 {
		return nil
	}
	if len(b) == 0 {
		return []uint16{}
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
}
