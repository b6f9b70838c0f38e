// An LP "program" for the slicing tests (test_slices.py): it loads a module, looks up two
// functions and launches them in the three parameter forms; the fake driver (FAKE_LOG=1)
// logs every launch, which the program prints at the end.
//
//   slice_prog STEP...
//   STEP  load               load the module, look up k_slice and k_other, print
//                            "func 0xF other 0xO"
//         file:PATH          the same module from a file (cuModuleLoad), k_slice only
//         wait:PATH          wait (<= 20 s) until PATH exists
//         kp:GX:GY:GZ        cuLaunchKernel(k_slice, grid, kernelParams {u64 A, u32 B})
//         ex:GX:GY:GZ        the same with the packed `extra` form (12 bytes)
//         lex:GX:GY:GZ       cuLaunchKernelEx(k_slice, grid, kernelParams)
//         attr:ID:X:Y:Z      cuLaunchKernelEx(k_slice, 1000 blocks) with one launch attribute
//                            (id ID, value words X Y Z: an int or a dim3)
//         big:GX             cuLaunchKernel(k_slice, GX blocks, 100 KB dynamic smem)
//         other:GX           cuLaunchKernel(k_other, GX blocks)
//         par:GX             a thread launches k_slice (GX blocks) while this one, 50 ms
//                            later, looks k_other up again: prints "lookup_ms MS"
//         forkpar:GX         a thread launches k_slice (GX blocks); 50 ms later this one
//                            forks, and the child launches k_other (GX blocks) and exits
//                            0 after a sync: prints "child RC" (RC 9: killed after 5 s,
//                            it hung)
//         exit:GX            a thread launches k_slice (GX blocks), then launches it again
//                            from a pthread key destructor as it exits (a key made after
//                            the interceptor's), and is joined
//         bench:N:GX         N cuLaunchKernel(k_slice, GX blocks), each timed; prints
//                            "bench MEDIAN_NS P90_NS" per call
//         sync               cuCtxSynchronize
//         log                print "L FUNC GX GY GZ STREAM SMEM EXTRA_SIZE V0 V1 ..." per launch
// Parameter arrays are NULL-terminated (the fake reads params up to a NULL pointer).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef int (*launch_t)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                        unsigned, void *, void **, void **);
typedef struct {
  unsigned gx, gy, gz, bx, by, bz, smem;
  void *stream;
  void *attrs;
  unsigned nattrs;
} launch_config;
typedef struct {  // CUlaunchAttribute: id, padding, a 64-byte value union
  uint32_t id, pad;
  uint32_t val[16];
} launch_attr;
typedef int (*launch_ex_t)(const launch_config *, void *, void **, void **);
typedef int (*mod_load_t)(void **, const void *);
typedef int (*get_t)(void **, void *, const char *);
typedef int (*get_file_t)(void **, const char *);
typedef int (*init_t)(unsigned);
typedef int (*sync_t)(void);
typedef struct {
  uint64_t func, stream;
  uint32_t grid[3], block[3], smem, nvals, extra_size;
  uint32_t vals[24];
} fake_launch;
typedef long (*log_count_t)(void);
typedef int (*log_t)(long, fake_launch *);

static const char PTX[] = ".version 8.0\n.target sm_90\n.address_size 64\n"
                          ".visible .entry k_slice(.param .u64 a, .param .u32 b) { ret; }\n"
                          ".visible .entry k_other(.param .u64 a, .param .u32 b) { ret; }\n";
static const uint64_t A = 0x1111222233334444ULL;
static const uint32_t B = 55;
#define STREAM ((void *)0x100)

static launch_t g_launch;
static void *g_f;
static unsigned g_gx;
static int g_exit_r;
static pthread_key_t g_key;

static void launch_at_exit(void *arg) {  // a key destructor: the thread is exiting
  uint64_t a = A;
  uint32_t b = B;
  void *params[3] = {&a, &b, NULL};
  (void)arg;
  g_exit_r |= g_launch(g_f, g_gx, 1, 1, 128, 1, 1, 0, STREAM, params, NULL);
}

static void *exit_thread(void *arg) {
  uint64_t a = A;
  uint32_t b = B;
  void *params[3] = {&a, &b, NULL};
  g_exit_r = g_launch(g_f, g_gx, 1, 1, 128, 1, 1, 0, STREAM, params, NULL);
  pthread_key_create(&g_key, launch_at_exit);
  pthread_setspecific(g_key, arg);
  return NULL;
}

static void *sym(void *lib, const char *name) {
  void *p = dlsym(lib, name);
  if (!p) {
    fprintf(stderr, "no %s\n", name);
    exit(3);
  }
  return p;
}

typedef struct {  // what par/forkpar's launching thread launches
  launch_t launch;
  void *f;
  void **params;
  unsigned gx;
} par_arg;

static void *par_launch(void *p) {
  par_arg *a = p;
  a->launch(a->f, a->gx, 1, 1, 128, 1, 1, 0, STREAM, a->params, NULL);
  return NULL;
}

// par/forkpar: a thread launches f (gx blocks); 50 ms later (its variant load under way)
// the caller goes on
static pthread_t start_par(par_arg *arg) {
  pthread_t th;
  pthread_create(&th, NULL, par_launch, arg);
  usleep(50000);
  return th;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void grid_of(const char *s, unsigned g[3]) {
  g[0] = g[1] = g[2] = 1;
  sscanf(s, "%u:%u:%u", &g[0], &g[1], &g[2]);
}

int main(int argc, char **argv) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW);
  if (!lib) return 2;
  ((init_t)sym(lib, "cuInit"))(0);
  launch_t launch = (launch_t)sym(lib, "cuLaunchKernel");
  launch_ex_t launch_ex = (launch_ex_t)sym(lib, "cuLaunchKernelEx");
  void *f = NULL, *other = NULL, *mod = NULL;
  uint64_t a = A;
  uint32_t b = B;
  void *params[3] = {&a, &b, NULL};
  char packed[12];
  memcpy(packed, &a, 8);
  memcpy(packed + 8, &b, 4);
  size_t packed_size = sizeof packed;
  void *extra[5] = {(void *)1, packed, (void *)2, &packed_size, NULL};
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    unsigned g[3];
    int r = 0;
    if (strcmp(s, "load") == 0) {
      r = ((mod_load_t)sym(lib, "cuModuleLoadData"))(&mod, PTX);
      if (!r) r = ((get_t)sym(lib, "cuModuleGetFunction"))(&f, mod, "k_slice");
      if (!r) r = ((get_t)sym(lib, "cuModuleGetFunction"))(&other, mod, "k_other");
      printf("func 0x%llx other 0x%llx\n", (unsigned long long)(uintptr_t)f,
             (unsigned long long)(uintptr_t)other);
    } else if (strncmp(s, "file:", 5) == 0) {
      r = ((get_file_t)sym(lib, "cuModuleLoad"))(&mod, s + 5);
      if (!r) r = ((get_t)sym(lib, "cuModuleGetFunction"))(&f, mod, "k_slice");
      printf("func 0x%llx\n", (unsigned long long)(uintptr_t)f);
    } else if (strncmp(s, "wait:", 5) == 0) {
      struct stat st;
      for (int k = 0; k < 2000 && stat(s + 5, &st) != 0; k++) usleep(10000);
    } else if (strncmp(s, "kp:", 3) == 0) {
      grid_of(s + 3, g);
      r = launch(f, g[0], g[1], g[2], 128, 1, 1, 0, STREAM, params, NULL);
    } else if (strncmp(s, "ex:", 3) == 0) {
      grid_of(s + 3, g);
      r = launch(f, g[0], g[1], g[2], 128, 1, 1, 0, STREAM, NULL, extra);
    } else if (strncmp(s, "lex:", 4) == 0) {
      grid_of(s + 4, g);
      launch_config c = {g[0], g[1], g[2], 128, 1, 1, 0, STREAM, NULL, 0};
      r = launch_ex(&c, f, params, NULL);
    } else if (strncmp(s, "attr:", 5) == 0) {
      launch_attr at;
      memset(&at, 0, sizeof at);
      sscanf(s + 5, "%u:%u:%u:%u", &at.id, &at.val[0], &at.val[1], &at.val[2]);
      launch_config c = {1000, 1, 1, 128, 1, 1, 0, STREAM, &at, 1};
      r = launch_ex(&c, f, params, NULL);
    } else if (strncmp(s, "big:", 4) == 0) {
      r = launch(f, (unsigned)atoi(s + 4), 1, 1, 128, 1, 1, 100 * 1024, STREAM, params, NULL);
    } else if (strncmp(s, "other:", 6) == 0) {
      r = launch(other, (unsigned)atoi(s + 6), 1, 1, 128, 1, 1, 0, STREAM, params, NULL);
    } else if (strncmp(s, "par:", 4) == 0) {
      static par_arg arg;
      arg = (par_arg){launch, f, params, (unsigned)atoi(s + 4)};
      pthread_t th = start_par(&arg);
      struct timespec a, b;
      void *again = NULL;
      clock_gettime(CLOCK_MONOTONIC, &a);
      r = ((get_t)sym(lib, "cuModuleGetFunction"))(&again, mod, "k_other");
      clock_gettime(CLOCK_MONOTONIC, &b);
      printf("lookup_ms %.1f\n", (double)(b.tv_sec - a.tv_sec) * 1e3 +
                                    (double)(b.tv_nsec - a.tv_nsec) / 1e6);
      pthread_join(th, NULL);
    } else if (strncmp(s, "forkpar:", 8) == 0) {
      static par_arg arg;
      arg = (par_arg){launch, f, params, (unsigned)atoi(s + 8)};
      pthread_t th = start_par(&arg);
      fflush(stdout);
      pid_t pid = fork();
      if (pid == 0) {
        alarm(5);  // a hang in the child ends as SIGALRM
        int rc = launch(other, arg.gx, 1, 1, 128, 1, 1, 0, STREAM, params, NULL);
        rc = rc ? rc : ((sync_t)sym(lib, "cuCtxSynchronize"))();  // (hung on the fake's
        _exit(rc ? 1 : 0);                                        // queue before)
      }
      int st = 0;
      waitpid(pid, &st, 0);
      printf("child %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 9);
      pthread_join(th, NULL);
    } else if (strncmp(s, "exit:", 5) == 0) {
      pthread_t t;
      g_launch = launch, g_f = f, g_gx = (unsigned)atoi(s + 5);
      pthread_create(&t, NULL, exit_thread, &g_gx);
      pthread_join(t, NULL);
      r = g_exit_r;
    } else if (strncmp(s, "bench:", 6) == 0) {
      int n = 0;
      unsigned gx = 0;
      sscanf(s + 6, "%d:%u", &n, &gx);
      if (n < 1 || n > 1000000) return 2;
      double *t = malloc(sizeof *t * (size_t)n);
      for (int k = 0; k < n && !r; k++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        r = launch(f, gx, 1, 1, 128, 1, 1, 0, STREAM, params, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[k] = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
      }
      qsort(t, (size_t)n, sizeof *t, cmp_double);
      printf("bench %.1f %.1f\n", t[n / 2], t[n * 9 / 10]);
      free(t);
    } else if (strcmp(s, "sync") == 0) {
      r = ((sync_t)sym(lib, "cuCtxSynchronize"))();
    } else if (strcmp(s, "log") == 0) {
      long n = ((log_count_t)sym(lib, "fake_log_count"))();
      log_t get = (log_t)sym(lib, "fake_log");
      for (long k = 0; k < n; k++) {
        fake_launch L;
        if (get(k, &L)) break;
        printf("L 0x%llx %u %u %u 0x%llx %u %u", (unsigned long long)L.func, L.grid[0],
               L.grid[1], L.grid[2], (unsigned long long)L.stream, L.smem, L.extra_size);
        for (uint32_t v = 0; v < L.nvals; v++) printf(" %u", L.vals[v]);
        printf("\n");
      }
    } else {
      fprintf(stderr, "unknown step %s\n", s);
      return 2;
    }
    if (r) {
      printf("error %s %d\n", s, r);
    }
    printf("done %s\n", s);
    fflush(stdout);
  }
  return 0;
}
