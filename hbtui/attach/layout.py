"""The shared-memory segment's layout (``hbtui/native/hbtui_shm.h``), mirrored in ctypes.

This is the one Python copy of the layout; tests/attach/test_layout.py compiles the
header and checks every offset and size against these classes. Field meanings, who
writes what and the gate protocol: the header file and docs/attach.md.
"""

from __future__ import annotations

import ctypes

MAGIC = 0x314D485355544248  # "HBTUSHM1"
VERSION = 6  # 2: ptx_saved, ptx_save_errors; 3: slices (variant table); 4: hp_comp_us, synced_ns;
# 5: hp_burst_us; 6: SLICE_FORCED

LAUNCH_CAP = 4096
MODULE_CAP = 512
FUNC_CAP = 4096
PENDING_CAP = 64
COMP_SLOTS = 256
NAME_MAX = 192
VARIANT_CAP = 1024

OFF_COMP_KEY = 512
OFF_COMP_DONE = 4096
OFF_PENDING = 8192
OFF_LAUNCH = 12288
OFF_MODULE = OFF_LAUNCH + LAUNCH_CAP * 128
OFF_FUNC = OFF_MODULE + MODULE_CAP * 64
OFF_VARIANT = OFF_FUNC + FUNC_CAP * 256
SHM_SIZE = OFF_VARIANT + VARIANT_CAP * 256
COMP_PAGE = 4096

CLASS_HP, CLASS_LP = 0, 1
MODE_PASS, MODE_GATED = 0, 1
FLAG_NO_COMPLETION = 1
COMP_UNSET, COMP_SETUP, COMP_WRITEVAL, COMP_HOSTFN, COMP_OFF = range(5)

KIND_KERNEL, KIND_KERNEL_EX, KIND_COOP, KIND_GRAPH = 1, 2, 3, 4
KIND_REQ_BEGIN, KIND_REQ_END = 5, 6  # request markers (hbtui_request_begin/end): no launch
KIND_NAMES = {1: "kernel", 2: "kernel_ex", 3: "coop", 4: "graph", 5: "req_begin", 6: "req_end"}
LF_PTSZ, LF_HELD, LF_PREGRANTED, LF_UNGATED, LF_CAPTURED, LF_NO_SLOT = 1, 2, 4, 8, 16, 32
LF_COALESCED = 64  # HP: no completion write of its own (HBTUI_COMP_EVERY_US)
LF_SLICE = 128  # LP: one slice of a launch (slice_start, slice_blocks)
COMP_NONE = 0xFFFF

API_MODULE_LOAD_DATA = 1
API_MODULE_LOAD_DATA_EX = 2
API_MODULE_LOAD_FATBIN = 3
API_LIBRARY_LOAD_DATA = 4
API_MODULE_GET_FUNCTION = 5
API_LIBRARY_GET_KERNEL = 6
API_KERNEL_GET_FUNCTION = 7
API_MODULE_LOAD = 8  # cuModuleLoad(path): the file's bytes are hashed
IMG_UNKNOWN, IMG_CUBIN, IMG_FATBIN, IMG_PTX = 0, 1, 2, 3
VAR_UNTRIED, VAR_READY, VAR_FAILED = 0, 1, 2
SLICE_FORCED = 1 << 31  # Variant.slice_blocks: exactly the low 31 bits (below a wave too)
SLICE_MAX_BLOCKS = 1 << 30  # blocks a slice at most (before whole rows)

u8, u16, u32, i32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_int32
u64, i64 = ctypes.c_uint64, ctypes.c_int64


class Header(ctypes.Structure):
    _fields_ = [
        # identity (launcher)
        ("magic", u64),
        ("version", u32),
        ("header_size", u32),
        ("total_size", u64),
        ("cls", u32),
        ("launcher_pid", i32),
        ("launch_cap", u32),
        ("module_cap", u32),
        ("func_cap", u32),
        ("pending_cap", u32),
        ("comp_slots", u32),
        ("name_max", u32),
        ("task", ctypes.c_char * 64),
        ("_pad0", u8 * 8),
        # engine line
        ("heartbeat_ns", i64),
        ("granted_seq", u64),
        ("mode", u32),
        ("gate_word", u32),
        ("grace_ms", u32),
        ("spin_us", u32),
        ("flags", u32),
        ("engine_pid", i32),
        ("slice_on", u32),  # LP: launches of functions with a variant run as slices
        ("hp_comp_us", u32),  # HP: completion-write coalescing asked for (0: 100 us)
        ("hp_burst_us", u32),  # HP: a launch after this long quiet gets a write (0: the period)
        ("_pad1", u8 * 12),
        # interceptor line
        ("next_seq", u64),
        ("launch_head", u64),
        ("module_head", u64),
        ("func_head", u64),
        ("waiters", u32),
        ("ungated", u32),
        ("comp_state", u32),
        ("intercept_pid", i32),
        ("comp_dev", u64),
        ("syncing", u32),  # HP: threads inside a wrapped sync now (their tail is covered)
        ("device_cc", u32),  # LP: compute capability major*10+minor (0: unknown)
        # interceptor counters
        ("ungated_events", u64),
        ("held_launches", u64),
        ("held_ns", u64),
        ("ungated_launches", u64),
        ("captured_launches", u64),
        ("comp_errors", u64),
        ("comp_overflow", u64),
        ("pending_overflow", u64),
        ("ptx_saved", u64),
        ("ptx_save_errors", u64),
        ("sliced_launches", u64),
        ("slice_launches", u64),
        ("slice_fallbacks", u64),
        ("synced_ns", i64),  # HP: when a wrapped sync last returned with all work done
        ("comp_fixed_us", i32),  # HP: HBTUI_COMP_EVERY_US in force, -1: hp_comp_us rules
        ("_pad3", u8 * 140),
    ]


class Launch(ctypes.Structure):
    _fields_ = [
        ("pub", u64),
        ("seq", u64),
        ("func", u64),
        ("stream", u64),
        ("enqueue_ns", i64),
        ("issue_ns", i64),
        ("return_ns", i64),
        ("grid", u32 * 3),
        ("block", u32 * 3),
        ("smem", u32),
        ("result", i32),
        ("kind", u8),
        ("flags", u8),
        ("comp_slot", u16),
        ("tid", u32),
        ("slice_start", u64),
        ("slice_blocks", u32),
        ("slice_parts", u32),
        ("_pad", u8 * 16),
    ]


class Pending(ctypes.Structure):
    _fields_ = [
        ("seq", u64),
        ("func", u64),
        ("stream", u64),
        ("since_ns", i64),
        ("grid", u32 * 3),
        ("block", u32 * 3),
        ("tid", u32),
        ("kind", u8),
        ("_pad", u8 * 3),
    ]


class Module(ctypes.Structure):
    _fields_ = [
        ("pub", u64),
        ("module", u64),
        ("hash", u64),
        ("size", u64),
        ("ns", i64),
        ("api", u32),
        ("image_kind", u32),
        ("result", i32),
        ("tid", u32),
        ("_pad", u8 * 8),
    ]


class Func(ctypes.Structure):
    _fields_ = [
        ("pub", u64),
        ("func", u64),
        ("module", u64),
        ("module_hash", u64),
        ("name_hash", u64),
        ("ns", i64),
        ("api", u32),
        ("result", i32),
        ("name_len", u32),
        ("_pad", u32),
        ("name", ctypes.c_char * NAME_MAX),
    ]


class Variant(ctypes.Structure):
    _fields_ = [
        ("func", u64),
        ("module_hash", u64),
        ("name_hash", u64),
        ("nparams", u32),
        ("param_bytes", u32),
        ("slice_blocks", u32),
        ("state", u32),
        ("wave_blocks", u32),
        ("result", i32),
        ("name", ctypes.c_char * NAME_MAX),
        ("_pad", u8 * 16),
    ]


def variant_slot(func: int) -> int:
    """``hb_variant_slot``: where the probe for ``func`` starts in the variant table."""
    return (((func * 0x9E3779B97F4A7C15) & _M_FULL) >> 54) & (VARIANT_CAP - 1)


_M_FULL = (1 << 64) - 1

RINGS = {  # name: (record class, offset, capacity, header head field)
    "launch": (Launch, OFF_LAUNCH, LAUNCH_CAP, "launch_head"),
    "module": (Module, OFF_MODULE, MODULE_CAP, "module_head"),
    "func": (Func, OFF_FUNC, FUNC_CAP, "func_head"),
}

_M = (1 << 64) - 1


def hash64(data: bytes) -> int:
    """The interceptor's image/name hash (``hash64`` in intercept.c)."""
    n = len(data)
    h = 0x9E3779B97F4A7C15 ^ n
    pad = data + b"\0" * (-n % 8)
    for (w,) in _words(pad):
        h ^= (w * 0xFF51AFD7ED558CCD) & _M
        h = ((((h << 29) | (h >> 35)) & _M) * 0x9E3779B97F4A7C15) & _M
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M
    h ^= h >> 29
    return h


def _words(b: bytes):  # noqa: ANN202
    import struct

    return struct.iter_unpack("<Q", b)


def check_sizes() -> None:
    """The ctypes mirror has the C sizes (a cheap self-check at import)."""
    sizes = {Header: 512, Launch: 128, Pending: 64, Module: 64, Func: 256, Variant: 256}
    for cls, n in sizes.items():
        if ctypes.sizeof(cls) != n:
            raise AssertionError(f"{cls.__name__}: {ctypes.sizeof(cls)} B, C has {n} B")
    assert SHM_SIZE % 4096 == 0


check_sizes()
