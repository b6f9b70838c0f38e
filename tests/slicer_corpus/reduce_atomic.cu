// Shared-memory tree reduction per block, then one integer atomicAdd per block
// (integer, so the result is order-independent and bit-exact across slicings).
extern "C" __global__ void reduce_sum(const unsigned* in, unsigned long long* out, int n) {
  __shared__ unsigned long long s[256];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  s[threadIdx.x] = i < n ? in[i] : 0;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(out, s[0]);
}
