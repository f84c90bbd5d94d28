//go:build !noasm

#include "textflag.h"

// Every dot-product kernel keeps one accumulator of 16 lanes per (x row,
// w row) pair, lane i summing elements 16b+i with FMA, and reduces it the
// same way (upper 8 lanes onto lower 8, upper 4 onto lower 4, then two
// pairwise adds), so all kernels and both instruction sets give
// bit-identical dot products. The AVX2 kernels hold the 16 lanes in two
// 8-lane registers. n, the number of elements, is a multiple of 16; the Go
// wrappers add the remainder.
//
// The 1×4 and 4×4 kernels stream four weight rows of n elements; when the
// rows are contiguous (ldw = n, as in MatMul) the next four rows follow,
// and the kernels prefetch them into L2 as they go: rows of a few KiB are
// too short for the hardware prefetchers to ramp up on four streams at
// once, and prefetching into L1 would evict the rows of x the 4×4 kernel
// keeps there. Prefetching past the end of the weights is harmless.

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

// WIDEN16 loads 16 bfloat16 values from SRC into Z as float32.
#define WIDEN16(SRC, Z) \
	VPMOVZXWD SRC, Z; \
	VPSLLD    $16, Z, Z

#define WIDEN8(SRC, Y) \
	VPMOVZXWD SRC, Y; \
	VPSLLD    $16, Y, Y

// func dotF32AVX512(x, y *float32, n int) float32
TEXT ·dotF32AVX512(SB), NOSPLIT, $0-28
	MOVQ   x+0(FP), SI
	MOVQ   y+8(FP), DI
	MOVQ   n+16(FP), CX
	VPXORD Z0, Z0, Z0
	TESTQ  CX, CX
	JZ     dotf32_512_done

dotf32_512_loop:
	VMOVUPS     (SI), Z4
	VFMADD231PS (DI), Z4, Z0
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JNZ         dotf32_512_loop

dotf32_512_done:
	RED16(Z0, Y0, Y0, X0)
	VHADDPS    X0, X0, X0
	VHADDPS    X0, X0, X0
	VZEROUPPER
	MOVSS      X0, ret+24(FP)
	RET

// func dotBF16AVX512(x *float32, w *uint16, n int) float32
TEXT ·dotBF16AVX512(SB), NOSPLIT, $0-28
	MOVQ   x+0(FP), SI
	MOVQ   w+8(FP), DI
	MOVQ   n+16(FP), CX
	VPXORD Z0, Z0, Z0
	TESTQ  CX, CX
	JZ     dotbf16_512_done

dotbf16_512_loop:
	WIDEN16((DI), Z5)
	VFMADD231PS (SI), Z5, Z0
	ADDQ        $64, SI
	ADDQ        $32, DI
	SUBQ        $16, CX
	JNZ         dotbf16_512_loop

dotbf16_512_done:
	RED16(Z0, Y0, Y0, X0)
	VHADDPS    X0, X0, X0
	VHADDPS    X0, X0, X0
	VZEROUPPER
	MOVSS      X0, ret+24(FP)
	RET

// func dot1x4F32AVX512(out *[4]float32, x, w *float32, ldw, n int)
TEXT ·dot1x4F32AVX512(SB), NOSPLIT, $0-40
	MOVQ   out+0(FP), DX
	MOVQ   x+8(FP), SI
	MOVQ   w+16(FP), DI
	MOVQ   ldw+24(FP), R8
	SHLQ   $2, R8
	LEAQ   (R8)(R8*2), R9
	LEAQ   (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ   n+32(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	TESTQ  CX, CX
	JZ     d1x4f32_512_done

d1x4f32_512_loop:
	PREFETCHT1  0(R12)
	PREFETCHT1  64(R12)
	PREFETCHT1  128(R12)
	PREFETCHT1  192(R12)
	ADDQ        $256, R12
	VMOVUPS     (SI), Z4
	VFMADD231PS (DI), Z4, Z0
	VFMADD231PS (DI)(R8*1), Z4, Z1
	VFMADD231PS (DI)(R8*2), Z4, Z2
	VFMADD231PS (DI)(R9*1), Z4, Z3
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JNZ         d1x4f32_512_loop

d1x4f32_512_done:
	RED16(Z0, Y0, Y0, X0)
	RED16(Z1, Y1, Y1, X1)
	RED16(Z2, Y2, Y2, X2)
	RED16(Z3, Y3, Y3, X3)
	HSUM4((DX))
	VZEROUPPER
	RET

// func dot1x4BF16AVX512(out *[4]float32, x *float32, w *uint16, ldw, n int)
TEXT ·dot1x4BF16AVX512(SB), NOSPLIT, $0-40
	MOVQ   out+0(FP), DX
	MOVQ   x+8(FP), SI
	MOVQ   w+16(FP), DI
	MOVQ   ldw+24(FP), R8
	SHLQ   $1, R8
	LEAQ   (R8)(R8*2), R9
	LEAQ   (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ   n+32(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	TESTQ  CX, CX
	JZ     d1x4bf16_512_done

d1x4bf16_512_loop:
	PREFETCHT1  0(R12)
	PREFETCHT1  64(R12)
	ADDQ        $128, R12
	VMOVUPS     (SI), Z4
	WIDEN16((DI), Z5)
	WIDEN16((DI)(R8*1), Z6)
	WIDEN16((DI)(R8*2), Z7)
	WIDEN16((DI)(R9*1), Z9)
	VFMADD231PS Z5, Z4, Z0
	VFMADD231PS Z6, Z4, Z1
	VFMADD231PS Z7, Z4, Z2
	VFMADD231PS Z9, Z4, Z3
	ADDQ        $64, SI
	ADDQ        $32, DI
	SUBQ        $16, CX
	JNZ         d1x4bf16_512_loop

d1x4bf16_512_done:
	RED16(Z0, Y0, Y0, X0)
	RED16(Z1, Y1, Y1, X1)
	RED16(Z2, Y2, Y2, X2)
	RED16(Z3, Y3, Y3, X3)
	HSUM4((DX))
	VZEROUPPER
	RET

// FMA4x4 multiplies the x rows in Z0..Z3 with the w rows in Z4..Z7 into
// the accumulators Z16..Z31 (Z16+4i+j for x row i, w row j).
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

// func dot4x4F32AVX512(out *[16]float32, x *float32, ldx int, w *float32, ldw, n int)
TEXT ·dot4x4F32AVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DX
	MOVQ x+8(FP), SI
	MOVQ ldx+16(FP), R10
	SHLQ $2, R10
	LEAQ (R10)(R10*2), R11
	MOVQ w+24(FP), DI
	MOVQ ldw+32(FP), R8
	SHLQ $2, R8
	LEAQ (R8)(R8*2), R9
	LEAQ (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ n+40(FP), CX
	ZERO4x4
	TESTQ CX, CX
	JZ    d4x4f32_512_done

d4x4f32_512_loop:
	PREFETCHT1 0(R12)
	PREFETCHT1 64(R12)
	PREFETCHT1 128(R12)
	PREFETCHT1 192(R12)
	ADDQ    $256, R12
	VMOVUPS (SI), Z0
	VMOVUPS (SI)(R10*1), Z1
	VMOVUPS (SI)(R10*2), Z2
	VMOVUPS (SI)(R11*1), Z3
	VMOVUPS (DI), Z4
	VMOVUPS (DI)(R8*1), Z5
	VMOVUPS (DI)(R8*2), Z6
	VMOVUPS (DI)(R9*1), Z7
	FMA4x4
	ADDQ    $64, SI
	ADDQ    $64, DI
	SUBQ    $16, CX
	JNZ     d4x4f32_512_loop

d4x4f32_512_done:
	STORE4x4
	VZEROUPPER
	RET

// func dot4x4BF16AVX512(out *[16]float32, x *float32, ldx int, w *uint16, ldw, n int)
TEXT ·dot4x4BF16AVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DX
	MOVQ x+8(FP), SI
	MOVQ ldx+16(FP), R10
	SHLQ $2, R10
	LEAQ (R10)(R10*2), R11
	MOVQ w+24(FP), DI
	MOVQ ldw+32(FP), R8
	SHLQ $1, R8
	LEAQ (R8)(R8*2), R9
	LEAQ (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ n+40(FP), CX
	ZERO4x4
	TESTQ CX, CX
	JZ    d4x4bf16_512_done

d4x4bf16_512_loop:
	PREFETCHT1 0(R12)
	PREFETCHT1 64(R12)
	ADDQ    $128, R12
	VMOVUPS (SI), Z0
	VMOVUPS (SI)(R10*1), Z1
	VMOVUPS (SI)(R10*2), Z2
	VMOVUPS (SI)(R11*1), Z3
	WIDEN16((DI), Z4)
	WIDEN16((DI)(R8*1), Z5)
	WIDEN16((DI)(R8*2), Z6)
	WIDEN16((DI)(R9*1), Z7)
	FMA4x4
	ADDQ    $64, SI
	ADDQ    $32, DI
	SUBQ    $16, CX
	JNZ     d4x4bf16_512_loop

d4x4bf16_512_done:
	STORE4x4
	VZEROUPPER
	RET

// func axpyAVX512(a float32, x, y *float32, n int)
TEXT ·axpyAVX512(SB), NOSPLIT, $0-32
	VBROADCASTSS a+0(FP), Z0
	MOVQ         x+8(FP), SI
	MOVQ         y+16(FP), DI
	MOVQ         n+24(FP), CX
	TESTQ        CX, CX
	JZ           axpy_512_done

axpy_512_loop:
	VMOVUPS     (DI), Z1
	VFMADD231PS (SI), Z0, Z1
	VMOVUPS     Z1, (DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JNZ         axpy_512_loop

axpy_512_done:
	VZEROUPPER
	RET

// func dotF32AVX2(x, y *float32, n int) float32
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ   x+0(FP), SI
	MOVQ   y+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y4, Y4, Y4
	TESTQ  CX, CX
	JZ     dotf32_256_done

dotf32_256_loop:
	VMOVUPS     (SI), Y9
	VMOVUPS     32(SI), Y10
	VFMADD231PS (DI), Y9, Y0
	VFMADD231PS 32(DI), Y10, Y4
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JNZ         dotf32_256_loop

dotf32_256_done:
	RED8x2(Y0, X0, Y4)
	VHADDPS    X0, X0, X0
	VHADDPS    X0, X0, X0
	VZEROUPPER
	MOVSS      X0, ret+24(FP)
	RET

// func dotBF16AVX2(x *float32, w *uint16, n int) float32
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ   x+0(FP), SI
	MOVQ   w+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y4, Y4, Y4
	TESTQ  CX, CX
	JZ     dotbf16_256_done

dotbf16_256_loop:
	WIDEN8((DI), Y9)
	WIDEN8(16(DI), Y10)
	VFMADD231PS (SI), Y9, Y0
	VFMADD231PS 32(SI), Y10, Y4
	ADDQ        $64, SI
	ADDQ        $32, DI
	SUBQ        $16, CX
	JNZ         dotbf16_256_loop

dotbf16_256_done:
	RED8x2(Y0, X0, Y4)
	VHADDPS    X0, X0, X0
	VHADDPS    X0, X0, X0
	VZEROUPPER
	MOVSS      X0, ret+24(FP)
	RET

#define RED4x2 \
	RED8x2(Y0, X0, Y4); \
	RED8x2(Y1, X1, Y5); \
	RED8x2(Y2, X2, Y6); \
	RED8x2(Y3, X3, Y7)

#define ZERO4x2 \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; \
	VXORPS Y5, Y5, Y5; \
	VXORPS Y6, Y6, Y6; \
	VXORPS Y7, Y7, Y7

// func dot1x4F32AVX2(out *[4]float32, x, w *float32, ldw, n int)
TEXT ·dot1x4F32AVX2(SB), NOSPLIT, $0-40
	MOVQ  out+0(FP), DX
	MOVQ  x+8(FP), SI
	MOVQ  w+16(FP), DI
	MOVQ  ldw+24(FP), R8
	SHLQ  $2, R8
	LEAQ  (R8)(R8*2), R9
	LEAQ  (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ  n+32(FP), CX
	ZERO4x2
	TESTQ CX, CX
	JZ    d1x4f32_256_done

d1x4f32_256_loop:
	PREFETCHT1  0(R12)
	PREFETCHT1  64(R12)
	PREFETCHT1  128(R12)
	PREFETCHT1  192(R12)
	ADDQ        $256, R12
	VMOVUPS     (SI), Y9
	VMOVUPS     32(SI), Y10
	VFMADD231PS (DI), Y9, Y0
	VFMADD231PS 32(DI), Y10, Y4
	VFMADD231PS (DI)(R8*1), Y9, Y1
	VFMADD231PS 32(DI)(R8*1), Y10, Y5
	VFMADD231PS (DI)(R8*2), Y9, Y2
	VFMADD231PS 32(DI)(R8*2), Y10, Y6
	VFMADD231PS (DI)(R9*1), Y9, Y3
	VFMADD231PS 32(DI)(R9*1), Y10, Y7
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JNZ         d1x4f32_256_loop

d1x4f32_256_done:
	RED4x2
	HSUM4((DX))
	VZEROUPPER
	RET

// func dot1x4BF16AVX2(out *[4]float32, x *float32, w *uint16, ldw, n int)
TEXT ·dot1x4BF16AVX2(SB), NOSPLIT, $0-40
	MOVQ  out+0(FP), DX
	MOVQ  x+8(FP), SI
	MOVQ  w+16(FP), DI
	MOVQ  ldw+24(FP), R8
	SHLQ  $1, R8
	LEAQ  (R8)(R8*2), R9
	LEAQ  (DI)(R8*4), R12 // the next four rows, prefetched
	MOVQ  n+32(FP), CX
	ZERO4x2
	TESTQ CX, CX
	JZ    d1x4bf16_256_done

d1x4bf16_256_loop:
	PREFETCHT1  0(R12)
	PREFETCHT1  64(R12)
	ADDQ        $128, R12
	VMOVUPS     (SI), Y9
	VMOVUPS     32(SI), Y10
	WIDEN8((DI), Y11)
	WIDEN8(16(DI), Y12)
	VFMADD231PS Y11, Y9, Y0
	VFMADD231PS Y12, Y10, Y4
	WIDEN8((DI)(R8*1), Y11)
	WIDEN8(16(DI)(R8*1), Y12)
	VFMADD231PS Y11, Y9, Y1
	VFMADD231PS Y12, Y10, Y5
	WIDEN8((DI)(R8*2), Y11)
	WIDEN8(16(DI)(R8*2), Y12)
	VFMADD231PS Y11, Y9, Y2
	VFMADD231PS Y12, Y10, Y6
	WIDEN8((DI)(R9*1), Y11)
	WIDEN8(16(DI)(R9*1), Y12)
	VFMADD231PS Y11, Y9, Y3
	VFMADD231PS Y12, Y10, Y7
	ADDQ        $64, SI
	ADDQ        $32, DI
	SUBQ        $16, CX
	JNZ         d1x4bf16_256_loop

d1x4bf16_256_done:
	RED4x2
	HSUM4((DX))
	VZEROUPPER
	RET

// func axpyAVX2(a float32, x, y *float32, n int)
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	VBROADCASTSS a+0(FP), Y0
	MOVQ         x+8(FP), SI
	MOVQ         y+16(FP), DI
	MOVQ         n+24(FP), CX
	TESTQ        CX, CX
	JZ           axpy_256_done

axpy_256_loop:
	VMOVUPS     (DI), Y1
	VMOVUPS     32(DI), Y2
	VFMADD231PS (SI), Y0, Y1
	VFMADD231PS 32(SI), Y0, Y2
	VMOVUPS     Y1, (DI)
	VMOVUPS     Y2, 32(DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JNZ         axpy_256_loop

axpy_256_done:
	VZEROUPPER
	RET

// func prefetchAsm(p *float32, n int)
TEXT ·prefetchAsm(SB), NOSPLIT, $0-16
	MOVQ  p+0(FP), SI
	MOVQ  n+8(FP), CX
	SHLQ  $2, CX
	ADDQ  SI, CX

prefetch_loop:
	PREFETCHT0 (SI)
	ADDQ       $64, SI
	CMPQ       SI, CX
	JB         prefetch_loop
	RET

// func axpy4AVX512(a *[4]float32, x, y *float32, ldy, n int)
TEXT ·axpy4AVX512(SB), NOSPLIT, $0-40
	MOVQ         a+0(FP), AX
	VBROADCASTSS (AX), Z0
	VBROADCASTSS 4(AX), Z1
	VBROADCASTSS 8(AX), Z2
	VBROADCASTSS 12(AX), Z3
	MOVQ         x+8(FP), SI
	MOVQ         y+16(FP), DI
	MOVQ         ldy+24(FP), R8
	SHLQ         $2, R8
	LEAQ         (R8)(R8*2), R9
	MOVQ         n+32(FP), CX
	TESTQ        CX, CX
	JZ           axpy4_512_done

axpy4_512_loop:
	VMOVUPS     (SI), Z4
	VMOVUPS     (DI), Z5
	VMOVUPS     (DI)(R8*1), Z6
	VMOVUPS     (DI)(R8*2), Z7
	VMOVUPS     (DI)(R9*1), Z8
	VFMADD231PS Z4, Z0, Z5
	VFMADD231PS Z4, Z1, Z6
	VFMADD231PS Z4, Z2, Z7
	VFMADD231PS Z4, Z3, Z8
	VMOVUPS     Z5, (DI)
	VMOVUPS     Z6, (DI)(R8*1)
	VMOVUPS     Z7, (DI)(R8*2)
	VMOVUPS     Z8, (DI)(R9*1)
	ADDQ        $64, SI
	ADDQ        $64, DI
	SUBQ        $16, CX
	JNZ         axpy4_512_loop

axpy4_512_done:
	VZEROUPPER
	RET

// func axpy4AVX2(a *[4]float32, x, y *float32, ldy, n int)
TEXT ·axpy4AVX2(SB), NOSPLIT, $0-40
	MOVQ         a+0(FP), AX
	VBROADCASTSS (AX), Y0
	VBROADCASTSS 4(AX), Y1
	VBROADCASTSS 8(AX), Y2
	VBROADCASTSS 12(AX), Y3
	MOVQ         x+8(FP), SI
	MOVQ         y+16(FP), DI
	MOVQ         ldy+24(FP), R8
	SHLQ         $2, R8
	LEAQ         (R8)(R8*2), R9
	MOVQ         n+32(FP), CX
	TESTQ        CX, CX
	JZ           axpy4_256_done

axpy4_256_loop:
	VMOVUPS     (SI), Y4
	VMOVUPS     (DI), Y5
	VMOVUPS     (DI)(R8*1), Y6
	VMOVUPS     (DI)(R8*2), Y7
	VMOVUPS     (DI)(R9*1), Y8
	VFMADD231PS Y4, Y0, Y5
	VFMADD231PS Y4, Y1, Y6
	VFMADD231PS Y4, Y2, Y7
	VFMADD231PS Y4, Y3, Y8
	VMOVUPS     Y5, (DI)
	VMOVUPS     Y6, (DI)(R8*1)
	VMOVUPS     Y7, (DI)(R8*2)
	VMOVUPS     Y8, (DI)(R9*1)
	ADDQ        $32, SI
	ADDQ        $32, DI
	SUBQ        $8, CX
	JNZ         axpy4_256_loop

axpy4_256_done:
	VZEROUPPER
	RET

// func expSumAVX512(dst, src *float32, s, m float32, c *[12]float64, n int) float64
//
// Eight lanes of float64: x = s·src-m (float32 arithmetic, as the Go
// reference), clamped to [c[0], c[1]] keeping NaN, k = round(x·log2 e),
// r = x - k·ln 2, exp(r) by a degree-9 Taylor polynomial (relative error
// below 1e-12 for |r| ≤ ln2/2), scaled by 2^k with VSCALEFPD, rounded to
// float32 and summed in float64. n is a multiple of 8.
TEXT ·expSumAVX512(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         src+8(FP), SI
	VBROADCASTSS s+16(FP), Y14
	VBROADCASTSS m+20(FP), Y15
	MOVQ         c+24(FP), AX
	MOVQ         n+32(FP), CX
	VBROADCASTSD (AX), Z16   // lower clamp
	VBROADCASTSD 8(AX), Z17  // upper clamp
	VBROADCASTSD 16(AX), Z18 // log2 e
	VBROADCASTSD 24(AX), Z19 // ln 2
	VBROADCASTSD 32(AX), Z20 // 1/9!
	VBROADCASTSD 40(AX), Z21 // 1/8!
	VBROADCASTSD 48(AX), Z22 // 1/7!
	VBROADCASTSD 56(AX), Z23 // 1/6!
	VBROADCASTSD 64(AX), Z24 // 1/5!
	VBROADCASTSD 72(AX), Z25 // 1/4!
	VBROADCASTSD 80(AX), Z26 // 1/3!
	VBROADCASTSD 88(AX), Z27 // 1/2
	MOVQ         $0x3ff0000000000000, DX
	VPBROADCASTQ DX, Z28     // 1
	VPXORQ       Z29, Z29, Z29 // sum
	TESTQ        CX, CX
	JZ           exp_512_done

exp_512_loop:
	VMOVUPS      (SI), Y0
	VMULPS       Y14, Y0, Y0
	VSUBPS       Y15, Y0, Y0
	VCVTPS2PD    Y0, Z0
	VMAXPD       Z0, Z16, Z0
	VMINPD       Z0, Z17, Z0
	VMULPD       Z18, Z0, Z1
	VRNDSCALEPD  $0, Z1, Z1
	VFNMADD231PD Z19, Z1, Z0
	VMOVAPD      Z20, Z2
	VFMADD213PD  Z21, Z0, Z2
	VFMADD213PD  Z22, Z0, Z2
	VFMADD213PD  Z23, Z0, Z2
	VFMADD213PD  Z24, Z0, Z2
	VFMADD213PD  Z25, Z0, Z2
	VFMADD213PD  Z26, Z0, Z2
	VFMADD213PD  Z27, Z0, Z2
	VFMADD213PD  Z28, Z0, Z2
	VFMADD213PD  Z28, Z0, Z2
	VSCALEFPD    Z1, Z2, Z2
	VCVTPD2PS    Z2, Y3
	VMOVUPS      Y3, (DI)
	VCVTPS2PD    Y3, Z4
	VADDPD       Z4, Z29, Z29
	ADDQ         $32, SI
	ADDQ         $32, DI
	SUBQ         $8, CX
	JNZ          exp_512_loop

exp_512_done:
	VEXTRACTF64X4 $1, Z29, Y0
	VADDPD        Y29, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPD        X1, X0, X0
	VHADDPD       X0, X0, X0
	VZEROUPPER
	MOVSD         X0, ret+40(FP)
	RET

// func gemvBF16AVX512(out, x *float32, w *uint16, k, rows, pd int)
//
// out[r] = x[:k] · w[r*k:(r+1)*k] for r in [0, rows): contiguous rows, k a
// multiple of 16, rows a multiple of 4, four rows at a time as in
// dot1x4BF16AVX512 (same arithmetic). The weights are one linear stream:
// the kernel first prefetches its first pd bytes into L2, then keeps
// prefetching pd bytes ahead of the four-row group it is on, never past
// the last line of its rows, so a short range starts at full speed and
// fetches nothing it does not use.
TEXT ·gemvBF16AVX512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DX
	MOVQ x+8(FP), R13
	MOVQ w+16(FP), DI
	MOVQ k+24(FP), R10
	MOVQ rows+32(FP), BX
	MOVQ pd+40(FP), AX
	LEAQ (R10)(R10*1), R8  // row bytes
	LEAQ (R8)(R8*2), R9
	MOVQ BX, R11
	IMULQ R8, R11
	ADDQ DI, R11
	SUBQ $64, R11          // the last line of the rows
	MOVQ DI, R12
	ADDQ DI, AX
	CMPQ AX, R11
	JLS  gemvbf16_prime
	MOVQ R11, AX

gemvbf16_prime:
	PREFETCHT1 (R12)
	ADDQ       $64, R12
	CMPQ       R12, AX
	JLS        gemvbf16_prime
	MOVQ       DI, R12
	ADDQ       pd+40(FP), R12 // prefetch pointer, pd bytes ahead
	TESTQ      BX, BX
	JZ         gemvbf16_end

gemvbf16_group:
	MOVQ   R13, SI
	MOVQ   R10, CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3

gemvbf16_loop:
	MOVQ        R12, AX
	CMPQ        AX, R11
	CMOVQHI     R11, AX
	PREFETCHT1  (AX)
	PREFETCHT1  64(AX)
	ADDQ        $128, R12
	VMOVUPS     (SI), Z4
	WIDEN16((DI), Z5)
	WIDEN16((DI)(R8*1), Z6)
	WIDEN16((DI)(R8*2), Z7)
	WIDEN16((DI)(R9*1), Z9)
	VFMADD231PS Z5, Z4, Z0
	VFMADD231PS Z6, Z4, Z1
	VFMADD231PS Z7, Z4, Z2
	VFMADD231PS Z9, Z4, Z3
	ADDQ        $64, SI
	ADDQ        $32, DI
	SUBQ        $16, CX
	JNZ         gemvbf16_loop

	ADDQ R9, DI // DI was at the end of the group's first row
	RED16(Z0, Y0, Y0, X0)
	RED16(Z1, Y1, Y1, X1)
	RED16(Z2, Y2, Y2, X2)
	RED16(Z3, Y3, Y3, X3)
	HSUM4((DX))
	ADDQ $16, DX
	SUBQ $4, BX
	JNZ  gemvbf16_group

gemvbf16_end:
	VZEROUPPER
	RET

// func gemv2BF16AVX512(out, x *float32, w *uint16, k, rows, pd int)
//
// gemvBF16AVX512 over 2·rows rows taken as two streams read side by side:
// rows [0, rows) and [rows, 2·rows), four of each at a time, the same
// arithmetic per row. Two streams keep more cache-line fills in flight
// than one. Both are prefetched pd bytes ahead, never past the last line
// of the 2·rows rows.
TEXT ·gemv2BF16AVX512(SB), NOSPLIT, $8-48
	MOVQ out+0(FP), DX
	MOVQ x+8(FP), R13
	MOVQ w+16(FP), DI
	MOVQ k+24(FP), R8
	SHLQ $1, R8            // row bytes
	LEAQ (R8)(R8*2), R9
	MOVQ rows+32(FP), BX
	MOVQ BX, AX
	SHLQ $2, AX
	ADDQ DX, AX
	MOVQ AX, outb-8(SP)    // the second stream's outputs
	MOVQ BX, AX
	IMULQ R8, AX
	ADDQ DI, AX            // the second stream's rows
	LEAQ (AX)(AX*1), R11
	SUBQ DI, R11
	SUBQ $64, R11          // the last line of the rows
	MOVQ DI, R12
	MOVQ pd+40(FP), R10
	ADDQ DI, R10
	CMPQ R10, R11
	JLS  gemv2_primea
	MOVQ R11, R10

gemv2_primea:
	PREFETCHT1 (R12)
	ADDQ       $64, R12
	CMPQ       R12, R10
	JLS        gemv2_primea
	MOVQ       AX, R12
	MOVQ       pd+40(FP), R10
	ADDQ       AX, R10
	CMPQ       R10, R11
	JLS        gemv2_primeb
	MOVQ       R11, R10

gemv2_primeb:
	PREFETCHT1 (R12)
	ADDQ       $64, R12
	CMPQ       R12, R10
	JLS        gemv2_primeb
	MOVQ       DI, R12
	ADDQ       pd+40(FP), R12 // prefetch pointer of the first stream
	TESTQ      BX, BX
	JZ         gemv2_end

gemv2_group:
	MOVQ   R13, SI
	MOVQ   k+24(FP), CX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13

gemv2_loop:
	MOVQ        R12, R10
	CMPQ        R10, R11
	CMOVQHI     R11, R10
	PREFETCHT1  (R10)
	PREFETCHT1  64(R10)
	MOVQ        R12, R10
	ADDQ        AX, R10
	SUBQ        DI, R10       // the second stream's prefetch pointer
	CMPQ        R10, R11
	CMOVQHI     R11, R10
	PREFETCHT1  (R10)
	PREFETCHT1  64(R10)
	ADDQ        $128, R12
	VMOVUPS     (SI), Z4
	WIDEN16((DI), Z5)
	WIDEN16((DI)(R8*1), Z6)
	WIDEN16((DI)(R8*2), Z7)
	WIDEN16((DI)(R9*1), Z9)
	VFMADD231PS Z5, Z4, Z0
	VFMADD231PS Z6, Z4, Z1
	VFMADD231PS Z7, Z4, Z2
	VFMADD231PS Z9, Z4, Z3
	WIDEN16((AX), Z5)
	WIDEN16((AX)(R8*1), Z6)
	WIDEN16((AX)(R8*2), Z7)
	WIDEN16((AX)(R9*1), Z9)
	VFMADD231PS Z5, Z4, Z10
	VFMADD231PS Z6, Z4, Z11
	VFMADD231PS Z7, Z4, Z12
	VFMADD231PS Z9, Z4, Z13
	ADDQ        $64, SI
	ADDQ        $32, DI
	ADDQ        $32, AX
	SUBQ        $16, CX
	JNZ         gemv2_loop

	ADDQ R9, DI // DI and AX were at the end of their group's first row
	ADDQ R9, AX
	RED16(Z0, Y0, Y0, X0)
	RED16(Z1, Y1, Y1, X1)
	RED16(Z2, Y2, Y2, X2)
	RED16(Z3, Y3, Y3, X3)
	HSUM4((DX))
	ADDQ $16, DX
	RED16(Z10, Y10, Y0, X0)
	RED16(Z11, Y11, Y1, X1)
	RED16(Z12, Y12, Y2, X2)
	RED16(Z13, Y13, Y3, X3)
	MOVQ outb-8(SP), R10
	HSUM4((R10))
	ADDQ $16, outb-8(SP)
	SUBQ $4, BX
	JNZ  gemv2_group

gemv2_end:
	VZEROUPPER
	RET
