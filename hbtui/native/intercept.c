// hbtui interceptor: an LD_PRELOAD library that puts an unmodified CUDA program under an
// hbtui engine (`hbtui run`, hbtui/attach/). Design and protocol: docs/attach.md; the
// shared-memory layout: hbtui_shm.h.
//
// What it catches. Programs reach the driver three ways, all covered:
//  1. linked calls (PLT): this library exports the wrapped symbols, so it wins;
//  2. dlopen("libcuda.so.1") + dlsym (Triton, the CUDA runtime): `dlsym` is hooked and
//     returns a wrapper when a wrapped libcuda symbol is asked for;
//  3. cuGetProcAddress / cuGetProcAddress_v2 (the CUDA 12/13 runtime): hooked, and the
//     entry point the driver returns is swapped for the matching wrapper.
// The real driver is dlopen'd lazily (HBTUI_REAL_LIBCUDA, else "libcuda.so.1") the
// first time a wrapper runs, so a program that never touches CUDA only ever sees the
// dlsym hook pass its calls through.
//
// Per launch (cuLaunchKernel, cuLaunchKernelEx, cuLaunchCooperativeKernel,
// cuGraphLaunch, and their _ptsz twins):
//  - HP: the real call first; then one atomic add (seq), a record in the launch ring
//    (atomic claim, plain stores, release publish) and, when one is due (coalesced:
//    write_due), a GPU-side write of the seq into the stream's completion counter
//    (cuStreamWriteValue64 on the launch's stream to the device-mapped completion page;
//    cuLaunchHostFunc when that is unavailable); the program's stream and context syncs
//    advance the counters from the host. No lock, no syscall, no allocation.
//  - LP: the seq is taken first; the launch waits in the calling thread until the
//    engine's granted_seq reaches it (spin, then futex wait with a bounded timeout),
//    unless the segment is in PASS mode or the engine's heartbeat is older than the
//    grace period (then: one warning line, ungated until the heartbeat returns).
// Module loads and function lookups are recorded with the image hash and the name; an LP
// program's PTX images are also written once to HBTUI_MODULE_DIR for the engine's slicer.
//
// No CUDA headers: the few types needed are declared below.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "hbtui_shm.h"

#define HB_EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

typedef int CUresult;
typedef void *CUfunction, *CUstream, *CUmodule, *CUlibrary, *CUkernel, *CUgraphExec, *CUcontext;
typedef uint64_t CUdeviceptr;
typedef void (*CUhostFn)(void *);
typedef struct {  // CUlaunchConfig (cuda.h, CUDA >= 11.8)
  unsigned gx, gy, gz, bx, by, bz, smem;
  CUstream stream;
  void *attrs;
  unsigned nattrs;
} hb_cu_launch_config;

#define CUDA_ERROR_SHARED_OBJECT_INIT_FAILED 303
#define CUDA_ERROR_NOT_FOUND 500
#define CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED 712
#define CU_STREAM_PER_THREAD 2u
#define CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM 2u
#define CU_MEMHOSTREGISTER_PORTABLE 1u
#define CU_MEMHOSTREGISTER_DEVICEMAP 2u

// ---------------------------------------------------------------- hooked symbols
// id, exported name, ABI-stable under cuGetProcAddress by name (see substitute()).
#define HB_HOOKS(X)                                              \
  X(H_LAUNCH, cuLaunchKernel, 1)                                 \
  X(H_LAUNCH_PTSZ, cuLaunchKernel_ptsz, 1)                       \
  X(H_LAUNCH_EX, cuLaunchKernelEx, 1)                            \
  X(H_LAUNCH_EX_PTSZ, cuLaunchKernelEx_ptsz, 1)                  \
  X(H_COOP, cuLaunchCooperativeKernel, 1)                        \
  X(H_COOP_PTSZ, cuLaunchCooperativeKernel_ptsz, 1)              \
  X(H_GRAPH, cuGraphLaunch, 1)                                   \
  X(H_GRAPH_PTSZ, cuGraphLaunch_ptsz, 1)                         \
  X(H_MOD_LOAD, cuModuleLoadData, 1)                             \
  X(H_MOD_LOAD_FILE, cuModuleLoad, 1)                            \
  X(H_MOD_LOAD_EX, cuModuleLoadDataEx, 1)                        \
  X(H_MOD_FAT, cuModuleLoadFatBinary, 1)                         \
  X(H_LIB_LOAD, cuLibraryLoadData, 1)                            \
  X(H_MOD_GETF, cuModuleGetFunction, 1)                          \
  X(H_LIB_GETK, cuLibraryGetKernel, 1)                           \
  X(H_KERN_GETF, cuKernelGetFunction, 1)                         \
  X(H_CAP, cuStreamBeginCapture, 0)                              \
  X(H_CAP_PTSZ, cuStreamBeginCapture_ptsz, 0)                    \
  X(H_CAP2, cuStreamBeginCapture_v2, 0)                          \
  X(H_CAP2_PTSZ, cuStreamBeginCapture_v2_ptsz, 0)                \
  X(H_CAP_END, cuStreamEndCapture, 1)                            \
  X(H_CAP_END_PTSZ, cuStreamEndCapture_ptsz, 1)                  \
  X(H_SSYNC, cuStreamSynchronize, 1)                             \
  X(H_SSYNC_PTSZ, cuStreamSynchronize_ptsz, 1)                   \
  X(H_CSYNC, cuCtxSynchronize, 0)                                \
  X(H_CSYNC2, cuCtxSynchronize_v2, 1)                            \
  X(H_GPA, cuGetProcAddress, 0)                                  \
  X(H_GPA2, cuGetProcAddress_v2, 0)

#define X_ENUM(id, sym, stable) id,
enum { HB_HOOKS(X_ENUM) H_COUNT };
#define X_NAME(id, sym, stable) #sym,
static const char *const hook_name[H_COUNT] = {HB_HOOKS(X_NAME)};
#define X_STABLE(id, sym, stable) stable,
static const unsigned char hook_stable[H_COUNT] = {HB_HOOKS(X_STABLE)};
static void *hook_fn[H_COUNT];  // our wrappers (defined at the end of the file)
static void *volatile g_real[H_COUNT];
static int g_real_done[H_COUNT];  // looked up (found or not)

// other real entry points we call ourselves
enum {
  R_IS_CAPTURING,
  R_HOST_REGISTER,
  R_HOST_DEVPTR,
  R_WRITE64,
  R_HOST_FUNC,
  R_FUNC_SET_ATTR,
  R_OCCUPANCY,
  R_CTX_GET_DEVICE,
  R_DEV_ATTR,
  R_CTX_GET_CURRENT,
  R_COUNT
};
static const char *const extra_name[R_COUNT][2] = {
    {"cuStreamIsCapturing", NULL},
    {"cuMemHostRegister_v2", "cuMemHostRegister"},
    {"cuMemHostGetDevicePointer_v2", "cuMemHostGetDevicePointer"},
    {"cuStreamWriteValue64_v2", "cuStreamWriteValue64"},
    {"cuLaunchHostFunc", NULL},
    {"cuFuncSetAttribute", NULL},
    {"cuOccupancyMaxActiveBlocksPerMultiprocessor", NULL},
    {"cuCtxGetDevice", NULL},
    {"cuDeviceGetAttribute", NULL},
    {"cuCtxGetCurrent", NULL},
};
static void *volatile g_extra[R_COUNT];
static int g_extra_done[R_COUNT];

typedef CUresult (*launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void **, void **);
typedef CUresult (*coop_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, CUstream, void **);
typedef CUresult (*launch_ex_t)(const hb_cu_launch_config *, CUfunction, void **, void **);
typedef CUresult (*graph_t)(CUgraphExec, CUstream);
typedef CUresult (*mod_load_t)(CUmodule *, const void *);
typedef CUresult (*mod_load_file_t)(CUmodule *, const char *);
typedef CUresult (*mod_load_ex_t)(CUmodule *, const void *, unsigned, void *, void **);
typedef CUresult (*lib_load_t)(CUlibrary *, const void *, void *, void **, unsigned, void *,
                               void **, unsigned);
typedef CUresult (*get_func_t)(CUfunction *, CUmodule, const char *);
typedef CUresult (*get_kernel_t)(CUkernel *, CUlibrary, const char *);
typedef CUresult (*kern_func_t)(CUfunction *, CUkernel);
typedef CUresult (*cap1_t)(CUstream);
typedef CUresult (*cap2_t)(CUstream, int);
typedef CUresult (*cap_end_t)(CUstream, void **);
typedef CUresult (*gpa1_t)(const char *, void **, int, uint64_t);
typedef CUresult (*gpa2_t)(const char *, void **, int, uint64_t, int *);
typedef CUresult (*is_capturing_t)(CUstream, int *);
typedef CUresult (*host_register_t)(void *, size_t, unsigned);
typedef CUresult (*host_devptr_t)(CUdeviceptr *, void *, unsigned);
typedef CUresult (*write64_t)(CUstream, CUdeviceptr, uint64_t, unsigned);
typedef CUresult (*host_func_t)(CUstream, CUhostFn, void *);

// ---------------------------------------------------------------- real dlsym, libcuda
typedef void *(*dlsym_t)(void *, const char *);
static dlsym_t g_dlsym;
static void *volatile g_cuda;     // handle of the real driver library
static void *volatile g_cuda_base;  // its load base (dladdr), to recognise its symbols

static void warn(const char *fmt, const char *arg) {
  char buf[512];
  int n = snprintf(buf, sizeof buf, fmt, arg ? arg : "");
  if (n > 0) {
    if (n > (int)sizeof buf - 1) n = sizeof buf - 1;
    ssize_t w = write(2, buf, (size_t)n);
    (void)w;
  }
}

static void init_dlsym(void) {
  static const char *const vers[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0"};
  for (unsigned i = 0; i < sizeof vers / sizeof *vers && !g_dlsym; i++)
    g_dlsym = (dlsym_t)dlvsym(RTLD_NEXT, "dlsym", vers[i]);
  if (!g_dlsym) {
    warn("hbtui: cannot find the real dlsym (glibc); aborting\n", NULL);
    abort();
  }
}

static inline void *real_dlsym(void *h, const char *name) {
  if (UNLIKELY(!g_dlsym)) init_dlsym();
  return g_dlsym(h, name);
}

static void *cuda_handle(void) {
  void *h = __atomic_load_n(&g_cuda, __ATOMIC_ACQUIRE);
  if (LIKELY(h)) return h;
  const char *path = getenv("HBTUI_REAL_LIBCUDA");
  if (!path || !*path) path = "libcuda.so.1";
  h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    static int warned;
    if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
      warn("hbtui: cannot load the CUDA driver (%s)\n", dlerror());
    return NULL;
  }
  void *init = real_dlsym(h, "cuInit");
  Dl_info info;
  if (init && dladdr(init, &info)) __atomic_store_n(&g_cuda_base, info.dli_fbase, __ATOMIC_RELEASE);
  void *expected = NULL;
  if (!__atomic_compare_exchange_n(&g_cuda, &expected, h, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    dlclose(h);  // another thread won: keep one reference
  return __atomic_load_n(&g_cuda, __ATOMIC_ACQUIRE);
}

static void *resolve(int i) {
  if (__atomic_load_n(&g_real_done[i], __ATOMIC_ACQUIRE)) return g_real[i];
  void *h = cuda_handle();
  if (!h) return NULL;  // try again next time
  void *p = real_dlsym(h, hook_name[i]);
  __atomic_store_n(&g_real[i], p, __ATOMIC_RELEASE);
  __atomic_store_n(&g_real_done[i], 1, __ATOMIC_RELEASE);
  return p;
}

static inline void *real(int i) {
  void *p = __atomic_load_n(&g_real[i], __ATOMIC_ACQUIRE);
  return LIKELY(p) ? p : resolve(i);
}

static void *extra(int i) {
  void *p = __atomic_load_n(&g_extra[i], __ATOMIC_ACQUIRE);
  if (p || __atomic_load_n(&g_extra_done[i], __ATOMIC_ACQUIRE)) return p;
  void *h = cuda_handle();
  for (int k = 0; h && k < 2 && !p && extra_name[i][k]; k++) p = real_dlsym(h, extra_name[i][k]);
  __atomic_store_n(&g_extra[i], p, __ATOMIC_RELEASE);
  __atomic_store_n(&g_extra_done[i], 1, __ATOMIC_RELEASE);
  return p;
}

static CUresult missing(int i) {
  static int warned[H_COUNT];
  if (!__atomic_exchange_n(&warned[i], 1, __ATOMIC_RELAXED))
    warn("hbtui: the CUDA driver has no %s\n", hook_name[i]);
  return cuda_handle() ? CUDA_ERROR_NOT_FOUND : CUDA_ERROR_SHARED_OBJECT_INIT_FAILED;
}

// ---------------------------------------------------------------- the segment
static struct {
  char *base;
  hb_header *h;
  hb_launch *launch;
  hb_pending *pending;
  hb_module *module;
  hb_func *func;
  uint64_t *comp_key;
  uint64_t *comp_done;
  int lp;
} G;
static int g_on;                 // 1 once the segment is mapped and checked
// HP only (hbtui_set_quiet): launches, syncs and markers pass straight through, as in a
// process outside hbtui run, so one process can alternate requests with and without
// the interceptor's work (benchmarks/hp_overhead_ab.py, the in-process comparison).
static int g_quiet;
static inline int observing(void) {
  return __atomic_load_n(&g_on, __ATOMIC_RELAXED) && !__atomic_load_n(&g_quiet, __ATOMIC_RELAXED);
}
// HBTUI_SELF_TIME=1 (benchmarks/hp_overhead_ab.py --self-time): the interceptor's own
// time in observed HP launches, summed (hbtui_self_ns), at two more clock reads a launch.
static int g_self_time;
static uint64_t g_self_ns, g_self_launches;
static uint32_t g_comp;          // HB_COMP_*: process-local (registration is per process)
static CUdeviceptr g_comp_dev;   // device address of the completion page
static int g_captures;           // stream captures in progress (>0: ask the driver)
// HP completion coalescing: a completion write is itself a driver call (+0.89 us median
// per launch on an H200 with a write each, +0.14 us coalesced to 100 us, measured in a
// tight loop; inside an eager PyTorch service on an H100 the interceptor's own time was
// 0.6-0.7 us a launch at 100 us and 0.2 us at 1 ms), so an HP kernel launch gets one only
// when its stream had none for that long, or was quiet for header.hp_burst_us (the first
// launch of a burst; that long if shorter); the launches in between are covered by the
// next write (seqs on a stream only grow) and by the program's own synchronisations,
// after which the counters are advanced from the host. How long: the engine's
// header.hp_comp_us (fine while an LP program's grants follow the HP's activity, coarse
// otherwise), unless HBTUI_COMP_EVERY_US fixes it (0 = a write per launch). Per process,
// like the registration.
#define HB_COALESCE_DEFAULT_US 100
static int64_t g_coalesce_fixed = -1;  // HBTUI_COMP_EVERY_US in ns; -1: the engine's
static inline int64_t coalesce_ns(void) {
  if (g_coalesce_fixed >= 0) return g_coalesce_fixed;
  uint32_t us = __atomic_load_n(&G.h->hp_comp_us, __ATOMIC_RELAXED);  // the engine's line
  return (int64_t)(us ? us : HB_COALESCE_DEFAULT_US) * 1000;
}
// Thread-locals read on every launch: initial-exec (no __tls_get_addr call); the library
// is preloaded, so its few bytes come from the static TLS block.
#define HB_TLS __attribute__((tls_model("initial-exec")))
// Per completion slot, in one place (a launch touches one line of it, not three arrays):
// the highest seq this process launched on it, its last launch and its last write.
typedef struct {
  uint64_t seq;
  int64_t launch_ns, write_ns, _pad;
} hb_slot_state;
static hb_slot_state g_slot[HB_COMP_SLOTS] __attribute__((aligned(64)));
static int g_no_comp;  // the segment's HB_FLAG_NO_COMPLETION (set when it is made)
// Per-thread default streams with a counter of their own, per process: a server that
// keeps starting threads would otherwise fill the table (256 slots, never freed) and
// push every new stream onto the shared overflow slot. Beyond this many, the threads'
// streams share one counter (a single-stream sync does not advance it: never early).
#define HB_PTDS_SLOTS 32
static uint32_t g_ptds_slots;   // per-thread-stream counters this process claimed
static uint16_t g_ptds_shared;  // the counter they share beyond that (0: none yet)
// the calling thread's last stream and its slot: a program launches on few streams, and
// the probe reads the shared key page (a cache miss between a Python program's launches)
static __thread uint64_t t_slot_key HB_TLS;
static __thread uint16_t t_slot HB_TLS;
static __thread uint32_t t_tid HB_TLS;
// LP only: where PTX module images are written for the engine's slicer (HBTUI_MODULE_DIR,
// an absolute path; empty = do not write). Set once in hb_init.
static char g_moddir[PATH_MAX - 64];

static inline uint32_t tid(void) {
  if (UNLIKELY(!t_tid)) t_tid = (uint32_t)syscall(SYS_gettid);
  return t_tid;
}

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// A cache line fetched for writing ahead of the stores that will need it: PREFETCHW where
// CPUID says the CPU has it (Intel since Broadwell, AMD; gcc emits it only with -mprfchw,
// which the build does not pass), else a plain prefetch.
static int g_prefetchw;  // set in hb_init
static int has_prefetchw(void) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c = 0, d;
  return __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & (1u << 8));  // CPUID PRFCHW
#else
  return 0;
#endif
}
static inline void prefetch_w(const void *p) {
#if defined(__x86_64__) || defined(__i386__)
  if (LIKELY(g_prefetchw)) {
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
    return;
  }
#endif
  __builtin_prefetch(p, 1, 3);
}

// 64-bit hash of a byte string, 8 bytes at a time (the last word zero-padded). Python's
// hbtui.attach.layout.hash64 computes the same.
static uint64_t hash64(const void *data, uint64_t n) {
  const unsigned char *p = data;
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h ^= w * 0xFF51AFD7ED558CCDULL;
    h = ((h << 29) | (h >> 35)) * 0x9E3779B97F4A7C15ULL;
  }
  if (i < n) {
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    h ^= w * 0xFF51AFD7ED558CCDULL;
    h = ((h << 29) | (h >> 35)) * 0x9E3779B97F4A7C15ULL;
  }
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 29;
  return h;
}

static uint64_t g_pid_key;  // this process in the completion-slot keys (see comp_slot)
// fork: the interceptor's locks are taken before and released on both sides after, so a
// child never inherits one held by a thread that does not exist there (its first module
// record or variant load would wait forever). Defined with the locks, below.
static void locks_prepare(void);
static void locks_release(void);

static void atfork_child(void) {
  locks_release();
  t_tid = 0;
  g_ptds_slots = 0;  // (the child's keys carry its own pid)
  g_ptds_shared = 0;
  g_pid_key = (uint64_t)getpid() << 40;
}

__attribute__((constructor)) static void hb_init(void) {
  if (!g_dlsym) init_dlsym();
  pthread_atfork(locks_prepare, locks_release, atfork_child);
  g_pid_key = (uint64_t)getpid() << 40;
  g_prefetchw = has_prefetchw();
  const char *name = getenv("HBTUI_SHM");
  if (!name || !*name) return;  // not under `hbtui run`: pure pass-through
  char path[256];
  if (name[0] != '/' || strchr(name + 1, '/') ||
      snprintf(path, sizeof path, "/dev/shm%s", name) >= (int)sizeof path) {
    warn("hbtui: bad HBTUI_SHM %s; running unobserved\n", name);
    return;
  }
  int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    warn("hbtui: cannot open the segment %s; running unobserved\n", name);
    return;
  }
  struct stat st;
  void *b = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size >= (off_t)HB_SHM_SIZE)
    b = mmap(NULL, HB_SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (b == MAP_FAILED) {
    warn("hbtui: cannot map the segment %s; running unobserved\n", name);
    return;
  }
  hb_header *h = b;
  if (h->magic != HB_SHM_MAGIC || h->version != HB_SHM_VERSION ||
      h->header_size != sizeof(hb_header) || h->total_size != HB_SHM_SIZE) {
    warn("hbtui: segment %s has another layout (version mismatch); running unobserved\n", name);
    munmap(b, HB_SHM_SIZE);
    return;
  }
  G.base = b;
  G.h = h;
  G.comp_key = (uint64_t *)(G.base + HB_OFF_COMP_KEY);
  G.comp_done = (uint64_t *)(G.base + HB_OFF_COMP_DONE);
  G.pending = (hb_pending *)(G.base + HB_OFF_PENDING);
  G.launch = (hb_launch *)(G.base + HB_OFF_LAUNCH);
  G.module = (hb_module *)(G.base + HB_OFF_MODULE);
  G.func = (hb_func *)(G.base + HB_OFF_FUNC);
  // the segment's class decides (HP and LP take seqs differently: a process of the
  // other class in one segment would reuse seqs); HBTUI_CLASS only says what was meant
  G.lp = h->cls == HB_CLASS_LP;
  const char *cls = getenv("HBTUI_CLASS");
  if (cls && (strcmp(cls, "lp") == 0) != G.lp)
    warn(G.lp ? "hbtui: warning: HBTUI_CLASS=%.8s but the segment is LP's; running as LP\n"
              : "hbtui: warning: HBTUI_CLASS=%.8s but the segment is HP's; running as HP\n",
         cls);
  const char *grace = getenv("HBTUI_GRACE_MS");
  if (grace && *grace) {
    long g = strtol(grace, NULL, 10);
    if (g > 0 && g < INT_MAX) __atomic_store_n(&h->grace_ms, (uint32_t)g, __ATOMIC_RELAXED);
  }
  const char *every = getenv("HBTUI_COMP_EVERY_US");
  if (every && *every) {
    char *end;
    long us = strtol(every, &end, 10);
    if (*end || us < 0 || us > 1000000)
      warn("hbtui: warning: HBTUI_COMP_EVERY_US=%s is not 0..1000000 (us); ignored\n", every);
    else
      g_coalesce_fixed = (int64_t)us * 1000;  // 0: a write per launch
  }
  if (!G.lp) {  // (told to the engine, which shows what observing the program costs)
    int32_t fixed_us = g_coalesce_fixed < 0 ? -1 : (int32_t)(g_coalesce_fixed / 1000);
    __atomic_store_n(&h->comp_fixed_us, fixed_us, __ATOMIC_RELAXED);
  }
  g_no_comp = (__atomic_load_n(&h->flags, __ATOMIC_RELAXED) & HB_FLAG_NO_COMPLETION) != 0;
  const char *self = getenv("HBTUI_SELF_TIME");
  g_self_time = self && !strcmp(self, "1");
  const char *moddir = getenv("HBTUI_MODULE_DIR");
  if (G.lp && moddir && moddir[0] == '/' && strlen(moddir) < sizeof g_moddir)
    memcpy(g_moddir, moddir, strlen(moddir) + 1);
  __atomic_store_n(&h->intercept_pid, (int32_t)getpid(), __ATOMIC_RELAXED);
  __atomic_store_n(&g_on, 1, __ATOMIC_RELEASE);
}

// ---------------------------------------------------------------- completions
static void hostfn_done(void *arg) {  // runs on the driver's callback thread
  uint64_t v = (uint64_t)(uintptr_t)arg, seq = v >> 8;
  uint64_t *cell = &G.comp_done[v & 0xff];
  uint64_t cur = __atomic_load_n(cell, __ATOMIC_RELAXED);
  while (cur < seq &&
         !__atomic_compare_exchange_n(cell, &cur, seq, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
}

static uint32_t comp_setup(void) {
  uint32_t st = HB_COMP_UNSET;
  if (!__atomic_compare_exchange_n(&g_comp, &st, HB_COMP_SETUP, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    for (int i = 0; i < 200000 && st == HB_COMP_SETUP; i++) {
      sched_yield();
      st = __atomic_load_n(&g_comp, __ATOMIC_ACQUIRE);
    }
    return st == HB_COMP_SETUP ? HB_COMP_OFF : st;  // this launch goes without
  }
  st = HB_COMP_OFF;
  host_register_t reg = (host_register_t)extra(R_HOST_REGISTER);
  host_devptr_t devptr = (host_devptr_t)extra(R_HOST_DEVPTR);
  void *page = G.base + HB_OFF_COMP_DONE;
  if (reg && devptr && extra(R_WRITE64)) {
    CUresult r = reg(page, HB_COMP_PAGE, CU_MEMHOSTREGISTER_DEVICEMAP | CU_MEMHOSTREGISTER_PORTABLE);
    CUdeviceptr d = 0;
    if ((r == 0 || r == CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED) && devptr(&d, page, 0) == 0 && d) {
      g_comp_dev = d;
      __atomic_store_n(&G.h->comp_dev, (uint64_t)d, __ATOMIC_RELAXED);
      st = HB_COMP_WRITEVAL;
    }
  }
  if (st == HB_COMP_OFF && extra(R_HOST_FUNC)) st = HB_COMP_HOSTFN;
  __atomic_store_n(&G.h->comp_state, st, __ATOMIC_RELAXED);
  __atomic_store_n(&g_comp, st, __ATOMIC_RELEASE);
  return st;
}

// Open addressing on a key (0 = free; slot 0 is the overflow, never a key's): the slot
// that holds ``k``, claiming a free one when ``claim``; 0 when none (full, or not there).
static uint16_t slot_probe(uint64_t k, int claim, int *claimed) {
  uint32_t s = (uint32_t)((k * 0x9E3779B97F4A7C15ULL) >> 56);
  for (int n = 0; n < 16; n++, s = (s + 1) & (HB_COMP_SLOTS - 1)) {
    if (s == 0) continue;
    uint64_t cur = __atomic_load_n(&G.comp_key[s], __ATOMIC_RELAXED);
    if (cur == k) return (uint16_t)s;
    if (cur != 0) continue;
    if (!claim) return 0;  // (keys are never removed: k would sit here)
    if (__atomic_compare_exchange_n(&G.comp_key[s], &cur, k, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
      *claimed = 1;
      return (uint16_t)s;
    }
    if (cur == k) return (uint16_t)s;  // another thread claimed it for k
  }
  return 0;
}

// The completion counter of a stream (0: the overflow slot, shared by streams that found
// none). ``claim`` 0: only look it up (a sync needs no counter for a stream it never saw).
static inline uint16_t comp_slot(uint64_t stream, int claim) {
  // keyed by process and stream: processes sharing a segment (exec'd or forked children)
  // reuse stream handle values (0, the per-thread stream, allocator addresses), and a
  // counter written by two processes out of seq order would go backwards
  uint64_t k = (stream + 1) ^ g_pid_key;
  int claimed = 0;
  if (stream == CU_STREAM_PER_THREAD) {
    // each thread's per-thread default stream is its own stream: its own counter, so
    // that one thread's sync on it does not confirm another thread's launches (tid in
    // bits 4-25: clear of the pid's bits and of pointer handles' low bits)
    uint64_t kt = k ^ ((uint64_t)tid() << 4);
    if (LIKELY(kt == t_slot_key)) return t_slot;
    int room = __atomic_load_n(&g_ptds_slots, __ATOMIC_RELAXED) < HB_PTDS_SLOTS;
    uint16_t s = slot_probe(kt, claim && room, &claimed);
    if (s) {
      if (claimed) __atomic_fetch_add(&g_ptds_slots, 1, __ATOMIC_RELAXED);
      t_slot_key = kt;
      t_slot = s;
      return s;
    }
  }
  if (LIKELY(k == t_slot_key)) return t_slot;  // keys stay once set (a fork changes k)
  uint16_t s = slot_probe(k, claim, &claimed);
  if (s) {
    if (stream == CU_STREAM_PER_THREAD) __atomic_store_n(&g_ptds_shared, s, __ATOMIC_RELAXED);
    t_slot_key = k;
    t_slot = s;
    return s;
  }
  if (claim) __atomic_fetch_add(&G.h->comp_overflow, 1, __ATOMIC_RELAXED);
  return 0;
}

// The completion mechanism, set up at the first launch that asks (driver calls).
static inline uint32_t comp_ready(void) {
  uint32_t st = __atomic_load_n(&g_comp, __ATOMIC_ACQUIRE);
  return UNLIKELY(st < HB_COMP_WRITEVAL) ? comp_setup() : st;
}

// Enqueue the write of ``seq`` to counter ``s`` on ``stream`` (a driver call); 0 if it
// failed (a failed stream write switches the process to host functions).
static inline int comp_write(uint32_t st, uint64_t stream, uint16_t s, uint64_t seq) {
  if (LIKELY(st == HB_COMP_WRITEVAL)) {
    write64_t wv = (write64_t)g_extra[R_WRITE64];
    if (LIKELY(wv((CUstream)(uintptr_t)stream, g_comp_dev + 8u * s, seq, 0) == 0)) return 1;
    __atomic_fetch_add(&G.h->comp_errors, 1, __ATOMIC_RELAXED);
    uint32_t exp = HB_COMP_WRITEVAL;  // e.g. stream memory ops not supported: fall back
    __atomic_compare_exchange_n(&g_comp, &exp, HB_COMP_HOSTFN, 0, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
    __atomic_store_n(&G.h->comp_state, HB_COMP_HOSTFN, __ATOMIC_RELAXED);
  }
  host_func_t hf = (host_func_t)extra(R_HOST_FUNC);
  if (hf && hf((CUstream)(uintptr_t)stream, hostfn_done, (void *)(uintptr_t)((seq << 8) | s)) == 0)
    return 1;
  __atomic_fetch_add(&G.h->comp_errors, 1, __ATOMIC_RELAXED);
  return 0;
}

static inline uint16_t complete(uint64_t stream, uint64_t seq) {
  uint32_t st = comp_ready();
  if (st == HB_COMP_OFF) return HB_COMP_NONE;
  uint16_t s = comp_slot(stream, 1);
  return comp_write(st, stream, s, seq) ? s : HB_COMP_NONE;
}

static inline void max_u64(uint64_t *p, uint64_t v) {
  uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (cur < v &&
         !__atomic_compare_exchange_n(p, &cur, v, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
}

// A slot's highest launched seq, raised without a locked instruction (it is this
// process's own, read only by its syncs): two threads launching on one stream at once
// may leave it one launch low, and a sync then advances the counter less far than it
// could (the engine waits for the next write: never early).
static inline void raise_u64(uint64_t *p, uint64_t v) {
  if (__atomic_load_n(p, __ATOMIC_RELAXED) < v) __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

// HP with coalescing: a completion write only for the first launch of a burst on this
// stream (after the engine's header.hp_burst_us quiet, or coalesce_ns() if shorter) or
// when the last write is older than coalesce_ns(); otherwise the launch is marked
// COALESCED (its completion shows once a later write or a sync covers its seq). So each
// request the engine infers from bursts has a write at its start, however coarse the
// coalescing. Whether slot ``s`` gets a write for a launch at ``now`` (and the slot's
// times updated).
static inline int write_due(uint16_t s, int64_t now) {
  // plain load and store (no locked exchange): threads racing on one stream at worst
  // add or skip one write
  int64_t last_launch = __atomic_load_n(&g_slot[s].launch_ns, __ATOMIC_RELAXED);
  __atomic_store_n(&g_slot[s].launch_ns, now, __ATOMIC_RELAXED);
  int64_t last_write = __atomic_load_n(&g_slot[s].write_ns, __ATOMIC_RELAXED);
  const int64_t every = coalesce_ns();
  const int64_t burst = (int64_t)__atomic_load_n(&G.h->hp_burst_us, __ATOMIC_RELAXED) * 1000;
  if (!every || now - last_write >= every ||
      now - last_launch >= (burst && burst < every ? burst : every)) {
    __atomic_store_n(&g_slot[s].write_ns, now, __ATOMIC_RELAXED);
    return 1;
  }
  return 0;
}

// A synchronisation is about to run: what this process launched so far (on that stream,
// or on all of them) will be done when it returns. Snapshot first: a launch another
// thread makes during the sync is not covered by it.
typedef struct {
  int all;
  uint16_t slot;
  uint64_t seq[HB_COMP_SLOTS];
} hb_sync_snap;

static int sync_snapshot(hb_sync_snap *sn, int all, uint64_t stream) {
  if (!observing() || !coalesce_ns()) return 0;
  uint32_t st = __atomic_load_n(&g_comp, __ATOMIC_RELAXED);
  if (st != HB_COMP_WRITEVAL && st != HB_COMP_HOSTFN) return 0;
  sn->all = all;
  if (all) {
    for (uint32_t s = 0; s < HB_COMP_SLOTS; s++)
      sn->seq[s] = __atomic_load_n(&g_slot[s].seq, __ATOMIC_RELAXED);
  } else {
    sn->slot = comp_slot(stream, 0);
    sn->seq[0] = __atomic_load_n(&g_slot[sn->slot].seq, __ATOMIC_RELAXED);
  }
  // while a thread waits here, the engine must not take the coalesced tail as done early
  __atomic_fetch_add(&G.h->syncing, 1, __ATOMIC_RELEASE);
  return 1;
}

// Whether a single-stream sync covers all of slot ``s``: not slot 0 (shared by the streams
// that found no slot, of every process on the segment) nor the per-thread streams' shared
// counter (this process's threads beyond HB_PTDS_SLOTS).
static inline int slot_is_own(uint16_t s) {
  return s != 0 && s != __atomic_load_n(&g_ptds_shared, __ATOMIC_RELAXED);
}

// Whether all this process launched is done now that the sync returned: the snapshot covers
// each slot's launches (a context sync) or the synced stream's, and the other slots'
// counters already show theirs done (a launch made during the sync is covered by neither).
static int all_done_after(const hb_sync_snap *sn) {
  const int own = slot_is_own(sn->slot);
  for (uint32_t s = 0; s < HB_COMP_SLOTS; s++) {
    uint64_t q = __atomic_load_n(&g_slot[s].seq, __ATOMIC_RELAXED);
    uint64_t covered = sn->all ? sn->seq[s] : (own && s == sn->slot ? sn->seq[0] : 0);
    if (q > covered && q > __atomic_load_n(&G.comp_done[s], __ATOMIC_ACQUIRE)) return 0;
  }
  return 1;
}

// ... and it returned: advance the counters from the host to the snapshot (when it
// succeeded), then leave the syncing count.
static void synced(const hb_sync_snap *sn, int ok) {
  // HP: when it returned, if that ended all this process's work, stored before the
  // counters advance: the engine, seeing them advanced, takes it as the time the work
  // ended instead of its own poll's (up to a tick, 100 us, later)
  if (ok && !G.lp && all_done_after(sn))
    __atomic_store_n(&G.h->synced_ns, now_ns(), __ATOMIC_RELAXED);
  // (a context sync does not cover slot 0's other processes' streams either)
  if (ok && sn->all) {
    for (uint32_t s = 1; s < HB_COMP_SLOTS; s++)
      if (sn->seq[s]) max_u64(&G.comp_done[s], sn->seq[s]);
  } else if (ok && sn->seq[0] && slot_is_own(sn->slot)) {
    max_u64(&G.comp_done[sn->slot], sn->seq[0]);
  }
  __atomic_fetch_sub(&G.h->syncing, 1, __ATOMIC_RELEASE);
}

static int capturing(uint64_t stream) {
  if (LIKELY(__atomic_load_n(&g_captures, __ATOMIC_RELAXED) == 0)) return 0;
  is_capturing_t f = (is_capturing_t)extra(R_IS_CAPTURING);
  int status = 0;
  if (!f || f((CUstream)(uintptr_t)stream, &status) != 0) return 1;  // unsure: add nothing
  return status != 0;
}

// ---------------------------------------------------------------- the LP gate
static inline int64_t grace_ns(const hb_header *h) {
  uint32_t g = __atomic_load_n(&h->grace_ms, __ATOMIC_RELAXED);
  return (int64_t)(g ? g : 2000u) * 1000000LL;
}

static void heartbeat_lost(hb_header *h) {
  uint32_t exp = 0;
  if (__atomic_compare_exchange_n(&h->ungated, &exp, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
    __atomic_fetch_add(&h->ungated_events, 1, __ATOMIC_RELAXED);
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", (long long)(grace_ns(h) / 1000000));
    char line[200];
    snprintf(line, sizeof line,
             "hbtui: warning: engine heartbeat older than %s ms; LP launches of task '%.64s' "
             "run ungated until it returns\n", ms, h->task);
    warn("%s", line);
  }
}

static int futex_wait(uint32_t *word, uint32_t val, int64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
  return (int)syscall(SYS_futex, word, FUTEX_WAIT, val, &ts, NULL, 0);
}

typedef struct {
  uint64_t func, stream;
  uint32_t grid[3], block[3], smem;
  uint8_t kind, ptsz;
  uint64_t slice_start;  // a slice (intercept_slices.h): its blocks; 0 blocks: whole
  uint32_t slice_blocks, slice_parts;
} hb_call;

typedef struct {
  uint64_t seq;
  int64_t enq, issue;
  uint8_t flags;
} hb_pre;

static int pending_put(const hb_call *c, uint64_t seq, int64_t since) {
  for (uint32_t n = 0, i = tid() % HB_PENDING_CAP; n < HB_PENDING_CAP;
       n++, i = (i + 1) % HB_PENDING_CAP) {
    hb_pending *p = &G.pending[i];
    uint64_t exp = 0;
    if (!__atomic_compare_exchange_n(&p->seq, &exp, UINT64_MAX, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
      continue;
    p->func = c->func;
    p->stream = c->stream;
    p->since_ns = since;
    memcpy(p->grid, c->grid, sizeof p->grid);
    memcpy(p->block, c->block, sizeof p->block);
    p->tid = tid();
    p->kind = c->kind;
    __atomic_store_n(&p->seq, seq, __ATOMIC_RELEASE);
    return (int)i;
  }
  __atomic_fetch_add(&G.h->pending_overflow, 1, __ATOMIC_RELAXED);
  return -1;
}

// Hold the calling thread until the engine grants `seq` (or gating stops).
static void gate(const hb_call *c, hb_pre *p) {
  hb_header *h = G.h;
  const uint64_t seq = p->seq;
  if (__atomic_load_n(&h->granted_seq, __ATOMIC_ACQUIRE) >= seq) {
    p->flags |= HB_LF_PREGRANTED;
    return;
  }
  int how = 0;  // 1 granted, 2 let go ungated
  if (__atomic_load_n(&h->mode, __ATOMIC_ACQUIRE) != HB_MODE_GATED) {
    how = 2;
  } else if (p->enq - __atomic_load_n(&h->heartbeat_ns, __ATOMIC_ACQUIRE) > grace_ns(h)) {
    heartbeat_lost(h);
    how = 2;
  }
  if (how == 2) {
    p->flags |= HB_LF_UNGATED;
    __atomic_fetch_add(&h->ungated_launches, 1, __ATOMIC_RELAXED);
    return;
  }
  if (__atomic_load_n(&h->ungated, __ATOMIC_RELAXED)) {
    uint32_t one = 1;  // the heartbeat is back: gate again
    __atomic_compare_exchange_n(&h->ungated, &one, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
  }
  int slot = pending_put(c, seq, p->enq);
  const int64_t spin_end = p->enq + (int64_t)__atomic_load_n(&h->spin_us, __ATOMIC_RELAXED) * 1000;
  for (unsigned n = 0;; n++) {
    if (__atomic_load_n(&h->granted_seq, __ATOMIC_ACQUIRE) >= seq) {
      how = 1;
      break;
    }
    if ((n & 63) == 63 && now_ns() >= spin_end) break;
    cpu_relax();
  }
  if (!how) {
    __atomic_add_fetch(&h->waiters, 1, __ATOMIC_SEQ_CST);
    for (;;) {
      uint32_t w = __atomic_load_n(&h->gate_word, __ATOMIC_SEQ_CST);  // before the checks
      if (__atomic_load_n(&h->granted_seq, __ATOMIC_SEQ_CST) >= seq) {
        how = 1;
        break;
      }
      if (__atomic_load_n(&h->mode, __ATOMIC_ACQUIRE) != HB_MODE_GATED) {
        how = 2;
        break;
      }
      int64_t now = now_ns(), g = grace_ns(h);
      int64_t beat = __atomic_load_n(&h->heartbeat_ns, __ATOMIC_ACQUIRE);
      if (now - beat > g) {
        heartbeat_lost(h);
        how = 2;
        break;
      }
      int64_t left = beat + g - now + 1000000;  // wake when it would go stale (+1 ms)
      if (left > 50000000) left = 50000000;     // and at least every 50 ms
      futex_wait(&h->gate_word, w, left);
    }
    __atomic_sub_fetch(&h->waiters, 1, __ATOMIC_SEQ_CST);
  }
  if (slot >= 0) __atomic_store_n(&G.pending[slot].seq, 0, __ATOMIC_RELEASE);
  p->flags |= HB_LF_HELD | (how == 2 ? HB_LF_UNGATED : 0);
  if (how == 2) __atomic_fetch_add(&h->ungated_launches, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&h->held_launches, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&h->held_ns, (uint64_t)(now_ns() - p->enq), __ATOMIC_RELAXED);
}

// ---------------------------------------------------------------- launch records
static inline void hb_before(const hb_call *c, hb_pre *p) {
  p->seq = 0;
  p->enq = 0;  // stays 0: hb_after records nothing
  p->flags = c->ptsz ? HB_LF_PTSZ : 0;
  if (UNLIKELY(!observing())) return;  // no segment (or HP quiet): nothing
  p->enq = p->issue = now_ns();
  if (!G.lp) return;  // HP: straight to the driver
  p->seq = __atomic_add_fetch(&G.h->next_seq, 1, __ATOMIC_ACQ_REL);
  if (capturing(c->stream)) {
    p->flags |= HB_LF_CAPTURED;  // recorded into a graph, not run now: its launch is gated
    __atomic_fetch_add(&G.h->captured_launches, 1, __ATOMIC_RELAXED);
    return;
  }
  gate(c, p);
  p->issue = now_ns();
}

// Diagnostic builds (benchmarks/hp_overhead_ab.py --diag N builds with CC="cc -DHB_DIAG=N"):
// what each part of observing an HP launch costs the program, taken out one at a time.
// The engine then sees no HP launches (1, 2) or no completions (3); never a normal build.
#ifndef HB_DIAG
#define HB_DIAG 0
#endif
#define HB_DIAG_NO_RECORD 1     // no ring index and no record
#define HB_DIAG_PRIVATE_RING 2  // the records go to a private ring that nobody reads
#define HB_DIAG_NO_WRITE 3      // no completion writes
#if HB_DIAG == HB_DIAG_PRIVATE_RING
static hb_launch g_diag_ring[HB_LAUNCH_CAP] __attribute__((aligned(64)));
static uint64_t g_diag_head;
#define HB_HP_RING g_diag_ring
#define HB_HP_HEAD g_diag_head
#else
#define HB_HP_RING G.launch
#define HB_HP_HEAD G.h->launch_head
#endif

// The launch record at ring index ``i`` (claimed by the caller), published last.
static inline void record_in(hb_launch *ring, uint64_t i, const hb_call *c, CUresult r,
                             const hb_pre *p, int64_t ret, uint16_t slot) {
  hb_launch *L = &ring[i & (HB_LAUNCH_CAP - 1)];
  __atomic_store_n(&L->pub, 0, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  L->seq = p->seq;
  L->func = c->func;
  L->stream = c->stream;
  L->enqueue_ns = p->enq;
  L->issue_ns = p->issue;
  L->return_ns = ret;
  memcpy(L->grid, c->grid, sizeof L->grid);
  memcpy(L->block, c->block, sizeof L->block);
  L->smem = c->smem;
  L->result = r;
  L->kind = c->kind;
  L->flags = p->flags;
  L->comp_slot = slot;
  L->tid = tid();
  L->slice_start = c->slice_start;
  L->slice_blocks = c->slice_blocks;
  L->slice_parts = c->slice_parts;
  if (c->slice_blocks) L->flags |= HB_LF_SLICE;
  __atomic_store_n(&L->pub, i + 1, __ATOMIC_RELEASE);
  // Take the next slot's two lines for writing now. The engine reads each record from
  // another core, leaving its lines shared; the next lap's stores into the slot would then
  // wait for invalidations, a stall paid at the program's next locked instruction
  // (+55-70 ns a launch, attach_python_cost.py --reader-us 100, CPU)
  const char *next = (const char *)&ring[(i + 1) & (HB_LAUNCH_CAP - 1)];
  prefetch_w(next);
  prefetch_w(next + 64);
}
static inline void record(uint64_t i, const hb_call *c, CUresult r, const hb_pre *p,
                          int64_t ret, uint16_t slot) {
  record_in(G.launch, i, c, r, p, ret, slot);
}

// HP: one clock read (hb_before), one locked instruction (the ring index, whose + 1 is the
// seq; each locked instruction is a full barrier that waits for the program's own pending
// stores: inside a Python program the interceptor's own time was 0.46 us a launch on an
// H100, measured) and the completion write, if due, only after the record is published:
// a record must never stay claimed across a driver call (a write blocked on a full queue
// would hide it, and every later one, from the engine, which gives a stalled record up
// after 100 ms). Its return time is its enqueue time: a driver call (a few us) early,
// which the engine's idle and burst rules (a millisecond) do not notice.
static inline void hp_after(const hb_call *c, CUresult r, hb_pre *p) {
  const int64_t ret = UNLIKELY(g_self_time) ? now_ns() : p->enq;
  hb_header *h = G.h;
  uint16_t slot = HB_COMP_NONE;
  uint32_t st = HB_COMP_OFF;
  int write = 0;
  if (r == 0) {
    if (UNLIKELY(capturing(c->stream))) {
      p->flags |= HB_LF_CAPTURED;
      __atomic_fetch_add(&h->captured_launches, 1, __ATOMIC_RELAXED);
    } else if (!g_no_comp && (st = comp_ready()) != HB_COMP_OFF) {
      slot = comp_slot(c->stream, 1);
      // graph launches always get their own write: a graph is long GPU work launched
      // back to back (a request of 4 replays was seen done after the first, measured)
      write = write_due(slot, ret) || c->kind == HB_KIND_GRAPH;
      if (!write) p->flags |= HB_LF_COALESCED;
    }
  }
  if (slot == HB_COMP_NONE) p->flags |= HB_LF_NO_SLOT;
#if HB_DIAG == HB_DIAG_NO_WRITE
  write = 0;
#endif
#if HB_DIAG == HB_DIAG_NO_RECORD
  static uint64_t n;
  uint64_t i = n++;
#else
  uint64_t i = __atomic_fetch_add(&HB_HP_HEAD, 1, __ATOMIC_RELAXED);
#endif
  p->seq = i + 1;
  if (slot != HB_COMP_NONE) raise_u64(&g_slot[slot].seq, p->seq);
#if HB_DIAG != HB_DIAG_NO_RECORD
  record_in(HB_HP_RING, i, c, r, p, ret, slot);
#endif
  // (a write that fails leaves the record naming a counter that will not reach its seq:
  // the next write or a sync on the stream covers it)
  if (write) comp_write(st, c->stream, slot, p->seq);
  if (UNLIKELY(g_self_time)) {  // after the driver call (hb_before is one clock read)
    // plain adds, no locked instruction (which would wait for the record's stores and
    // cost the program more than what it measures): threads launching at once may lose
    // one another's additions
    const uint64_t d = (uint64_t)(now_ns() - ret);
    __atomic_store_n(&g_self_ns, __atomic_load_n(&g_self_ns, __ATOMIC_RELAXED) + d,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&g_self_launches, __atomic_load_n(&g_self_launches, __ATOMIC_RELAXED) + 1,
                     __ATOMIC_RELAXED);
  }
}

static inline void hb_after(const hb_call *c, CUresult r, hb_pre *p) {
  if (UNLIKELY(!p->enq)) return;  // hb_before did nothing
  if (!G.lp) {
    hp_after(c, r, p);
    return;
  }
  // LP: its seq was taken before the gate; a write for every launch that ran
  const int64_t ret = now_ns();
  uint16_t slot = HB_COMP_NONE;
  if (r == 0 && !(p->flags & HB_LF_CAPTURED) && !g_no_comp) slot = complete(c->stream, p->seq);
  if (slot == HB_COMP_NONE) p->flags |= HB_LF_NO_SLOT;
  record(__atomic_fetch_add(&G.h->launch_head, 1, __ATOMIC_RELAXED), c, r, p, ret, slot);
}

// ---------------------------------------------------------------- request markers
// The C API for explicit HP request boundaries (Python: hbtui.request()). A marker is a
// launch-ring record of kind REQ_BEGIN/REQ_END with its own seq and no GPU work: the
// engine closes the request once every launch recorded before the end marker completed.
// Outside hbtui run (no segment) both are no-ops; cost: one clock read and one record.
static void mark(uint8_t kind) {
  if (!observing()) return;
  hb_call c = {0, 0, {0, 0, 0}, {0, 0, 0}, 0, kind, 0};
  hb_pre p = {0, now_ns(), 0, HB_LF_NO_SLOT};
  p.issue = p.enq;
  hb_header *h = G.h;
  uint64_t i;
  if (G.lp) {  // (seqs as the LP's launches take them)
    p.seq = __atomic_add_fetch(&h->next_seq, 1, __ATOMIC_ACQ_REL);
    i = __atomic_fetch_add(&h->launch_head, 1, __ATOMIC_RELAXED);
  } else {  // HP: the ring index, as its launches (hb_after)
    i = __atomic_fetch_add(&h->launch_head, 1, __ATOMIC_RELAXED);
    p.seq = i + 1;
  }
  record(i, &c, 0, &p, p.enq, HB_COMP_NONE);
}

// 1: quiet, 0: observed again. Returns the previous state, or -1 (nothing changed) in an
// LP program, whose launches are never let go ungated, or outside hbtui run. Switch it
// between requests only: a request marked (or launched) half quiet leaves the engine an
// unpaired marker or an unconfirmed coalesced tail (it then falls back on its timeouts).
HB_EXPORT int hbtui_set_quiet(int on) {
  if (!__atomic_load_n(&g_on, __ATOMIC_ACQUIRE) || G.lp) return -1;
  return __atomic_exchange_n(&g_quiet, on ? 1 : 0, __ATOMIC_ACQ_REL);
}

// HBTUI_SELF_TIME=1: ns of the interceptor's own work in observed launches so far, and
// how many launches that was (*n, may be NULL). 0 when the variable is not set.
HB_EXPORT uint64_t hbtui_self_ns(uint64_t *n) {
  if (n) *n = __atomic_load_n(&g_self_launches, __ATOMIC_RELAXED);
  return __atomic_load_n(&g_self_ns, __ATOMIC_RELAXED);
}

HB_EXPORT void hbtui_request_begin(void) { mark(HB_KIND_REQ_BEGIN); }
HB_EXPORT void hbtui_request_end(void) { mark(HB_KIND_REQ_END); }

// ---------------------------------------------------------------- NVTX ranges as markers
// NVTX's tool-injection hook: an annotated program (torch.cuda.nvtx.range_push, the nvtx
// package, C/C++ NVTX v3) loads the library named by NVTX_INJECTION64_PATH (hbtui run
// points it here for HP programs) and calls InitializeInjectionNvtx2, which fills the
// core module's function slots with ours. A top-level range of a thread (push at depth
// 0, or a start/end range) whose message is HBTUI_NVTX_RANGE (any message when unset)
// is one request. The types follow NVTX v3's nvtxDetail/nvtxTypes.h (binary ABI).
typedef void (*nvtx_fn)(void);
typedef int (*nvtx_get_table_t)(int module, nvtx_fn ***out_table, unsigned *out_size);
typedef struct {
  size_t struct_size;
  nvtx_get_table_t get_module_function_table;
} nvtx_callbacks;
typedef const void *(*nvtx_export_t)(uint32_t id);
enum { NVTX_MODULE_CORE = 1, NVTX_ETID_CALLBACKS = 1, NVTX_MSG_ASCII = 1 };
enum { CB_START_EX = 4, CB_START_A = 5, CB_END = 7, CB_PUSH_EX = 8, CB_PUSH_A = 9, CB_POP = 11 };

static const char *g_nvtx_name;   // HBTUI_NVTX_RANGE, or NULL: every top-level range
static __thread int t_depth;      // push/pop nesting of this thread
static __thread int t_req_depth;  // 1: the current top-level push range is a request
static uint64_t g_range_ids;      // start/end ranges: ids we hand out (odd = a request)

static int nvtx_match(const char *msg) {
  return !g_nvtx_name || (msg && strcmp(msg, g_nvtx_name) == 0);
}

static const char *nvtx_attr_msg(const void *attr) {  // nvtxEventAttributes_t, v3 layout
  if (!attr) return NULL;
  const char *a = attr;
  int32_t type;
  const char *msg;
  memcpy(&type, a + 32, sizeof type);
  memcpy(&msg, a + 40, sizeof msg);
  return type == NVTX_MSG_ASCII ? msg : NULL;
}

static int nvtx_push(const char *msg) {
  if (t_depth == 0 && nvtx_match(msg)) {
    t_req_depth = 1;
    mark(HB_KIND_REQ_BEGIN);
  }
  return t_depth++;
}
static int nvtx_push_a(const char *msg) { return nvtx_push(msg); }
static int nvtx_push_ex(const void *attr) { return nvtx_push(nvtx_attr_msg(attr)); }
static int nvtx_pop(void) {
  if (t_depth <= 0) return -1;
  if (--t_depth == 0 && t_req_depth) {
    t_req_depth = 0;
    mark(HB_KIND_REQ_END);
  }
  return t_depth;
}
static uint64_t nvtx_start(const char *msg) {
  uint64_t id = __atomic_add_fetch(&g_range_ids, 2, __ATOMIC_RELAXED);
  if (nvtx_match(msg)) {
    mark(HB_KIND_REQ_BEGIN);
    return id | 1;
  }
  return id;
}
static uint64_t nvtx_start_a(const char *msg) { return nvtx_start(msg); }
static uint64_t nvtx_start_ex(const void *attr) { return nvtx_start(nvtx_attr_msg(attr)); }
static void nvtx_end(uint64_t id) {
  if (id & 1) mark(HB_KIND_REQ_END);
}

HB_EXPORT int InitializeInjectionNvtx2(nvtx_export_t get_export_table) {
  const nvtx_callbacks *cb = get_export_table ? get_export_table(NVTX_ETID_CALLBACKS) : NULL;
  nvtx_fn **table = NULL;
  unsigned size = 0;
  if (!cb || cb->struct_size < sizeof *cb || !cb->get_module_function_table ||
      !cb->get_module_function_table(NVTX_MODULE_CORE, &table, &size) || !table)
    return 0;
  const char *name = getenv("HBTUI_NVTX_RANGE");
  g_nvtx_name = name && *name ? strdup(name) : NULL;
  struct {
    unsigned id;
    nvtx_fn fn;
  } slots[] = {{CB_START_EX, (nvtx_fn)nvtx_start_ex}, {CB_START_A, (nvtx_fn)nvtx_start_a},
               {CB_END, (nvtx_fn)nvtx_end},           {CB_PUSH_EX, (nvtx_fn)nvtx_push_ex},
               {CB_PUSH_A, (nvtx_fn)nvtx_push_a},     {CB_POP, (nvtx_fn)nvtx_pop}};
  for (size_t i = 0; i < sizeof slots / sizeof *slots; i++)
    if (slots[i].id < size && table[slots[i].id]) *table[slots[i].id] = slots[i].fn;
  return 1;
}

#define PTX_SAVE_MAX (16u << 20)

// A whole file (at most `max` bytes) in a malloc'd buffer with a NUL after it, or NULL.
static char *read_whole(const char *path, int flags, size_t max) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
  if (fd < 0) return NULL;
  struct stat st;
  char *buf = NULL;
  size_t got = 0;
  if (fstat(fd, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size <= max)
    buf = malloc((size_t)st.st_size + 1);
  while (buf && got < (size_t)st.st_size) {
    ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
    if (k > 0) got += (size_t)k;
    else if (k < 0 && errno == EINTR) continue;
    else break;
  }
  close(fd);
  if (buf && got != (size_t)st.st_size) {
    free(buf);
    return NULL;
  }
  if (buf) buf[got] = 0;
  return buf;
}

#include "intercept_slices.h"

// ---------------------------------------------------------------- launch wrappers
#define KERNEL_CALL(KIND, PTSZ)                                                           \
  hb_call c = {(uint64_t)(uintptr_t)f, (uint64_t)(uintptr_t)s, {gx, gy, gz}, {bx, by, bz}, \
               smem, KIND, PTSZ};                                                         \
  if ((PTSZ) && !s) c.stream = CU_STREAM_PER_THREAD;                                      \
  hb_pre pre;                                                                             \
  hb_before(&c, &pre)

#define KERNEL_ARGS                                                                     \
  CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,        \
      unsigned bz, unsigned smem, CUstream s, void **params

static inline CUresult launch_kernel(int hook, int ptsz, KERNEL_ARGS, void **ex) {
  launch_t fn = (launch_t)real(hook);
  if (UNLIKELY(!fn)) return missing(hook);
  hb_call c = {(uint64_t)(uintptr_t)f, (uint64_t)(uintptr_t)s, {gx, gy, gz}, {bx, by, bz},
               smem, HB_KIND_KERNEL, (uint8_t)ptsz, 0, 0, 0};
  if (ptsz && !s) c.stream = CU_STREAM_PER_THREAD;
  CUresult r;
  if (G.lp && __atomic_load_n(&g_on, __ATOMIC_RELAXED) &&
      launch_sliced(&c, f, s, params, ex, (void *)fn, NULL, &r))
    return r;
  hb_pre pre;
  hb_before(&c, &pre);
  r = fn(f, gx, gy, gz, bx, by, bz, smem, s, params, ex);
  hb_after(&c, r, &pre);
  return r;
}

HB_EXPORT CUresult cuLaunchKernel(KERNEL_ARGS, void **ex) {
  return launch_kernel(H_LAUNCH, 0, f, gx, gy, gz, bx, by, bz, smem, s, params, ex);
}
HB_EXPORT CUresult cuLaunchKernel_ptsz(KERNEL_ARGS, void **ex) {
  return launch_kernel(H_LAUNCH_PTSZ, 1, f, gx, gy, gz, bx, by, bz, smem, s, params, ex);
}

static inline CUresult launch_coop(int hook, int ptsz, KERNEL_ARGS) {
  coop_t fn = (coop_t)real(hook);
  if (UNLIKELY(!fn)) return missing(hook);
  KERNEL_CALL(HB_KIND_COOP, ptsz);
  CUresult r = fn(f, gx, gy, gz, bx, by, bz, smem, s, params);
  hb_after(&c, r, &pre);
  return r;
}

HB_EXPORT CUresult cuLaunchCooperativeKernel(KERNEL_ARGS) {
  return launch_coop(H_COOP, 0, f, gx, gy, gz, bx, by, bz, smem, s, params);
}
HB_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(KERNEL_ARGS) {
  return launch_coop(H_COOP_PTSZ, 1, f, gx, gy, gz, bx, by, bz, smem, s, params);
}

static inline CUresult launch_ex(int hook, int ptsz, const hb_cu_launch_config *cfg,
                                 CUfunction f, void **params, void **ex) {
  launch_ex_t fn = (launch_ex_t)real(hook);
  if (UNLIKELY(!fn)) return missing(hook);
  if (!cfg) return fn(cfg, f, params, ex);  // the driver reports the error
  hb_call c = {(uint64_t)(uintptr_t)f, (uint64_t)(uintptr_t)cfg->stream,
               {cfg->gx, cfg->gy, cfg->gz}, {cfg->bx, cfg->by, cfg->bz}, cfg->smem,
               HB_KIND_KERNEL_EX, (uint8_t)ptsz};
  if (ptsz && !cfg->stream) c.stream = CU_STREAM_PER_THREAD;
  CUresult r;
  if (G.lp && __atomic_load_n(&g_on, __ATOMIC_RELAXED) &&
      launch_sliced(&c, f, cfg->stream, params, ex, (void *)fn, cfg, &r))
    return r;
  hb_pre pre;
  hb_before(&c, &pre);
  r = fn(cfg, f, params, ex);
  hb_after(&c, r, &pre);
  return r;
}

HB_EXPORT CUresult cuLaunchKernelEx(const hb_cu_launch_config *cfg, CUfunction f,
                                    void **params, void **ex) {
  return launch_ex(H_LAUNCH_EX, 0, cfg, f, params, ex);
}
HB_EXPORT CUresult cuLaunchKernelEx_ptsz(const hb_cu_launch_config *cfg, CUfunction f,
                                         void **params, void **ex) {
  return launch_ex(H_LAUNCH_EX_PTSZ, 1, cfg, f, params, ex);
}

static inline CUresult graph_launch(int hook, int ptsz, CUgraphExec g, CUstream s) {
  graph_t fn = (graph_t)real(hook);
  if (UNLIKELY(!fn)) return missing(hook);
  hb_call c = {(uint64_t)(uintptr_t)g, (uint64_t)(uintptr_t)s, {0, 0, 0}, {0, 0, 0}, 0,
               HB_KIND_GRAPH, (uint8_t)ptsz};
  if (ptsz && !s) c.stream = CU_STREAM_PER_THREAD;
  hb_pre pre;
  hb_before(&c, &pre);
  CUresult r = fn(g, s);
  hb_after(&c, r, &pre);
  return r;
}

HB_EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s) {
  return graph_launch(H_GRAPH, 0, g, s);
}
HB_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) {
  return graph_launch(H_GRAPH_PTSZ, 1, g, s);
}

// ---------------------------------------------------------------- stream capture
static void capture_begun(CUresult r) {
  if (r == 0) __atomic_add_fetch(&g_captures, 1, __ATOMIC_RELAXED);
}

HB_EXPORT CUresult cuStreamBeginCapture(CUstream s) {
  cap1_t fn = (cap1_t)real(H_CAP);
  if (!fn) return missing(H_CAP);
  CUresult r = fn(s);
  capture_begun(r);
  return r;
}
HB_EXPORT CUresult cuStreamBeginCapture_ptsz(CUstream s) {
  cap1_t fn = (cap1_t)real(H_CAP_PTSZ);
  if (!fn) return missing(H_CAP_PTSZ);
  CUresult r = fn(s);
  capture_begun(r);
  return r;
}
HB_EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, int mode) {
  cap2_t fn = (cap2_t)real(H_CAP2);
  if (!fn) return missing(H_CAP2);
  CUresult r = fn(s, mode);
  capture_begun(r);
  return r;
}
HB_EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, int mode) {
  cap2_t fn = (cap2_t)real(H_CAP2_PTSZ);
  if (!fn) return missing(H_CAP2_PTSZ);
  CUresult r = fn(s, mode);
  capture_begun(r);
  return r;
}

static CUresult capture_end(int hook, CUstream s, void **graph) {
  cap_end_t fn = (cap_end_t)real(hook);
  if (!fn) return missing(hook);
  CUresult r = fn(s, graph);
  int cur = __atomic_load_n(&g_captures, __ATOMIC_RELAXED);
  while (cur > 0 && !__atomic_compare_exchange_n(&g_captures, &cur, cur - 1, 1, __ATOMIC_RELAXED,
                                                 __ATOMIC_RELAXED)) {
  }
  return r;
}
HB_EXPORT CUresult cuStreamEndCapture(CUstream s, void **graph) {
  return capture_end(H_CAP_END, s, graph);
}
HB_EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, void **graph) {
  return capture_end(H_CAP_END_PTSZ, s, graph);
}

// ---------------------------------------------------------------- synchronisations
typedef CUresult (*ssync_t)(CUstream);
typedef CUresult (*csync_t)(void);

static CUresult stream_sync(int hook, int ptsz, CUstream s) {
  ssync_t fn = (ssync_t)real(hook);
  if (UNLIKELY(!fn)) return missing(hook);
  hb_sync_snap sn;
  int snap = sync_snapshot(&sn, 0, ptsz && !s ? CU_STREAM_PER_THREAD : (uint64_t)(uintptr_t)s);
  CUresult r = fn(s);
  if (snap) synced(&sn, r == 0);
  return r;
}
HB_EXPORT CUresult cuStreamSynchronize(CUstream s) { return stream_sync(H_SSYNC, 0, s); }
HB_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s) {
  return stream_sync(H_SSYNC_PTSZ, 1, s);
}
HB_EXPORT CUresult cuCtxSynchronize(void) {
  csync_t fn = (csync_t)real(H_CSYNC);
  if (UNLIKELY(!fn)) return missing(H_CSYNC);
  hb_sync_snap sn;  // (2 KB of stack; the current context's work only is waited for, but
  int snap = sync_snapshot(&sn, 1, 0);  // slots are not per context: a documented limit)
  CUresult r = fn();
  if (snap) synced(&sn, r == 0);
  return r;
}

// CUDA 13's cuCtxSynchronize_v2(ctx): what the CUDA 13 runtime's cudaDeviceSynchronize
// (torch.cuda.synchronize) calls, got through cuGetProcAddress("cuCtxSynchronize", 13000);
// unwrapped, a program's context syncs go unseen and a coalesced tail on a stream it never
// syncs alone stays unconfirmed. Taken as a context sync (like cuCtxSynchronize, slots are
// not per context) only for NULL or the calling thread's current context; another
// context's sync confirms nothing.
typedef CUresult (*csync2_t)(CUcontext);
typedef CUresult (*ctx_current_t)(CUcontext *);
static int is_current_ctx(CUcontext ctx) {
  if (!ctx) return 1;
  ctx_current_t f = (ctx_current_t)extra(R_CTX_GET_CURRENT);
  CUcontext cur = NULL;
  return f && f(&cur) == 0 && cur == ctx;
}
HB_EXPORT CUresult cuCtxSynchronize_v2(CUcontext ctx) {
  csync2_t fn = (csync2_t)real(H_CSYNC2);
  if (UNLIKELY(!fn)) return missing(H_CSYNC2);
  hb_sync_snap sn;
  int snap = observing() && is_current_ctx(ctx) && sync_snapshot(&sn, 1, 0);
  CUresult r = fn(ctx);
  if (snap) synced(&sn, r == 0);
  return r;
}

// ---------------------------------------------------------------- modules and names
// Process-local map handle -> (image hash, kernel name), for the function records.
#define MOD_TABLE 8192u
static struct {
  uint64_t key, hash;
  char *name;  // CUkernel entries: the kernel's name
} g_mods[MOD_TABLE];
static pthread_mutex_t g_mods_lock = PTHREAD_MUTEX_INITIALIZER;

static void locks_prepare(void) {  // no path holds two of them at once: any order
  pthread_mutex_lock(&g_smod_lock);   // (a variant load in progress finishes first)
  pthread_mutex_lock(&g_slice_lock);
  pthread_mutex_lock(&g_mods_lock);
}

static void locks_release(void) {
  pthread_mutex_unlock(&g_mods_lock);
  pthread_mutex_unlock(&g_slice_lock);
  pthread_mutex_unlock(&g_smod_lock);
}

static uint32_t mod_index(uint64_t key) {
  return (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 51) & (MOD_TABLE - 1);
}

static void mod_put(uint64_t key, uint64_t hash, const char *name) {
  if (!key) return;
  pthread_mutex_lock(&g_mods_lock);
  for (uint32_t n = 0, i = mod_index(key); n < MOD_TABLE; n++, i = (i + 1) & (MOD_TABLE - 1)) {
    if (g_mods[i].key == key || g_mods[i].key == 0) {
      g_mods[i].key = key;
      g_mods[i].hash = hash;
      if (name && !g_mods[i].name) g_mods[i].name = strdup(name);
      break;
    }
  }
  pthread_mutex_unlock(&g_mods_lock);
}

static uint64_t mod_get(uint64_t key, char *name, size_t cap) {
  uint64_t hash = 0;
  pthread_mutex_lock(&g_mods_lock);
  for (uint32_t n = 0, i = mod_index(key); key && n < MOD_TABLE; n++, i = (i + 1) & (MOD_TABLE - 1)) {
    if (g_mods[i].key == 0) break;
    if (g_mods[i].key == key) {
      hash = g_mods[i].hash;
      if (name && g_mods[i].name) snprintf(name, cap, "%s", g_mods[i].name);
      break;
    }
  }
  pthread_mutex_unlock(&g_mods_lock);
  return hash;
}

// Bytes of a module image: ELF (cubin), fatbin (or its wrapper) or NUL-terminated PTX.
static const void *image_bytes(const void *img, uint64_t *size, uint32_t *kind) {
  const unsigned char *p = img;
  uint32_t magic;
  memcpy(&magic, p, 4);
  if (magic == 0x464c457fu) {  // "\x7fELF": section headers end the file
    uint64_t shoff, phoff;
    uint16_t shentsize, shnum, phentsize, phnum;
    memcpy(&phoff, p + 0x20, 8);
    memcpy(&shoff, p + 0x28, 8);
    memcpy(&phentsize, p + 0x36, 2);
    memcpy(&phnum, p + 0x38, 2);
    memcpy(&shentsize, p + 0x3A, 2);
    memcpy(&shnum, p + 0x3C, 2);
    uint64_t a = shoff + (uint64_t)shentsize * shnum, b = phoff + (uint64_t)phentsize * phnum;
    *size = a > b ? a : b;
    *kind = HB_IMG_CUBIN;
    return p;
  }
  if (magic == 0xBA55ED50u) {  // fatbin header: magic, version u16, header size u16, size u64
    uint16_t hsize;
    uint64_t fsize;
    memcpy(&hsize, p + 6, 2);
    memcpy(&fsize, p + 8, 8);
    *size = hsize + fsize;
    *kind = HB_IMG_FATBIN;
    return p;
  }
  if (magic == 0x466243b1u) {  // __fatBinC_Wrapper_t {magic, version, data, filename}
    const void *data;
    memcpy(&data, p + 8, sizeof data);
    if (data) return image_bytes(data, size, kind);
    *size = 0;
    *kind = HB_IMG_FATBIN;
    return NULL;
  }
  *size = strnlen((const char *)p, (size_t)1 << 30) + 1;
  *kind = HB_IMG_PTX;
  return p;
}

#define PUBLISH(ring, cap, head, rec_expr)                               \
  do {                                                                   \
    uint64_t i_ = __atomic_fetch_add(&G.h->head, 1, __ATOMIC_RELAXED);   \
    __typeof__(&G.ring[0]) R = &G.ring[i_ & ((cap) - 1)];                \
    __atomic_store_n(&R->pub, 0, __ATOMIC_RELAXED);                      \
    __atomic_thread_fence(__ATOMIC_RELEASE);                             \
    rec_expr;                                                            \
    __atomic_store_n(&R->pub, i_ + 1, __ATOMIC_RELEASE);                 \
  } while (0)

// LP: write a PTX image (n bytes, without its NUL) or a fat binary once to
// g_moddir/<hash>.ptx|.fatbin for the engine's slicer. Module loads are rare and this
// runs in the loading thread, after the real load: no allocation, the file appears whole
// (O_EXCL temp file + rename) or not at all, an existing file is kept, and any failure
// only counts ptx_save_errors.
static void save_image(const char *text, uint64_t n, uint64_t hash, const char *ext) {
  static uint32_t seq;
  char path[PATH_MAX], tmp[PATH_MAX];
  struct stat st;
  if (n == 0 || n > PTX_SAVE_MAX) return;
  snprintf(path, sizeof path, "%s/%016llx.%s", g_moddir, (unsigned long long)hash, ext);
  if (stat(path, &st) == 0) return;  // another run (or process) wrote it already
  snprintf(tmp, sizeof tmp, "%s/.%016llx.%d.%u.tmp", g_moddir, (unsigned long long)hash,
           (int)getpid(), __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  int ok = fd >= 0;
  for (uint64_t off = 0; ok && off < n;) {
    ssize_t w = write(fd, text + off, (size_t)(n - off));
    if (w > 0) off += (uint64_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else ok = 0;
  }
  if (fd >= 0 && close(fd) != 0) ok = 0;
  if (ok && rename(tmp, path) != 0) ok = 0;
  if (!ok && fd >= 0) unlink(tmp);
  __atomic_add_fetch(ok ? &G.h->ptx_saved : &G.h->ptx_save_errors, 1, __ATOMIC_RELAXED);
}

// LP: the device's compute capability, once (a context is current at a module load), for
// the slicer's choice among a fat binary's PTX entries.
static void note_device_cc(void) {
  static int done;
  if (!G.lp || __atomic_exchange_n(&done, 1, __ATOMIC_ACQ_REL)) return;
  ctx_get_device_t getdev = (ctx_get_device_t)extra(R_CTX_GET_DEVICE);
  dev_attr_t attr = (dev_attr_t)extra(R_DEV_ATTR);
  int dev = 0, major = 0, minor = 0;
  if (getdev && attr && !getdev(&dev) &&
      !attr(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev) &&
      !attr(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
    __atomic_store_n(&G.h->device_cc, (uint32_t)(major * 10 + minor), __ATOMIC_RELAXED);
}

static void record_module(uint32_t api, CUresult r, void *handle, const void *image) {
  if (!__atomic_load_n(&g_on, __ATOMIC_ACQUIRE)) return;
  if (r == 0) note_device_cc();
  uint64_t size = 0, hash = 0;
  uint32_t kind = HB_IMG_UNKNOWN;
  if (r == 0 && image) {
    const void *bytes = image_bytes(image, &size, &kind);
    if (bytes) hash = hash64(bytes, size);
    mod_put((uint64_t)(uintptr_t)handle, hash, NULL);
    if ((kind == HB_IMG_PTX || kind == HB_IMG_FATBIN) && g_moddir[0] && bytes) {
      int saved_errno = errno;  // the program never sees our file work
      if (kind == HB_IMG_PTX) save_image(bytes, size - 1, hash, "ptx");
      else save_image(bytes, size, hash, "fatbin");
      errno = saved_errno;
    }
  }
  int64_t t = now_ns();
  PUBLISH(module, HB_MODULE_CAP, module_head, {
    R->module = (uint64_t)(uintptr_t)handle;
    R->hash = hash;
    R->size = size;
    R->ns = t;
    R->api = api;
    R->image_kind = kind;
    R->result = r;
    R->tid = tid();
  });
}

static void record_func(uint32_t api, CUresult r, void *func, void *module, const char *name) {
  if (!__atomic_load_n(&g_on, __ATOMIC_ACQUIRE)) return;
  char kname[HB_NAME_MAX] = "";
  uint64_t mkey = (uint64_t)(uintptr_t)module;
  uint64_t mhash = mod_get(mkey, api == HB_API_KERNEL_GET_FUNCTION ? kname : NULL, sizeof kname);
  if (api == HB_API_KERNEL_GET_FUNCTION) name = kname;
  if (api == HB_API_LIBRARY_GET_KERNEL && r == 0) mod_put((uint64_t)(uintptr_t)func, mhash, name);
  size_t len = name ? strlen(name) : 0;
  uint64_t nhash = name ? hash64(name, len) : 0;
  if (r == 0 && api != HB_API_LIBRARY_GET_KERNEL)  // CUfunctions only (CUkernel: a handle)
    slice_note_func((uint64_t)(uintptr_t)func, mhash, nhash);
  int64_t t = now_ns();
  PUBLISH(func, HB_FUNC_CAP, func_head, {
    R->func = (uint64_t)(uintptr_t)func;
    R->module = mkey;
    R->module_hash = mhash;
    R->name_hash = nhash;
    R->ns = t;
    R->api = api;
    R->result = r;
    R->name_len = (uint32_t)len;
    size_t k = len < HB_NAME_MAX - 1 ? len : HB_NAME_MAX - 1;
    if (k) memcpy(R->name, name, k);
    R->name[k] = 0;
  });
}

HB_EXPORT CUresult cuModuleLoadData(CUmodule *m, const void *image) {
  mod_load_t fn = (mod_load_t)real(H_MOD_LOAD);
  if (!fn) return missing(H_MOD_LOAD);
  CUresult r = fn(m, image);
  record_module(HB_API_MODULE_LOAD_DATA, r, r == 0 && m ? *m : NULL, image);
  return r;
}

// cuModuleLoad(path): PyTorch's Inductor loads Triton cubins this way (its static CUDA
// launcher); the file is read after the real load and hashed like an image.
HB_EXPORT CUresult cuModuleLoad(CUmodule *m, const char *path) {
  mod_load_file_t fn = (mod_load_file_t)real(H_MOD_LOAD_FILE);
  if (!fn) return missing(H_MOD_LOAD_FILE);
  CUresult r = fn(m, path);
  if (r != 0 || !path || !__atomic_load_n(&g_on, __ATOMIC_ACQUIRE)) {
    record_module(HB_API_MODULE_LOAD, r, r == 0 && m ? *m : NULL, NULL);
    return r;
  }
  int saved_errno = errno;
  char *buf = read_whole(path, 0, 256u << 20);  // (its NUL ends a PTX file's text)
  record_module(HB_API_MODULE_LOAD, r, *m, buf);
  free(buf);
  errno = saved_errno;
  return r;
}

HB_EXPORT CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned n, void *opts,
                                      void **vals) {
  mod_load_ex_t fn = (mod_load_ex_t)real(H_MOD_LOAD_EX);
  if (!fn) return missing(H_MOD_LOAD_EX);
  CUresult r = fn(m, image, n, opts, vals);
  record_module(HB_API_MODULE_LOAD_DATA_EX, r, r == 0 && m ? *m : NULL, image);
  return r;
}

HB_EXPORT CUresult cuModuleLoadFatBinary(CUmodule *m, const void *fat) {
  mod_load_t fn = (mod_load_t)real(H_MOD_FAT);
  if (!fn) return missing(H_MOD_FAT);
  CUresult r = fn(m, fat);
  record_module(HB_API_MODULE_LOAD_FATBIN, r, r == 0 && m ? *m : NULL, fat);
  return r;
}

HB_EXPORT CUresult cuLibraryLoadData(CUlibrary *lib, const void *code, void *jo, void **jv,
                                     unsigned nj, void *lo, void **lv, unsigned nl) {
  lib_load_t fn = (lib_load_t)real(H_LIB_LOAD);
  if (!fn) return missing(H_LIB_LOAD);
  CUresult r = fn(lib, code, jo, jv, nj, lo, lv, nl);
  record_module(HB_API_LIBRARY_LOAD_DATA, r, r == 0 && lib ? *lib : NULL, code);
  return r;
}

HB_EXPORT CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
  get_func_t fn = (get_func_t)real(H_MOD_GETF);
  if (!fn) return missing(H_MOD_GETF);
  CUresult r = fn(f, m, name);
  record_func(HB_API_MODULE_GET_FUNCTION, r, r == 0 && f ? *f : NULL, m, name);
  return r;
}

HB_EXPORT CUresult cuLibraryGetKernel(CUkernel *k, CUlibrary lib, const char *name) {
  get_kernel_t fn = (get_kernel_t)real(H_LIB_GETK);
  if (!fn) return missing(H_LIB_GETK);
  CUresult r = fn(k, lib, name);
  record_func(HB_API_LIBRARY_GET_KERNEL, r, r == 0 && k ? *k : NULL, lib, name);
  return r;
}

HB_EXPORT CUresult cuKernelGetFunction(CUfunction *f, CUkernel k) {
  kern_func_t fn = (kern_func_t)real(H_KERN_GETF);
  if (!fn) return missing(H_KERN_GETF);
  CUresult r = fn(f, k);
  record_func(HB_API_KERNEL_GET_FUNCTION, r, r == 0 && f ? *f : NULL, k, NULL);
  return r;
}

// ---------------------------------------------------------------- entry-point lookup
static int hook_by_name(const char *name) {
  for (int i = 0; i < H_COUNT; i++)
    if (strcmp(name, hook_name[i]) == 0) return i;
  return -1;
}

// The wrapper for an entry point `p` the driver returned for `sym`, or `p` itself.
static void *substitute(const char *sym, void *p, int ver, uint64_t flags) {
  if (!sym || sym[0] != 'c' || sym[1] != 'u' || !p) return p;
  for (int i = 0; i < H_COUNT; i++)  // exactly one of the functions we wrap
    if (real(i) == p) return hook_fn[i];
  for (int i = 0; i < H_COUNT; i++)
    if (p == hook_fn[i]) return p;
  // Not an exported function. cuCtxSynchronize's ABI changed at 13.0 (a context argument):
  // the version asked for says which one this is.
  if (strcmp(sym, "cuCtxSynchronize") == 0) return hook_fn[ver >= 13000 ? H_CSYNC2 : H_CSYNC];
  // Otherwise wrap by name where the ABI never changed.
  char name[96];
  snprintf(name, sizeof name, "%s%s", sym,
           (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ? "_ptsz" : "");
  int i = hook_by_name(name);
  if (i < 0) i = hook_by_name(sym);
  if (i >= 0 && hook_stable[i]) return hook_fn[i];
  if (strncmp(sym, "cuStreamBeginCapture", 20) == 0)  // unseen capture: always ask
    __atomic_store_n(&g_captures, 1 << 30, __ATOMIC_RELAXED);
  return p;
}

HB_EXPORT CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags) {
  gpa1_t fn = (gpa1_t)real(H_GPA);
  if (!fn) return missing(H_GPA);
  CUresult r = fn(sym, pfn, ver, flags);
  if (r == 0 && pfn) *pfn = substitute(sym, *pfn, ver, flags);
  return r;
}

HB_EXPORT CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags,
                                       int *status) {
  gpa2_t fn = (gpa2_t)real(H_GPA2);
  if (!fn) return missing(H_GPA2);
  CUresult r = fn(sym, pfn, ver, flags, status);
  if (r == 0 && pfn) *pfn = substitute(sym, *pfn, ver, flags);
  return r;
}

// dlsym(RTLD_NEXT, ...) asked by the program: the real one would search after *this*
// library (its caller), so search the link map after the caller's object instead.
static void *next_after(const void *caller, const char *name) {
  Dl_info ci;
  struct link_map *cm = NULL;
  if (!dladdr1(caller, &ci, (void **)&cm, RTLD_DL_LINKMAP) || !cm)
    return real_dlsym(RTLD_NEXT, name);
  for (struct link_map *l = cm->l_next; l; l = l->l_next) {
    if (!l->l_name || !l->l_name[0]) continue;  // the vDSO and the like: not dlopen-able
    void *h = dlopen(l->l_name, RTLD_LAZY | RTLD_NOLOAD);  // a real handle of a loaded object
    if (!h) continue;
    void *p = real_dlsym(h, name);
    dlclose(h);
    Dl_info pi;
    struct link_map *pm = NULL;
    if (p && dladdr1(p, &pi, (void **)&pm, RTLD_DL_LINKMAP) && pm == l) return p;  // in l itself
  }
  return NULL;
}

HB_EXPORT void *dlsym(void *restrict handle, const char *restrict name) {
  void *p = handle == RTLD_NEXT ? next_after(__builtin_return_address(0), name)
                                : real_dlsym(handle, name);
  if (p && name[0] == 'c' && name[1] == 'u') {
    int i = hook_by_name(name);
    if (i >= 0 && p != hook_fn[i]) {
      Dl_info info;
      if (cuda_handle() && dladdr(p, &info) &&
          info.dli_fbase == __atomic_load_n(&g_cuda_base, __ATOMIC_ACQUIRE))
        return hook_fn[i];
    }
  }
  return p;
}

#define X_ADDR(id, sym, stable) [id] = (void *)&sym,
static void *hook_fn[H_COUNT] = {HB_HOOKS(X_ADDR)};
