// 2-D grid: 5-point stencil, clamped at the borders.
extern "C" __global__ void stencil5(const float* in, float* out, int w, int h) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= w || y >= h) return;
  int xm = x > 0 ? x - 1 : x, xp = x < w - 1 ? x + 1 : x;
  int ym = y > 0 ? y - 1 : y, yp = y < h - 1 ? y + 1 : y;
  out[y * w + x] = 0.5f * in[y * w + x] +
                   0.125f * (in[y * w + xm] + in[y * w + xp] + in[ym * w + x] + in[yp * w + x]);
}
