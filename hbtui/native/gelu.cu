// Elementwise GELU (tanh form): y = 0.5 x (1 + tanh(0.79788456 (x + 0.044715 x^3))).
// Requires n%1024 == 0. Grid (n/1024, 1, 1), block (256, 1, 1), one float4 per thread.
#include "common.cuh"

__device__ __forceinline__ float hb_gelu1(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608f * fmaf(0.044715f * x, x * x, x)));
}

extern "C" __global__ void __launch_bounds__(256)
    hb_gelu(HB_SLICE_PARAMS, const float4 *__restrict__ x, float4 *__restrict__ y) {
  HB_SLICE_BEGIN
  const u64 i = hb_b * 256 + threadIdx.x;
  const float4 v = x[i];
  y[i] = make_float4(hb_gelu1(v.x), hb_gelu1(v.y), hb_gelu1(v.z), hb_gelu1(v.w));
  HB_SLICE_END
}
