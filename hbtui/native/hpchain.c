// Native HP issue loop ("HP chain") for the cuda backend: one POSIX thread that issues
// each HP request's kernels exactly as the workload says (kernel i+1 goes
// gap_{i+1} after the host saw kernel i complete) without waiting for the Python
// scheduling thread. Python hands whole requests over (hb_chain_push) and reads
// completions back (hb_chain_pop); the GPU stamps the kernels' start/end with
// %globaltimer into host-mapped memory, which this thread polls.
//
// Why: the Python loop costs each HP kernel ~5 us to see a completion and ~5 us
// more between its timer and cuLaunchKernel; near saturation Poisson queueing
// multiplies that into +30 % HP p99 (docs/benchmarks/h100.md).
//
// No CUDA headers: the driver entry points come in as function pointers (from
// libcuda via ctypes in production, fakes in the CPU tests). Built at start-up with
// the system C compiler (engine/backends/hpchain.py), cached by source hash.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*launch_fn)(void *func, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                         unsigned by, unsigned bz, unsigned smem, void *stream, void **params,
                         void **extra);
typedef int (*query_fn)(void *stream);
typedef int (*setctx_fn)(void *ctx);
typedef int (*record_fn)(void *event, void *stream);
typedef int (*wait_fn)(void *stream, void *event, unsigned flags);

// One HP kernel to issue. Layout mirrored by ctypes in engine/backends/hpchain.py.
typedef struct {
  uint64_t id;          // echoed in the completion (the scheduler's launch id)
  void *func;           // CUfunction
  void *stream;         // CUstream
  void **params;        // kernelParams array
  uint64_t *ts_cell;    // the kernel's hb_ts argument cell: set to this launch's slot
  uint64_t *cnt_cell;   // the kernel's hb_cnt argument cell
  int64_t gap_ns;       // host gap before this kernel
  int64_t not_before;   // first kernel of a request: its arrival (ns); else -1
  void *event;          // CUevent recorded right after the launch (may be NULL): LP work
                        // issued by Python can wait on it (cuStreamWaitEvent)
  uint32_t grid, bx, by, bz, smem, pad;
} hb_step;

// An LP slice armed by Python to go out right after HP step hp_id is launched: its stream
// first waits on that step's event, so it starts on the GPU when the HP kernel ends. Python
// arms it during the host gap before the HP kernel; short HP kernels (2-5 us) would end
// before the Python loop could queue anything behind them. Mirrored in hpchain.py.
typedef struct {
  uint64_t hp_id;
  void *func;
  void *stream;
  void **params;
  void *event;  // recorded after the slice (Python's completion event)
  uint32_t grid, bx, by, bz, smem, pad;
} hb_arm;

// ARMS slots, launched in slot order (Python fills them in order for one HP step: the
// gap's first slices, one queued behind the other on the LP stream). Per slot,
// arm_word = hp_id << 2 | state (launch ids are unique, so the id is the generation).
// Python writes a slot's payload only while it is not set or taken; the thread reads it
// only after winning SET -> TAKEN for the step it just launched.
#define ARMS 3
enum { ARM_NONE = 0, ARM_SET = 1, ARM_TAKEN = 2, ARM_LAUNCHED = 3 };

// One completion (or failure: err != 0).
typedef struct {
  uint64_t id;
  int64_t issue_ns;   // just before cuLaunchKernel
  int64_t called_ns;  // cuLaunchKernel returned
  int64_t seen_ns;    // this thread saw the end stamp (or the stream idle)
  uint64_t g0, g1;    // %globaltimer start/end stamps (0: not written)
  uint32_t slot;      // stamp slot they were read from
  int32_t err;        // CUresult of a failed launch/query; -1: stopped
  int32_t no_stamp;   // done by stream query, the end stamp never came
  int32_t pad;
} hb_done;

#define QCAP 4096  // power of two
#define LINE 128    // keep the ring indices on separate cache lines (no false sharing)

typedef struct {
  // set by hb_chain_create
  launch_fn launch;
  query_fn query;
  setctx_fn setctx;
  record_fn record;
  wait_fn wait;
  void *ctx;
  volatile uint64_t *ts_host;  // 2 u64 per slot, host view
  uint64_t ts_dev;             // device view of ts_host
  uint64_t cnt_dev;            // 4 bytes per slot, device memory
  uint32_t nslots;
  uint32_t slot;
  pthread_t thread;
  int started;
  // rings: steps Python -> thread, completions thread -> Python
  hb_step steps[QCAP];
  hb_done done[QCAP];
  _Alignas(LINE) _Atomic uint64_t step_head;  // written by Python (push)
  _Alignas(LINE) _Atomic uint64_t step_tail;  // written by the thread
  _Alignas(LINE) _Atomic uint64_t done_head;  // written by the thread
  _Alignas(LINE) _Atomic uint64_t done_tail;  // written by Python (pop)
  _Alignas(LINE) _Atomic uint64_t issued;     // steps launched (and their event recorded)
  _Alignas(LINE) _Atomic int stop;
  _Atomic int failed;       // a launch or query failed: the thread issues nothing more
  _Atomic int ready;        // 0: starting, 1: running, < 0: -CUresult of cuCtxSetCurrent
  _Atomic int64_t expect;   // when Python expects the next request (0: unknown)
  _Atomic int64_t last_seen;
  _Alignas(LINE) _Atomic uint64_t arm_word[ARMS];
  hb_arm arm[ARMS];
} hb_chain;

static inline int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);  // = Python's time.perf_counter_ns on Linux
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static void push_done(hb_chain *c, const hb_done *d) {
  uint64_t h = atomic_load_explicit(&c->done_head, memory_order_relaxed);
  while (h - atomic_load_explicit(&c->done_tail, memory_order_acquire) >= QCAP) {
    if (atomic_load_explicit(&c->stop, memory_order_relaxed)) return;
    relax();  // Python has not drained: never overwrite a completion
  }
  c->done[h & (QCAP - 1)] = *d;
  atomic_store_explicit(&c->done_head, h + 1, memory_order_release);
}

static void fail(hb_chain *c, uint64_t id, int err) {
  hb_done d = {0};
  d.id = id;
  d.err = err;
  d.seen_ns = now_ns();
  atomic_store(&c->failed, 1);
  push_done(c, &d);
}

#define IDLE_SPIN_NS 20000000LL  // idle this long with nothing expected: sleep-poll instead
#define EXPECT_MARGIN_NS 1000000LL  // sleep only while the next request is further off
#define QUERY_EVERY_NS 1000000LL  // waiting on a kernel: ask the stream for errors this often

// Idle: spin (an HP arrival must not wait for a sleeping thread: nanosleep overshoots by
// ~100 us on a VM) unless the next expected request is more than EXPECT_MARGIN_NS away,
// or nothing is expected and nothing came for IDLE_SPIN_NS.
static int may_sleep(hb_chain *c, int64_t n, int64_t idle_since) {
  int64_t w = atomic_load_explicit(&c->expect, memory_order_relaxed);
  if (w > 0) return w - n > EXPECT_MARGIN_NS || n - w > IDLE_SPIN_NS;
  return n - idle_since > IDLE_SPIN_NS;
}

// Right after HP step s went out (and `issued` counted it): launch the slice armed in
// slot i for it. Returns a CUresult (0: nothing armed there for s, or launched).
static int launch_armed(hb_chain *c, int i, const hb_step *s) {
  uint64_t w = s->id << 2 | ARM_SET;
  if (atomic_load(&c->arm_word[i]) != w || !c->wait || !s->event) return 0;
  if (!atomic_compare_exchange_strong(&c->arm_word[i], &w, s->id << 2 | ARM_TAKEN)) return 0;
  hb_arm a = c->arm[i];
  int r = c->wait(a.stream, s->event, 0);
  if (!r) r = c->launch(a.func, a.grid, 1, 1, a.bx, a.by, a.bz, a.smem, a.stream, a.params, NULL);
  if (!r && a.event && c->record) r = c->record(a.event, a.stream);
  if (!r) atomic_store(&c->arm_word[i], s->id << 2 | ARM_LAUNCHED);
  return r;
}

static void *run(void *arg) {
  hb_chain *c = (hb_chain *)arg;
  if (c->setctx && c->ctx) {
    int r = c->setctx(c->ctx);
    if (r) {
      atomic_store(&c->ready, -r);  // hb_chain_create reports it and joins
      return NULL;
    }
  }
  atomic_store(&c->ready, 1);
  int64_t idle_since = now_ns();
  while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
    uint64_t t = atomic_load_explicit(&c->step_tail, memory_order_relaxed);
    if (t == atomic_load_explicit(&c->step_head, memory_order_acquire) ||
        atomic_load_explicit(&c->failed, memory_order_relaxed)) {
      if (may_sleep(c, now_ns(), idle_since)) {
        struct timespec ts = {0, 50000};  // nothing due soon: stop burning a core
        nanosleep(&ts, NULL);
      } else {
        relax();
      }
      continue;
    }
    hb_step s = c->steps[t & (QCAP - 1)];
    atomic_store_explicit(&c->step_tail, t + 1, memory_order_release);
    int64_t ref = atomic_load_explicit(&c->last_seen, memory_order_relaxed);
    if (s.not_before >= 0 && s.not_before > ref) ref = s.not_before;
    int64_t due = ref + s.gap_ns;
    int stopped = 0;
    while (now_ns() < due) {
      if (atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        stopped = 1;
        break;
      }
      relax();
    }
    if (stopped) break;
    uint32_t slot = c->slot;
    c->slot = (slot + 1) % c->nslots;
    volatile uint64_t *ts = c->ts_host + 2 * slot;
    ts[0] = 0;
    ts[1] = 0;
    *s.ts_cell = c->ts_dev + 16ULL * slot;
    *s.cnt_cell = c->cnt_dev + 4ULL * slot;
    atomic_thread_fence(memory_order_seq_cst);
    hb_done d = {0};
    d.id = s.id;
    d.slot = slot;
    d.issue_ns = now_ns();
    int r = c->launch(s.func, s.grid, 1, 1, s.bx, s.by, s.bz, s.smem, s.stream, s.params, NULL);
    d.called_ns = now_ns();
    if (!r && s.event && c->record) r = c->record(s.event, s.stream);
    if (r) {
      fail(c, s.id, r);
      continue;
    }
    atomic_fetch_add(&c->issued, 1);  // seq_cst: ordered before the arm check (hb_chain_arm)
    // Launching armed LP takes the driver a few us per slice, and a 2-5 us HP kernel may
    // end meanwhile: note when its end stamp was first seen, so that the next kernel's
    // host gap starts then, not after the LP launches.
    int64_t seen = 0;
    for (int i = 0; i < ARMS && !r; i++) {
      if (!seen && ts[1]) seen = now_ns();
      r = launch_armed(c, i, &s);
    }
    if (r) {
      fail(c, s.id, r);
      continue;
    }
    int64_t next_query = d.called_ns + QUERY_EVERY_NS;
    for (;;) {
      if (ts[1]) {
        atomic_thread_fence(memory_order_acquire);  // the stamps, after seeing the end
        break;
      }
      if (atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        stopped = 1;
        break;
      }
      int64_t n = now_ns();
      if (n >= next_query) {
        next_query = n + QUERY_EVERY_NS;
        int q = c->query(s.stream);
        if (q == 600) continue;  // CUDA_ERROR_NOT_READY: still running
        if (ts[1]) break;
        if (q == 0) {  // stream idle and no end stamp: a launch that returned early
          d.no_stamp = 1;
          break;
        }
        fail(c, s.id, q);  // sticky error
        stopped = 2;
        break;
      }
      relax();
    }
    if (stopped == 1) break;
    if (stopped == 2) continue;
    d.seen_ns = seen ? seen : now_ns();
    d.g0 = ts[0];
    d.g1 = ts[1];
    atomic_store_explicit(&c->last_seen, d.seen_ns, memory_order_relaxed);
    push_done(c, &d);
    idle_since = d.seen_ns;
  }
  return NULL;
}

void hb_chain_destroy(hb_chain *c);

hb_chain *hb_chain_create(void *launch, void *query, void *setctx, void *record, void *wait,
                          void *ctx, void *ts_host, uint64_t ts_dev, uint64_t cnt_dev,
                          uint32_t nslots) {
  if (!launch || !query || !ts_host || nslots == 0) return NULL;
  void *mem = NULL;  // aligned: the ring indices sit on their own cache lines
  if (posix_memalign(&mem, LINE, sizeof(hb_chain)) != 0) return NULL;
  memset(mem, 0, sizeof(hb_chain));
  hb_chain *c = (hb_chain *)mem;
  c->launch = (launch_fn)launch;
  c->query = (query_fn)query;
  c->setctx = (setctx_fn)setctx;
  c->record = (record_fn)record;
  c->wait = (wait_fn)wait;
  c->ctx = ctx;
  c->ts_host = (volatile uint64_t *)ts_host;
  c->ts_dev = ts_dev;
  c->cnt_dev = cnt_dev;
  c->nslots = nslots;
  if (pthread_create(&c->thread, NULL, run, c) != 0) {
    free(c);
    return NULL;
  }
  c->started = 1;
  // wait (at most 5 s) for the thread to make the context current: a failure there
  // must fail creation, so that the caller can fall back to issuing from Python
  for (int i = 0; i < 50000 && atomic_load(&c->ready) == 0; i++) {
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  if (atomic_load(&c->ready) != 1) {
    hb_chain_destroy(c);
    return NULL;
  }
  return c;
}

// Tell the thread when the next request is expected (ns, CLOCK_MONOTONIC; 0: unknown).
void hb_chain_expect(hb_chain *c, int64_t t) { atomic_store(&c->expect, t); }

// Arm an LP slice in slot i to go out right after HP step a->hp_id. Returns 1 and
// stores the `issued` count read after arming into *issued: if that count already
// includes step hp_id, the thread may have passed it, and Python must disarm (and launch
// the slice itself if the disarm wins). Returns 0 (nothing armed) while the slot is busy.
int hb_chain_arm(hb_chain *c, int i, const hb_arm *a, uint64_t *issued) {
  if (i < 0 || i >= ARMS || !c->wait || !c->record) return 0;  // never set what never goes
  uint64_t w = atomic_load(&c->arm_word[i]);
  if ((w & 3) == ARM_SET || (w & 3) == ARM_TAKEN) return 0;
  c->arm[i] = *a;
  atomic_store(&c->arm_word[i], a->hp_id << 2 | ARM_SET);  // seq_cst: before the load below
  *issued = atomic_load(&c->issued);
  return 1;
}

// Take back slot i's arm for hp_id if the thread has not taken it: 1 = disarmed (Python
// launches the slice itself), 0 = the thread took it (launched, or being launched).
int hb_chain_disarm(hb_chain *c, int i, uint64_t hp_id) {
  if (i < 0 || i >= ARMS) return 0;
  uint64_t w = hp_id << 2 | ARM_SET;
  return atomic_compare_exchange_strong(&c->arm_word[i], &w, hp_id << 2 | ARM_NONE) ? 1 : 0;
}

// Whether the thread stopped issuing after a failed launch or query (its error is in the
// completion ring).
int hb_chain_failed(hb_chain *c) { return atomic_load(&c->failed); }

// Address of slot i's arm_word, so Python can see with a plain load when it was launched.
const volatile uint64_t *hb_chain_arm_word(hb_chain *c, int i) {
  return (const volatile uint64_t *)&c->arm_word[i];
}

int hb_chain_arm_slots(void) { return ARMS; }

// Queue n steps (all or nothing). Returns n, or 0 when the ring lacks room.
int hb_chain_push(hb_chain *c, const hb_step *steps, int n) {
  uint64_t h = atomic_load_explicit(&c->step_head, memory_order_relaxed);
  if (h + n - atomic_load_explicit(&c->step_tail, memory_order_acquire) > QCAP) return 0;
  for (int i = 0; i < n; i++) c->steps[(h + i) & (QCAP - 1)] = steps[i];
  atomic_store_explicit(&c->step_head, h + n, memory_order_release);
  return n;
}

// Copy up to max completions out. Returns how many.
int hb_chain_pop(hb_chain *c, hb_done *out, int max) {
  uint64_t t = atomic_load_explicit(&c->done_tail, memory_order_relaxed);
  uint64_t h = atomic_load_explicit(&c->done_head, memory_order_acquire);
  int n = 0;
  while (t != h && n < max) out[n++] = c->done[(t++) & (QCAP - 1)];
  atomic_store_explicit(&c->done_tail, t, memory_order_release);
  return n;
}

// Address of done_head, so Python can poll it with a plain load before calling pop.
const volatile uint64_t *hb_chain_done_head(hb_chain *c) {
  return (const volatile uint64_t *)&c->done_head;
}

// Address of the issued counter (steps launched, events recorded), for plain loads.
const volatile uint64_t *hb_chain_issued_addr(hb_chain *c) {
  return (const volatile uint64_t *)&c->issued;
}

// Stop the thread (steps not yet issued are dropped) and free the chain.
void hb_chain_destroy(hb_chain *c) {
  if (!c) return;
  atomic_store(&c->stop, 1);
  if (c->started) pthread_join(c->thread, NULL);
  free(c);
}

int hb_chain_sizes(int *step, int *done, int *arm) {
  *step = (int)sizeof(hb_step);
  *done = (int)sizeof(hb_done);
  *arm = (int)sizeof(hb_arm);
  return QCAP;
}
