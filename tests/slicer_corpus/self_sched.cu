// Self-scheduling: blocks take tiles from a global atomic counter, ignoring blockIdx.
// The slicer accepts it (results stay correct) but warns: slice time need not track
// block count.
extern "C" __global__ void steal_tiles(unsigned* counter, const float* in, float* out,
                                       int ntiles) {
  __shared__ unsigned tile;
  if (threadIdx.x == 0) tile = atomicAdd(counter, 1u);
  __syncthreads();
  if (tile < ntiles) {
    int i = tile * blockDim.x + threadIdx.x;
    out[i] = in[i] * 3.0f + 1.0f;
  }
}
