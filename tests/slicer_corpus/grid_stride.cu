// Grid-stride loop: the stride uses gridDim, so %nctaid must stay the full grid.
extern "C" __global__ void saxpy_gs(float alpha, const float* x, float* y, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    y[i] = alpha * x[i] + y[i];
}
