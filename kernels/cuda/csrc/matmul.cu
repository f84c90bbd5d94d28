// Matrix products out[m,n] = x[m,k] · w[n,k]ᵀ with x and out float32 and w
// float32 or bfloat16, plus the grouped form that runs many experts in one
// launch.
//
// Paths, chosen on the host:
//   - gemv (m <= 8, the decode case): one warp per output column streams
//     that weight row once with 16-byte non-allocating loads and keeps m
//     accumulators in registers; the x rows stay in L1/L2. Needs 16-byte
//     aligned w and x and k a multiple of the vector width.
//   - gemv_scalar: the same with 4/2-byte loads, for unaligned views.
//   - tiled: 64×64 output tiles, k in steps of 16 through shared memory,
//     4×4 outputs per thread, f32 FMA. For prefill (m > 8).
//
// Grouped kernels read a small device array of 3 long longs per group:
// {weight pointer, first row, row count}; group g = blockIdx.z (tiled) or
// blockIdx.y (gemv) works on rows [first, first+count) of x and out.
#include "common.cuh"

// 16-byte streaming load that skips L1: weights are read exactly once.
__device__ __forceinline__ uint4 ld_stream(const void *p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// Elements per 16-byte vector.
template <bool BF16> struct vec_elems { static const int value = 4; };
template <> struct vec_elems<true> { static const int value = 8; };

// Dot product of one 16-byte weight vector with the matching x values.
template <bool BF16>
__device__ __forceinline__ float dot_vec(uint4 wv, const float *xp);

template <>
__device__ __forceinline__ float dot_vec<false>(uint4 wv, const float *xp) {
  float4 a = __ldg(reinterpret_cast<const float4 *>(xp));
  float s = a.x * __uint_as_float(wv.x);
  s = fmaf(a.y, __uint_as_float(wv.y), s);
  s = fmaf(a.z, __uint_as_float(wv.z), s);
  s = fmaf(a.w, __uint_as_float(wv.w), s);
  return s;
}

template <>
__device__ __forceinline__ float dot_vec<true>(uint4 wv, const float *xp) {
  float4 a = __ldg(reinterpret_cast<const float4 *>(xp));
  float4 b = __ldg(reinterpret_cast<const float4 *>(xp + 4));
  float s = a.x * bf16_lo(wv.x);
  s = fmaf(a.y, bf16_hi(wv.x), s);
  s = fmaf(a.z, bf16_lo(wv.y), s);
  s = fmaf(a.w, bf16_hi(wv.y), s);
  s = fmaf(b.x, bf16_lo(wv.z), s);
  s = fmaf(b.y, bf16_hi(wv.z), s);
  s = fmaf(b.z, bf16_lo(wv.w), s);
  s = fmaf(b.w, bf16_hi(wv.w), s);
  return s;
}

#define GEMV_WARPS 8  // warps (output columns) per 256-thread block

// gemv_vec: warp `col` of the grid computes out[i, col] for i in [0, m),
// m <= M. Two vectors per lane are in flight per iteration.
template <int M, bool BF16>
__device__ __forceinline__ void gemv_vec(float *__restrict__ out,
                                         const float *__restrict__ x,
                                         const void *__restrict__ w, int m,
                                         int n, int k) {
  const int V = vec_elems<BF16>::value;
  const int esz = BF16 ? 2 : 4;
  int lane = threadIdx.x % WARP;
  int col = blockIdx.x * GEMV_WARPS + threadIdx.x / WARP;
  if (col >= n) return;
  const char *wrow = reinterpret_cast<const char *>(w) + (size_t)col * k * esz;
  float acc[M];
#pragma unroll
  for (int i = 0; i < M; i++) acc[i] = 0.f;
  int kk = lane * V;
  for (; kk + WARP * V < k; kk += 2 * WARP * V) {
    uint4 w0 = ld_stream(wrow + (size_t)kk * esz);
    uint4 w1 = ld_stream(wrow + (size_t)(kk + WARP * V) * esz);
#pragma unroll
    for (int i = 0; i < M; i++) {
      if (i < m) {
        const float *xr = x + (size_t)i * k;
        acc[i] += dot_vec<BF16>(w0, xr + kk) + dot_vec<BF16>(w1, xr + kk + WARP * V);
      }
    }
  }
  if (kk < k) {
    uint4 w0 = ld_stream(wrow + (size_t)kk * esz);
#pragma unroll
    for (int i = 0; i < M; i++)
      if (i < m) acc[i] += dot_vec<BF16>(w0, x + (size_t)i * k + kk);
  }
#pragma unroll
  for (int i = 0; i < M; i++) {
    if (i < m) {
      float s = warp_sum(acc[i]);
      if (lane == 0) out[(size_t)i * n + col] = s;
    }
  }
}

template <bool BF16>
__device__ __forceinline__ float wload(const void *w, size_t i) {
  if (BF16) return bf16_to_f32(reinterpret_cast<const bf16_t *>(w)[i]);
  return reinterpret_cast<const float *>(w)[i];
}

// gemv_scalar: any alignment, any m; the weight row is re-read per x row
// (from L1 after the first).
template <bool BF16>
__device__ __forceinline__ void gemv_scalar(float *__restrict__ out,
                                            const float *__restrict__ x,
                                            const void *__restrict__ w, int m,
                                            int n, int k) {
  int lane = threadIdx.x % WARP;
  int col = blockIdx.x * GEMV_WARPS + threadIdx.x / WARP;
  if (col >= n) return;
  size_t wb = (size_t)col * k;
  for (int i = 0; i < m; i++) {
    const float *xr = x + (size_t)i * k;
    float acc = 0.f;
    for (int kk = lane; kk < k; kk += WARP) acc = fmaf(xr[kk], wload<BF16>(w, wb + kk), acc);
    acc = warp_sum(acc);
    if (lane == 0) out[(size_t)i * n + col] = acc;
  }
}

#define TM 64
#define TN 64
#define TK 16

// gemm_tile computes the 64×64 tile at (blockIdx.y*64, blockIdx.x*64).
// 256 threads; thread (ty, tx) owns rows ty*4..ty*4+3, cols tx*4..tx*4+3.
template <bool BF16>
__device__ __forceinline__ void gemm_tile(float *__restrict__ out,
                                          const float *__restrict__ x,
                                          const void *__restrict__ w, int m,
                                          int n, int k) {
  __shared__ __align__(16) float As[TK][TM + 4];
  __shared__ __align__(16) float Bs[TK][TN + 4];
  int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  int m0 = blockIdx.y * TM, n0 = blockIdx.x * TN;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

  for (int k0 = 0; k0 < k; k0 += TK) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
      int e = tid + 256 * r;
      int row = e / TK, kk = e % TK;
      int gk = k0 + kk;
      int gm = m0 + row, gn = n0 + row;
      As[kk][row] = (gm < m && gk < k) ? x[(size_t)gm * k + gk] : 0.f;
      Bs[kk][row] = (gn < n && gk < k) ? wload<BF16>(w, (size_t)gn * k + gk) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TK; kk++) {
      float4 a = *reinterpret_cast<const float4 *>(&As[kk][ty * 4]);
      float4 b = *reinterpret_cast<const float4 *>(&Bs[kk][tx * 4]);
      float av[4] = {a.x, a.y, a.z, a.w};
      float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int gm = m0 + ty * 4 + i;
    if (gm >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int gn = n0 + tx * 4 + j;
      if (gn < n) out[(size_t)gm * n + gn] = acc[i][j];
    }
  }
}

// Group g's operands: rows [meta[3g+1], +meta[3g+2]) of x/out, weight meta[3g].
struct group_args {
  float *out;
  const float *x;
  const void *w;
  int m;
};

__device__ __forceinline__ group_args group_of(const long long *meta, int g,
                                               float *out, const float *x,
                                               int n, int k) {
  group_args a;
  long long off = meta[3 * g + 1];
  a.w = reinterpret_cast<const void *>(meta[3 * g]);
  a.x = x + (size_t)off * k;
  a.out = out + (size_t)off * n;
  a.m = (int)meta[3 * g + 2];
  return a;
}

#define DEFINE_GEMV(M, SUF, BF)                                                  \
  extern "C" __global__ void __launch_bounds__(256)                              \
      mm_gemv_##SUF##_m##M(float *out, const float *x, const void *w, int m,     \
                           int n, int k) {                                       \
    gemv_vec<M, BF>(out, x, w, m, n, k);                                         \
  }                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                              \
      gmm_gemv_##SUF##_m##M(float *out, const float *x, const long long *meta,   \
                            int n, int k) {                                      \
    group_args a = group_of(meta, blockIdx.y, out, x, n, k);                     \
    if (a.m > 0) gemv_vec<M, BF>(a.out, a.x, a.w, a.m, n, k);                    \
  }

DEFINE_GEMV(1, f32, false)
DEFINE_GEMV(2, f32, false)
DEFINE_GEMV(4, f32, false)
DEFINE_GEMV(8, f32, false)
DEFINE_GEMV(1, bf16, true)
DEFINE_GEMV(2, bf16, true)
DEFINE_GEMV(4, bf16, true)
DEFINE_GEMV(8, bf16, true)

#define DEFINE_MM(SUF, BF)                                                       \
  extern "C" __global__ void __launch_bounds__(256)                              \
      mm_gemv_scalar_##SUF(float *out, const float *x, const void *w, int m,     \
                           int n, int k) {                                       \
    gemv_scalar<BF>(out, x, w, m, n, k);                                         \
  }                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                              \
      gmm_gemv_scalar_##SUF(float *out, const float *x, const long long *meta,   \
                            int n, int k) {                                      \
    group_args a = group_of(meta, blockIdx.y, out, x, n, k);                     \
    gemv_scalar<BF>(a.out, a.x, a.w, a.m, n, k);                                 \
  }                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                              \
      mm_tiled_##SUF(float *out, const float *x, const void *w, int m, int n,    \
                     int k) {                                                    \
    gemm_tile<BF>(out, x, w, m, n, k);                                           \
  }                                                                              \
  extern "C" __global__ void __launch_bounds__(256)                              \
      gmm_tiled_##SUF(float *out, const float *x, const long long *meta, int n,  \
                      int k) {                                                   \
    group_args a = group_of(meta, blockIdx.z, out, x, n, k);                     \
    if ((int)blockIdx.y * TM >= a.m) return;                                     \
    gemm_tile<BF>(a.out, a.x, a.w, a.m, n, k);                                   \
  }

DEFINE_MM(f32, false)
DEFINE_MM(bf16, true)
