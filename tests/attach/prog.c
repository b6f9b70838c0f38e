// A CUDA "program" for the interceptor tests: it reaches the (fake) driver the way real
// stacks do and runs a script of steps given on the command line.
//
//   prog MODE STEP...
//   MODE  link   linked against libcuda.so.1 (built with -DLINKED only)
//         dlsym  dlopen("libcuda.so.1") + dlsym for every entry point
//         gpa    dlsym only cuGetProcAddress, the rest through it
//         gpa2   dlsym cuGetProcAddress_v2, ask it for "cuGetProcAddress" (v12000) and
//                use what it returns for the rest
//         ptsz   like gpa, per-thread-default-stream entry points
//   STEP  mod            load modules (4 ways) and look up functions (3 ways)
//         launch:N       N cuLaunchKernel on stream 0x100 (prints "launch I" after each)
//         ex:N coop:N graph:N   the same through the other launch calls
//         null:N         N cuLaunchKernel on the default stream (0)
//         threads:T:N    T threads, N launches each on their own stream ("t K I")
//         tnull:T:N      T threads, N launches each on the default stream (0)
//         tchurn:T:N     the same, one thread after another (each joined before the next)
//         holdsync       a thread launches once; the main thread syncs meanwhile
//         capture        capture a launch on stream 0x300, end capture, launch the graph
//         sync           cuCtxSynchronize
//         ssync          cuStreamSynchronize(0x100)
//         sync13         what the CUDA 13 runtime's cudaDeviceSynchronize calls: the entry
//                        point for "cuCtxSynchronize" at version 13000 (cuCtxSynchronize_v2;
//                        dlsym modes: by that name) on the current context
//         sync13x        the same on another context (0xBAD)
//         sleep:MS       sleep
//         wait:PATH      wait (<= 20 s) until PATH exists
//         where          print which object each entry point lives in
//         check          print the fake's counters and the last launch's arguments
// Every line is flushed (the tests read them as they come).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int (*launch_t)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        unsigned, void *, void **, void **);
typedef int (*coop_t)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                      unsigned, void *, void **);
typedef struct {
  unsigned gx, gy, gz, bx, by, bz, smem;
  void *stream;
  void *attrs;
  unsigned nattrs;
} launch_config;
typedef int (*launch_ex_t)(const launch_config *, void *, void **, void **);
typedef int (*graph_t)(void *, void *);
typedef int (*mod_load_t)(void **, const void *);
typedef int (*mod_load_ex_t)(void **, const void *, unsigned, void *, void **);
typedef int (*lib_load_t)(void **, const void *, void *, void **, unsigned, void *, void **,
                          unsigned);
typedef int (*get_t)(void **, void *, const char *);
typedef int (*kern_func_t)(void **, void *);
typedef int (*cap_t)(void *, int);
typedef int (*cap_end_t)(void *, void **);
typedef int (*sync_t)(void);
typedef int (*ssync_t)(void *);
typedef int (*gpa_t)(const char *, void **, int, uint64_t);
typedef int (*gpa2_t)(const char *, void **, int, uint64_t, int *);

static struct {
  launch_t launch;
  launch_ex_t ex;
  coop_t coop;
  graph_t graph;
  mod_load_t load, fat;
  mod_load_ex_t load_ex;
  lib_load_t lib_load;
  get_t get_func, get_kernel;
  kern_func_t kern_func;
  cap_t cap;
  cap_end_t cap_end;
  sync_t ctx_sync;
  ssync_t stream_sync;
} cu;

static void *lib;
static gpa_t gpa;
static gpa2_t gpa2;
static uint64_t gpa_flags;

static void die(const char *what) {
  fprintf(stderr, "prog: %s\n", what);
  exit(3);
}

static void *get(const char *name) {
  void *p = NULL;
  if (gpa2) {
    int st = -1;
    if (gpa2(name, &p, 12000, gpa_flags, &st) != 0 || st != 0) p = NULL;
  } else if (gpa) {
    if (gpa(name, &p, 12000, gpa_flags) != 0) p = NULL;
  } else {
    p = dlsym(lib, name);
  }
  if (!p) die(name);
  return p;
}

#ifdef LINKED
int cuLaunchKernel(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                   void *, void **, void **);
int cuLaunchKernelEx(const launch_config *, void *, void **, void **);
int cuLaunchCooperativeKernel(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, void *, void **);
int cuGraphLaunch(void *, void *);
int cuModuleLoadData(void **, const void *);
int cuModuleLoadFatBinary(void **, const void *);
int cuModuleLoadDataEx(void **, const void *, unsigned, void *, void **);
int cuLibraryLoadData(void **, const void *, void *, void **, unsigned, void *, void **, unsigned);
int cuModuleGetFunction(void **, void *, const char *);
int cuLibraryGetKernel(void **, void *, const char *);
int cuKernelGetFunction(void **, void *);
int cuStreamBeginCapture_v2(void *, int);
int cuStreamEndCapture(void *, void **);
int cuCtxSynchronize(void);
int cuStreamSynchronize(void *);
#endif

static void bind(const char *mode) {
  if (strcmp(mode, "link") == 0) {
#ifdef LINKED
    cu.launch = cuLaunchKernel;
    cu.ex = cuLaunchKernelEx;
    cu.coop = cuLaunchCooperativeKernel;
    cu.graph = cuGraphLaunch;
    cu.load = cuModuleLoadData;
    cu.fat = cuModuleLoadFatBinary;
    cu.load_ex = cuModuleLoadDataEx;
    cu.lib_load = cuLibraryLoadData;
    cu.get_func = cuModuleGetFunction;
    cu.get_kernel = cuLibraryGetKernel;
    cu.kern_func = cuKernelGetFunction;
    cu.cap = cuStreamBeginCapture_v2;
    cu.cap_end = cuStreamEndCapture;
    cu.ctx_sync = cuCtxSynchronize;
    cu.stream_sync = cuStreamSynchronize;
    return;
#else
    die("not built with -DLINKED");
#endif
  }
  lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) die(dlerror());
  int suffix = 0;  // dlsym names carry the version suffix; cuGetProcAddress takes base names
  if (strcmp(mode, "gpa") == 0 || strcmp(mode, "ptsz") == 0) {
    gpa = (gpa_t)dlsym(lib, "cuGetProcAddress");
    if (!gpa) die("cuGetProcAddress");
    if (strcmp(mode, "ptsz") == 0) gpa_flags = 2;
  } else if (strcmp(mode, "gpa2") == 0) {
    gpa2_t first = (gpa2_t)dlsym(lib, "cuGetProcAddress_v2");
    void *p = NULL;
    int st = -1;
    if (!first || first("cuGetProcAddress", &p, 12000, 0, &st) != 0 || !p) die("gpa2");
    gpa2 = (gpa2_t)p;
  } else if (strcmp(mode, "dlsym") == 0) {
    suffix = 1;
  } else {
    die("unknown mode");
  }
  cu.launch = (launch_t)get("cuLaunchKernel");
  cu.ex = (launch_ex_t)get("cuLaunchKernelEx");
  cu.coop = (coop_t)get("cuLaunchCooperativeKernel");
  cu.graph = (graph_t)get("cuGraphLaunch");
  cu.load = (mod_load_t)get("cuModuleLoadData");
  cu.fat = (mod_load_t)get("cuModuleLoadFatBinary");
  cu.load_ex = (mod_load_ex_t)get("cuModuleLoadDataEx");
  cu.lib_load = (lib_load_t)get("cuLibraryLoadData");
  cu.get_func = (get_t)get("cuModuleGetFunction");
  cu.get_kernel = (get_t)get("cuLibraryGetKernel");
  cu.kern_func = (kern_func_t)get("cuKernelGetFunction");
  cu.cap = (cap_t)get(suffix ? "cuStreamBeginCapture_v2" : "cuStreamBeginCapture");
  cu.cap_end = (cap_end_t)get("cuStreamEndCapture");
  cu.ctx_sync = (sync_t)get("cuCtxSynchronize");
  cu.stream_sync = (ssync_t)get("cuStreamSynchronize");
}

static void *func;  // the kernel every launch uses (0xF00 until "mod" looked one up)

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "prog: %s -> %d\n", what, rc);
    exit(4);
  }
}

static const char PTX[] = ".version 8.0\n.target sm_80\n.entry k_add() { ret; }\n";
static unsigned char ELF[256] = {0x7f, 'E', 'L', 'F', 2, 1, 1};
static unsigned char FAT[64] = {0x50, 0xED, 0x55, 0xBA, 1, 0, 16, 0, 48, 0, 0, 0, 0, 0, 0, 0};

static void do_mod(void) {
  void *m1, *m2, *m3, *l, *k, *f2, *f3;
  // ELF header: section headers at 0x40, 3 of 64 bytes -> 256 bytes
  ELF[0x28] = 0x40;
  ELF[0x3A] = 64;
  ELF[0x3C] = 3;
  for (int i = 0x40; i < 256; i++) ELF[i] = (unsigned char)i;
  for (int i = 16; i < 64; i++) FAT[i] = (unsigned char)(i * 7);
  check(cu.load(&m1, PTX), "cuModuleLoadData");
  check(cu.load_ex(&m2, ELF, 0, NULL, NULL), "cuModuleLoadDataEx");
  check(cu.fat(&m3, FAT), "cuModuleLoadFatBinary");
  check(cu.lib_load(&l, PTX, NULL, NULL, 0, NULL, NULL, 0), "cuLibraryLoadData");
  check(cu.get_func(&func, m1, "k_add"), "cuModuleGetFunction");
  check(cu.get_func(&f2, m2, "k_elf"), "cuModuleGetFunction");
  check(cu.get_kernel(&k, l, "k_lib"), "cuLibraryGetKernel");
  check(cu.kern_func(&f3, k), "cuKernelGetFunction");
  printf("mod m1=%p m2=%p m3=%p lib=%p func=%p f2=%p kernel=%p f3=%p\n", m1, m2, m3, l, func,
         f2, k, f3);
}

static void launch_n(const char *kind, int n, void *stream, const char *tag) {
  void *params[1] = {NULL};
  for (int i = 0; i < n; i++) {
    int rc;
    if (strcmp(kind, "launch") == 0) {
      rc = cu.launch(func, 4 + i, 2, 1, 128, 1, 1, 256, stream, params, NULL);
    } else if (strcmp(kind, "coop") == 0) {
      rc = cu.coop(func, 4 + i, 2, 1, 128, 1, 1, 256, stream, params);
    } else if (strcmp(kind, "ex") == 0) {
      launch_config c = {4 + (unsigned)i, 2, 1, 128, 1, 1, 256, stream, NULL, 0};
      rc = cu.ex(&c, func, params, NULL);
    } else {
      rc = cu.graph((void *)(uintptr_t)(0xA000 + i), stream);
    }
    check(rc, kind);
    printf("%s %d\n", tag, i);
  }
}

typedef struct {
  int k, n;
} targ;

static void *thread_main(void *a) {
  targ *t = a;
  char tag[16];
  snprintf(tag, sizeof tag, "t %d", t->k);
  launch_n("launch", t->n, (void *)(uintptr_t)(0x200 + t->k), tag);
  return NULL;
}

static void *null_main(void *a) {
  targ *t = a;
  char tag[16];
  snprintf(tag, sizeof tag, "n %d", t->k);
  launch_n("launch", t->n, NULL, tag);
  return NULL;
}

static void *held_main(void *a) {
  (void)a;
  launch_n("launch", 1, (void *)0x100, "held");
  return NULL;
}

static void wait_for(const char *path) {
  struct stat st;
  for (int i = 0; i < 4000; i++) {
    if (stat(path, &st) == 0) return;
    usleep(5000);
  }
  die("wait: timed out");
}

static void where(const char *name, void *p) {
  Dl_info info;
  printf("where %s %s\n", name, p && dladdr(p, &info) && info.dli_fname ? info.dli_fname : "?");
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) die("usage: prog MODE STEP...");
  bind(argv[1]);
  func = (void *)0xF00;
  for (int a = 2; a < argc; a++) {
    char *s = argv[a];
    int n = 0, t = 0;
    if (strcmp(s, "mod") == 0) {
      do_mod();
    } else if (sscanf(s, "tchurn:%d:%d", &t, &n) == 2) {
      for (int k = 0; k < t; k++) {
        pthread_t th;
        targ ta = {k, n};
        pthread_create(&th, NULL, null_main, &ta);
        pthread_join(th, NULL);
      }
      printf("threads done\n");
    } else if (sscanf(s, "threads:%d:%d", &t, &n) == 2 || sscanf(s, "tnull:%d:%d", &t, &n) == 2) {
      pthread_t th[64];
      targ ta[64];
      for (int k = 0; k < t && k < 64; k++) {
        ta[k] = (targ){k, n};
        pthread_create(&th[k], NULL, s[1] == 'n' ? null_main : thread_main, &ta[k]);
      }
      for (int k = 0; k < t && k < 64; k++) pthread_join(th[k], NULL);
      printf("threads done\n");
    } else if (sscanf(s, "null:%d", &n) == 1) {
      launch_n("launch", n, NULL, "null");
    } else if (strncmp(s, "launch:", 7) == 0 || strncmp(s, "ex:", 3) == 0 ||
               strncmp(s, "coop:", 5) == 0 || strncmp(s, "graph:", 6) == 0) {
      char kind[16];
      sscanf(s, "%15[a-z]:%d", kind, &n);
      launch_n(kind, n, (void *)0x100, kind);
    } else if (strcmp(s, "holdsync") == 0) {
      pthread_t th;
      pthread_create(&th, NULL, held_main, NULL);
      usleep(50000);
      check(cu.ctx_sync(), "cuCtxSynchronize");
      check(cu.stream_sync((void *)0x100), "cuStreamSynchronize");
      printf("synced\n");
      pthread_join(th, NULL);
      printf("joined\n");
    } else if (strcmp(s, "capture") == 0) {
      void *g = NULL, *params[1] = {NULL};
      check(cu.cap((void *)0x300, 0), "cuStreamBeginCapture");
      check(cu.launch(func, 1, 1, 1, 32, 1, 1, 0, (void *)0x300, params, NULL), "captured");
      check(cu.cap_end((void *)0x300, &g), "cuStreamEndCapture");
      check(cu.graph(g, (void *)0x300), "cuGraphLaunch");
      printf("capture graph=%p\n", g);
    } else if (strcmp(s, "sync") == 0) {
      check(cu.ctx_sync(), "cuCtxSynchronize");
      printf("sync\n");
    } else if (strcmp(s, "sync13") == 0 || strcmp(s, "sync13x") == 0) {
      void *f = NULL, *cur = NULL;
      int st = 0;
      if (gpa2) gpa2("cuCtxSynchronize", &f, 13000, gpa_flags, &st);
      else if (gpa) gpa("cuCtxSynchronize", &f, 13000, gpa_flags);
      else f = dlsym(lib, "cuCtxSynchronize_v2");
      int (*cur_fn)(void **) = (int (*)(void **))get("cuCtxGetCurrent");
      if (!f || cur_fn(&cur) != 0) die("sync13");
      check(((int (*)(void *))f)(s[6] == 'x' ? (void *)0xBAD : cur), "cuCtxSynchronize_v2");
      printf("%s\n", s);
    } else if (strcmp(s, "ssync") == 0) {
      check(cu.stream_sync((void *)0x100), "cuStreamSynchronize");
      printf("ssync\n");
    } else if (sscanf(s, "sleep:%d", &n) == 1) {
      usleep((useconds_t)n * 1000);
    } else if (strncmp(s, "wait:", 5) == 0) {
      wait_for(s + 5);
    } else if (strcmp(s, "where") == 0) {
      where("launch", (void *)cu.launch);
      where("ex", (void *)cu.ex);
      where("graph", (void *)cu.graph);
      where("load", (void *)cu.load);
      where("sync", (void *)cu.ctx_sync);
      if (gpa) where("gpa", (void *)gpa);
      if (gpa2) where("gpa2", (void *)gpa2);
    } else if (strcmp(s, "check") == 0) {
      void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
      long (*count)(const char *) = h ? (long (*)(const char *))dlsym(h, "fake_count") : NULL;
      void (*last)(uint64_t *) = h ? (void (*)(uint64_t *))dlsym(h, "fake_last_launch") : NULL;
      static const char *const names[] = {
          "cuLaunchKernel", "cuLaunchKernel_ptsz", "cuLaunchKernelEx", "cuLaunchKernelEx_ptsz",
          "cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel_ptsz", "cuGraphLaunch",
          "cuGraphLaunch_ptsz", "cuModuleLoadData", "cuModuleLoadDataEx",
          "cuModuleLoadFatBinary", "cuLibraryLoadData", "cuModuleGetFunction",
          "cuLibraryGetKernel", "cuKernelGetFunction", "cuStreamBeginCapture_v2",
          "cuStreamEndCapture", "cuStreamWriteValue64_v2", "cuLaunchHostFunc",
          "cuMemHostRegister_v2", "cuCtxSynchronize", "cuCtxSynchronize_v2"};
      if (!count || !last) die("check: not the fake driver");
      for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        printf("count %s %ld\n", names[i], count(names[i]));
      uint64_t v[12];
      last(v);
      printf("last func=%#lx grid=%lu,%lu,%lu block=%lu,%lu,%lu smem=%lu stream=%#lx kind=%lu\n",
             (unsigned long)v[0], (unsigned long)v[1], (unsigned long)v[2], (unsigned long)v[3],
             (unsigned long)v[4], (unsigned long)v[5], (unsigned long)v[6], (unsigned long)v[7],
             (unsigned long)v[8], (unsigned long)v[11]);
    } else {
      die(s);
    }
  }
  printf("done\n");
  return 0;
}
