// LP launches as slices (issue 16; docs/attach.md, "Slices"). Included once by
// intercept.c (one translation unit: the hooks share its process-local state).
//
// The engine publishes, per LP function whose module the slicer rewrote, an hb_variant
// entry (the sliced module's hash, the entry name, its own parameter count and packed
// size, the live slice size). A launch of such a function, when the header's slice_on is
// set, runs as consecutive slices: block ranges [start, end) of the launch's grid (x
// fastest; whole rows of x when the grid has rows), each one gated like a launch of its
// own (a seq, a grant, a record, a completion write) and issued as 1-3 sub-grid launches
// of the sliced function with six u32 appended to its parameters (block offset, full
// grid: docs/slicer.md). All slices go to the program's stream from the calling thread,
// in order, before the call returns, so the program sees one kernel having run.
//
// Whole-kernel fallbacks (never an error the program sees): no variant, stream capture,
// a grid no larger than one slice, launch attributes that slicing would change
// (cooperative, clusters or preferred clusters, programmatic dependent launch,
// completion events), params of an unknown `extra` form, and any failure to load or
// launch the variant before its first slice ran (the variant is then marked failed and
// not tried again in this process).

#define HB_SLICE_FN_CAP 4096u   // process-local functions seen (power of two)
#define HB_SLICE_MOD_CAP 256u   // sliced modules loaded by this process
#define HB_SLICE_MAX_PARAMS 4096u
#define HB_PARAM_BUF_MAX 32768u  // the driver's kernel parameter limit (CUDA 12.1+)
#define CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8
#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_LAUNCH_ATTRIBUTE_COOPERATIVE 2
#define CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION 4
#define CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION 6
#define CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT 7
#define CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION 11  // CUDA 12.8
#define CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT 12

typedef struct {  // CUlaunchAttribute: an id, padding, a 64-byte value union
  uint32_t id;
  uint32_t pad;
  union {
    uint8_t raw[64];
    int32_t i;
    uint32_t dim[3];
  } v;
} hb_cu_launch_attr;

typedef CUresult (*func_set_attr_t)(CUfunction, int, int);
typedef CUresult (*occupancy_t)(int *, CUfunction, int, size_t);
typedef CUresult (*ctx_get_device_t)(int *);
typedef CUresult (*dev_attr_t)(int *, int, int);

// What this process knows of a function: its module/name hashes (from its lookup) and,
// once tried, its loaded variant.
typedef struct {
  uint64_t func;  // key; 0 = free
  uint64_t module_hash, name_hash;
  CUfunction sliced;
  int32_t state;  // HB_VAR_*
  int32_t smem_set;  // dynamic shared memory allowed on `sliced` so far
  uint32_t occ_block, occ_smem, wave;  // the last occupancy query and its wave size
} hb_slice_fn;

static hb_slice_fn g_sfn[HB_SLICE_FN_CAP];
static struct {
  uint64_t hash;
  CUmodule mod;
} g_smod[HB_SLICE_MOD_CAP];
static pthread_mutex_t g_slice_lock = PTHREAD_MUTEX_INITIALIZER;  // g_sfn
static pthread_mutex_t g_smod_lock = PTHREAD_MUTEX_INITIALIZER;   // g_smod and module loads

static hb_slice_fn *sfn_find(uint64_t func, int insert) {  // under g_slice_lock
  uint32_t i = (uint32_t)((func * 0x9E3779B97F4A7C15ULL) >> 52) & (HB_SLICE_FN_CAP - 1);
  for (uint32_t n = 0; func && n < HB_SLICE_FN_CAP; n++, i = (i + 1) & (HB_SLICE_FN_CAP - 1)) {
    if (g_sfn[i].func == func) return &g_sfn[i];
    if (g_sfn[i].func == 0) {
      if (!insert) return NULL;
      g_sfn[i].func = func;
      return &g_sfn[i];
    }
  }
  return NULL;
}

// record_func: an LP function handle and what it is (a handle value reused for another
// function later gets the new hashes, and its variant state starts over).
static void slice_note_func(uint64_t func, uint64_t module_hash, uint64_t name_hash) {
  if (!G.lp || !func) return;
  pthread_mutex_lock(&g_slice_lock);
  hb_slice_fn *s = sfn_find(func, 1);
  if (s && (s->module_hash != module_hash || s->name_hash != name_hash)) {
    s->module_hash = module_hash;
    s->name_hash = name_hash;
    s->sliced = NULL;
    s->state = HB_VAR_UNTRIED;
    s->smem_set = 0;
    s->occ_block = s->occ_smem = s->wave = 0;
  }
  pthread_mutex_unlock(&g_slice_lock);
}

static hb_variant *variant_of(uint64_t func) {
  hb_variant *tab = (hb_variant *)(G.base + HB_OFF_VARIANT);
  for (uint32_t n = 0, i = hb_variant_slot(func); n < HB_VARIANT_CAP;
       n++, i = (i + 1) & (HB_VARIANT_CAP - 1)) {
    uint64_t k = __atomic_load_n(&tab[i].func, __ATOMIC_ACQUIRE);
    if (k == func) return &tab[i];
    if (k == 0) return NULL;
  }
  return NULL;
}

// The sliced module `hash` in this process (loaded from g_moddir once), or NULL.
static CUmodule slice_module(uint64_t hash, CUresult *err) {  // under g_smod_lock
  uint32_t i = (uint32_t)(hash & (HB_SLICE_MOD_CAP - 1)), n = 0;
  for (; n < HB_SLICE_MOD_CAP && g_smod[i].hash; n++, i = (i + 1) & (HB_SLICE_MOD_CAP - 1))
    if (g_smod[i].hash == hash) return g_smod[i].mod;
  *err = CUDA_ERROR_NOT_FOUND;
  if (n == HB_SLICE_MOD_CAP || !g_moddir[0]) return NULL;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%016llx.sliced.ptx", g_moddir, (unsigned long long)hash);
  char *text = read_whole(path, O_NOFOLLOW, (size_t)PTX_SAVE_MAX * 2);
  CUmodule mod = NULL;
  if (text) {
    mod_load_t load = (mod_load_t)real(H_MOD_LOAD);  // the real driver: not recorded
    *err = load ? load(&mod, text) : CUDA_ERROR_NOT_FOUND;
    if (*err) mod = NULL;
  }
  free(text);
  if (mod) {
    g_smod[i].hash = hash;
    g_smod[i].mod = mod;
  }
  return mod;
}

// This process's entry for an LP launch of `func` that may run as slices, with its
// variant loaded, or NULL (run whole). `v` is the engine's entry.
#define HB_VAR_LOADING 100  // process-local: a thread is loading the variant (others: whole)

// This process's entry for an LP launch of `func` that may run as slices, with its
// variant loaded (*fn: the variant's function), or NULL (run whole). `v` is the engine's
// entry. The load (file I/O, the driver's PTX JIT: can take 100s of ms) runs outside
// g_slice_lock, so other threads' launches never wait for it: meanwhile the same
// function's launches run whole, and loads are serialised by g_smod_lock.
static hb_slice_fn *slice_ready(uint64_t func, hb_variant *v, CUfunction *fn) {
  pthread_mutex_lock(&g_slice_lock);
  hb_slice_fn *s = sfn_find(func, 0);
  int load = s && s->state == HB_VAR_UNTRIED &&
             v->module_hash == s->module_hash && v->name_hash == s->name_hash;
  uint64_t mhash = v->module_hash, nhash = v->name_hash;
  if (s && s->state == HB_VAR_UNTRIED && !load) {  // a reused handle never matches
    s->state = HB_VAR_FAILED;
    __atomic_store_n(&v->result, CUDA_ERROR_NOT_FOUND, __ATOMIC_RELAXED);
    __atomic_store_n(&v->state, HB_VAR_FAILED, __ATOMIC_RELAXED);
  }
  if (load) s->state = HB_VAR_LOADING;
  *fn = s && s->state == HB_VAR_READY ? s->sliced : NULL;
  pthread_mutex_unlock(&g_slice_lock);
  if (!load) return *fn ? s : NULL;
  int saved_errno = errno;  // the program never sees our file work
  CUresult err = CUDA_ERROR_NOT_FOUND;
  pthread_mutex_lock(&g_smod_lock);
  CUmodule m = slice_module(mhash, &err);
  pthread_mutex_unlock(&g_smod_lock);
  get_func_t getf = (get_func_t)real(H_MOD_GETF);
  char name[HB_NAME_MAX];
  memcpy(name, v->name, sizeof name);
  name[HB_NAME_MAX - 1] = 0;
  CUfunction f = NULL;
  if (m && getf) err = getf(&f, m, name);
  errno = saved_errno;
  pthread_mutex_lock(&g_slice_lock);
  if (s->state == HB_VAR_LOADING && s->module_hash == mhash && s->name_hash == nhash) {
    s->sliced = m && !err ? f : NULL;
    s->state = s->sliced ? HB_VAR_READY : HB_VAR_FAILED;
  }  // (else the handle was recorded anew meanwhile: its entry starts over)
  *fn = s->state == HB_VAR_READY ? s->sliced : NULL;
  __atomic_store_n(&v->result, *fn ? 0 : (int32_t)(err ? err : CUDA_ERROR_NOT_FOUND),
                   __ATOMIC_RELAXED);
  __atomic_store_n(&v->state, *fn ? HB_VAR_READY : HB_VAR_FAILED, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&g_slice_lock);
  return *fn ? s : NULL;
}

static void slice_failed(hb_slice_fn *s, hb_variant *v, CUresult r) {
  pthread_mutex_lock(&g_slice_lock);
  s->state = HB_VAR_FAILED;
  pthread_mutex_unlock(&g_slice_lock);
  __atomic_store_n(&v->result, (int32_t)r, __ATOMIC_RELAXED);
  __atomic_store_n(&v->state, HB_VAR_FAILED, __ATOMIC_RELAXED);
  __atomic_fetch_add(&G.h->slice_fallbacks, 1, __ATOMIC_RELAXED);
}

// Blocks in one wave of this launch (SMs x resident blocks per SM), at least 1; sets
// the dynamic shared memory the launch asks for on the variant first. 0: a driver error.
static uint32_t slice_wave(hb_slice_fn *s, CUfunction sliced, uint32_t threads, uint32_t smem) {
  pthread_mutex_lock(&g_slice_lock);
  uint32_t wave = s->wave;
  int fresh = !(wave && s->occ_block == threads && s->occ_smem == smem);
  pthread_mutex_unlock(&g_slice_lock);
  if (!fresh) return wave;
  func_set_attr_t set = (func_set_attr_t)extra(R_FUNC_SET_ATTR);
  occupancy_t occ = (occupancy_t)extra(R_OCCUPANCY);
  ctx_get_device_t getdev = (ctx_get_device_t)extra(R_CTX_GET_DEVICE);
  dev_attr_t attr = (dev_attr_t)extra(R_DEV_ATTR);
  if (smem > 48u * 1024u && (int32_t)smem > s->smem_set) {  // as the program did for its own
    if (!set || set(sliced, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem))
      return 0;
    s->smem_set = (int32_t)smem;
  }
  int dev = 0, sms = 0, per_sm = 0;
  if (!occ || !getdev || !attr || getdev(&dev) ||
      attr(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev) ||
      occ(&per_sm, sliced, (int)threads, (size_t)smem))
    return 0;
  uint64_t w = (uint64_t)(sms > 0 ? sms : 1) * (uint64_t)(per_sm > 0 ? per_sm : 1);
  wave = w < HB_SLICE_MAX_BLOCKS ? (uint32_t)w : HB_SLICE_MAX_BLOCKS;
  pthread_mutex_lock(&g_slice_lock);
  s->occ_block = threads;
  s->occ_smem = smem;
  s->wave = wave;
  pthread_mutex_unlock(&g_slice_lock);
  return wave;
}

// Launch attributes that slicing would change: run such a launch whole.
static int attrs_slice_ok(const hb_cu_launch_config *cfg) {
  const hb_cu_launch_attr *a = (const hb_cu_launch_attr *)cfg->attrs;
  for (unsigned i = 0; a && i < cfg->nattrs; i++) {
    switch (a[i].id) {
      case CU_LAUNCH_ATTRIBUTE_COOPERATIVE:
      case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
        if (a[i].v.i) return 0;
        break;
      case CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION:
      case CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION:  // clusters too; sub-grids must divide
        if ((uint64_t)a[i].v.dim[0] * a[i].v.dim[1] * a[i].v.dim[2] > 1) return 0;
        break;
      case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT:
      case CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT:
        return 0;
      default:
        break;
    }
  }
  return 1;
}

typedef struct {
  uint32_t off[3], grid[3];
} hb_box;

// Blocks [s, e) of grid g as sub-grids. A 1-D grid gives one box; otherwise s and e are
// whole rows of x, and the rows [s/gx, e/gx) of the gy*gz rows give at most three boxes
// (the rest of a plane, whole planes, the start of a plane).
static int plan_boxes(uint64_t s, uint64_t e, const uint32_t g[3], hb_box out[3]) {
  if (g[1] == 1 && g[2] == 1) {
    out[0] = (hb_box){{(uint32_t)s, 0, 0}, {(uint32_t)(e - s), 1, 1}};
    return 1;
  }
  uint64_t r = s / g[0], r1 = e / g[0];
  int n = 0;
  while (r < r1 && n < 3) {
    uint32_t z = (uint32_t)(r / g[1]), y = (uint32_t)(r % g[1]);
    uint64_t rows;
    if (y || r1 - r < g[1]) {
      rows = r1 - r < (uint64_t)(g[1] - y) ? r1 - r : (uint64_t)(g[1] - y);
      out[n++] = (hb_box){{0, y, z}, {g[0], (uint32_t)rows, 1}};
    } else {
      uint64_t planes = (r1 - r) / g[1];
      rows = planes * g[1];
      out[n++] = (hb_box){{0, 0, z}, {g[0], g[1], (uint32_t)planes}};
    }
    r += rows;
  }
  return n;
}

// The slice [start, ...) to launch now: the engine's live size, whole waves (at least
// one; with HB_SLICE_FORCED exactly the operator's count, below a wave too), whole rows
// when the grid has rows; a remainder under half a wave (half a forced slice) joins it.
static uint64_t slice_end(const hb_variant *v, uint32_t wave, uint64_t start, uint64_t total,
                          const uint32_t g[3]) {
  uint32_t want = __atomic_load_n(&v->slice_blocks, __ATOMIC_RELAXED);
  uint64_t n, tail;
  if (want & HB_SLICE_FORCED) {
    n = want & ~HB_SLICE_FORCED;
    if (!n) n = 1;
    tail = n / 2;
  } else {
    n = want < wave ? wave : want / wave * wave;
    tail = wave / 2;
  }
  // a slice's blocks go in the record's u32 (hb_launch.slice_blocks) after the rounding up
  // to whole rows (a row: < 2^31) and a remainder (< half a wave) joining it
  if (n > HB_SLICE_MAX_BLOCKS) n = HB_SLICE_MAX_BLOCKS / wave * wave;
  if (g[1] != 1 || g[2] != 1) n = (n + g[0] - 1) / g[0] * g[0];
  uint64_t end = start + n;
  if (end >= total || total - end < tail) return total;
  return end;
}

// Parameters of one sub-grid launch: the program's own, then the six u32 `vals`.
// `kernelParams` form: p2 (nparams + 6 pointers, NULL-terminated); `extra` form
// (CU_LAUNCH_PARAM_BUFFER_POINTER/SIZE): the packed buffer copied into `buf` with the six
// appended at param_bytes. Returns 0 when the form is not one it knows (run whole).
typedef struct {
  void *p[HB_SLICE_MAX_PARAMS + 7];
  void *ex[5];
  char buf[HB_PARAM_BUF_MAX];
  size_t size;
  uint32_t vals[6];
} hb_params;

static int slice_params(const hb_variant *v, void **params, void **extra, hb_params *o) {
  uint32_t np = v->nparams, pb = v->param_bytes;
  if (params || !extra) {  // (no params and no extra: a kernel without parameters)
    if (np > HB_SLICE_MAX_PARAMS || (!params && np)) return 0;
    for (uint32_t i = 0; i < np; i++) o->p[i] = params[i];
    for (uint32_t k = 0; k < 6; k++) o->p[np + k] = &o->vals[k];
    o->p[np + 6] = NULL;
    return 1;
  }
  const char *src = NULL;
  size_t n = 0;
  int have_n = 0;
  for (int i = 0; i < 8; i += 2) {
    uintptr_t key = (uintptr_t)extra[i];
    if (key == 0) break;  // CU_LAUNCH_PARAM_END
    if (key == 1) {       // CU_LAUNCH_PARAM_BUFFER_POINTER
      src = extra[i + 1];
    } else if (key == 2 && extra[i + 1]) {  // CU_LAUNCH_PARAM_BUFFER_SIZE
      n = *(size_t *)extra[i + 1];
      have_n = 1;
    } else {
      return 0;
    }
  }
  if (!src || !have_n || pb % 4 || (size_t)pb + 24 > sizeof o->buf) return 0;
  memset(o->buf, 0, pb);
  memcpy(o->buf, src, n < pb ? n : pb);  // the six u32 go in per sub-grid launch
  o->size = (size_t)pb + 24;
  o->ex[0] = (void *)1;
  o->ex[1] = o->buf;
  o->ex[2] = (void *)2;
  o->ex[3] = &o->size;
  o->ex[4] = NULL;
  return 1;
}

static __thread hb_params *t_params;  // per thread: 64 KB, allocated at first use
static pthread_key_t g_params_key;     // frees a thread's buffers when it exits
static pthread_once_t g_params_once = PTHREAD_ONCE_INIT;
// Runs in the exiting thread: forget the buffers too, so a launch from a later key
// destructor (or a C++ thread_local one) allocates fresh ones, which glibc frees again
// on its next destructor round, instead of writing into the freed block.
static void params_free(void *p) {
  t_params = NULL;
  free(p);
}
static void params_key_init(void) { pthread_key_create(&g_params_key, params_free); }

static hb_params *thread_params(void) {
  if (LIKELY(t_params != NULL)) return t_params;
  pthread_once(&g_params_once, params_key_init);
  hb_params *p = malloc(sizeof *p);
  if (p && pthread_setspecific(g_params_key, p) != 0) {
    free(p);
    return NULL;
  }
  return t_params = p;
}

// Run an LP launch as slices when it can be: returns 1 with *res the call's result, or 0
// to run it whole (nothing was launched or recorded). `cfg` for cuLaunchKernelEx, else
// the plain launch `fn` with grid/block/smem/stream from `c`.
static int launch_sliced(hb_call *c, CUfunction f, CUstream stream, void **params, void **extra,
                         void *fn, const hb_cu_launch_config *cfg, CUresult *res) {
  hb_header *h = G.h;
  if (!__atomic_load_n(&h->slice_on, __ATOMIC_RELAXED)) return 0;
  hb_variant *v = variant_of((uint64_t)(uintptr_t)f);
  if (!v || __atomic_load_n(&v->state, __ATOMIC_RELAXED) == HB_VAR_FAILED) return 0;
  if (capturing(c->stream) || (cfg && !attrs_slice_ok(cfg))) return 0;
  const uint64_t total = (uint64_t)c->grid[0] * c->grid[1] * c->grid[2];
  if (total < 2) return 0;
  if (params && extra) return 0;  // both forms at once: the driver's to judge, whole
  CUfunction sliced = NULL;  // (a local copy: the entry may be reset meanwhile)
  hb_slice_fn *s = slice_ready((uint64_t)(uintptr_t)f, v, &sliced);
  if (!s) return 0;
  uint32_t wave = slice_wave(s, sliced, c->block[0] * c->block[1] * c->block[2], c->smem);
  if (!wave) {
    slice_failed(s, v, CUDA_ERROR_NOT_FOUND);
    return 0;
  }
  __atomic_store_n(&v->wave_blocks, wave, __ATOMIC_RELAXED);
  if (slice_end(v, wave, 0, total, c->grid) >= total) return 0;  // one slice: whole
  hb_params *o = thread_params();
  if (!o) return 0;
  if (!slice_params(v, params, extra, o)) return 0;
  const int kp = params || !extra;  // which form the sub-grid launches use
  o->vals[3] = c->grid[0];
  o->vals[4] = c->grid[1];
  o->vals[5] = c->grid[2];
  CUresult r = 0;
  uint64_t start = 0, parts_total = 0;
  while (start < total) {
    hb_pre pre;
    hb_before(c, &pre);  // a seq and a grant of its own
    uint64_t end = slice_end(v, wave, start, total, c->grid);
    hb_box b[3];
    int nb = plan_boxes(start, end, c->grid, b), k = 0;
    for (; k < nb && !r; k++) {
      memcpy(o->vals, b[k].off, sizeof b[k].off);
      if (!kp) memcpy(o->buf + v->param_bytes, o->vals, sizeof o->vals);  // packed copy
      void **p = kp ? o->p : NULL, **ex = kp ? NULL : o->ex;
      if (cfg) {
        hb_cu_launch_config c2 = *cfg;
        c2.gx = b[k].grid[0], c2.gy = b[k].grid[1], c2.gz = b[k].grid[2];
        r = ((launch_ex_t)fn)(&c2, sliced, p, ex);
      } else {
        r = ((launch_t)fn)(sliced, b[k].grid[0], b[k].grid[1], b[k].grid[2], c->block[0],
                           c->block[1], c->block[2], c->smem, stream, p, ex);
      }
    }
    c->slice_start = start;
    c->slice_blocks = (uint32_t)(end - start);
    c->slice_parts = (uint32_t)k;
    hb_after(c, r, &pre);
    parts_total += (uint64_t)k;
    if (r && start == 0 && k == 1) {  // nothing of it ran: the program's own kernel, whole
      slice_failed(s, v, r);
      c->slice_start = 0, c->slice_blocks = 0, c->slice_parts = 0;
      return 0;
    }
    if (r) break;
    start = end;
  }
  c->slice_start = 0, c->slice_blocks = 0, c->slice_parts = 0;
  __atomic_fetch_add(&h->sliced_launches, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&h->slice_launches, parts_total, __ATOMIC_RELAXED);
  *res = r;
  return 1;
}
