// Element-wise operations and row movement: Add, SiLU-and-multiply, Embed,
// Gather, ScatterAdd, KV write. Grid-stride loops; index arrays live in
// the per-call device scratch area.
#include "common.cuh"

#define GRID_STRIDE(i, n)                                                        \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
       i += (long long)gridDim.x * blockDim.x)

// out[i] = a[i] + b[i]; out may alias a or b.
extern "C" __global__ void __launch_bounds__(256)
    add_f32(float *out, const float *a, const float *b, long long n) {
  GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)) evaluated in
// double and rounded once; out may alias gate.
extern "C" __global__ void __launch_bounds__(256)
    silu_mul_f32(float *out, const float *gate, const float *up, long long n) {
  GRID_STRIDE(i, n) {
    double g = gate[i];
    out[i] = (float)(g / (1.0 + exp(-g))) * up[i];
  }
}

// out[i,:] = table[ids[i],:]; block i copies row i.
extern "C" __global__ void __launch_bounds__(256)
    embed_f32(float *out, const float *table, const int *ids, int dim) {
  const float *src = table + (size_t)ids[blockIdx.x] * dim;
  float *dst = out + (size_t)blockIdx.x * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
}

extern "C" __global__ void __launch_bounds__(256)
    embed_bf16(float *out, const bf16_t *table, const int *ids, int dim) {
  const bf16_t *src = table + (size_t)ids[blockIdx.x] * dim;
  float *dst = out + (size_t)blockIdx.x * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = bf16_to_f32(src[c]);
}

// out[i,:] = x[rows[i],:] for 4-byte and 2-byte elements.
extern "C" __global__ void __launch_bounds__(256)
    gather_b32(unsigned int *out, const unsigned int *x, const int *rows, int dim) {
  const unsigned int *src = x + (size_t)rows[blockIdx.x] * dim;
  unsigned int *dst = out + (size_t)blockIdx.x * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
}

extern "C" __global__ void __launch_bounds__(256)
    gather_b16(unsigned short *out, const unsigned short *x, const int *rows, int dim) {
  const unsigned short *src = x + (size_t)rows[blockIdx.x] * dim;
  unsigned short *dst = out + (size_t)blockIdx.x * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
}

// ScatterAdd, deterministic: the host groups the inputs by destination row
// (u in [0, nu): destination dst[u], inputs order[start[u]:start[u+1]] in
// increasing i). Block (column tile, u) adds them in that order, so every
// element sees exactly the sequence of additions of the serial loop
// "for i: out[rows[i],:] += scale[i]*x[i,:]".
extern "C" __global__ void __launch_bounds__(256)
    scatter_add_f32(float *out, const float *x, const int *dst, const int *start,
                    const int *order, const float *scale, int dim) {
  int u = blockIdx.y;
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= dim) return;
  float *o = out + (size_t)dst[u] * dim + c;
  float acc = *o;
  int e = start[u + 1];
  for (int j = start[u]; j < e; j++) {
    int i = order[j];
    acc += scale[i] * x[(size_t)i * dim + c];
  }
  *o = acc;
}

// kc[slots[i],:] = k[i,:], vc[slots[i],:] = v[i,:].
extern "C" __global__ void __launch_bounds__(256)
    kv_write_f32(float *kc, float *vc, const float *k, const float *v,
                 const int *slots, int width) {
  size_t d = (size_t)slots[blockIdx.x] * width, s = (size_t)blockIdx.x * width;
  for (int c = threadIdx.x; c < width; c += blockDim.x) {
    kc[d + c] = k[s + c];
    vc[d + c] = v[s + c];
  }
}
