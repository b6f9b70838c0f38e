// Host cost of one cuLaunchKernel call, for the interceptor's added cost per launch:
// run once without and once with LD_PRELOAD (fake driver, FAKE_GPU=inline, so the
// "driver" itself costs tens of ns). Prints: median p90 p99 min (ns per launch), over
// BATCHES batches of 100 launches each (a batch's time / 100).
//   bench_launch [BATCHES]
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

int main(int argc, char **argv) {
  int batches = argc > 1 ? atoi(argv[1]) : 2000;
  void *h = dlopen("libcuda.so.1", RTLD_NOW);
  launch_t launch = h ? (launch_t)dlsym(h, "cuLaunchKernel") : NULL;
  if (!launch) return 2;
  void *params[1] = {NULL};
  for (int i = 0; i < 20000; i++) launch((void *)0xF00, 8, 1, 1, 128, 1, 1, 0, (void *)0x100, params, NULL);
  double *per = malloc(sizeof(double) * (size_t)batches);
  for (int b = 0; b < batches; b++) {
    int64_t t0 = now();
    for (int i = 0; i < 100; i++)
      if (launch((void *)0xF00, 8, 1, 1, 128, 1, 1, 0, (void *)0x100, params, NULL)) return 3;
    per[b] = (double)(now() - t0) / 100.0;
  }
  qsort(per, (size_t)batches, sizeof *per, cmp);
  printf("%.1f %.1f %.1f %.1f\n", per[batches / 2], per[batches * 9 / 10], per[batches * 99 / 100],
         per[0]);
  return 0;
}
