// Host cost of an LP launch that the interceptor runs as slices, on a real GPU: for
// benchmarks/slice_launch_cost.py (issue 16: "host us per slice"). A kernel that writes
// its block id (so the slicer has %ctaid to rewrite) is loaded from PTX; the program then
// prints "ready WAVE GRID" and waits for a line on stdin (the benchmark publishes the
// sliced variant meanwhile). Timed: batches of PER launches of a WAVES-wave grid (a
// batch's time / PER); the stream is synchronised between batches, untimed. Afterwards
// one more launch over a buffer set to 0xFFFFFFFF checks that every block ran exactly
// where its id says (out[i] == i): WARMUP + BATCHES x PER + 1 launches in all. Prints: median p90 p99 min ns per launch, then the
// blocks found wrong (0: correct; -1: not checked, the driver lacks cuMemAlloc: the
// fake driver of the CPU tests).
//   slice_cost_gpu BATCHES WAVES [PER]
#define _GNU_SOURCE
#include "driver_bench.h"

typedef int (*csync_t)(void);
typedef int (*attr_t)(int *, int, int);
typedef int (*occ_t)(int *, void *, int, size_t);
typedef int (*alloc_t)(uint64_t *, size_t);
typedef int (*memset_t)(uint64_t, unsigned, size_t);
typedef int (*dtoh_t)(void *, uint64_t, size_t);

static const char PTX[] =
    ".version 7.0\n.target sm_50\n.address_size 64\n"
    ".visible .entry hb_blocks(.param .u64 out) {\n"
    "  .reg .b32 %r<2>;\n  .reg .b64 %rd<5>;\n"
    "  ld.param.u64 %rd1, [out];\n  cvta.to.global.u64 %rd2, %rd1;\n"
    "  mov.u32 %r1, %ctaid.x;\n  mul.wide.u32 %rd3, %r1, 4;\n"
    "  add.s64 %rd4, %rd2, %rd3;\n  st.global.u32 [%rd4], %r1;\n  ret;\n}\n";

#define THREADS 128
#define WARMUP 50  // untimed batches first
#define SM_COUNT 16  // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: slice_cost_gpu BATCHES WAVES [PER]\n");
    return 2;
  }
  int batches = atoi(argv[1]), waves = atoi(argv[2]), per = argc > 3 ? atoi(argv[3]) : 10;
  if (batches < 1 || waves < 1 || per < 1) return 2;
  void *h = dlopen("libcuda.so.1", RTLD_NOW);
  if (!h) {
    fprintf(stderr, "no libcuda.so.1: %s\n", dlerror());
    return 2;
  }
  SYM(init_t, cuInit);
  SYM(devget_t, cuDeviceGet);
  SYM(retain_t, cuDevicePrimaryCtxRetain);
  SYM(setcur_t, cuCtxSetCurrent);
  SYM(modload_t, cuModuleLoadData);
  SYM(getfn_t, cuModuleGetFunction);
  SYM(screate_t, cuStreamCreate);
  SYM(ssync_t, cuStreamSynchronize);
  SYM(csync_t, cuCtxSynchronize);
  SYM(attr_t, cuDeviceGetAttribute);
  occ_t cuOccupancy = (occ_t)dlsym(h, "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  alloc_t cuMemAlloc = (alloc_t)dlsym(h, "cuMemAlloc_v2");  // (the _v2 ABI: 64-bit pointers)
  memset_t cuMemsetD32 = (memset_t)dlsym(h, "cuMemsetD32_v2");
  dtoh_t cuMemcpyDtoH = (dtoh_t)dlsym(h, "cuMemcpyDtoH_v2");
  SYM(launch_t, cuLaunchKernel);
  if (!cuInit || !cuModuleLoadData || !cuModuleGetFunction || !cuStreamSynchronize ||
      !cuDeviceGetAttribute || !cuOccupancy || !cuLaunchKernel) {
    fprintf(stderr, "libcuda.so.1 lacks an entry point this program needs\n");
    return 2;
  }
  int dev = 0, sms = 0, occ = 0;
  void *ctx = NULL, *mod, *fn, *s = NULL;
  CHECK(cuInit(0));
  if (cuDeviceGet && cuDevicePrimaryCtxRetain && cuCtxSetCurrent) {  // the fake has none
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
  }
  CHECK(cuModuleLoadData(&mod, PTX));
  CHECK(cuModuleGetFunction(&fn, mod, "hb_blocks"));
  if (cuStreamCreate) CHECK(cuStreamCreate(&s, 1));
  CHECK(cuDeviceGetAttribute(&sms, SM_COUNT, dev));
  CHECK(cuOccupancy(&occ, fn, THREADS, 0));
  unsigned wave = (unsigned)(sms * occ), grid = wave * (unsigned)waves;
  uint64_t out = 0;
  int check = cuMemAlloc && cuMemsetD32 && cuMemcpyDtoH && cuCtxSynchronize;
  if (check) CHECK(cuMemAlloc(&out, (size_t)grid * 4));
  void *params[1] = {&out};
  printf("ready %u %u\n", wave, grid);
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) return 2;
  for (int w = 0; w < WARMUP; w++) {
    for (int i = 0; i < per; i++)
      CHECK(cuLaunchKernel(fn, grid, 1, 1, THREADS, 1, 1, 0, s, params, NULL));
    CHECK(cuStreamSynchronize(s));
  }
  double *ns = malloc(sizeof(double) * (size_t)batches);
  for (int b = 0; b < batches; b++) {
    int64_t t0 = now();
    for (int i = 0; i < per; i++)
      CHECK(cuLaunchKernel(fn, grid, 1, 1, THREADS, 1, 1, 0, s, params, NULL));
    ns[b] = (double)(now() - t0) / per;
    CHECK(cuStreamSynchronize(s));
  }
  long wrong = -1;
  if (check) {
    uint32_t *host = malloc((size_t)grid * 4);
    CHECK(cuMemsetD32(out, 0xFFFFFFFFu, grid));
    CHECK(cuCtxSynchronize());  // the memset is on the legacy stream, s does not wait for it
    CHECK(cuLaunchKernel(fn, grid, 1, 1, THREADS, 1, 1, 0, s, params, NULL));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH(host, out, (size_t)grid * 4));
    wrong = 0;
    for (unsigned i = 0; i < grid; i++) wrong += host[i] != i;
    free(host);
  }
  qsort(ns, (size_t)batches, sizeof *ns, cmp);
  printf("%.1f %.1f %.1f %.1f %ld\n", ns[batches / 2], ns[batches * 9 / 10],
         ns[batches * 99 / 100], ns[0], wrong);
  free(ns);
  return 0;
}
