// Calibrated spin: every block stays resident for `ns` nanoseconds of %globaltimer
// (wall time, independent of SM clocks), then writes a per-block marker.
// Grid (blocks, 1, 1), block (threads, 1, 1). Thread 0 spins; the block keeps its SM
// slot until thread 0 is done, without the other warps burning issue bandwidth.
#include "common.cuh"

extern "C" __global__ void hb_spin(HB_SLICE_PARAMS, u32 *__restrict__ out, u64 ns) {
  HB_SLICE_BEGIN
  if (HB_THREAD0) {
    const u64 t0 = hb_globaltimer();
    while (hb_globaltimer() - t0 < ns) {
    }
    out[hb_b] = hb_hash((u32)hb_b) | 1U;
  }
  HB_SLICE_END
}
