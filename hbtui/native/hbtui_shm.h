// Shared-memory segment between one attached program (the LD_PRELOAD interceptor,
// native/intercept.c) and the engine (hbtui/attach/). One segment per `hbtui run`;
// POSIX shm "/hbtui-<uid>-<pid>-<rand>", mode 0600, created by the launcher.
//
// Mirrored field by field in hbtui/attach/layout.py; tests/attach/test_layout.py
// compiles this header and compares every offset and size. Bump HB_SHM_VERSION on any
// change. Spec and protocol: docs/attach.md.
//
// Who writes what (every field has one writer role):
//   L = launcher (once, before the program starts), E = engine, I = interceptor (the
//   program: any of its threads, and its exec'd children), G = the GPU (stream writes).
// Interceptor-written counters are updated with atomics (several program threads);
// engine-written fields have one writer (the engine's scheduling thread).
#ifndef HBTUI_SHM_H
#define HBTUI_SHM_H

#include <stdint.h>

#define HB_SHM_MAGIC 0x314d485355544248ULL  // "HBTUSHM1" little-endian
#define HB_SHM_VERSION 6u  // 2: ptx_saved, ptx_save_errors; 3: slices; 4: hp_comp_us, synced_ns;
                           // 5: hp_burst_us; 6: HB_SLICE_FORCED

#define HB_LAUNCH_CAP 4096u  // launch records (power of two)
#define HB_MODULE_CAP 512u   // module-load records (power of two)
#define HB_FUNC_CAP 4096u    // function-name records (power of two)
#define HB_PENDING_CAP 64u   // LP launches listed while held (one per waiting thread)
#define HB_COMP_SLOTS 256u   // completion counters: one per stream, slot 0 = overflow
#define HB_NAME_MAX 192u     // function name bytes kept (NUL-terminated, truncated)
#define HB_VARIANT_CAP 1024u // sliced variants of LP functions (power of two)

// Fixed offsets (bytes from the segment start). The completion page is page-aligned:
// it is the only part registered with the driver (cuMemHostRegister).
#define HB_OFF_COMP_KEY 512u
#define HB_OFF_COMP_DONE 4096u
#define HB_OFF_PENDING 8192u
#define HB_OFF_LAUNCH 12288u
#define HB_OFF_MODULE (HB_OFF_LAUNCH + HB_LAUNCH_CAP * 128u)
#define HB_OFF_FUNC (HB_OFF_MODULE + HB_MODULE_CAP * 64u)
#define HB_OFF_VARIANT (HB_OFF_FUNC + HB_FUNC_CAP * 256u)
#define HB_SHM_SIZE (HB_OFF_VARIANT + HB_VARIANT_CAP * 256u)
#define HB_COMP_PAGE 4096u  // bytes registered at HB_OFF_COMP_DONE

// header.cls
#define HB_CLASS_HP 0u
#define HB_CLASS_LP 1u
// header.mode (E; L sets PASS): PASS = observe only, nothing held; GATED = LP launches
// wait for granted_seq. The interceptor never holds an HP launch in any mode.
#define HB_MODE_PASS 0u
#define HB_MODE_GATED 1u
// header.flags (L/E)
#define HB_FLAG_NO_COMPLETION 1u  // no GPU completion writes (observe enqueue only)
// header.comp_state (I): how completions reach the counters
#define HB_COMP_UNSET 0u
#define HB_COMP_SETUP 1u       // one thread is registering the page
#define HB_COMP_WRITEVAL 2u    // cuStreamWriteValue64 to the device-mapped page
#define HB_COMP_HOSTFN 3u      // cuLaunchHostFunc callback writes the counter
#define HB_COMP_OFF 4u         // neither available: no completions

// hb_launch.kind
#define HB_KIND_KERNEL 1u      // cuLaunchKernel
#define HB_KIND_KERNEL_EX 2u   // cuLaunchKernelEx
#define HB_KIND_COOP 3u        // cuLaunchCooperativeKernel
#define HB_KIND_GRAPH 4u       // cuGraphLaunch (func = the CUgraphExec)
#define HB_KIND_REQ_BEGIN 5u   // hbtui_request_begin(): an HP request starts (no launch)
#define HB_KIND_REQ_END 6u     // hbtui_request_end(): it ends once earlier launches complete
// hb_launch.flags
#define HB_LF_PTSZ 1u          // per-thread-default-stream entry point
#define HB_LF_HELD 2u          // LP: waited for a grant
#define HB_LF_PREGRANTED 4u    // LP: granted before it arrived
#define HB_LF_UNGATED 8u       // LP: let go without a grant (mode PASS or heartbeat lost)
#define HB_LF_CAPTURED 16u     // issued into a stream capture: not executed, no completion
#define HB_LF_NO_SLOT 32u      // no completion write for this launch
#define HB_LF_COALESCED 64u    // HP: no write of its own; a later write or a sync covers it
#define HB_LF_SLICE 128u       // LP: one slice of a launch (slice_start, slice_blocks)
#define HB_COMP_NONE 0xffffu   // hb_launch.comp_slot when there is no completion

// module / function record api
#define HB_API_MODULE_LOAD_DATA 1u
#define HB_API_MODULE_LOAD_DATA_EX 2u
#define HB_API_MODULE_LOAD_FATBIN 3u
#define HB_API_LIBRARY_LOAD_DATA 4u
#define HB_API_MODULE_GET_FUNCTION 5u
#define HB_API_LIBRARY_GET_KERNEL 6u
#define HB_API_KERNEL_GET_FUNCTION 7u  // func = CUfunction, module = the CUkernel
#define HB_API_MODULE_LOAD 8u          // cuModuleLoad(path): the file's bytes are hashed
// module image kinds
#define HB_IMG_UNKNOWN 0u
#define HB_IMG_CUBIN 1u   // ELF
#define HB_IMG_FATBIN 2u  // fatbinary (or its wrapper)
#define HB_IMG_PTX 3u     // NUL-terminated text
// hb_variant.state (I; informational)
#define HB_VAR_UNTRIED 0u  // not launched since the engine published it
#define HB_VAR_READY 1u    // the sliced module is loaded: launches run as slices
#define HB_VAR_FAILED 2u   // loading or launching it failed (result): launches run whole

typedef struct {
  // --- identity (L) ---------------------------------------------------- 0
  uint64_t magic;
  uint32_t version;
  uint32_t header_size;        // sizeof(hb_header)
  uint64_t total_size;         // HB_SHM_SIZE
  uint32_t cls;                // HB_CLASS_*
  int32_t launcher_pid;
  uint32_t launch_cap, module_cap, func_cap, pending_cap;
  uint32_t comp_slots, name_max;
  char task[64];               // the task name (NUL-terminated)
  uint8_t _pad0[128 - 120];
  // --- engine line (E) ------------------------------------------------- 128
  int64_t heartbeat_ns;        // CLOCK_MONOTONIC of the engine's last beat
  uint64_t granted_seq;        // LP launches with seq <= granted_seq may go
  uint32_t mode;               // HB_MODE_*
  uint32_t gate_word;          // futex word: E increments after each grant, then wakes
  uint32_t grace_ms;           // heartbeat older than this: stop gating (L/E; I may set)
  uint32_t spin_us;            // I spins this long before the futex wait
  uint32_t flags;              // HB_FLAG_*
  int32_t engine_pid;          // 0: no engine attached
  uint32_t slice_on;           // LP: run launches of functions with a variant as slices
  uint32_t hp_comp_us;         // HP: completion-write coalescing asked for now, us (0: 100);
                               //   HBTUI_COMP_EVERY_US in the program's environment wins
  uint32_t hp_burst_us;        // HP: a launch after this long quiet gets a write whatever
                               //   the coalescing (the burst rule's idle_ms; 0: the same)
  uint8_t _pad1[64 - 52];
  // --- interceptor line (I, atomics) ------------------------------------ 192
  uint64_t next_seq;           // last seq handed out (launch seqs start at 1)
  uint64_t launch_head;        // launch records claimed so far
  uint64_t module_head;
  uint64_t func_head;
  uint32_t waiters;            // threads in the futex wait now
  uint32_t ungated;            // 1 while the heartbeat is stale (grace passed)
  uint32_t comp_state;         // HB_COMP_*
  int32_t intercept_pid;       // last process that mapped the segment
  uint64_t comp_dev;           // device address of the completion page (WRITEVAL)
  uint32_t syncing;            // HP: threads inside a wrapped sync now (coalesced tails)
  uint32_t device_cc;          // LP: compute capability (major*10+minor) at the first module
                               //   load (0: unknown); the slicer picks a fatbin's PTX by it
  // --- interceptor counters (I, atomics) -------------------------------- 256
  uint64_t ungated_events;     // times gating stopped for a stale heartbeat
  uint64_t held_launches;      // LP launches that waited
  uint64_t held_ns;            // their total wait
  uint64_t ungated_launches;   // LP launches let go without a grant
  uint64_t captured_launches;
  uint64_t comp_errors;        // completion writes that failed (then: host func)
  uint64_t comp_overflow;      // launches whose stream got the shared slot 0
  uint64_t pending_overflow;   // held launches not listed (pending table full)
  uint64_t ptx_saved;          // LP: PTX images written to HBTUI_MODULE_DIR
  uint64_t ptx_save_errors;    // LP: PTX images that could not be written (skipped)
  uint64_t sliced_launches;    // LP: launches that ran as slices
  uint64_t slice_launches;     // LP: sub-grid launches those took (1-3 per slice)
  uint64_t slice_fallbacks;    // LP: launches run whole because their variant failed
  int64_t synced_ns;           // HP: when a wrapped sync last returned with all work done
  int32_t comp_fixed_us;       // HP: HBTUI_COMP_EVERY_US in force (us), -1 (L): hp_comp_us rules
  uint8_t _pad3[512 - 372];
} hb_header;

// One launch (128 B). Ring of HB_LAUNCH_CAP at HB_OFF_LAUNCH, slot = index % cap.
// Multi-producer: a thread claims index i = launch_head++ (atomic), sets pub = 0, writes
// the fields and stores pub = i + 1 last (release). A reader at index i takes the record
// iff pub == i + 1 before and after copying it (else: not yet written, or overwritten).
typedef struct {
  uint64_t pub;
  uint64_t seq;                // launch seq (gate and completion); 1-based
  uint64_t func;               // CUfunction / CUkernel / CUgraphExec
  uint64_t stream;             // as passed; a _ptsz entry point's 0 is recorded as 2
  int64_t enqueue_ns;          // CLOCK_MONOTONIC when the program called
  int64_t issue_ns;            // when the real driver call began (LP: after the gate)
  int64_t return_ns;           // when it returned (HP: = enqueue_ns, one clock read)
  uint32_t grid[3];
  uint32_t block[3];
  uint32_t smem;
  int32_t result;              // CUresult of the real call
  uint8_t kind;                // HB_KIND_*
  uint8_t flags;               // HB_LF_*
  uint16_t comp_slot;          // completion counter this launch's seq is written to
  uint32_t tid;
  uint64_t slice_start;        // HB_LF_SLICE: first block (linear, x fastest) of the slice
  uint32_t slice_blocks;       // HB_LF_SLICE: its blocks (grid[] is the whole launch's)
  uint32_t slice_parts;        // HB_LF_SLICE: sub-grid launches it took (1-3)
  uint8_t _pad[128 - 112];
} hb_launch;

// A held LP launch (64 B). HB_PENDING_CAP at HB_OFF_PENDING. seq == 0: free;
// seq == UINT64_MAX: being written; else published (release).
typedef struct {
  uint64_t seq;
  uint64_t func;
  uint64_t stream;
  int64_t since_ns;
  uint32_t grid[3];
  uint32_t block[3];
  uint32_t tid;
  uint8_t kind;
  uint8_t _pad[3];
} hb_pending;

// A module load (64 B). Ring of HB_MODULE_CAP at HB_OFF_MODULE, published like hb_launch.
typedef struct {
  uint64_t pub;
  uint64_t module;             // CUmodule / CUlibrary
  uint64_t hash;               // 64-bit hash of the image bytes (0: no image)
  uint64_t size;               // image bytes hashed
  int64_t ns;
  uint32_t api;                // HB_API_*
  uint32_t image_kind;         // HB_IMG_*
  int32_t result;
  uint32_t tid;
  uint8_t _pad[64 - 56];
} hb_module;

// A function handle's name (256 B). Ring of HB_FUNC_CAP at HB_OFF_FUNC.
typedef struct {
  uint64_t pub;
  uint64_t func;               // CUfunction / CUkernel
  uint64_t module;             // CUmodule / CUlibrary (KERNEL_GET_FUNCTION: the CUkernel)
  uint64_t module_hash;        // the module's image hash (0: unknown)
  uint64_t name_hash;          // hash of the full name (names may be truncated)
  int64_t ns;
  uint32_t api;
  int32_t result;
  uint32_t name_len;           // full length of the name
  uint32_t _pad;
  char name[HB_NAME_MAX];      // NUL-terminated, truncated to HB_NAME_MAX - 1
} hb_func;

// A sliced variant of one LP function (256 B). Table of HB_VARIANT_CAP at HB_OFF_VARIANT,
// open addressing on the CUfunction (hb_variant_slot, linear probing). The engine writes
// every field, then `func` (release); an entry is never removed while the segment lives;
// `slice_blocks` changes live. The interceptor checks module_hash and name_hash against
// its own record of the function (a handle value reused after an unload never matches).
typedef struct {
  uint64_t func;               // E: the program's CUfunction; 0 = free slot
  uint64_t module_hash;        // E: its module image hash: <moddir>/<16 hex>.sliced.ptx
  uint64_t name_hash;          // E: hash64 of the full entry name
  uint32_t nparams;            // E: the kernel's own params (kernelParams entries)
  uint32_t param_bytes;        // E: where the six appended u32 start in a packed buffer
  uint32_t slice_blocks;       // E (live): blocks per slice, rounded down to whole waves
                               //   (at least one); 0 = one wave; with HB_SLICE_FORCED set,
                               //   exactly the low 31 bits (the operator's, below a wave too)
  uint32_t state;              // I: HB_VAR_*
  uint32_t wave_blocks;        // I: SMs x resident blocks per SM at its last launch
  int32_t result;              // I: CUresult of the step that failed (HB_VAR_FAILED)
  char name[HB_NAME_MAX];      // E: the entry's name in the sliced module
  uint8_t _pad[256 - 240];
} hb_variant;

#define HB_SLICE_FORCED 0x80000000u  // hb_variant.slice_blocks: an exact count, no wave rounding
#define HB_SLICE_MAX_BLOCKS (1u << 30)  // per slice before rows: + a row + half a wave < 2^32

static inline uint32_t hb_variant_slot(uint64_t func) {
  return (uint32_t)((func * 0x9E3779B97F4A7C15ULL) >> 54) & (HB_VARIANT_CAP - 1);
}

#ifdef __cplusplus
#define HB_STATIC_ASSERT static_assert
#else
#define HB_STATIC_ASSERT _Static_assert
#endif
HB_STATIC_ASSERT(sizeof(hb_header) == 512, "hb_header");
HB_STATIC_ASSERT(sizeof(hb_launch) == 128, "hb_launch");
HB_STATIC_ASSERT(sizeof(hb_variant) == 256, "hb_variant");
HB_STATIC_ASSERT(sizeof(hb_pending) == 64, "hb_pending");
HB_STATIC_ASSERT(sizeof(hb_module) == 64, "hb_module");
HB_STATIC_ASSERT(sizeof(hb_func) == 256, "hb_func");
HB_STATIC_ASSERT(HB_OFF_COMP_KEY + HB_COMP_SLOTS * 8 <= HB_OFF_COMP_DONE, "comp keys");
HB_STATIC_ASSERT(HB_COMP_SLOTS * 8 <= HB_COMP_PAGE, "comp page");
HB_STATIC_ASSERT(HB_OFF_COMP_DONE + HB_COMP_PAGE <= HB_OFF_PENDING, "comp page");
HB_STATIC_ASSERT(HB_OFF_PENDING + HB_PENDING_CAP * 64 <= HB_OFF_LAUNCH, "pending");
HB_STATIC_ASSERT(HB_SHM_SIZE % 4096 == 0, "size");

#endif
