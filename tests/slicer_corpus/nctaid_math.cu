// gridDim arithmetic: linear block id over a 3-D grid, and reversed block order.
extern "C" __global__ void grid_math(unsigned* out, const unsigned* in) {
  unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  unsigned nblocks = gridDim.x * gridDim.y * gridDim.z;
  unsigned rev = (nblocks - 1 - bid) * blockDim.x + threadIdx.x;
  out[bid * blockDim.x + threadIdx.x] = in[rev] ^ (nblocks * 131u + (gridDim.x - 1 - blockIdx.x));
}
