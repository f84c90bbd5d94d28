// Matrix products out[m,n] = x[m,k] · w[n,k]ᵀ with x and out float32 and w
// float32 or bfloat16, plus the grouped form that runs many experts in one
// launch.
//
// Paths, chosen on the host:
//   - gemv (m <= 16, the decode case): a warp owns 1 or 2 output columns
//     (gemv_shape) and streams their weight rows once with 16-byte
//     non-allocating loads, all of a step's loads issued before the FMAs;
//     m×C accumulators in registers; each x vector, read from L1/L2, serves
//     all the warp's columns. Needs 16-byte aligned w and x and k a
//     multiple of the vector width.
//   - gemv_scalar: the same with 4/2-byte loads, for unaligned views.
//   - tiled: 64×64 output tiles, k in steps of 16 through shared memory,
//     4×4 outputs per thread, f32 FMA. For prefill (m > 16).
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

// The x values matching one 16-byte weight vector: 4 floats (f32 weights)
// or 8 (bf16 weights), loaded once and used for every column of a warp.
struct xvec {
  float4 a, b;
};

template <bool BF16>
__device__ __forceinline__ xvec load_x(const float *xp) {
  xvec v;
  v.a = __ldg(reinterpret_cast<const float4 *>(xp));
  if (BF16) v.b = __ldg(reinterpret_cast<const float4 *>(xp + 4));
  return v;
}

// Dot product of one 16-byte weight vector with the matching x values.
template <bool BF16>
__device__ __forceinline__ float dot_vec(uint4 wv, const xvec &x);

template <>
__device__ __forceinline__ float dot_vec<false>(uint4 wv, const xvec &x) {
  float s = x.a.x * __uint_as_float(wv.x);
  s = fmaf(x.a.y, __uint_as_float(wv.y), s);
  s = fmaf(x.a.z, __uint_as_float(wv.z), s);
  s = fmaf(x.a.w, __uint_as_float(wv.w), s);
  return s;
}

template <>
__device__ __forceinline__ float dot_vec<true>(uint4 wv, const xvec &x) {
  float s = x.a.x * bf16_lo(wv.x);
  s = fmaf(x.a.y, bf16_hi(wv.x), s);
  s = fmaf(x.a.z, bf16_lo(wv.y), s);
  s = fmaf(x.a.w, bf16_hi(wv.y), s);
  s = fmaf(x.b.x, bf16_lo(wv.z), s);
  s = fmaf(x.b.y, bf16_hi(wv.z), s);
  s = fmaf(x.b.z, bf16_lo(wv.w), s);
  s = fmaf(x.b.w, bf16_hi(wv.w), s);
  return s;
}

#define GEMV_WARPS 8  // warps per 256-thread block

// Columns per warp (C) and 16-byte vectors per lane and column in flight
// (U) of the variant for M rows; plan.go's gemvCols mirrors gemv_cols.
// With C > 1 a warp's columns share every x vector it loads, which halves
// the x traffic through L1 per weight byte at m >= 4.
template <int M> struct gemv_shape { static const int C = 2, U = 2; };
template <> struct gemv_shape<1> { static const int C = 1, U = 4; };
template <> struct gemv_shape<2> { static const int C = 1, U = 4; };

// gemv_vec: warp w of the grid computes out[i, col] for the C columns
// col = w*C + c and rows i in [0, m), m <= M. Each step issues all C*U of a
// lane's 16-byte weight loads before the first FMA; then, per row, loads
// the x values once and applies them to every column.
template <int M, bool BF16>
__device__ __forceinline__ void gemv_vec(float *__restrict__ out,
                                         const float *__restrict__ x,
                                         const void *__restrict__ w, int m,
                                         int n, int k) {
  const int C = gemv_shape<M>::C, U = gemv_shape<M>::U;
  const int V = vec_elems<BF16>::value;
  const int esz = BF16 ? 2 : 4;
  const int STEP = WARP * V;  // elements of k per warp-wide vector load
  int lane = threadIdx.x % WARP;
  int col0 = (blockIdx.x * GEMV_WARPS + threadIdx.x / WARP) * C;
  if (col0 >= n) return;
  const char *wrow[C];
#pragma unroll
  for (int c = 0; c < C; c++)  // a column past n repeats the last one, unstored
    wrow[c] = reinterpret_cast<const char *>(w) + (size_t)min(col0 + c, n - 1) * k * esz;
  float acc[M][C];
#pragma unroll
  for (int i = 0; i < M; i++)
#pragma unroll
    for (int c = 0; c < C; c++) acc[i][c] = 0.f;
  int kk = lane * V;
  for (; kk + (U - 1) * STEP < k; kk += U * STEP) {
    uint4 wv[C][U];
#pragma unroll
    for (int c = 0; c < C; c++)
#pragma unroll
      for (int u = 0; u < U; u++) wv[c][u] = ld_stream(wrow[c] + (size_t)(kk + u * STEP) * esz);
#pragma unroll
    for (int i = 0; i < M; i++) {
      if (i < m) {
        const float *xr = x + (size_t)i * k + kk;
#pragma unroll
        for (int u = 0; u < U; u++) {
          xvec xv = load_x<BF16>(xr + u * STEP);
#pragma unroll
          for (int c = 0; c < C; c++) acc[i][c] += dot_vec<BF16>(wv[c][u], xv);
        }
      }
    }
  }
  for (; kk < k; kk += STEP) {  // fewer than U vectors left
    uint4 wv[C];
#pragma unroll
    for (int c = 0; c < C; c++) wv[c] = ld_stream(wrow[c] + (size_t)kk * esz);
#pragma unroll
    for (int i = 0; i < M; i++) {
      if (i < m) {
        xvec xv = load_x<BF16>(x + (size_t)i * k + kk);
#pragma unroll
        for (int c = 0; c < C; c++) acc[i][c] += dot_vec<BF16>(wv[c], xv);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < M; i++) {
    if (i < m) {
#pragma unroll
      for (int c = 0; c < C; c++) {
        float s = warp_sum(acc[i][c]);
        if (lane == 0 && col0 + c < n) out[(size_t)i * n + col0 + c] = s;
      }
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
DEFINE_GEMV(16, f32, false)
DEFINE_GEMV(1, bf16, true)
DEFINE_GEMV(2, bf16, true)
DEFINE_GEMV(4, bf16, true)
DEFINE_GEMV(8, bf16, true)
DEFINE_GEMV(16, bf16, true)

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
