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
