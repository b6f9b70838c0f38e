// What the driver-level benchmark programs share (launch_cost_gpu.c, slice_cost_gpu.c):
// the driver entry points they reach through dlopen + dlsym, as the CUDA runtime does
// (declared here with plain C types: no cuda.h needed), a monotonic clock, a sort order
// for the per-batch times, and a CHECK that ends the program with 3 on a driver error.
#ifndef HB_DRIVER_BENCH_H
#define HB_DRIVER_BENCH_H

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

static int64_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

// `name` from the library handle `h` in scope, typed T (NULL when the driver lacks it)
#define SYM(T, name) T name = (T)dlsym(h, #name)
#define CHECK(call)                                            \
  do {                                                         \
    int rc_ = (call);                                          \
    if (rc_) {                                                 \
      fprintf(stderr, "%s failed: %d\n", #call, rc_);         \
      return 3;                                                \
    }                                                          \
  } while (0)

#endif
