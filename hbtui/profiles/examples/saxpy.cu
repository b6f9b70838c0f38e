// Example user kernel for profiles/user-kernel.toml: y = a * x + y over n floats.
// Each thread handles ITEMS elements a block apart (coalesced), so one block moves
// 48 KiB and a wave of blocks lasts long enough to be a useful slice.
#define ITEMS 16

extern "C" __global__ void saxpy(float a, const float* x, float* y, int n) {
  int base = blockIdx.x * blockDim.x * ITEMS + threadIdx.x;
#pragma unroll
  for (int k = 0; k < ITEMS; ++k) {
    int i = base + k * blockDim.x;
    if (i < n) y[i] = a * x[i] + y[i];
  }
}
