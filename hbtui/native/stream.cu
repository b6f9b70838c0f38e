// Streaming triad, memory-bound: c = a + s*b over n floats (16-byte accesses,
// 4 independent loads per operand in flight). Requires n%4096 == 0.
// Grid (n/4096, 1, 1), block (256, 1, 1); each block owns one contiguous 16 KiB chunk.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256)
    hb_stream(HB_SLICE_PARAMS, const float4 *__restrict__ a, const float4 *__restrict__ b,
              float4 *__restrict__ c, float s) {
  HB_SLICE_BEGIN
  const u64 base = hb_b * 1024 + threadIdx.x;
  float4 x[4], y[4];
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    x[u] = a[base + u * 256];
    y[u] = b[base + u * 256];
  }
#pragma unroll
  for (int u = 0; u < 4; ++u)
    c[base + u * 256] = make_float4(fmaf(s, y[u].x, x[u].x), fmaf(s, y[u].y, x[u].y),
                                    fmaf(s, y[u].z, x[u].z), fmaf(s, y[u].w, x[u].w));
  HB_SLICE_END
}
