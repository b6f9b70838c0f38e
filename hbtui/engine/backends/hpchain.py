"""The native HP issue loop (``native/hpchain.c``): build, load and drive it.

The cuda backend hands each HP request to a native thread that issues its kernels
exactly as the workload says — kernel i+1 ``gap`` after the thread saw kernel i's end
stamp — so no HP launch waits for the Python scheduling thread (see the C file for the
numbers behind this). The library is compiled at start-up with the system C compiler
(``$CC`` or ``cc``) and cached by a hash of source and compiler under
``$XDG_CACHE_HOME/hbtui/host``; where no compiler works, ``HpChainError`` says why and
the backend keeps issuing HP from Python.

The library takes the driver entry points as plain function pointers, so the CPU tests
drive it with fakes (tests/test_hpchain.py). Completions come back as ``Done`` records:
the host times of issue, launch-call return and end seen, and the two %globaltimer stamps.
"""

from __future__ import annotations

import ctypes
import weakref
from pathlib import Path
from typing import Any

from hbtui.engine.backends.native import NATIVE_DIR
from hbtui.engine.ccbuild import BuildError, build_cached

SOURCE = NATIVE_DIR / "hpchain.c"
CFLAGS = ("-O2", "-std=gnu11", "-shared", "-fPIC", "-pthread")
NOT_READY = 600  # CUDA_ERROR_NOT_READY


class HpChainError(RuntimeError):
    """The native HP loop could not be built or started."""


class Step(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("func", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
        ("params", ctypes.c_void_p),
        ("ts_cell", ctypes.c_void_p),
        ("cnt_cell", ctypes.c_void_p),
        ("gap_ns", ctypes.c_int64),
        ("not_before", ctypes.c_int64),
        ("event", ctypes.c_void_p),
        ("grid", ctypes.c_uint32),
        ("bx", ctypes.c_uint32),
        ("by", ctypes.c_uint32),
        ("bz", ctypes.c_uint32),
        ("smem", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class Arm(ctypes.Structure):
    _fields_ = [
        ("hp_id", ctypes.c_uint64),
        ("func", ctypes.c_void_p),
        ("stream", ctypes.c_void_p),
        ("params", ctypes.c_void_p),
        ("event", ctypes.c_void_p),
        ("grid", ctypes.c_uint32),
        ("bx", ctypes.c_uint32),
        ("by", ctypes.c_uint32),
        ("bz", ctypes.c_uint32),
        ("smem", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


ARM_LAUNCHED = 3  # arm_word's state once the thread launched the armed slice


class Done(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("issue_ns", ctypes.c_int64),
        ("called_ns", ctypes.c_int64),
        ("seen_ns", ctypes.c_int64),
        ("g0", ctypes.c_uint64),
        ("g1", ctypes.c_uint64),
        ("slot", ctypes.c_uint32),
        ("err", ctypes.c_int32),
        ("no_stamp", ctypes.c_int32),
        ("pad", ctypes.c_int32),
    ]


def build(cache: Path | None = None) -> Path:
    """The shared library, compiled now or taken from the cache. Raises HpChainError."""
    try:
        return build_cached("hpchain", [SOURCE], CFLAGS, cache=cache)
    except BuildError as e:
        raise HpChainError(str(e)) from e


def load(cache: Path | None = None) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build(cache)))
    vp, u32, u64, i32 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int
    lib.hb_chain_create.restype = vp
    lib.hb_chain_create.argtypes = [vp, vp, vp, vp, vp, vp, vp, u64, u64, u32]
    lib.hb_chain_push.restype = i32
    lib.hb_chain_push.argtypes = [vp, vp, i32]
    lib.hb_chain_pop.restype = i32
    lib.hb_chain_pop.argtypes = [vp, vp, i32]
    lib.hb_chain_done_head.restype = vp
    lib.hb_chain_done_head.argtypes = [vp]
    lib.hb_chain_issued_addr.restype = vp
    lib.hb_chain_issued_addr.argtypes = [vp]
    lib.hb_chain_destroy.restype = None
    lib.hb_chain_destroy.argtypes = [vp]
    lib.hb_chain_expect.restype = None
    lib.hb_chain_expect.argtypes = [vp, ctypes.c_int64]
    lib.hb_chain_arm.restype = i32
    lib.hb_chain_arm.argtypes = [vp, i32, vp, ctypes.POINTER(u64)]
    lib.hb_chain_disarm.restype = i32
    lib.hb_chain_disarm.argtypes = [vp, i32, u64]
    lib.hb_chain_arm_word.restype = vp
    lib.hb_chain_arm_word.argtypes = [vp, i32]
    lib.hb_chain_failed.restype = i32
    lib.hb_chain_failed.argtypes = [vp]
    lib.hb_chain_arm_slots.restype = i32
    lib.hb_chain_arm_slots.argtypes = []
    pi = ctypes.POINTER(i32)
    lib.hb_chain_sizes.restype = i32
    lib.hb_chain_sizes.argtypes = [pi, pi, pi]
    s, d, a = i32(), i32(), i32()
    lib.hb_chain_sizes(ctypes.byref(s), ctypes.byref(d), ctypes.byref(a))
    sizes = (ctypes.sizeof(Step), ctypes.sizeof(Done), ctypes.sizeof(Arm))
    if (s.value, d.value, a.value) != sizes:
        raise HpChainError(
            f"hpchain ABI mismatch: C step/done/arm {s.value}/{d.value}/{a.value} B, "
            f"Python {sizes[0]}/{sizes[1]}/{sizes[2]} B"
        )
    return lib


class Chain:
    """One native HP thread. ``push`` whole requests; ``poll`` returns completions."""

    def __init__(
        self,
        launch: int,
        query: int,
        ts_host: int,
        ts_dev: int,
        cnt_dev: int,
        nslots: int,
        setctx: int = 0,
        ctx: int = 0,
        record: int = 0,
        wait: int = 0,
        cache: Path | None = None,
    ) -> None:
        self._lib = load(cache)
        self._h = self._lib.hb_chain_create(
            launch, query, setctx or None, record or None, wait or None, ctx or None,
            ts_host, ts_dev, cnt_dev, nslots,
        )  # fmt: skip
        if not self._h:
            raise HpChainError(
                "hb_chain_create failed (thread not started, or it could not make the CUDA "
                "context current)"
            )
        # the thread must stop even if close() is never called (it reads our memory)
        self._fin = weakref.finalize(self, self._lib.hb_chain_destroy, self._h)
        self._head = ctypes.c_uint64.from_address(self._lib.hb_chain_done_head(self._h))
        self._issued = ctypes.c_uint64.from_address(self._lib.hb_chain_issued_addr(self._h))
        self.arm_slots = self._lib.hb_chain_arm_slots()
        self._arm_word = [
            ctypes.c_uint64.from_address(self._lib.hb_chain_arm_word(self._h, i))
            for i in range(self.arm_slots)
        ]
        self._tail = 0
        self._out = (Done * 64)()
        self.pending = 0  # steps pushed and not yet returned
        self.pushed = 0  # steps pushed so far: step number n is issued once issued > n

    def push(self, steps: list[Step]) -> None:
        if not self._h:
            raise HpChainError("HP chain is closed")
        arr = (Step * len(steps))(*steps)
        if self._lib.hb_chain_push(self._h, arr, len(steps)) != len(steps):
            raise HpChainError(f"HP chain queue full ({self.pending} steps pending)")
        self.pending += len(steps)
        self.pushed += len(steps)

    def poll(self) -> list[Any]:
        """Completions since the last poll (a plain load when there are none)."""
        if not self._h or self._head.value == self._tail:
            return []
        out: list[Any] = []
        while True:
            n = self._lib.hb_chain_pop(self._h, self._out, 64)
            out += [Done.from_buffer_copy(self._out[i]) for i in range(n)]
            if n < 64:
                break
        self._tail += len(out)
        self.pending -= len(out)
        return out

    @property
    def issued(self) -> int:
        """Steps launched so far (with their events recorded): a plain load."""
        return self._issued.value if self._h else 0

    def arm(self, slot: int, arm: Arm, seq: int) -> bool:
        """Arm ``arm`` in ``slot`` to go out right after HP step ``arm.hp_id`` (push order
        ``seq``); the thread launches a step's slots in slot order. True: the thread will
        launch it; False: that step was already issued and the thread did not take the
        arm: the caller launches the slice itself (after the slots before it)."""
        if not self._h:
            raise HpChainError("HP chain is closed")
        issued = ctypes.c_uint64()
        if not self._lib.hb_chain_arm(self._h, slot, ctypes.byref(arm), ctypes.byref(issued)):
            raise HpChainError(
                f"hb_chain_arm: arm slot {slot} is still pending or invalid (or the chain "
                "has no cuStreamWaitEvent/cuEventRecord)"
            )
        if issued.value <= seq:
            return True  # the thread has not issued the step: it will see the arm
        return not self._lib.hb_chain_disarm(self._h, slot, arm.hp_id)

    def arm_launched(self, slot: int, hp_id: int) -> bool:
        """Whether the slice armed in ``slot`` behind HP step ``hp_id`` was launched (or
        the slot moved on): a plain load."""
        w = self._arm_word[slot].value if self._h else 0
        return (w >> 2) != hp_id or (w & 3) == ARM_LAUNCHED

    @property
    def failed(self) -> bool:
        """The thread stopped issuing after an error (its record is in the done ring)."""
        return bool(self._h) and bool(self._lib.hb_chain_failed(self._h))

    def expect(self, t_ns: int) -> None:
        """The next request is expected at ``t_ns`` (perf_counter_ns; 0: unknown): the
        idle thread spins from 1 ms before it instead of sleeping through the arrival."""
        if self._h:
            self._lib.hb_chain_expect(self._h, int(t_ns))

    def close(self) -> None:
        """Stop and free the thread (steps not yet issued are dropped). Idempotent."""
        if self._h:
            self._h = None
            self._fin()  # joins the thread, frees the chain
