package collective

import (
	"encoding/binary"
	"math"
	"unsafe"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// toBF16 rounds a float32 to bfloat16, to nearest with ties to even. NaNs
// stay NaN (quietened, sign kept); values past the largest bfloat16 become
// infinities, as rounding prescribes.
func toBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// fromBF16 widens a bfloat16 to float32 exactly.
func fromBF16(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// roundTrip returns what x becomes after a trip through the wire dtype.
func roundTrip(x float32, dt DType) float32 {
	if dt == BF16 {
		return fromBF16(toBF16(x))
	}
	return x
}

// RoundToWire rounds x in place to what it becomes after a trip through
// the wire dtype dt (a no-op for F32), so that a value a worker keeps for
// itself equals the copy its peers receive.
func RoundToWire(x []float32, dt DType) {
	if dt == BF16 {
		quantize(x, x, dt)
	}
}

// quantize rounds src into dst (same length) as the wire dtype would.
func quantize(dst, src []float32, dt DType) {
	if dt != BF16 {
		copy(dst, src)
		return
	}
	for i, x := range src {
		dst[i] = fromBF16(toBF16(x))
	}
}

// elemSize is the wire size of one element; 0 for an unknown dtype.
func elemSize(dt DType) int {
	switch dt {
	case moemeshv1.DType_DTYPE_F32:
		return 4
	case moemeshv1.DType_DTYPE_BF16:
		return 2
	}
	return 0
}

// encode returns src as raw little-endian bytes of dtype dt.
func encode(src []float32, dt DType) []byte {
	switch dt {
	case BF16:
		b := make([]byte, 2*len(src))
		for i, x := range src {
			binary.LittleEndian.PutUint16(b[2*i:], toBF16(x))
		}
		return b
	default:
		b := make([]byte, 4*len(src))
		if littleEndian {
			copy(b, f32Bytes(src))
			return b
		}
		for i, x := range src {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b
	}
}

// decode fills dst from raw bytes of dtype dt; len(raw) must be
// len(dst)*elemSize(dt).
func decode(dst []float32, raw []byte, dt DType) {
	switch dt {
	case BF16:
		for i := range dst {
			dst[i] = fromBF16(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	default:
		if littleEndian {
			copy(f32Bytes(dst), raw)
			return
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
}

// littleEndian is true on hosts whose float32 memory layout is the wire's,
// where f32 tensors are copied as bytes.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// f32Bytes views a float32 slice as its bytes.
func f32Bytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}
