//go:build !noasm

#include "textflag.h"

// FP8 E4M3FN dot-product kernels: the weights are one byte a code, widened
// to float32 in registers and multiplied into the float32 activations with
// FMA. The lane layout and the reduction are those of simd_amd64.s (lane i
// sums elements 16b+i; upper 8 lanes onto lower 8, upper 4 onto lower 4,
// two pairwise adds), so the AVX-512 and AVX2 kernels give bit-identical
// dot products. n is a multiple of 16; the Go wrappers add the remainder.
//
// Widening a code c (sign s, exponent e, mantissa m) gives fp8Raw(c) =
// E4M3(c)·2⁻¹²⁰: the float32 with sign s, exponent field e and mantissa
// m·2²⁰, that is ±2^(e-127)·(1+m/8) for e > 0 and ±m·2⁻¹²⁹ (a float32
// subnormal) for e = 0. The Go side scales x by 2¹²⁰ (see scaleFP8X), so
// each FMA forms x·E4M3(c) exactly before rounding, with no multiply here.
// The kernels sign-extend 16 (AVX2: 8) bytes to dwords, shift left by 20
// and keep bit 31 (the sign) and bits 20..26 (exponent and mantissa). The NaN codes
// S.1111.111 widen to ±480·2⁻¹²⁰: the Go side never passes a matrix
// holding one to these kernels.
//
// The 1×4 and 4×4 kernels prefetch into L2 4 KiB ahead of the next four
// rows (contiguous when ldc = n), one line per 16 codes of each row.
//
// Block scales are not applied here: the Go side multiplies the
// activations by the scale of each column block first, so one dot product
// covers a whole row.

// FP8MASK keeps the sign and the 7 exponent and mantissa bits.
#define FP8MASK $0x87F00000

// WIDENFP8(SRC, Z) loads 16 codes from SRC into Z as fp8Raw. Needs
// Z9 = FP8MASK in every lane.
#define WIDENFP8(SRC, Z) \
	VPMOVSXBD SRC, Z; \
	VPSLLD    $20, Z, Z; \
	VPANDD    Z9, Z, Z

// WIDENFP8Y(SRC, Y) loads 8 codes; needs Y13 = FP8MASK.
#define WIDENFP8Y(SRC, Y) \
	VPMOVSXBD SRC, Y; \
	VPSLLD    $20, Y, Y; \
	VPAND     Y13, Y, Y

#define FP8CONST512 \
	MOVL         FP8MASK, AX; \
	MOVD         AX, X9; \
	VPBROADCASTD X9, Z9

#define FP8CONST256 \
	MOVL         FP8MASK, AX; \
	MOVD         AX, X13; \
	VPBROADCASTD X13, Y13

// The reductions below are those of simd_amd64.s.

// RED16 folds the 16 lanes of ZS (whose lower 8 are YS) into 4 lanes of
// XD (the lower 4 of YD). Uses Y8/X8.
#define RED16(ZS, YS, YD, XD) \
	VEXTRACTF64X4 $1, ZS, Y8; \
	VADDPS        Y8, YS, YD; \
	VEXTRACTF128  $1, YD, X8; \
	VADDPS        X8, XD, XD

// RED8x2 folds two 8-lane halves YL (lower) and YH into 4 lanes of XL.
#define RED8x2(YL, XL, YH) \
	VADDPS       YH, YL, YL; \
	VEXTRACTF128 $1, YL, X8; \
	VADDPS       X8, XL, XL

// HSUM4 finishes four 4-lane sums in X0..X3 and stores them to DST.
#define HSUM4(DST) \
	VHADDPS X1, X0, X0; \
	VHADDPS X3, X2, X2; \
	VHADDPS X2, X0, X0; \
	VMOVUPS X0, DST

// func dot1x4FP8AVX512(out *[4]float32, x *float32, c *byte, ldc, n int)
TEXT ·dot1x4FP8AVX512(SB), NOSPLIT, $0-40
	MOVQ   out+0(FP), DX
	MOVQ   x+8(FP), SI
	MOVQ   c+16(FP), DI
	MOVQ   ldc+24(FP), R8
	LEAQ   (R8)(R8*2), R9
	LEAQ   4096(DI)(R8*4), R12 // prefetched: 4 KiB past the next four rows
	MOVQ   n+32(FP), CX
	FP8CONST512
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	TESTQ  CX, CX
	JZ     d1x4fp8_512_done

d1x4fp8_512_loop:
	PREFETCHT1  0(R12)
	ADDQ        $64, R12
	VMOVUPS     (SI), Z4
	WIDENFP8((DI), Z5)
	WIDENFP8((DI)(R8*1), Z6)
	WIDENFP8((DI)(R8*2), Z7)
	WIDENFP8((DI)(R9*1), Z11)
	VFMADD231PS Z5, Z4, Z0
	VFMADD231PS Z6, Z4, Z1
	VFMADD231PS Z7, Z4, Z2
	VFMADD231PS Z11, Z4, Z3
	ADDQ        $64, SI
	ADDQ        $16, DI
	SUBQ        $16, CX
	JNZ         d1x4fp8_512_loop

d1x4fp8_512_done:
	RED16(Z0, Y0, Y0, X0)
	RED16(Z1, Y1, Y1, X1)
	RED16(Z2, Y2, Y2, X2)
	RED16(Z3, Y3, Y3, X3)
	HSUM4((DX))
	VZEROUPPER
	RET

// FMA4x4 multiplies x rows Z0..Z3 with widened w rows Z4..Z7 into the
// accumulators Z16..Z31 (x row i, w row j in Z(16+4i+j)).
#define FMA4x4 \
	VFMADD231PS Z4, Z0, Z16; \
	VFMADD231PS Z5, Z0, Z17; \
	VFMADD231PS Z6, Z0, Z18; \
	VFMADD231PS Z7, Z0, Z19; \
	VFMADD231PS Z4, Z1, Z20; \
	VFMADD231PS Z5, Z1, Z21; \
	VFMADD231PS Z6, Z1, Z22; \
	VFMADD231PS Z7, Z1, Z23; \
	VFMADD231PS Z4, Z2, Z24; \
	VFMADD231PS Z5, Z2, Z25; \
	VFMADD231PS Z6, Z2, Z26; \
	VFMADD231PS Z7, Z2, Z27; \
	VFMADD231PS Z4, Z3, Z28; \
	VFMADD231PS Z5, Z3, Z29; \
	VFMADD231PS Z6, Z3, Z30; \
	VFMADD231PS Z7, Z3, Z31

#define ZERO4x4 \
	VPXORD Z16, Z16, Z16; \
	VPXORD Z17, Z17, Z17; \
	VPXORD Z18, Z18, Z18; \
	VPXORD Z19, Z19, Z19; \
	VPXORD Z20, Z20, Z20; \
	VPXORD Z21, Z21, Z21; \
	VPXORD Z22, Z22, Z22; \
	VPXORD Z23, Z23, Z23; \
	VPXORD Z24, Z24, Z24; \
	VPXORD Z25, Z25, Z25; \
	VPXORD Z26, Z26, Z26; \
	VPXORD Z27, Z27, Z27; \
	VPXORD Z28, Z28, Z28; \
	VPXORD Z29, Z29, Z29; \
	VPXORD Z30, Z30, Z30; \
	VPXORD Z31, Z31, Z31

// STORE4 reduces the accumulators A..D of one x row and stores 4 sums.
#define STORE4(A, AY, B, BY, C, CY, D, DY, DST) \
	RED16(A, AY, Y0, X0); \
	RED16(B, BY, Y1, X1); \
	RED16(C, CY, Y2, X2); \
	RED16(D, DY, Y3, X3); \
	HSUM4(DST)

#define STORE4x4 \
	STORE4(Z16, Y16, Z17, Y17, Z18, Y18, Z19, Y19, (DX)); \
	STORE4(Z20, Y20, Z21, Y21, Z22, Y22, Z23, Y23, 16(DX)); \
	STORE4(Z24, Y24, Z25, Y25, Z26, Y26, Z27, Y27, 32(DX)); \
	STORE4(Z28, Y28, Z29, Y29, Z30, Y30, Z31, Y31, 48(DX))

// func dot4x4FP8AVX512(out *[16]float32, x *float32, ldx int, c *byte, ldc, n int)
TEXT ·dot4x4FP8AVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DX
	MOVQ x+8(FP), SI
	MOVQ ldx+16(FP), R10
	SHLQ $2, R10
	LEAQ (R10)(R10*2), R11
	MOVQ c+24(FP), DI
	MOVQ ldc+32(FP), R8
	LEAQ (R8)(R8*2), R9
	LEAQ 4096(DI)(R8*4), R12 // prefetched: 4 KiB past the next four rows
	MOVQ n+40(FP), CX
	FP8CONST512
	ZERO4x4
	TESTQ CX, CX
	JZ    d4x4fp8_512_done

d4x4fp8_512_loop:
	PREFETCHT1 0(R12)
	ADDQ       $64, R12
	VMOVUPS    (SI), Z0
	VMOVUPS    (SI)(R10*1), Z1
	VMOVUPS    (SI)(R10*2), Z2
	VMOVUPS    (SI)(R11*1), Z3
	WIDENFP8((DI), Z4)
	WIDENFP8((DI)(R8*1), Z5)
	WIDENFP8((DI)(R8*2), Z6)
	WIDENFP8((DI)(R9*1), Z7)
	FMA4x4
	ADDQ       $64, SI
	ADDQ       $16, DI
	SUBQ       $16, CX
	JNZ        d4x4fp8_512_loop

d4x4fp8_512_done:
	STORE4x4
	VZEROUPPER
	RET

#define RED4x2 \
	RED8x2(Y0, X0, Y4); \
	RED8x2(Y1, X1, Y5); \
	RED8x2(Y2, X2, Y6); \
	RED8x2(Y3, X3, Y7)

// func dot1x4FP8AVX2(out *[4]float32, x *float32, c *byte, ldc, n int)
TEXT ·dot1x4FP8AVX2(SB), NOSPLIT, $0-40
	MOVQ   out+0(FP), DX
	MOVQ   x+8(FP), SI
	MOVQ   c+16(FP), DI
	MOVQ   ldc+24(FP), R8
	LEAQ   (R8)(R8*2), R9
	LEAQ   4096(DI)(R8*4), R12 // prefetched: 4 KiB past the next four rows
	MOVQ   n+32(FP), CX
	FP8CONST256
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	TESTQ  CX, CX
	JZ     d1x4fp8_256_done

d1x4fp8_256_loop:
	PREFETCHT1  0(R12)
	ADDQ        $64, R12
	VMOVUPS     (SI), Y9
	VMOVUPS     32(SI), Y10
	WIDENFP8Y((DI), Y11)
	WIDENFP8Y(8(DI), Y12)
	VFMADD231PS Y11, Y9, Y0
	VFMADD231PS Y12, Y10, Y4
	WIDENFP8Y((DI)(R8*1), Y11)
	WIDENFP8Y(8(DI)(R8*1), Y12)
	VFMADD231PS Y11, Y9, Y1
	VFMADD231PS Y12, Y10, Y5
	WIDENFP8Y((DI)(R8*2), Y11)
	WIDENFP8Y(8(DI)(R8*2), Y12)
	VFMADD231PS Y11, Y9, Y2
	VFMADD231PS Y12, Y10, Y6
	WIDENFP8Y((DI)(R9*1), Y11)
	WIDENFP8Y(8(DI)(R9*1), Y12)
	VFMADD231PS Y11, Y9, Y3
	VFMADD231PS Y12, Y10, Y7
	ADDQ        $64, SI
	ADDQ        $16, DI
	SUBQ        $16, CX
	JNZ         d1x4fp8_256_loop

d1x4fp8_256_done:
	RED4x2
	HSUM4((DX))
	VZEROUPPER
	RET
