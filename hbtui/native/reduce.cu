// RMSNorm rows (a reduction followed by an elementwise scale, LLM-like):
// y[r,:] = x[r,:] * rsqrt(mean(x[r,:]^2) + eps) * w. Requires cols%4 == 0.
// Grid (rows, 1, 1), block (256, 1, 1): one block per row, fixed reduction order.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
    hb_reduce(HB_SLICE_PARAMS, const float *__restrict__ x, const float *__restrict__ w,
              float *__restrict__ y, u32 cols, float eps) {
  HB_SLICE_BEGIN
  __shared__ float part[8];
  __shared__ float scale_s;
  const float4 *xr = (const float4 *)(x + hb_b * cols);
  float4 *yr = (float4 *)(y + hb_b * cols);
  const float4 *w4 = (const float4 *)w;
  const u32 n4 = cols / 4;
  float ss = 0.0f;
  for (u32 i = threadIdx.x; i < n4; i += 256) {
    const float4 v = xr[i];
    ss = fmaf(v.x, v.x, ss);
    ss = fmaf(v.y, v.y, ss);
    ss = fmaf(v.z, v.z, ss);
    ss = fmaf(v.w, v.w, ss);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffU, ss, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) tot += part[i];
    scale_s = rsqrtf(tot / (float)cols + eps);
  }
  __syncthreads();
  const float sc = scale_s;
  for (u32 i = threadIdx.x; i < n4; i += 256) {
    const float4 v = xr[i], g = w4[i];
    yr[i] = make_float4(v.x * sc * g.x, v.y * sc * g.y, v.z * sc * g.z, v.w * sc * g.w);
  }
  HB_SLICE_END
}
