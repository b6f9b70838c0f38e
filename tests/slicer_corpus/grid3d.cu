// 3-D grid: every thread writes a value derived from its full 3-D position.
extern "C" __global__ void fill3d(unsigned* out, const unsigned* salt, int nx, int ny, int nz) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  int z = blockIdx.z * blockDim.z + threadIdx.z;
  if (x >= nx || y >= ny || z >= nz) return;
  int i = (z * ny + y) * nx + x;
  out[i] = salt[i] * 2654435761u + (blockIdx.x ^ (blockIdx.y << 8) ^ (blockIdx.z << 16));
}
