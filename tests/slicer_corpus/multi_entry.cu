// Several entries in one module, and two non-inlined device functions: one pure (its
// callers can be sliced) and one that reads blockIdx (its caller must be refused).
__device__ __noinline__ float mix(float a, float b) { return a * 0.75f + b * 0.25f; }
__device__ __noinline__ int which_block() { return blockIdx.x; }

extern "C" __global__ void scale(float* x, float s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] * s;
}
extern "C" __global__ void blend2d(const float* a, const float* b, float* c, int w, int h) {
  int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x < w && y < h) c[y * w + x] = mix(a[y * w + x], b[y * w + x]);
}
extern "C" __global__ void tag_blocks(int* out) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = which_block();
}
