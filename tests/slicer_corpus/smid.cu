// Reads %smid (recorded on the side): sliced with a warning. Only `out` is compared.
extern "C" __global__ void where_run(float* out, unsigned* sm, const float* in, int n) {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    out[i] = in[i] * in[i];
    sm[i] = s;
  }
}
