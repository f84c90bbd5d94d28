//go:build !noasm

#include "textflag.h"

// The AVX512_BF16 dot-product kernels: x and w both bfloat16, products by
// VDPBF16PS, which for each of the 16 f32 lanes of its accumulator adds
// the products of one pair of bf16 elements (2i+1 first, then 2i, each
// rounded to f32, as dpBlockGo in dpbf16_generic.go spells out). Go's
// assembler has no mnemonic for it, so it is emitted as bytes (the
// encodings below were produced by GNU as). n is a multiple of 32; the Go
// wrappers add the remainder. The accumulators are reduced as in
// simd_amd64.s, so the 1×4 and 4×4 kernels agree bit for bit.

// VDPBF16PS Z4, Z0, Z16
#define DP_0_0 BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x52; BYTE $0xc4
// VDPBF16PS Z5, Z0, Z17
#define DP_0_1 BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x52; BYTE $0xcd
// VDPBF16PS Z6, Z0, Z18
#define DP_0_2 BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x52; BYTE $0xd6
// VDPBF16PS Z7, Z0, Z19
#define DP_0_3 BYTE $0x62; BYTE $0xe2; BYTE $0x7e; BYTE $0x48; BYTE $0x52; BYTE $0xdf
// VDPBF16PS Z4, Z1, Z20
#define DP_1_0 BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xe4
// VDPBF16PS Z5, Z1, Z21
#define DP_1_1 BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xed
// VDPBF16PS Z6, Z1, Z22
#define DP_1_2 BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xf6
// VDPBF16PS Z7, Z1, Z23
#define DP_1_3 BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xff
// VDPBF16PS Z4, Z2, Z24
#define DP_2_0 BYTE $0x62; BYTE $0x62; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xc4
// VDPBF16PS Z5, Z2, Z25
#define DP_2_1 BYTE $0x62; BYTE $0x62; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xcd
// VDPBF16PS Z6, Z2, Z26
#define DP_2_2 BYTE $0x62; BYTE $0x62; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xd6
// VDPBF16PS Z7, Z2, Z27
#define DP_2_3 BYTE $0x62; BYTE $0x62; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xdf
// VDPBF16PS Z4, Z3, Z28
#define DP_3_0 BYTE $0x62; BYTE $0x62; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xe4
// VDPBF16PS Z5, Z3, Z29
#define DP_3_1 BYTE $0x62; BYTE $0x62; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xed
// VDPBF16PS Z6, Z3, Z30
#define DP_3_2 BYTE $0x62; BYTE $0x62; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xf6
// VDPBF16PS Z7, Z3, Z31
#define DP_3_3 BYTE $0x62; BYTE $0x62; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xff

#define DP1x4 DP_0_0; DP_0_1; DP_0_2; DP_0_3

#define DP4x4 \
	DP_0_0; DP_0_1; DP_0_2; DP_0_3; \
	DP_1_0; DP_1_1; DP_1_2; DP_1_3; \
	DP_2_0; DP_2_1; DP_2_2; DP_2_3; \
	DP_3_0; DP_3_1; DP_3_2; DP_3_3

// RED16 folds the 16 lanes of ZS (whose lower 8 are YS) into 4 lanes of
// XD (the lower 4 of YD). Uses Y8/X8.
#define RED16(ZS, YS, YD, XD) \
	VEXTRACTF64X4 $1, ZS, Y8; \
	VADDPS        Y8, YS, YD; \
	VEXTRACTF128  $1, YD, X8; \
	VADDPS        X8, XD, XD

// HSUM4 finishes four 4-lane sums in X0..X3 and stores them to DST.
#define HSUM4(DST) \
	VHADDPS X1, X0, X0; \
	VHADDPS X3, X2, X2; \
	VHADDPS X2, X0, X0; \
	VMOVUPS X0, DST

#define STORE4(A, AY, B, BY, C, CY, D, DY, DST) \
	RED16(A, AY, Y0, X0); \
	RED16(B, BY, Y1, X1); \
	RED16(C, CY, Y2, X2); \
	RED16(D, DY, Y3, X3); \
	HSUM4(DST)

// func dot1x4DPAVX512(out *[4]float32, x, w *uint16, ldw, n int)
TEXT ·dot1x4DPAVX512(SB), NOSPLIT, $0-40
	MOVQ   out+0(FP), DX
	MOVQ   x+8(FP), SI
	MOVQ   w+16(FP), DI
	MOVQ   ldw+24(FP), R8
	SHLQ   $1, R8
	LEAQ   (R8)(R8*2), R9
	LEAQ   (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ   n+32(FP), CX
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	TESTQ  CX, CX
	JZ     d1x4dp_done

d1x4dp_loop:
	PREFETCHT1 0(R12)
	PREFETCHT1 64(R12)
	PREFETCHT1 128(R12)
	PREFETCHT1 192(R12)
	ADDQ       $256, R12
	VMOVDQU16  (SI), Z0
	VMOVDQU16  (DI), Z4
	VMOVDQU16  (DI)(R8*1), Z5
	VMOVDQU16  (DI)(R8*2), Z6
	VMOVDQU16  (DI)(R9*1), Z7
	DP1x4
	ADDQ       $64, SI
	ADDQ       $64, DI
	SUBQ       $32, CX
	JNZ        d1x4dp_loop

d1x4dp_done:
	STORE4(Z16, Y16, Z17, Y17, Z18, Y18, Z19, Y19, (DX))
	VZEROUPPER
	RET

// func dot4x4DPAVX512(out *[16]float32, x *uint16, ldx int, w *uint16, ldw, n int)
TEXT ·dot4x4DPAVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DX
	MOVQ x+8(FP), SI
	MOVQ ldx+16(FP), R10
	SHLQ $1, R10
	LEAQ (R10)(R10*2), R11
	MOVQ w+24(FP), DI
	MOVQ ldw+32(FP), R8
	SHLQ $1, R8
	LEAQ (R8)(R8*2), R9
	LEAQ (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ n+40(FP), CX
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31
	TESTQ CX, CX
	JZ    d4x4dp_done

d4x4dp_loop:
	PREFETCHT1 0(R12)
	PREFETCHT1 64(R12)
	PREFETCHT1 128(R12)
	PREFETCHT1 192(R12)
	ADDQ       $256, R12
	VMOVDQU16  (SI), Z0
	VMOVDQU16  (SI)(R10*1), Z1
	VMOVDQU16  (SI)(R10*2), Z2
	VMOVDQU16  (SI)(R11*1), Z3
	VMOVDQU16  (DI), Z4
	VMOVDQU16  (DI)(R8*1), Z5
	VMOVDQU16  (DI)(R8*2), Z6
	VMOVDQU16  (DI)(R9*1), Z7
	DP4x4
	ADDQ       $64, SI
	ADDQ       $64, DI
	SUBQ       $32, CX
	JNZ        d4x4dp_loop

d4x4dp_done:
	STORE4(Z16, Y16, Z17, Y17, Z18, Y18, Z19, Y19, (DX))
	STORE4(Z20, Y20, Z21, Y21, Z22, Y22, Z23, Y23, 16(DX))
	STORE4(Z24, Y24, Z25, Y25, Z26, Y26, Z27, Y27, 32(DX))
	STORE4(Z28, Y28, Z29, Y29, Z30, Y30, Z31, Y31, 48(DX))
	VZEROUPPER
	RET

// VCVTNEPS2BF16 Z0, Y1
#define CVT_Z0_Y1 BYTE $0x62; BYTE $0xf2; BYTE $0x7e; BYTE $0x48; BYTE $0x72; BYTE $0xc8

// func roundBF16AVX512(dst *uint16, src *float32, n int)
//
// dst[i] = bf16RNE(src[i]) for i in [0, n), 16 at a time by
// VCVTNEPS2BF16 (nearest even, subnormal inputs as zero, NaN quiet); n is
// a multiple of 16.
TEXT ·roundBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	TESTQ CX, CX
	JZ    rbf16_done

rbf16_loop:
	VMOVUPS (SI), Z0
	CVT_Z0_Y1
	VMOVDQU Y1, (DI)
	ADDQ    $64, SI
	ADDQ    $32, DI
	SUBQ    $16, CX
	JNZ     rbf16_loop

rbf16_done:
	VZEROUPPER
	RET
