// Row-wise operations: RMSNorm, softmax, top-k, RoPE.
//
// Rows of up to 1024 elements go one warp per row (8 rows per 256-thread
// block); longer rows one 256-thread block per row.
#include "common.cuh"

// ---- RMSNorm: out[r,:] = w ⊙ x[r,:] / sqrt(mean(x[r,:]²) + eps) ----
// out may alias x: every element is read and written by one thread.
// As in the CPU backend: squares in float32 summed in double, the mean and
// mean+eps rounded to float32, the reciprocal root in double, then
// (x·s)·w in float32.

__device__ __forceinline__ float rms_scale(double ss, int dim, float eps) {
  float mean = (float)(ss / (double)dim);
  return (float)(1.0 / sqrt((double)(mean + eps)));
}

extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_warp(float *out, const float *x, const float *w, int rows, int dim,
                 float eps) {
  int row = blockIdx.x * 8 + threadIdx.x / WARP, lane = threadIdx.x % WARP;
  if (row >= rows) return;
  const float *xr = x + (size_t)row * dim;
  float *o = out + (size_t)row * dim;
  double ss = 0.0;
  for (int i = lane; i < dim; i += WARP) ss += (double)(xr[i] * xr[i]);
  float s = rms_scale(warp_sum_d(ss), dim, eps);
  for (int i = lane; i < dim; i += WARP) o[i] = (xr[i] * s) * w[i];
}

extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_block(float *out, const float *x, const float *w, int rows, int dim,
                  float eps) {
  __shared__ double scratch[32];
  int row = blockIdx.x;
  const float *xr = x + (size_t)row * dim;
  float *o = out + (size_t)row * dim;
  double ss = 0.0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)(xr[i] * xr[i]);
  float s = rms_scale(block_sum_d(ss, scratch), dim, eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = (xr[i] * s) * w[i];
}

// ---- Softmax over each row of x[rows, n], in place ----
// As in the CPU backend: exp in double rounded to float32, the sum in
// double, one float32 reciprocal.

extern "C" __global__ void __launch_bounds__(256)
    softmax_warp(float *x, int rows, int n) {
  int row = blockIdx.x * 8 + threadIdx.x / WARP, lane = threadIdx.x % WARP;
  if (row >= rows) return;
  float *xr = x + (size_t)row * n;
  float mx = -INFINITY;
  for (int i = lane; i < n; i += WARP) mx = fmaxf(mx, xr[i]);
  mx = warp_max(mx);
  double s = 0.0;
  for (int i = lane; i < n; i += WARP) {
    float e = (float)exp((double)(xr[i] - mx));
    xr[i] = e;
    s += (double)e;
  }
  float inv = (float)(1.0 / warp_sum_d(s));
  for (int i = lane; i < n; i += WARP) xr[i] *= inv;
}

extern "C" __global__ void __launch_bounds__(256)
    softmax_block(float *x, int rows, int n) {
  __shared__ float scratch[32];
  __shared__ double dscratch[32];
  float *xr = x + (size_t)blockIdx.x * n;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, xr[i]);
  mx = block_max(mx, scratch);
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float e = (float)exp((double)(xr[i] - mx));
    xr[i] = e;
    s += (double)e;
  }
  float inv = (float)(1.0 / block_sum_d(s, dscratch));
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
