// Shared helpers for the built-in kernels. Self-contained: NVRTC compiles these
// without the CUDA toolkit headers (no cuda_fp16.h / mma.h needed).
#pragma once

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short hb_half;  // raw IEEE binary16 bits

__device__ __forceinline__ u64 hb_globaltimer() {
  u64 t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Every built-in kernel is natively sliceable. Its first six parameters are:
//   hb_ts   host-mapped pair of u64 (may be null): block 0 of the launch writes
//           %globaltimer at entry into hb_ts[0]; the last block to finish writes it
//           into hb_ts[1]. The backend reads both without any API call, so start and
//           end of every slice are on one GPU clock;
//   hb_cnt  device counter (zero before the launch; the last block resets it);
//   hb_off  linear index of the first block of this slice;
//   hb_gx, hb_gy, hb_gz  the ORIGINAL grid.
// A slice is launched as a 1-D grid of (end - start) blocks; linear block index
// hb_off + blockIdx.x is decomposed (x fastest) into the logical (bx, by, bz).
// HB_SLICE_END must be reached by every thread of every block.
#define HB_SLICE_PARAMS                                                    \
  u64 *__restrict__ hb_ts, u32 *__restrict__ hb_cnt, u32 hb_off, u32 hb_gx, u32 hb_gy, u32 hb_gz

#define HB_THREAD0 (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0)

#define HB_SLICE_BEGIN                                                     \
  if (blockIdx.x == 0 && HB_THREAD0 && hb_ts != 0)                         \
    *(volatile u64 *)hb_ts = hb_globaltimer();                             \
  const u64 hb_b = (u64)hb_off + blockIdx.x;                               \
  if (hb_b >= (u64)hb_gx * hb_gy * hb_gz) return; /* bad launch: no end stamp */ \
  const u32 hb_bx = (u32)(hb_b % hb_gx);                                   \
  const u32 hb_by = (u32)((hb_b / hb_gx) % hb_gy);                         \
  const u32 hb_bz = (u32)(hb_b / ((u64)hb_gx * hb_gy));                    \
  (void)hb_bx; (void)hb_by; (void)hb_bz;

#define HB_SLICE_END                                                       \
  if (hb_cnt != 0 && hb_ts != 0) {                                         \
    __syncthreads();                                                       \
    if (HB_THREAD0) {                                                      \
      __threadfence();                                                     \
      if (atomicAdd(hb_cnt, 1U) == gridDim.x - 1) {                        \
        ((volatile u64 *)hb_ts)[1] = hb_globaltimer();                     \
        *(volatile u32 *)hb_cnt = 0U;                                      \
      }                                                                    \
    }                                                                      \
  }

__device__ __forceinline__ u32 hb_hash(u32 x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// Uniform in ±[1/16, 1]: never zero, so unwritten or mis-indexed data shows.
__device__ __forceinline__ float hb_rand(u64 i, u32 seed) {
  const u32 h = hb_hash((u32)i ^ hb_hash(seed ^ ((u32)(i >> 32) * 0x9e3779b9U)));
  const float v = 0.0625f + 0.9375f * ((float)(h >> 8) * (1.0f / 16777216.0f));
  return (h & 1U) ? -v : v;
}

__device__ __forceinline__ hb_half hb_f2h(float f) {
  hb_half h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
