// Dynamic parallelism (needs -rdc=true): the child launch escapes host gating. Refused.
extern "C" __global__ void child(float* a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) a[i] += 1.0f;
}
extern "C" __global__ void parent(float* a, int n) {
  if (threadIdx.x == 0) child<<<1, 32>>>(a + blockIdx.x * 32, 32);
}
