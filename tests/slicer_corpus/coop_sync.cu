// Grid-wide barrier written the way cooperative_groups::this_grid().sync() compiles
// (CUDA 11+ driver ABI: the grid workspace address comes from %envreg1/%envreg2).
// Written out by hand because NVRTC ships without cooperative_groups.h; the real
// NVRTC output is committed as coop_grid_sync.nvrtc13.ptx. Must be refused.
extern "C" __global__ void coop_sync(float* a, int n) {
  unsigned lo, hi;
  asm volatile("mov.u32 %0, %%envreg2;" : "=r"(lo));
  asm volatile("mov.u32 %0, %%envreg1;" : "=r"(hi));
  unsigned* bar = (unsigned*)((((unsigned long long)hi) << 32) | lo) + 1;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) a[i] += 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned nb = gridDim.x * gridDim.y * gridDim.z;
    unsigned old = atomicAdd(bar, blockIdx.x == 0 ? 0x80000001u - nb : 1u);
    while (((*(volatile unsigned*)bar) ^ old) < 0x80000000u) {
    }
  }
  __syncthreads();
  if (i < n) a[i] *= 2.0f;
}
