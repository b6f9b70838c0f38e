// A fake CUDA driver (built as libcuda.so.1 by tests/attach/conftest.py) for the
// interceptor tests on CPU. It implements the entry points the interceptor wraps or
// calls, counts every call, remembers the last launch's arguments, and runs "GPU"
// work (kernels, stream value writes, host functions) in order on one worker thread
// (FAKE_GPU=inline: in the calling thread). It never calls dlsym (the interceptor hooks
// it): cuGetProcAddress looks names up in its own table.
//
// Knobs (environment): FAKE_GPU=inline, FAKE_KERNEL_US=N (each kernel runs N us on the
// worker), FAKE_NO_WRITEVALUE=1 (cuStreamWriteValue64 fails: NOT_SUPPORTED),
// FAKE_NO_REGISTER=1 (cuMemHostRegister fails), FAKE_SMS / FAKE_OCC (multiprocessors and
// resident blocks per SM the occupancy calls report: 4 and 2), FAKE_LOG=1 (every kernel
// launch goes to a log, fake_log(), with its params read as u32 up to a NULL pointer or,
// for the `extra` form, its packed buffer: test programs NULL-terminate their arrays),
// FAKE_FAIL_FUNC=0xHANDLE (launches of that function fail with 701, too many resources),
// FAKE_SLOW_STREAM=0xHANDLE + FAKE_SLOW_MS=N (stream writes on it block N ms).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef void *CUstream;
typedef struct {
  unsigned gx, gy, gz, bx, by, bz, smem;
  CUstream stream;
  void *attrs;
  unsigned nattrs;
} launch_config;

#define E(x) __attribute__((visibility("default"))) x

static int env_int(const char *name, int dflt) {
  const char *v = getenv(name);
  return v && *v ? atoi(v) : dflt;
}

// ------------------------------------------------------------------ counters
#define NAMES(X)                                                                         \
  X(cuInit) X(cuDriverGetVersion) X(cuGetProcAddress) X(cuGetProcAddress_v2)             \
  X(cuLaunchKernel) X(cuLaunchKernel_ptsz) X(cuLaunchKernelEx) X(cuLaunchKernelEx_ptsz)  \
  X(cuLaunchCooperativeKernel) X(cuLaunchCooperativeKernel_ptsz) X(cuGraphLaunch)        \
  X(cuGraphLaunch_ptsz) X(cuModuleLoadData) X(cuModuleLoadDataEx)                        \
  X(cuModuleLoadFatBinary) X(cuModuleLoad) X(cuLibraryLoadData) X(cuModuleGetFunction)                   \
  X(cuLibraryGetKernel) X(cuKernelGetFunction) X(cuStreamBeginCapture)                   \
  X(cuStreamBeginCapture_ptsz) X(cuStreamBeginCapture_v2) X(cuStreamBeginCapture_v2_ptsz) \
  X(cuStreamEndCapture) X(cuStreamEndCapture_ptsz) X(cuStreamIsCapturing)                \
  X(cuMemHostRegister) X(cuMemHostRegister_v2) X(cuMemHostGetDevicePointer)              \
  X(cuMemHostGetDevicePointer_v2) X(cuStreamWriteValue64) X(cuStreamWriteValue64_v2)     \
  X(cuLaunchHostFunc) X(cuStreamSynchronize) X(cuCtxSynchronize) X(cuFuncSetAttribute)      \
  X(cuOccupancyMaxActiveBlocksPerMultiprocessor) X(cuCtxGetDevice) X(cuDeviceGetAttribute)  \
  X(cuCtxSynchronize_v2) X(cuCtxGetCurrent)

#define X_ENUM(n) C_##n,
enum { NAMES(X_ENUM) C_COUNT };
#define X_STR(n) #n,
static const char *const cname[C_COUNT] = {NAMES(X_STR)};
static long counts[C_COUNT];
#define COUNT(n) __atomic_fetch_add(&counts[C_##n], 1, __ATOMIC_RELAXED)

E(long fake_count(const char *name)) {
  for (int i = 0; i < C_COUNT; i++)
    if (strcmp(cname[i], name) == 0) return __atomic_load_n(&counts[i], __ATOMIC_RELAXED);
  return -1;
}

// func, gx, gy, gz, bx, by, bz, smem, stream, params, extra, kind
static uint64_t last[12];
E(void fake_last_launch(uint64_t *out)) { memcpy(out, last, sizeof last); }
static long bad_writes, captured, kernels_run;
E(long fake_bad_writes(void)) { return bad_writes; }
E(long fake_captured(void)) { return captured; }
E(long fake_kernels_run(void)) { return __atomic_load_n(&kernels_run, __ATOMIC_ACQUIRE); }

// ------------------------------------------------------------------ the "GPU"
typedef struct op {
  int type;  // 0 kernel, 1 write64, 2 host func
  uint64_t *addr;
  uint64_t value;
  void (*fn)(void *);
  void *arg;
  struct op *next;
} op;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER, idle_cv = PTHREAD_COND_INITIALIZER;
static op *qhead, *qtail;
static int busy, started, inline_gpu = -1;
static long kernel_us;

static void run_op(op *o) {
  if (o->type == 0) {
    if (kernel_us > 0) usleep((useconds_t)kernel_us);
    __atomic_fetch_add(&kernels_run, 1, __ATOMIC_RELEASE);
  } else if (o->type == 1) {
    __atomic_store_n(o->addr, o->value, __ATOMIC_RELEASE);
  } else {
    o->fn(o->arg);
  }
}

static void *gpu_thread(void *unused) {
  (void)unused;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (!qhead) pthread_cond_wait(&cv, &mu);
    op *o = qhead;
    qhead = o->next;
    if (!qhead) qtail = NULL;
    busy = 1;
    pthread_mutex_unlock(&mu);
    run_op(o);
    free(o);
    pthread_mutex_lock(&mu);
    busy = 0;
    if (!qhead) pthread_cond_broadcast(&idle_cv);
  }
  return NULL;
}

static void setup(void) {
  if (inline_gpu >= 0) return;
  const char *g = getenv("FAKE_GPU");
  const char *k = getenv("FAKE_KERNEL_US");
  kernel_us = k ? atol(k) : 0;
  inline_gpu = g && strcmp(g, "inline") == 0;
}

static void submit(int type, uint64_t *addr, uint64_t value, void (*fn)(void *), void *arg) {
  pthread_mutex_lock(&mu);
  setup();
  if (inline_gpu) {
    pthread_mutex_unlock(&mu);
    op o = {type, addr, value, fn, arg, NULL};
    run_op(&o);
    return;
  }
  if (!started) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_create(&t, &a, gpu_thread, NULL);
    started = 1;
  }
  op *o = calloc(1, sizeof *o);
  *o = (op){type, addr, value, fn, arg, NULL};
  if (qtail) qtail->next = o;
  else qhead = o;
  qtail = o;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

static void drain(void) {
  pthread_mutex_lock(&mu);
  while (qhead || busy) pthread_cond_wait(&idle_cv, &mu);
  pthread_mutex_unlock(&mu);
}

// ------------------------------------------------------------------ capture
static CUstream cap_stream;
static int cap_on;

// ------------------------------------------------------------------ launch log (FAKE_LOG)
typedef struct {
  uint64_t func, stream;
  uint32_t grid[3], block[3], smem, nvals, extra_size;
  uint32_t vals[24];  // params as u32 (kernelParams form), or the packed buffer's words
} fake_launch;
#define LOG_CAP 65536
static fake_launch *flog;
static long flog_n;
static uint64_t fail_func;
E(long fake_log_count(void)) { return __atomic_load_n(&flog_n, __ATOMIC_ACQUIRE); }
E(int fake_log(long i, fake_launch *out)) {
  if (i < 0 || i >= fake_log_count() || i >= LOG_CAP) return -1;
  *out = flog[i];
  return 0;
}
static pthread_mutex_t logmu = PTHREAD_MUTEX_INITIALIZER;

// fork: the fake's own locks are taken before and released on both sides after, as a real
// library must, so a child never inherits one held by a thread that does not exist there
// (a launch logged by another thread at the fork hung the child's first launch). Neither
// lock is ever held while taking the other, so the order is free.
static void fake_prepare(void) {
  pthread_mutex_lock(&logmu);
  pthread_mutex_lock(&mu);
}
static void fake_release(void) {
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&logmu);
}
// The child has no GPU worker thread: start over with none (the next submit starts one)
// and fresh locks and conditions (waiters of the parent's do not exist here).
static void fake_child(void) {
  pthread_mutex_init(&mu, NULL);
  pthread_mutex_init(&logmu, NULL);
  pthread_cond_init(&cv, NULL);
  pthread_cond_init(&idle_cv, NULL);
  qhead = qtail = NULL;  // (the parent's queued ops: not this process's to run)
  busy = started = 0;
}
__attribute__((constructor)) static void fake_init(void) {
  pthread_atfork(fake_prepare, fake_release, fake_child);
}

static void log_launch(uint64_t f, const unsigned g[3], const unsigned b[3], unsigned smem,
                       CUstream s, void **p, void **ex) {
  static int on = -1;
  if (on < 0) {
    const char *l = getenv("FAKE_LOG");
    on = l && *l == '1';
    if (on) flog = calloc(LOG_CAP, sizeof *flog);
  }
  if (!on || !flog) return;
  pthread_mutex_lock(&logmu);
  long i = flog_n;
  if (i >= LOG_CAP) {
    pthread_mutex_unlock(&logmu);
    return;
  }
  fake_launch *L = &flog[i];
  memset(L, 0, sizeof *L);
  L->func = f;
  L->stream = (uint64_t)(uintptr_t)s;
  memcpy(L->grid, g, sizeof L->grid);
  memcpy(L->block, b, sizeof L->block);
  L->smem = smem;
  if (p) {
    for (uint32_t k = 0; k < 24 && p[k]; k++) L->vals[L->nvals++] = *(uint32_t *)p[k];
  } else if (ex) {
    const char *buf = NULL;
    size_t n = 0;
    for (int k = 0; k < 8 && ex[k]; k += 2) {
      if ((uintptr_t)ex[k] == 1) buf = ex[k + 1];
      if ((uintptr_t)ex[k] == 2) n = *(size_t *)ex[k + 1];
    }
    L->extra_size = (uint32_t)n;
    for (uint32_t k = 0; buf && k < 24 && 4 * (k + 1) <= n; k++) memcpy(&L->vals[L->nvals++], buf + 4 * k, 4);
  }
  __atomic_store_n(&flog_n, i + 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&logmu);
}

static int in_capture(CUstream s) { return __atomic_load_n(&cap_on, __ATOMIC_ACQUIRE) && s == cap_stream; }

// ------------------------------------------------------------------ launches
static void note(uint64_t f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                 unsigned bz, unsigned smem, CUstream s, void **p, void **ex, uint64_t kind) {
  uint64_t v[12] = {f, gx, gy, gz, bx, by, bz, smem, (uint64_t)(uintptr_t)s,
                    (uint64_t)(uintptr_t)p, (uint64_t)(uintptr_t)ex, kind};
  memcpy(last, v, sizeof v);
  if (kind != 4 && kind != 14) {
    unsigned g[3] = {gx, gy, gz}, b[3] = {bx, by, bz};
    log_launch(f, g, b, smem, s, p, ex);
  }
  if (in_capture(s)) __atomic_fetch_add(&captured, 1, __ATOMIC_RELAXED);
  else submit(0, NULL, 0, NULL, NULL);
}

#define KARGS                                                                          \
  void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, \
      unsigned smem, CUstream s, void **p
#define KNOTE(kind, ex) note((uint64_t)(uintptr_t)f, gx, gy, gz, bx, by, bz, smem, s, p, ex, kind)

static int failing(void *f) {
  static int init;
  if (!init) {
    const char *x = getenv("FAKE_FAIL_FUNC");
    fail_func = x ? strtoull(x, NULL, 0) : 0;
    init = 1;
  }
  return fail_func && (uint64_t)(uintptr_t)f == fail_func;
}
E(CUresult cuLaunchKernel(KARGS, void **ex)) {
  COUNT(cuLaunchKernel);
  if (failing(f)) return 701;
  KNOTE(1, ex);
  return 0;
}
E(CUresult cuLaunchKernel_ptsz(KARGS, void **ex)) {
  COUNT(cuLaunchKernel_ptsz);
  if (failing(f)) return 701;
  KNOTE(11, ex);
  return 0;
}
E(CUresult cuLaunchCooperativeKernel(KARGS)) { COUNT(cuLaunchCooperativeKernel); KNOTE(3, NULL); return 0; }
E(CUresult cuLaunchCooperativeKernel_ptsz(KARGS)) { COUNT(cuLaunchCooperativeKernel_ptsz); KNOTE(13, NULL); return 0; }

static CUresult ex_launch(const launch_config *c, void *f, void **p, void **ex, uint64_t kind) {
  if (!c) return 1;
  if (failing(f)) return 701;
  note((uint64_t)(uintptr_t)f, c->gx, c->gy, c->gz, c->bx, c->by, c->bz, c->smem, c->stream, p,
       ex, kind);
  return 0;
}
E(CUresult cuLaunchKernelEx(const launch_config *c, void *f, void **p, void **ex)) {
  COUNT(cuLaunchKernelEx);
  return ex_launch(c, f, p, ex, 2);
}
E(CUresult cuLaunchKernelEx_ptsz(const launch_config *c, void *f, void **p, void **ex)) {
  COUNT(cuLaunchKernelEx_ptsz);
  return ex_launch(c, f, p, ex, 12);
}
E(CUresult cuGraphLaunch(void *g, CUstream s)) {
  COUNT(cuGraphLaunch);
  note((uint64_t)(uintptr_t)g, 0, 0, 0, 0, 0, 0, 0, s, NULL, NULL, 4);
  return 0;
}
E(CUresult cuGraphLaunch_ptsz(void *g, CUstream s)) {
  COUNT(cuGraphLaunch_ptsz);
  note((uint64_t)(uintptr_t)g, 0, 0, 0, 0, 0, 0, 0, s, NULL, NULL, 14);
  return 0;
}

// ------------------------------------------------------------------ modules
static long next_handle = 1;
static void *handle(uint64_t base) {
  return (void *)(uintptr_t)(base + (uint64_t)__atomic_fetch_add(&next_handle, 1, __ATOMIC_RELAXED));
}
E(CUresult cuModuleLoadData(void **m, const void *img)) {
  COUNT(cuModuleLoadData);
  if (!m || !img) return 1;
  // FAKE_SLOW_LOAD_MS: images starting "// slow" take that long (a driver JIT)
  if (strncmp((const char *)img, "// slow", 7) == 0) usleep((useconds_t)env_int("FAKE_SLOW_LOAD_MS", 0) * 1000);
  *m = handle(0x10000);
  return 0;
}
E(CUresult cuModuleLoadDataEx(void **m, const void *img, unsigned n, void *o, void **v)) {
  COUNT(cuModuleLoadDataEx);
  (void)n, (void)o, (void)v;
  if (!m || !img) return 1;
  *m = handle(0x10000);
  return 0;
}
E(CUresult cuModuleLoad(void **m, const char *path)) {
  COUNT(cuModuleLoad);
  if (!m || !path) return 1;
  FILE *f = fopen(path, "rb");
  if (!f) return 301;  // CUDA_ERROR_FILE_NOT_FOUND
  fclose(f);
  *m = handle(0x10000);
  return 0;
}
E(CUresult cuModuleLoadFatBinary(void **m, const void *img)) {
  COUNT(cuModuleLoadFatBinary);
  if (!m || !img) return 1;
  *m = handle(0x10000);
  return 0;
}
E(CUresult cuLibraryLoadData(void **l, const void *code, void *jo, void **jv, unsigned nj, void *lo,
                             void **lv, unsigned nl)) {
  COUNT(cuLibraryLoadData);
  (void)jo, (void)jv, (void)nj, (void)lo, (void)lv, (void)nl;
  if (!l || !code) return 1;
  *l = handle(0x30000);
  return 0;
}
E(CUresult cuModuleGetFunction(void **f, void *m, const char *name)) {
  COUNT(cuModuleGetFunction);
  if (!f || !m || !name) return 1;
  if (strcmp(name, "missing") == 0) return 500;
  *f = handle(0x20000);
  return 0;
}
E(CUresult cuLibraryGetKernel(void **k, void *l, const char *name)) {
  COUNT(cuLibraryGetKernel);
  if (!k || !l || !name) return 1;
  *k = handle(0x40000);
  return 0;
}
E(CUresult cuKernelGetFunction(void **f, void *k)) {
  COUNT(cuKernelGetFunction);
  if (!f || !k) return 1;
  *f = handle(0x20000);
  return 0;
}

// ------------------------------------------------------------------ occupancy, attributes
E(CUresult cuFuncSetAttribute(void *f, int attr, int value)) {
  COUNT(cuFuncSetAttribute);
  return f && attr >= 0 && value >= 0 ? 0 : 1;
}
E(CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, void *f, int threads, size_t smem)) {
  COUNT(cuOccupancyMaxActiveBlocksPerMultiprocessor);
  (void)smem;
  if (!n || !f || threads <= 0) return 1;
  *n = env_int("FAKE_OCC", 2);
  return 0;
}
E(CUresult cuCtxGetDevice(int *d)) {
  COUNT(cuCtxGetDevice);
  if (!d) return 1;
  *d = 0;
  return 0;
}
E(CUresult cuDeviceGetAttribute(int *v, int attr, int dev)) {
  COUNT(cuDeviceGetAttribute);
  if (!v || dev != 0) return 1;
  *v = attr == 16 ? env_int("FAKE_SMS", 4) : attr == 75 ? 9 : 0;  // SMs; major 9, minor 0
  return 0;
}

// ------------------------------------------------------------------ capture API
static long graphs;
static CUresult begin(CUstream s) {
  cap_stream = s;
  __atomic_store_n(&cap_on, 1, __ATOMIC_RELEASE);
  return 0;
}
E(CUresult cuStreamBeginCapture(CUstream s)) { COUNT(cuStreamBeginCapture); return begin(s); }
E(CUresult cuStreamBeginCapture_ptsz(CUstream s)) { COUNT(cuStreamBeginCapture_ptsz); return begin(s); }
E(CUresult cuStreamBeginCapture_v2(CUstream s, int mode)) {
  COUNT(cuStreamBeginCapture_v2);
  (void)mode;
  return begin(s);
}
E(CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, int mode)) {
  COUNT(cuStreamBeginCapture_v2_ptsz);
  (void)mode;
  return begin(s);
}
static CUresult end(CUstream s, void **g) {
  if (!in_capture(s)) return 1;
  __atomic_store_n(&cap_on, 0, __ATOMIC_RELEASE);
  if (g) *g = (void *)(uintptr_t)(0x50000 + ++graphs);
  return 0;
}
E(CUresult cuStreamEndCapture(CUstream s, void **g)) { COUNT(cuStreamEndCapture); return end(s, g); }
E(CUresult cuStreamEndCapture_ptsz(CUstream s, void **g)) { COUNT(cuStreamEndCapture_ptsz); return end(s, g); }
E(CUresult cuStreamIsCapturing(CUstream s, int *st)) {
  COUNT(cuStreamIsCapturing);
  if (!st) return 1;
  *st = in_capture(s);
  return 0;
}

// ------------------------------------------------------------------ host memory
#define DEV_XOR (1ULL << 62)
static struct { char *p; size_t n; } regs[16];
static int nregs;
static CUresult host_register(void *p, size_t n, unsigned flags) {
  const char *no = getenv("FAKE_NO_REGISTER");
  if (no && *no == '1') return 2;  // CUDA_ERROR_OUT_OF_MEMORY
  if (!(flags & 2) || nregs == 16) return 1;  // needs DEVICEMAP
  regs[nregs].p = p;
  regs[nregs].n = n;
  nregs++;
  return 0;
}
E(CUresult cuMemHostRegister(void *p, size_t n, unsigned f)) { COUNT(cuMemHostRegister); return host_register(p, n, f); }
E(CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned f)) { COUNT(cuMemHostRegister_v2); return host_register(p, n, f); }
static CUresult devptr(uint64_t *d, void *p) {
  for (int i = 0; i < nregs; i++)
    if ((char *)p >= regs[i].p && (char *)p < regs[i].p + regs[i].n) {
      *d = (uint64_t)(uintptr_t)p ^ DEV_XOR;
      return 0;
    }
  return 1;
}
E(CUresult cuMemHostGetDevicePointer(uint64_t *d, void *p, unsigned f)) {
  COUNT(cuMemHostGetDevicePointer);
  (void)f;
  return devptr(d, p);
}
E(CUresult cuMemHostGetDevicePointer_v2(uint64_t *d, void *p, unsigned f)) {
  COUNT(cuMemHostGetDevicePointer_v2);
  (void)f;
  return devptr(d, p);
}
static CUresult write64(CUstream s, uint64_t dptr, uint64_t v) {
  const char *no = getenv("FAKE_NO_WRITEVALUE");
  if (no && *no == '1') return 801;  // CUDA_ERROR_NOT_SUPPORTED
  const char *slow = getenv("FAKE_SLOW_STREAM");  // its queue is full: the call blocks
  if (slow && (uint64_t)(uintptr_t)s == strtoull(slow, NULL, 0))
    usleep((useconds_t)env_int("FAKE_SLOW_MS", 0) * 1000);
  char *h = (char *)(uintptr_t)(dptr ^ DEV_XOR);
  for (int i = 0; i < nregs; i++)
    if (h >= regs[i].p && h + 8 <= regs[i].p + regs[i].n) {
      if (in_capture(s)) __atomic_fetch_add(&captured, 1, __ATOMIC_RELAXED);
      else submit(1, (uint64_t *)h, v, NULL, NULL);
      return 0;
    }
  __atomic_fetch_add(&bad_writes, 1, __ATOMIC_RELAXED);
  return 1;
}
E(CUresult cuStreamWriteValue64(CUstream s, uint64_t d, uint64_t v, unsigned f)) {
  COUNT(cuStreamWriteValue64);
  (void)f;
  return write64(s, d, v);
}
E(CUresult cuStreamWriteValue64_v2(CUstream s, uint64_t d, uint64_t v, unsigned f)) {
  COUNT(cuStreamWriteValue64_v2);
  (void)f;
  return write64(s, d, v);
}
E(CUresult cuLaunchHostFunc(CUstream s, void (*fn)(void *), void *arg)) {
  COUNT(cuLaunchHostFunc);
  if (!fn) return 1;
  submit(2, NULL, 0, fn, arg);
  (void)s;
  return 0;
}
E(CUresult cuStreamSynchronize(CUstream s)) { COUNT(cuStreamSynchronize); (void)s; drain(); return 0; }
E(CUresult cuCtxSynchronize(void)) { COUNT(cuCtxSynchronize); drain(); return 0; }
// CUDA 13: a context argument (FAKE_CTX is the current one; any other is "another
// context", whose sync still drains this fake's single queue)
#define FAKE_CTX ((void *)0xC7C)
E(CUresult cuCtxSynchronize_v2(void *ctx)) { COUNT(cuCtxSynchronize_v2); (void)ctx; drain(); return 0; }
// FAKE_GPA_HIDDEN=1: cuGetProcAddress gives out this unexported twin instead (a driver may
// hand out entry points that no symbol names)
static CUresult hidden_ctx_sync_v2(void *ctx) { return cuCtxSynchronize_v2(ctx); }
E(CUresult cuCtxGetCurrent(void **ctx)) { COUNT(cuCtxGetCurrent); if (ctx) *ctx = FAKE_CTX; return 0; }
E(CUresult cuInit(unsigned f)) { COUNT(cuInit); (void)f; return 0; }
E(CUresult cuDriverGetVersion(int *v)) { COUNT(cuDriverGetVersion); if (v) *v = 12040; return 0; }

// ------------------------------------------------------------------ cuGetProcAddress
E(CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *status));
E(CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags));
#define X_TAB(n) {#n, (void *)&n},
static const struct { const char *name; void *fn; } table[] = {NAMES(X_TAB)};

static void *find(const char *name) {
  for (size_t i = 0; i < sizeof table / sizeof *table; i++)
    if (strcmp(table[i].name, name) == 0) return table[i].fn;
  return NULL;
}

static CUresult lookup(const char *sym, void **pfn, int ver, uint64_t flags, int *status) {
  if (!sym || !pfn) return 1;
  char base[128];
  snprintf(base, sizeof base, "%s", sym);
  if ((strcmp(sym, "cuGetProcAddress") == 0 && ver >= 12000) ||
      (strcmp(sym, "cuStreamBeginCapture") == 0 && ver >= 10010) ||
      (strcmp(sym, "cuMemHostRegister") == 0 && ver >= 6050) ||
      (strcmp(sym, "cuMemHostGetDevicePointer") == 0 && ver >= 3020) ||
      (strcmp(sym, "cuStreamWriteValue64") == 0 && ver >= 12000) ||
      (strcmp(sym, "cuCtxSynchronize") == 0 && ver >= 13000))
    snprintf(base, sizeof base, "%s_v2", sym);
  void *p = NULL;
  if (flags & 2) {  // CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
    char pt[140];
    snprintf(pt, sizeof pt, "%s_ptsz", base);
    p = find(pt);
  }
  if (!p) p = find(base);
  if (p == (void *)&cuCtxSynchronize_v2 && getenv("FAKE_GPA_HIDDEN")) p = (void *)&hidden_ctx_sync_v2;
  *pfn = p;
  if (status) *status = p ? 0 : 1;
  return p ? 0 : 500;
}
E(CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags)) {
  COUNT(cuGetProcAddress);
  return lookup(sym, pfn, ver, flags, NULL);
}
E(CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *st)) {
  COUNT(cuGetProcAddress_v2);
  return lookup(sym, pfn, ver, flags, st);
}
