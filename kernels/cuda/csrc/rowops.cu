// Row-wise operations: RMSNorm, softmax, top-k, RoPE.
//
// Rows of up to 1024 elements go one warp per row (8 rows per 256-thread
// block); longer rows one 256-thread block per row.
#include "common.cuh"

// ---- RMSNorm: out[r,:] = w ⊙ x[r,:] / sqrt(mean(x[r,:]²) + eps) ----
// out may alias x: every element is read and written by one thread.

extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_warp(float *out, const float *x, const float *w, int rows, int dim,
                 float eps) {
  int row = blockIdx.x * 8 + threadIdx.x / WARP, lane = threadIdx.x % WARP;
  if (row >= rows) return;
  const float *xr = x + (size_t)row * dim;
  float *o = out + (size_t)row * dim;
  float ss = 0.f;
  for (int i = lane; i < dim; i += WARP) ss = fmaf(xr[i], xr[i], ss);
  ss = warp_sum(ss);
  float inv = 1.f / sqrtf(ss / (float)dim + eps);
  for (int i = lane; i < dim; i += WARP) o[i] = w[i] * (xr[i] * inv);
}

extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_block(float *out, const float *x, const float *w, int rows, int dim,
                  float eps) {
  __shared__ float scratch[32];
  int row = blockIdx.x;
  const float *xr = x + (size_t)row * dim;
  float *o = out + (size_t)row * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss, scratch);
  float inv = 1.f / sqrtf(ss / (float)dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = w[i] * (xr[i] * inv);
}

// ---- Softmax over each row of x[rows, n], in place ----

extern "C" __global__ void __launch_bounds__(256)
    softmax_warp(float *x, int rows, int n) {
  int row = blockIdx.x * 8 + threadIdx.x / WARP, lane = threadIdx.x % WARP;
  if (row >= rows) return;
  float *xr = x + (size_t)row * n;
  float mx = -INFINITY;
  for (int i = lane; i < n; i += WARP) mx = fmaxf(mx, xr[i]);
  mx = warp_max(mx);
  float s = 0.f;
  for (int i = lane; i < n; i += WARP) {
    float e = expf(xr[i] - mx);
    xr[i] = e;
    s += e;
  }
  s = warp_sum(s);
  float inv = 1.f / s;
  for (int i = lane; i < n; i += WARP) xr[i] *= inv;
}

extern "C" __global__ void __launch_bounds__(256)
    softmax_block(float *x, int rows, int n) {
  __shared__ float scratch[32];
  float *xr = x + (size_t)blockIdx.x * n;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, xr[i]);
  mx = block_max(mx, scratch);
  float s = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float e = expf(xr[i] - mx);
    xr[i] = e;
    s += e;
  }
  s = block_sum(s, scratch);
  float inv = 1.f / s;
  for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] *= inv;
}

// ---- Top-k per row ----
// Order: larger value first, equal values by lower index; NaN ranks below
// every number (as -inf, then by index). Selection i finds the best element
// strictly after selection i-1 in that order, so no per-row state is kept
// besides the previous pick. One block per row; k passes over the row.

__device__ __forceinline__ float topk_key(float v) { return v != v ? -INFINITY : v; }

// before reports whether (va, ia) comes before (vb, ib).
__device__ __forceinline__ bool topk_before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

extern "C" __global__ void __launch_bounds__(256)
    topk_rows(const float *x, int rows, int n, int k, int *idx, float *val) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const float *xr = x + (size_t)blockIdx.x * n;
  int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  int nwarps = blockDim.x / WARP;
  float pv = INFINITY;  // previous pick; INFINITY with index -1 precedes all
  int pi = -1;
  for (int sel = 0; sel < k; sel++) {
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      float v = topk_key(xr[i]);
      if (topk_before(pv, pi, v, i) && topk_before(v, i, bv, bi)) {
        bv = v;
        bi = i;
      }
    }
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(FULL_MASK, bv, o);
      int oi = __shfl_xor_sync(FULL_MASK, bi, o);
      if (topk_before(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      sv[warp] = bv;
      si[warp] = bi;
    }
    __syncthreads();
    bv = sv[0];
    bi = si[0];
    for (int w2 = 1; w2 < nwarps; w2++)
      if (topk_before(sv[w2], si[w2], bv, bi)) {
        bv = sv[w2];
        bi = si[w2];
      }
    __syncthreads();
    if (threadIdx.x == 0) {
      size_t o = (size_t)blockIdx.x * k + sel;
      idx[o] = bi;
      val[o] = bi < n ? xr[bi] : NAN;
    }
    pv = bv;
    pi = bi;
  }
}

// ---- RoPE, rotate-half (NeoX) form, in place ----
// Thread (row, head, j), j in [0, headDim/2), rotates the pair
// (x[j], x[j+half]) by pos[row]·theta^(-2j/headDim). The angle and its sine
// and cosine are computed in double, the rotation in float.
extern "C" __global__ void __launch_bounds__(256)
    rope_neox(float *x, int rows, int heads, int head_dim, const int *pos,
              double theta) {
  int half = head_dim / 2;
  long long total = (long long)rows * heads * half;
  for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
       t += (long long)gridDim.x * blockDim.x) {
    int j = (int)(t % half);
    long long rh = t / half;  // row*heads + head
    int row = (int)(rh / heads);
    double inv_freq = pow(theta, -2.0 * (double)j / (double)head_dim);
    double ang = (double)pos[row] * inv_freq;
    double s, c;
    sincos(ang, &s, &c);
    float fs = (float)s, fc = (float)c;
    float *p = x + rh * head_dim;
    float a = p[j], b = p[j + half];
    p[j] = a * fc - b * fs;
    p[j + half] = b * fc + a * fs;
  }
}
