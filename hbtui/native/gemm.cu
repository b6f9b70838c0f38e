// Tensor-core GEMM, compute-bound: C[m,n] = A[m,k] · W[n,k]^T (fp16 in, fp32 out),
// the layout of a linear layer (W is [out_features, in_features]).
// Block tile 64x64, k-step 32, 4 warps each computing 32x32 with mma.sync m16n8k16
// (legacy tensor-core path; HMMA in SASS). Requires m%64 == n%64 == 0, k%32 == 0.
// Grid (n/64, m/64, 1), block (128, 1, 1). Each output element is computed by one
// thread in a fixed order, so results do not depend on how the grid is sliced.
#include "common.cuh"

#define BM 64
#define BN 64
#define BK 32
#define LDS (BK + 8)  // padded row (80 B): conflict-free fragment loads

__device__ __forceinline__ void hb_mma(float *d, const u32 *a, const u32 *b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

extern "C" __global__ void __launch_bounds__(128)
    hb_gemm(HB_SLICE_PARAMS, const hb_half *__restrict__ A, const hb_half *__restrict__ W,
            float *__restrict__ C, u32 M, u32 N, u32 K) {
  HB_SLICE_BEGIN
  __shared__ __align__(16) hb_half As[BM * LDS];
  __shared__ __align__(16) hb_half Ws[BN * LDS];
  const u32 tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const u32 g = lane >> 2, t = lane & 3;
  const u32 wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const u32 row0 = hb_by * BM, col0 = hb_bx * BN;
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  for (u32 k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // 64 rows x 4 uint4 per tile, 2 per thread
      const u32 idx = tid + r * 128, row = idx >> 2, c8 = (idx & 3) * 8;
      *(uint4 *)&As[row * LDS + c8] = *(const uint4 *)&A[(u64)(row0 + row) * K + k0 + c8];
      *(uint4 *)&Ws[row * LDS + c8] = *(const uint4 *)&W[(u64)(col0 + row) * K + k0 + c8];
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      u32 a[2][4], b[4][2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const hb_half *p = &As[(wm + i * 16 + g) * LDS + kk + 2 * t];
        a[i][0] = *(const u32 *)p;
        a[i][1] = *(const u32 *)(p + 8 * LDS);
        a[i][2] = *(const u32 *)(p + 8);
        a[i][3] = *(const u32 *)(p + 8 * LDS + 8);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const hb_half *q = &Ws[(wn + j * 8 + g) * LDS + kk + 2 * t];
        b[j][0] = *(const u32 *)q;
        b[j][1] = *(const u32 *)(q + 8);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) hb_mma(acc[i][j], a[i], b[j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const u32 r = row0 + wm + i * 16 + g, c = col0 + wn + j * 8 + 2 * t;
      *(float2 *)&C[(u64)r * N + c] = make_float2(acc[i][j][0], acc[i][j][1]);
      *(float2 *)&C[(u64)(r + 8) * N + c] = make_float2(acc[i][j][2], acc[i][j][3]);
    }
  HB_SLICE_END
}
