// Host cost of one cuLaunchKernel on a real GPU (an empty kernel JIT-compiled from PTX),
// for the interceptor's added cost per launch: benchmarks/attach_launch_cost.py runs it
// without LD_PRELOAD and with the interceptor (HP with completions, HP record-only, LP
// pre-granted). The driver is reached as the CUDA runtime does it: dlopen + dlsym.
// Timed: batches of 100 launches (a batch's time / 100); the stream is synchronised
// between batches, untimed, so the launch queue never fills. Prints: median p90 p99 min.
//   launch_cost_gpu [BATCHES [POLLUTE_KB [POLL_US]]]
// POLLUTE_KB > 0: before each launch, write that much of a private buffer (as a Python
// program does between its launches), so the interceptor runs with cold caches; the time
// of the writes is in every configuration alike. POLL_US > 0: a second thread reads the
// segment named by HBTUI_SHM every POLL_US (its interceptor line and newest record, as the
// engine's poll did before 94b8a35, which reads records by their pub stamps instead), so
// the lines the interceptor writes are shared with another core; without a segment it
// spins all the same.
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../hbtui/native/hbtui_shm.h"
#include "driver_bench.h"

static const char PTX[] =
    ".version 7.0\n.target sm_50\n.address_size 64\n"
    ".visible .entry hb_empty(.param .u64 p) { ret; }\n";

static volatile int g_stop;
static int64_t g_poll_ns;
static volatile uint64_t g_sink;

// What the engine's poll touches: the header's interceptor line and the newest record.
static void *poller(void *arg) {
  (void)arg;
  const char *name = getenv("HBTUI_SHM");
  const volatile char *base = NULL;
  if (name) {
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd >= 0) {
      void *m = mmap(NULL, HB_SHM_SIZE, PROT_READ, MAP_SHARED, fd, 0);
      close(fd);
      if (m != MAP_FAILED) base = m;
    }
  }
  while (!g_stop) {
    int64_t t = now() + g_poll_ns;
    if (base) {
      const volatile hb_header *h = (const volatile hb_header *)base;
      uint64_t head = h->launch_head, acc = h->next_seq ^ head;
      if (head) {
        const volatile hb_launch *r =
            (const volatile hb_launch *)(base + HB_OFF_LAUNCH) + (head - 1) % HB_LAUNCH_CAP;
        acc ^= r->pub ^ r->seq ^ (uint64_t)r->return_ns ^ r->slice_start;
      }
      g_sink = acc;
    }
    while (now() < t && !g_stop) {
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  int batches = argc > 1 ? atoi(argv[1]) : 2000;
  size_t pollute = argc > 2 ? (size_t)atoi(argv[2]) * 1024 : 0;
  g_poll_ns = argc > 3 ? (int64_t)atoi(argv[3]) * 1000 : 0;
  if (argc > 1 && !strcmp(argv[1], "clock")) {  // ns per clock_gettime(CLOCK_MONOTONIC)
    int64_t t0 = now();
    for (int i = 0; i < 1000000; i++) g_sink += (uint64_t)now();
    printf("%.1f\n", (double)(now() - t0) / 1e6);
    return 0;
  }
  char *junk = pollute ? malloc(pollute) : NULL;
  pthread_t pt;
  if (g_poll_ns > 0 && pthread_create(&pt, NULL, poller, NULL)) return 2;
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
    for (int i = 0; i < 100; i++) {
      if (junk) memset(junk, i + b, pollute);
      CHECK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, s, params, NULL));
    }
    per[b] = (double)(now() - t0) / 100.0;
    CHECK(cuStreamSynchronize(s));
  }
  g_stop = 1;
  if (g_poll_ns > 0) pthread_join(pt, NULL);
  qsort(per, (size_t)batches, sizeof *per, cmp);
  printf("%.1f %.1f %.1f %.1f\n", per[batches / 2], per[batches * 9 / 10],
         per[batches * 99 / 100], per[0]);
  return 0;
}
