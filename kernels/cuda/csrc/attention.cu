// Paged attention over the KV cache, for prefill and decode alike.
//
// One 128-thread block per (token, query head): blockIdx.x = t*heads + h.
// Each of the 4 warps walks a strided subset of the visible positions
// [0, pos[t]] with its own online softmax (running max, running sum, and a
// head_dim accumulator spread over the lanes, dims lane+32i), all float32;
// the warps are merged through shared memory at the end.
//
// Cache row of position j of sequence s:
//   bt[bt_off[s] + j/block_size]*block_size + j%block_size,
// and kc/vc rows hold kv_heads*head_dim values; query head h reads KV head
// h/(heads/kv_heads).
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_MAXD 8  // dims per lane: head_dim <= 256

extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)
    attention_paged_f32(float *out, const float *q, const float *kc,
                        const float *vc, const int *seq_of, const int *pos,
                        const int *bt_off, const int *bt, int heads,
                        int kv_heads, int head_dim, float scale, int block_size) {
  __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
  __shared__ float s_acc[ATT_WARPS][ATT_MAXD * WARP];

  int h = blockIdx.x % heads, t = blockIdx.x / heads;
  int kvh = h / (heads / kv_heads);
  int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  int p = pos[t];
  const int *table = bt + bt_off[seq_of[t]];
  size_t row_stride = (size_t)kv_heads * head_dim;
  const float *qp = q + ((size_t)t * heads + h) * head_dim;

  float qv[ATT_MAXD], acc[ATT_MAXD];
#pragma unroll
  for (int i = 0; i < ATT_MAXD; i++) {
    int d = lane + WARP * i;
    qv[i] = d < head_dim ? qp[d] : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int j = warp; j <= p; j += ATT_WARPS) {
    size_t row = (size_t)table[j / block_size] * block_size + j % block_size;
    const float *kp = kc + row * row_stride + (size_t)kvh * head_dim;
    const float *vp = vc + row * row_stride + (size_t)kvh * head_dim;
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) {
      int d = lane + WARP * i;
      if (d < head_dim) dot = fmaf(qv[i], kp[d], dot);
    }
    float s = warp_sum(dot) * scale;
    float mn = fmaxf(m, s);
    float corr = expf(m - mn);
    float pj = expf(s - mn);
    l = l * corr + pj;
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) {
      int d = lane + WARP * i;
      if (d < head_dim) acc[i] = fmaf(pj, vp[d], acc[i] * corr);
    }
    m = mn;
  }

  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < ATT_MAXD; i++) s_acc[warp][lane + WARP * i] = acc[i];
  __syncthreads();

  float mx = s_m[0];
  for (int w = 1; w < ATT_WARPS; w++) mx = fmaxf(mx, s_m[w]);
  float sum = 0.f, f[ATT_WARPS];
#pragma unroll
  for (int w = 0; w < ATT_WARPS; w++) {
    f[w] = s_l[w] > 0.f ? expf(s_m[w] - mx) : 0.f;
    sum += s_l[w] * f[w];
  }
  float inv = 1.f / sum;
  float *op = out + ((size_t)t * heads + h) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) o = fmaf(s_acc[w][d], f[w], o);
    op[d] = o * inv;
  }
}

// ---- head_dim 128, 16-byte aligned: the Qwen3 case ----
//
// Block (t*heads + h, split) covers positions [split*chunk, split*chunk +
// chunk) ∩ [0, pos[t]]. 8 warps; each lane owns dims 4*lane..4*lane+3 and
// loads them as one float4; each warp takes 4 consecutive positions per
// step, so 4 K rows and 4 V rows are in flight per warp. With one split the
// block writes the output; with several it writes its partial result
// (max, sum, unnormalised accumulator: 2+128 floats) to
// part[((t*heads+h)*nsplit + split)*130] and attention_combine_d128 merges
// them. Splitting the context keeps every SM busy when there are fewer
// (token, head) pairs than multiprocessors, as in small-batch decode.
#define AD 128
#define AW 8
#define AU 4
#define APART (AD + 2)

__device__ __forceinline__ float4 ld4(const float *p) { return *reinterpret_cast<const float4 *>(p); }

extern "C" __global__ void __launch_bounds__(AW * WARP)
    attention_paged_d128(float *out, float *part, const float *q, const float *kc,
                         const float *vc, const int *seq_of, const int *pos,
                         const int *bt_off, const int *bt, int heads,
                         int kv_heads, float scale, int block_size, int chunk) {
  __shared__ float s_m[AW], s_l[AW];
  __shared__ __align__(16) float s_acc[AW][AD];

  int th = blockIdx.x, split = blockIdx.y, nsplit = gridDim.y;
  int h = th % heads, t = th / heads;
  int kvh = h / (heads / kv_heads);
  int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  int j0 = split * chunk, j1 = min(pos[t] + 1, j0 + chunk);
  const int *table = bt + bt_off[seq_of[t]];
  size_t row_stride = (size_t)kv_heads * AD;
  const float *kbase = kc + (size_t)kvh * AD + 4 * lane;
  const float *vbase = vc + (size_t)kvh * AD + 4 * lane;

  float4 qv = ld4(q + (size_t)th * AD + 4 * lane);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float m = -INFINITY, l = 0.f;
  for (int base = j0 + warp * AU; base < j1; base += AW * AU) {
    size_t row[AU];
    bool ok[AU];
#pragma unroll
    for (int u = 0; u < AU; u++) {
      int j = base + u;
      ok[u] = j < j1;
      row[u] = ok[u] ? ((size_t)table[j / block_size] * block_size + j % block_size) * row_stride : 0;
    }
    float s[AU];
#pragma unroll
    for (int u = 0; u < AU; u++) {
      float4 k = ok[u] ? ld4(kbase + row[u]) : make_float4(0.f, 0.f, 0.f, 0.f);
      s[u] = qv.x * k.x;
      s[u] = fmaf(qv.y, k.y, s[u]);
      s[u] = fmaf(qv.z, k.z, s[u]);
      s[u] = fmaf(qv.w, k.w, s[u]);
    }
    float4 v[AU];
#pragma unroll
    for (int u = 0; u < AU; u++) v[u] = ok[u] ? ld4(vbase + row[u]) : make_float4(0.f, 0.f, 0.f, 0.f);
    float mx = m;
#pragma unroll
    for (int u = 0; u < AU; u++) {
      s[u] = ok[u] ? warp_sum(s[u]) * scale : -INFINITY;
      mx = fmaxf(mx, s[u]);
    }
    float corr = expf(m - mx);  // m = -inf on the first step: 0
    l *= corr;
    acc.x *= corr;
    acc.y *= corr;
    acc.z *= corr;
    acc.w *= corr;
#pragma unroll
    for (int u = 0; u < AU; u++) {
      float pu = ok[u] ? expf(s[u] - mx) : 0.f;
      l += pu;
      acc.x = fmaf(pu, v[u].x, acc.x);
      acc.y = fmaf(pu, v[u].y, acc.y);
      acc.z = fmaf(pu, v[u].z, acc.z);
      acc.w = fmaf(pu, v[u].w, acc.w);
    }
    m = mx;
  }

  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
  *reinterpret_cast<float4 *>(&s_acc[warp][4 * lane]) = acc;
  __syncthreads();

  float mb = -INFINITY;
#pragma unroll
  for (int w = 0; w < AW; w++)
    if (s_l[w] > 0.f) mb = fmaxf(mb, s_m[w]);
  float f[AW], lb = 0.f;
#pragma unroll
  for (int w = 0; w < AW; w++) {
    f[w] = s_l[w] > 0.f ? expf(s_m[w] - mb) : 0.f;
    lb += s_l[w] * f[w];
  }
  if (threadIdx.x < AD) {
    int d = threadIdx.x;
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < AW; w++) o = fmaf(s_acc[w][d], f[w], o);
    if (nsplit == 1) {
      out[(size_t)th * AD + d] = o / lb;
    } else {
      float *pp = part + ((size_t)th * nsplit + split) * APART;
      pp[2 + d] = o;
      if (d == 0) {
        pp[0] = mb;
        pp[1] = lb;  // 0 when the split holds no visible position
      }
    }
  }
}

// Merges the nsplit partial results of each (token, head): 128 threads.
extern "C" __global__ void __launch_bounds__(AD)
    attention_combine_d128(float *out, const float *part, int nsplit) {
  int th = blockIdx.x, d = threadIdx.x;
  const float *pp = part + (size_t)th * nsplit * APART;
  float mx = -INFINITY;
  for (int s = 0; s < nsplit; s++)
    if (pp[s * APART + 1] > 0.f) mx = fmaxf(mx, pp[s * APART]);
  float l = 0.f, o = 0.f;
  for (int s = 0; s < nsplit; s++) {
    const float *ps = pp + s * APART;
    if (ps[1] > 0.f) {
      float f = expf(ps[0] - mx);
      l = fmaf(ps[1], f, l);
      o = fmaf(ps[2 + d], f, o);
    }
  }
  out[(size_t)th * AD + d] = o / l;
}
