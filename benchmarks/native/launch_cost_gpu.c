// Host cost of one cuLaunchKernel on a real GPU (an empty kernel JIT-compiled from PTX),
// for the interceptor's added cost per launch: benchmarks/attach_launch_cost.py runs it
// without LD_PRELOAD and with the interceptor (HP with completions, HP record-only, LP
// pre-granted). The driver is reached as the CUDA runtime does it: dlopen + dlsym.
// Timed: batches of 100 launches (a batch's time / 100); the stream is synchronised
// between batches, untimed, so the launch queue never fills. Prints: median p90 p99 min.
//   launch_cost_gpu [BATCHES]
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int (*init_t)(unsigned);
typedef int (*devget_t)(int *, int);
typedef int (*retain_t)(void **, int);
typedef int (*setcur_t)(void *);
typedef int (*modload_t)(void **, const void *);
typedef int (*getfn_t)(void **, void *, const char *);
typedef int (*screate_t)(void **, unsigned);
typedef int (*ssync_t)(void *);
typedef int (*launch_t)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        unsigned, void *, void **, void **);

static const char PTX[] =
    ".version 7.0\n.target sm_50\n.address_size 64\n"
    ".visible .entry hb_empty(.param .u64 p) { ret; }\n";

static int64_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

#define SYM(T, name) T name = (T)dlsym(h, #name)
#define CHECK(call)                                            \
  do {                                                         \
    int rc_ = (call);                                          \
    if (rc_) {                                                 \
      fprintf(stderr, "%s failed: %d\n", #call, rc_);         \
      return 3;                                                \
    }                                                          \
  } while (0)

int main(int argc, char **argv) {
  int batches = argc > 1 ? atoi(argv[1]) : 2000;
  void *h = dlopen("libcuda.so.1", RTLD_NOW);
  if (!h) return 2;
  SYM(init_t, cuInit);
  SYM(devget_t, cuDeviceGet);
  SYM(retain_t, cuDevicePrimaryCtxRetain);
  SYM(setcur_t, cuCtxSetCurrent);
  SYM(modload_t, cuModuleLoadData);
  SYM(getfn_t, cuModuleGetFunction);
  SYM(screate_t, cuStreamCreate);
  SYM(ssync_t, cuStreamSynchronize);
  SYM(launch_t, cuLaunchKernel);
  if (!cuInit || !cuLaunchKernel || !cuStreamSynchronize) return 2;
  int dev;
  void *ctx, *mod, *fn, *s;
  CHECK(cuInit(0));
  CHECK(cuDeviceGet(&dev, 0));
  CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
  CHECK(cuCtxSetCurrent(ctx));
  CHECK(cuModuleLoadData(&mod, PTX));
  CHECK(cuModuleGetFunction(&fn, mod, "hb_empty"));
  CHECK(cuStreamCreate(&s, 1));
  uint64_t arg = 42;
  void *params[1] = {&arg};
  for (int w = 0; w < 200; w++) {
    for (int i = 0; i < 100; i++) CHECK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, s, params, NULL));
    CHECK(cuStreamSynchronize(s));
  }
  double *per = malloc(sizeof(double) * (size_t)batches);
  for (int b = 0; b < batches; b++) {
    int64_t t0 = now();
    for (int i = 0; i < 100; i++) CHECK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, s, params, NULL));
    per[b] = (double)(now() - t0) / 100.0;
    CHECK(cuStreamSynchronize(s));
  }
  qsort(per, (size_t)batches, sizeof *per, cmp);
  printf("%.1f %.1f %.1f %.1f\n", per[batches / 2], per[batches * 9 / 10],
         per[batches * 99 / 100], per[0]);
  return 0;
}
