// sm_90 thread-block cluster of 2x1x1 blocks: refused by default; with clusters allowed
// it is sliced and every slice must be cluster-aligned.
extern "C" __global__ void __cluster_dims__(2, 1, 1) cluster_rank(float* out, const float* in,
                                                                  int n) {
  unsigned rank, cid;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(cid));
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] + (float)rank * 1000.0f + (float)cid + (float)gridDim.x * 0.5f;
}
