// Buffer initialisation (not a workload): hash-based random non-zero data.
#include "common.cuh"

extern "C" __global__ void hb_init_f32(float *p, u64 n, u32 seed, float scale) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
    p[i] = scale * hb_rand(i, seed);
}

extern "C" __global__ void hb_init_f16(hb_half *p, u64 n, u32 seed, float scale) {
  for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
    p[i] = hb_f2h(scale * hb_rand(i, seed));
}
