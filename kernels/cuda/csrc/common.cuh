// Shared helpers for the moemesh CUDA kernels.
//
// Conventions for every kernel in this directory:
//   - extern "C" names, so the Go side finds them by the names below;
//   - parameters are pointers, int (sizes and counts, passed from 8-byte
//     storage) or float; nothing is wider than 8 bytes;
//   - all arithmetic is float32 unless a comment says otherwise; bfloat16
//     values are raw uint16 bits and widen exactly to float32.
#pragma once

#include <stdint.h>

#define WARP 32
#define FULL_MASK 0xffffffffu

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_f32(bf16_t v) {
  return __uint_as_float(((unsigned int)v) << 16);
}

// Low and high halves of a 32-bit word holding two bfloat16 values,
// the element at the lower address first.
__device__ __forceinline__ float bf16_lo(unsigned int w) {
  return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16_hi(unsigned int w) {
  return __uint_as_float(w & 0xffff0000u);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

// block_sum returns the sum of v over the block to every thread. scratch
// must hold 32 floats; blockDim.x is a multiple of 32, at most 1024.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
  int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  int nwarps = blockDim.x / WARP;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// block_sum_d is block_sum in double; scratch holds 32 doubles.
__device__ __forceinline__ double block_sum_d(double v, double *scratch) {
  int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  int nwarps = blockDim.x / WARP;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0;
  return warp_sum_d(v);
}

__device__ __forceinline__ float block_max(float v, float *scratch) {
  int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  int nwarps = blockDim.x / WARP;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}
