"""CUDA backend: real launches through cuda.bindings (driver API), one engine thread.

Streams. Launch.stream 0 (HP) maps to a stream of the context's greatest priority;
every distinct LP stream number ≥ 1 gets its own least-priority stream (non-blocking,
so nothing serialises with the legacy default stream).

Slices. Only built-in kernels (``native/*.cu``, see engine.backends.native) are
launchable for now: each takes a block offset and its original grid, so the slice
[start, end) is one launch of ``end - start`` 1-D blocks. The per-kernel argument
array (ctypes, built once in prepare) is passed by address; submit only rewrites the
block offset and the stamp/counter slot pointers before cuLaunchKernel.

Timing, and how GPU times reach the host clock (``now_ns`` = time.perf_counter_ns).
Both ends of every launch are stamped by the kernel itself with %globaltimer into a
slot of host-mapped pinned memory (no copy, no API call to read): block 0 writes the
start at entry, the last block to finish (a device atomic counter) writes the end.
Event timestamps are not used: an event recorded before an HP kernel fires when the
stream reaches it, not when the kernel gets SMs behind running LP blocks, and on the
lent H100 a chain of cuEventElapsedTime re-anchors drifted 245 µs from the host clock
in ~15 s and disagreed with %globaltimer. Events (timing disabled) only say
"done" and surface sticky errors.
host = stamp + offset. The offset starts from a calibration (one-block kernel launched
N times on an idle GPU, host spinning on the stamp: offset = min(host time the stamp
became visible − stamp), an upper bound; ``gt_bound_ns`` is the gap to the lower bound
max(host time before the launch − stamp)). It is then tracked online from two free
bounds on every completion: the end cannot be later than the poll that saw the launch
done (offset ≤ seen − end stamp; applied at once) and the start cannot precede the
issue (offset ≥ issue − start stamp); between completions the estimate relaxes by
50 ppm so it follows drift either way (%globaltimer vs perf_counter_ns drifted ~13 ppm
on the lent H100 VM, ~200 µs in 15 s, so a fixed offset is not enough). Converted
times are late by about the poll latency (≈1–3 µs); durations are exact GPU-clock
differences. ``clock_info()`` and ``recalibrate()`` report the offset and its drift.
The event-poll loop visits only the head of each stream (FIFO), HP first.

HP issue ("HP chain"). Unless ``hp_issue="python"`` (or ``$HBTUI_HP_ISSUE=python``), HP
requests are handed whole to a native thread (``native/hpchain.c``, built with the
system C compiler, engine.backends.hpchain): it issues kernel i+1 its host gap after it
saw kernel i's end stamp, with its own stamp slots and argument arrays, and the
completions come back through ``wait``. The Python loop then only issues LP. User
kernels (no stamps) are issued from Python. ``hp_issue="auto"`` (the default) falls back
to Python issue with ``hp_issue_note`` saying why when the library cannot be built.

User kernels (profile ``source``/``entry``/``args``, see docs/slicer.md). prepare() gets
the sliced PTX for the device's compute arch (engine.slicer.user: NVRTC output cached on
disk), loads it with cuModuleLoadData (driver PTX JIT), allocates and fills the buffers
and builds one argument array: the kernel's own args, then the six slice params whose
ctypes values submit() rewrites before each cuLaunchKernel. A slice [start, end) is
``plan_launches`` sub-grids (1 launch for 1-D grids, up to 3 / 5 for 2-D / 3-D). These
kernels cannot stamp %globaltimer, so timing comes from two timing events recorded
around all sub-launches of the Launch: the GPU duration is their elapsed time (exact,
~0.5 µs resolution), the end is the host time of the poll that saw the end event done
(late by the poll latency, like the native end bound) and start = end − duration, kept
≥ the issue time. The start event fires when the stream reaches the launch, so behind
another stream's resident blocks the duration includes the wait for SMs. User-kernel
completions do not feed the %globaltimer offset tracking. Unsliceable kernels are
launched whole (cuLaunchCooperativeKernel when they grid-sync).
"""

from __future__ import annotations

import collections
import ctypes
import os
import statistics
import time
from pathlib import Path
from typing import Any

from hbtui.engine.backends import native
from hbtui.engine.backends.base import Backend, BackendError
from hbtui.engine.model import HP, KernelSpec, Launch
from hbtui.engine.slicer.launch import plan_launches

builtin_launch_shape = native.builtin_launch_shape  # re-export for profiles

_TS_SLOTS = 1 << 16  # ring of (start, end) stamps; in-flight launches never get near this
_RELAX_DIV = 20_000  # offset may drift up by 1 ns per 20 µs (50 ppm; 13 ppm seen on an H100)
_STALL_S = 60.0  # a launch not done after this long is reported as hung
_CHAIN_SLOTS = 1024  # stamp slots of the HP chain (one kernel in flight at a time)
_CHAIN_MAX_PENDING = 4000  # steps in the native ring (4096); more wait in a backlog here
_SLEEP_MARGIN_NS = 1_000_000  # idle waits sleep until this close to until_ns, then spin:
# time.sleep overshoots by 100s of µs on busy VMs, and an HP arrival must not wait for it


def cuda_available() -> bool:
    """True when cuda.bindings imports, cuInit succeeds and a device exists. Any
    failure (no package, no driver: DynamicLibNotFoundError, no device) → False."""
    try:
        from cuda.bindings import driver as cu

        (err,) = cu.cuInit(0)
        if err != cu.CUresult.CUDA_SUCCESS:
            return False
        err, n = cu.cuDeviceGetCount()
        return err == cu.CUresult.CUDA_SUCCESS and n > 0
    except Exception:  # noqa: BLE001 - "no GPU" whatever the reason
        return False


def smi_bus_id(raw: str | bytes) -> str:
    """A PCI bus id from cuDeviceGetPCIBusId ("0000:2a:00.0", NUL-padded) as nvidia-smi and
    NVML print it ("00000000:2A:00.0"), which is what operators compare it with."""
    s = (raw.split(b"\0", 1)[0].decode() if isinstance(raw, bytes) else raw).strip("\0").strip()
    dom, sep, rest = s.partition(":")
    try:
        return f"{int(dom, 16):08X}:{rest.upper()}" if sep else s.upper()
    except ValueError:
        return s  # not the form we know: as the driver gave it


def _cu():
    try:
        from cuda.bindings import driver
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"cuda.bindings unavailable: {e}") from e
    return driver


def _err_name(cu, err) -> str:
    try:
        r, name = cu.cuGetErrorName(err)
        if r == cu.CUresult.CUDA_SUCCESS:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        pass
    return f"CUresult {int(err)}"


_CTYPES = {"u32": ctypes.c_uint32, "u64": ctypes.c_uint64, "f32": ctypes.c_float}
_USER_SCALARS = {
    "i32": ctypes.c_int32,
    "u32": ctypes.c_uint32,
    "i64": ctypes.c_int64,
    "u64": ctypes.c_uint64,
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
}
_DTYPE_BYTES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i8": 1, "u8": 1, "i16": 2, "u16": 2,
                "i32": 4, "u32": 4, "i64": 8, "u64": 8}  # fmt: skip
_ONE = {  # the bytes of 1 in each dtype, for init = "ones"
    "f16": b"\x00\x3c", "bf16": b"\x80\x3f", "f32": b"\x00\x00\x80\x3f",
    "f64": b"\x00" * 6 + b"\xf0\x3f", "i8": b"\x01", "u8": b"\x01", "i16": b"\x01\x00",
    "u16": b"\x01\x00", "i32": b"\x01\x00\x00\x00", "u32": b"\x01\x00\x00\x00",
    "i64": b"\x01" + b"\x00" * 7, "u64": b"\x01" + b"\x00" * 7,
}  # fmt: skip


class _Prepared:
    """A kernel made launchable: function, buffers and a reusable argument array."""

    user = False  # class attribute: submit() branches on it (user kernels: _UserPrepared)

    __slots__ = (
        "spec",
        "layout",
        "func",
        "total",
        "block",
        "smem",
        "bufs",
        "ts",
        "cnt",
        "off",
        "_vals",
        "params",
        "params_addr",
        "blocks_per_sm",
    )

    def __init__(self, spec: KernelSpec, layout: native.ArgLayout, func, bufs, bps: int, smem: int):
        self.spec = spec
        self.layout = layout
        self.func = func
        self.total = spec.total_blocks
        self.block = spec.block
        self.smem = smem
        self.bufs: dict[str, tuple[int, native.BufferSpec]] = bufs  # name → (devptr, spec)
        self.ts = ctypes.c_uint64(0)
        self.cnt = ctypes.c_uint64(0)
        self.off = ctypes.c_uint32(0)
        g = layout.grid
        vals: list[Any] = [self.ts, self.cnt, self.off, *(ctypes.c_uint32(x) for x in g)]
        vals += [ctypes.c_uint64(bufs[b.name][0]) for b in layout.buffers]
        vals += [_CTYPES[t](v) for t, v in layout.scalars]
        self._vals = vals  # keep the ctypes objects alive: params points at them
        self.params = (ctypes.c_void_p * len(vals))(*(ctypes.addressof(v) for v in vals))
        self.params_addr = ctypes.addressof(self.params)
        self.blocks_per_sm = bps


class _UserPrepared:
    """A user kernel made launchable: module function, buffers, argument array whose six
    trailing slice params (sliced kernels only) are rewritten per sub-launch."""

    user = True

    def __init__(self, spec: KernelSpec, func, bufs, bps: int, sliced: bool) -> None:
        self.spec = spec
        self.func = func
        self.total = spec.total_blocks
        self.grid = tuple(spec.grid)
        self.block = spec.block
        self.smem = spec.smem
        self.sliced = sliced
        # name → (devptr, BufferSpec); BufferSpec counts 32-bit words (f16: halves) so that
        # nbytes and the random fill of the shared helpers apply to every dtype
        self.bufs: dict[str, tuple[int, native.BufferSpec]] = bufs
        self.inits: dict[str, tuple[str, str, int]] = {}  # name → (init, dtype, count)
        vals: list[Any] = []
        for a in spec.args:
            if a[0] == "buffer":
                vals.append(ctypes.c_uint64(bufs[a[1]][0]))
                self.inits[a[1]] = (a[4], a[2], a[3])
            else:
                vals.append(_USER_SCALARS[a[1]](a[2]))
        self.slice_vals = [ctypes.c_uint32(0) for _ in range(3)]
        self.slice_vals += [ctypes.c_uint32(x) for x in self.grid]
        if sliced:
            vals += self.slice_vals
        self._vals = vals  # keep the ctypes objects alive: params points at them
        self.params = (ctypes.c_void_p * max(1, len(vals)))(*(ctypes.addressof(v) for v in vals))
        self.params_addr = ctypes.addressof(self.params)
        self.blocks_per_sm = bps


class _Arm:
    """An LP slice armed in the native thread (slot ``slot``, behind HP launch ``hp``).

    ``out`` latches the first sighting of it launched: once a slice is seen launched its
    slot may be armed again, for the same HP launch too (a later slice found that launch
    already issued, so the thread did not take it and Python disarmed the slot), and the
    slot's word no longer says that this slice went out. Read the word only until then.
    """

    __slots__ = ("stream", "hp", "slot", "out")

    def __init__(self, stream: int, hp: int, slot: int) -> None:
        self.stream, self.hp, self.slot, self.out = stream, hp, slot, False

    def launched(self, chain: Any) -> bool:
        if not self.out and chain.arm_launched(self.slot, self.hp):
            self.out = True
        return self.out


class CudaBackend(Backend):
    name = "cuda"

    def __init__(
        self,
        device: int = 0,
        *,
        seed: int = 1,
        calibration_samples: int = 64,
        cache: str | None = None,
        hp_issue: str | None = None,
    ) -> None:
        self._closed = True
        self._chain: Any = None
        # argument arrays of armed LP slices, per (kernel, arm slot)
        self._arm_args: dict[tuple[str, int], _Prepared] = {}
        self._armed: list[_Arm] = []  # armed slices not yet seen launched
        self.arm_stats = {"armed": 0, "too_late": 0}  # too late: launched from Python
        hp_issue = hp_issue or os.environ.get("HBTUI_HP_ISSUE") or "auto"
        if hp_issue not in ("auto", "native", "python"):
            raise BackendError(f"hp_issue must be auto, native or python, got {hp_issue!r}")
        cu = _cu()
        self._cu = cu
        self._OK = cu.CUresult.CUDA_SUCCESS
        self._NOT_READY = cu.CUresult.CUDA_ERROR_NOT_READY
        self._seed = seed
        try:
            self._check(cu.cuInit(0), "cuInit")
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - DynamicLibNotFoundError: no driver
            raise BackendError(f"cuInit failed: {type(e).__name__}: {e}") from e
        n = self._check(cu.cuDeviceGetCount(), "cuDeviceGetCount")
        if not 0 <= device < n:
            raise BackendError(f"CUDA device {device} does not exist ({n} visible)")
        self._dev = self._check(cu.cuDeviceGet(device), "cuDeviceGet")
        self._ctx = self._check(cu.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        self._closed = False
        self._check(cu.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        name = self._check(cu.cuDeviceGetName(256, self._dev), "cuDeviceGetName")
        self._name = name.split(b"\0", 1)[0].decode()
        A = cu.CUdevice_attribute
        self._sms = self._attr(A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        self.cc = (
            self._attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            self._attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        )
        bus = self._check(cu.cuDeviceGetPCIBusId(32, self._dev), "cuDeviceGetPCIBusId")
        self.pci_bus_id = smi_bus_id(bus)
        least, greatest = self._check(
            cu.cuCtxGetStreamPriorityRange(), "cuCtxGetStreamPriorityRange"
        )
        self.priority_range = (int(least), int(greatest))
        flags = cu.CUstream_flags.CU_STREAM_NON_BLOCKING
        self._allocs: list[int] = []
        self._modules: list[Any] = []
        self._streams: dict[int, Any] = {}
        self._queues: dict[int, collections.deque] = {}
        self._qlist: list[collections.deque] = []  # poll order: HP first
        self._hp = self._check(
            cu.cuStreamCreateWithPriority(flags, greatest), "cuStreamCreateWithPriority"
        )
        self._streams[0] = self._hp
        self._queues[0] = collections.deque()
        self._qlist.append(self._queues[0])
        self._lp_flags, self._lp_prio = flags, least
        self._inflight = 0
        self._events: list[Any] = [self._new_event() for _ in range(256)]
        self._tevents: list[Any] = []  # timing-enabled events, for user kernels only
        # host-mapped ring of start stamps
        flags_h = cu.CU_MEMHOSTALLOC_DEVICEMAP | cu.CU_MEMHOSTALLOC_PORTABLE
        self._ts_host = int(
            self._check(cu.cuMemHostAlloc(16 * _TS_SLOTS, flags_h), "cuMemHostAlloc")
        )
        self._ts_dev = int(
            self._check(cu.cuMemHostGetDevicePointer(self._ts_host, 0), "cuMemHostGetDevicePointer")
        )
        self._ts = (ctypes.c_uint64 * (2 * _TS_SLOTS)).from_address(self._ts_host)
        ctypes.memset(self._ts_host, 0, 16 * _TS_SLOTS)
        self._cnt_dev = self._malloc(4 * _TS_SLOTS)  # per-slot block counters (kernels reset)
        self._check(cu.cuMemsetD32(self._cnt_dev, 0, _TS_SLOTS), "cuMemsetD32")
        self._slot = 0
        # kernels
        self.target = native.target_for(self.cc)
        self._funcs: dict[str, Any] = {}
        compiled = native.compile_all(self.target, cache=None if cache is None else Path(cache))
        for src, comp in compiled.items():
            mod = self._check(cu.cuModuleLoadData(comp.image), f"cuModuleLoadData({src})")
            self._modules.append(mod)
        fn_names = {"hb_init_f32": "init.cu", "hb_init_f16": "init.cu"}
        fn_names.update(
            {
                native.builtin_layout(b).function: native.builtin_layout(b).source
                for b in native.BUILTINS
            }
        )
        by_src = dict(zip(compiled, self._modules, strict=True))
        for fn, src in fn_names.items():
            self._funcs[fn] = self._check(
                cu.cuModuleGetFunction(by_src[src], fn.encode()), f"cuModuleGetFunction({fn})"
            )
        self._prepared: dict[str, _Prepared] = {}
        self._nvml: Any = None  # BackgroundSampler, from start_gpu_sampling()
        self.clock_stats = {"raised": 0, "no_stamp": 0}
        self._latency_ns = 5_000
        self._calibrate(calibration_samples)
        self._first_off = self._off
        self.hp_issue_note = ""
        if hp_issue != "python":
            try:
                self._start_chain()
            except Exception as e:  # noqa: BLE001 - HpChainError, OSError from ctypes
                if hp_issue == "native":
                    self.close()
                    raise BackendError(f"native HP issue unavailable: {e}") from e
                self.hp_issue_note = f"native HP issue unavailable, issuing from Python: {e}"
        self.hp_chain = self._chain is not None
        self.hp_issue = "native" if self.hp_chain else "python"

    def _start_chain(self) -> None:
        from hbtui.engine.backends import hpchain

        cu = self._cu
        lib = ctypes.CDLL("libcuda.so.1")  # the driver cuda.bindings loaded: same handle

        def fn(name: str) -> int:
            return int(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0)

        flags_h = cu.CU_MEMHOSTALLOC_DEVICEMAP | cu.CU_MEMHOSTALLOC_PORTABLE
        nbytes = 16 * _CHAIN_SLOTS
        self._chain_ts_host = int(self._check(cu.cuMemHostAlloc(nbytes, flags_h), "cuMemHostAlloc"))
        ctypes.memset(self._chain_ts_host, 0, nbytes)
        ts_dev = int(
            self._check(
                cu.cuMemHostGetDevicePointer(self._chain_ts_host, 0), "cuMemHostGetDevicePointer"
            )
        )
        cnt_dev = self._malloc(4 * _CHAIN_SLOTS)
        self._check(cu.cuMemsetD32(cnt_dev, 0, _CHAIN_SLOTS), "cuMemsetD32")
        self.synchronize()
        self._chain_args: dict[str, _Prepared] = {}  # the chain's own argument arrays
        self._chain_launches: dict[int, Launch] = {}
        self._chain_backlog: collections.deque = collections.deque()
        self._chain_progress = time.perf_counter_ns()
        self._chain = hpchain.Chain(
            fn("cuLaunchKernel"), fn("cuStreamQuery"), self._chain_ts_host, ts_dev, cnt_dev,
            _CHAIN_SLOTS, setctx=fn("cuCtxSetCurrent"), ctx=int(self._ctx),
            record=fn("cuEventRecord"), wait=fn("cuStreamWaitEvent"),
        )  # fmt: skip
        # launch id → (event recorded after it, its step number in push order)
        self._chain_ev: dict[int, tuple[Any, int]] = {}
        self._chain_ev_pool: list[Any] = []
        self._chain_seq = 0  # steps submitted so far (the ring's push order, backlog included)

    # ------------------------------------------------------------------ helpers
    def _check(self, res, op: str):
        err = res[0]
        if err != self._OK:
            raise BackendError(f"{op} failed: {_err_name(self._cu, err)}")
        if len(res) == 1:
            return None
        return res[1] if len(res) == 2 else res[1:]

    def _attr(self, a) -> int:
        return int(self._check(self._cu.cuDeviceGetAttribute(a, self._dev), "cuDeviceGetAttribute"))

    def _new_event(self):
        return self._check(
            self._cu.cuEventCreate(self._cu.CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate"
        )

    def _malloc(self, nbytes: int) -> int:
        ptr = int(self._check(self._cu.cuMemAlloc(max(nbytes, 4)), f"cuMemAlloc({nbytes} B)"))
        self._allocs.append(ptr)
        return ptr

    def _lp_stream(self, idx: int):
        s = self._check(
            self._cu.cuStreamCreateWithPriority(self._lp_flags, self._lp_prio),
            "cuStreamCreateWithPriority",
        )
        self._streams[idx] = s
        q: collections.deque = collections.deque()
        self._queues[idx] = q
        self._qlist.append(q)
        return s

    def _fill(self, ptr: int, b: native.BufferSpec, seed: int) -> None:
        cu = self._cu
        if b.output:
            self._check(cu.cuMemsetD32(ptr, 0xFFFFFFFF, b.nbytes // 4), "cuMemsetD32")  # NaN
            return
        fn = self._funcs["hb_init_f16" if b.dtype == "f16" else "hb_init_f32"]
        vals = [
            ctypes.c_uint64(ptr),
            ctypes.c_uint64(b.count),
            ctypes.c_uint32(seed),
            ctypes.c_float(1.0),
        ]
        arr = (ctypes.c_void_p * 4)(*(ctypes.addressof(v) for v in vals))
        grid = max(1, min(4096, (b.count + 255) // 256))
        self._check(
            cu.cuLaunchKernel(fn, grid, 1, 1, 256, 1, 1, 0, self._hp, ctypes.addressof(arr), 0),
            "cuLaunchKernel(init)",
        )

    # ------------------------------------------------------------------ Backend API
    @property
    def device(self) -> str:
        return self._name

    @property
    def sms(self) -> int:
        return self._sms

    def now_ns(self) -> int:
        return time.perf_counter_ns()

    def prepare(self, kernel: KernelSpec) -> int:
        old = self._prepared.get(kernel.name)
        if old is not None:
            if old.spec == kernel and old.spec.params == kernel.params:
                return old.blocks_per_sm
            raise BackendError(f"kernel {kernel.name!r} prepared twice with different specs")
        if kernel.source:
            return self._prepare_user(kernel)
        smem = kernel.smem
        if not kernel.builtin:
            # No native kernel: a spin stand-in with the profile's cost model (grid, block,
            # block_us), its occupancy capped at blocks_per_sm through reserved shared memory.
            lay, smem = self._standin(kernel)
        else:
            try:
                lay = native.builtin_layout(kernel.builtin, kernel.params)
            except native.NativeError as e:
                raise BackendError(f"kernel {kernel.name!r}: {e}") from e
        if tuple(kernel.grid) != lay.grid or tuple(kernel.block) != lay.block:
            raise BackendError(
                f"kernel {kernel.name!r}: builtin {kernel.builtin} with these params needs "
                f"grid {lay.grid} block {lay.block}, got grid {tuple(kernel.grid)} "
                f"block {tuple(kernel.block)} (omit grid/block to get them)"
            )
        func = self._funcs[lay.function]
        threads = lay.block[0] * lay.block[1] * lay.block[2]
        bps = int(
            self._check(
                self._cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(func, threads, smem),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor",
            )
        )
        if bps < 1:
            raise BackendError(f"kernel {kernel.name!r} cannot be resident on an SM")
        bufs = {}
        for i, b in enumerate(lay.buffers):
            ptr = self._malloc(b.nbytes)
            self._fill(ptr, b, self._seed * 7919 + len(self._prepared) * 131 + i)
            bufs[b.name] = (ptr, b)
        self.synchronize()
        self._prepared[kernel.name] = _Prepared(kernel, lay, func, bufs, bps, smem)
        return bps

    def _prepare_user(self, k: KernelSpec) -> int:
        from hbtui.engine.slicer.user import UserKernelError, load_user_kernel

        cu = self._cu
        tgt = self.target  # sm_XY or compute_XY: user kernels are compiled to PTX
        arch = "compute_" + tgt.split("_", 1)[1]
        try:
            uk = load_user_kernel(k.source, k.entry, arch)  # type: ignore[arg-type]
        except UserKernelError as e:
            raise BackendError(f"kernel {k.name!r}: {k.source}: {e}") from e
        sliced = k.sliceable and uk.sliced
        ptx = uk.sliced_ptx if sliced else uk.ptx
        mod = self._check(cu.cuModuleLoadData(ptx.encode() + b"\0"), f"cuModuleLoadData({k.name})")
        self._modules.append(mod)
        func = self._check(
            cu.cuModuleGetFunction(mod, uk.entry.encode()), f"cuModuleGetFunction({uk.entry})"
        )
        if k.smem > 48 * 1024:  # above the default limit dynamic shared memory is opt-in
            self._check(
                cu.cuFuncSetAttribute(
                    func,
                    cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    k.smem,
                ),
                "cuFuncSetAttribute",
            )
        threads = k.block[0] * k.block[1] * k.block[2]
        bps = int(
            self._check(
                cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(func, threads, k.smem),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor",
            )
        )
        if bps < 1:
            raise BackendError(f"kernel {k.name!r} cannot be resident on an SM")
        if k.cooperative and k.total_blocks > bps * self._sms:
            raise BackendError(
                f"kernel {k.name!r} grid-syncs: its {k.total_blocks} blocks must all be "
                f"resident at once, at most {bps * self._sms} on this GPU"
            )
        bufs = {}
        for a in k.args:
            if a[0] == "buffer":
                nbytes = a[3] * _DTYPE_BYTES[a[2]]
                spec = (
                    native.BufferSpec(a[1], "f16", a[3])
                    if a[2] == "f16"
                    else native.BufferSpec(a[1], "u32", (nbytes + 3) // 4)
                )
                bufs[a[1]] = (self._malloc(spec.nbytes), spec)
        p = _UserPrepared(k, func, bufs, bps, sliced)
        self._init_user(p, self._seed * 7919 + len(self._prepared) * 131)
        self.synchronize()
        self._prepared[k.name] = p  # type: ignore[assignment]
        return bps

    def _init_user(self, p: _UserPrepared, seed: int) -> None:
        """Buffers as the profile's init says: random (non-zero hash values), zeros, ones."""
        cu = self._cu
        for i, (name, (ptr, b)) in enumerate(p.bufs.items()):
            init, dtype, count = p.inits[name]
            if init == "random":
                self._fill(ptr, b, seed + i)
            elif init == "zeros":
                self._check(cu.cuMemsetD8(ptr, 0, b.nbytes), "cuMemsetD8")
            else:
                self._check(cu.cuMemsetD8(ptr, 0, b.nbytes), "cuMemsetD8")  # the padding
                n = len(_ONE[dtype]) * count
                host = ctypes.create_string_buffer(_ONE[dtype] * count, n)
                self._check(cu.cuMemcpyHtoD(ptr, ctypes.addressof(host), n), "cuMemcpyHtoD")

    def _standin(self, k: KernelSpec) -> tuple[native.ArgLayout, int]:
        threads = k.block[0] * k.block[1] * k.block[2]
        if not 1 <= threads <= 1024:
            raise BackendError(f"kernel {k.name!r}: block {k.block} has {threads} threads")
        lay = native.builtin_layout(
            "spin", {"us": k.block_us, "blocks": k.total_blocks, "threads": max(32, threads)}
        )
        lay = native.ArgLayout(
            "spin", lay.source, lay.function, tuple(k.grid), tuple(k.block), lay.buffers,
            lay.scalars,
        )  # fmt: skip
        A = self._cu.CUdevice_attribute
        per_sm = self._attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)
        optin = self._attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        reserved = self._attr(A.CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK)
        want = max(1, k.blocks_per_sm)
        # the largest per-block size that still lets `want` blocks fit, but not want + 1
        smem = min(optin, per_sm // want - reserved) & ~1023
        func = self._funcs[lay.function]
        self._check(
            self._cu.cuFuncSetAttribute(
                func,
                self._cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                optin,
            ),
            "cuFuncSetAttribute",
        )
        return lay, max(0, smem)

    def submit(self, launch: Launch) -> None:
        issue = time.perf_counter_ns()
        try:
            p = self._prepared[launch.kernel.name]
        except KeyError:
            raise BackendError(f"kernel {launch.kernel.name!r} was not prepared") from None
        s0, s1 = launch.start_block, launch.end_block
        if not 0 <= s0 < s1 <= p.total:
            raise BackendError(
                f"launch {launch.id}: block range [{s0}, {s1}) outside 0..{p.total} "
                f"of {launch.kernel.name!r}"
            )
        stream = self._streams.get(launch.stream)
        if stream is None:
            stream = self._lp_stream(launch.stream)
        armed = -1  # the step number of the chained HP launch this one is armed behind
        e = None
        if launch.after is not None and self._chain is not None:
            e = self._chain_ev.get(launch.after.id)
            if e is not None and self._chain.issued <= e[1]:
                if p.user:
                    raise BackendError(
                        f"launch {launch.id}: user kernel {launch.kernel.name!r} cannot be "
                        "armed behind an HP launch that is not issued yet"
                    )
                armed = e[1]
        if self._armed and launch.cls != HP:  # slices armed before this one go out first
            self._armed_settle(launch.stream, launch.after.id if armed >= 0 else -1)  # type: ignore[union-attr]
        if e is not None and armed < 0:  # issued, not done: start right after it ends
            r = self._cu.cuStreamWaitEvent(stream, e[0], 0)
            if r[0] != self._OK:
                raise BackendError(f"cuStreamWaitEvent failed: {_err_name(self._cu, r[0])}")
        if p.user:
            return self._submit_user(launch, p, stream, issue)  # type: ignore[arg-type]
        if armed >= 0:
            return self._submit_armed(launch, p, stream, issue, armed)
        slot = self._take_slot(p, s0)
        b = p.block
        cu = self._cu
        r = cu.cuLaunchKernel(
            p.func, s1 - s0, 1, 1, b[0], b[1], b[2], p.smem, stream, p.params_addr, 0
        )
        if r[0] != self._OK:
            raise BackendError(
                f"cuLaunchKernel({launch.kernel.name}) failed: {_err_name(cu, r[0])}"
            )
        ev = self._events.pop() if self._events else self._new_event()
        r = cu.cuEventRecord(ev, stream)
        if r[0] != self._OK:
            raise BackendError(f"cuEventRecord failed: {_err_name(cu, r[0])}")
        launch.issue_ns = issue
        self._queues[launch.stream].append((launch, ev, slot))
        self._inflight += 1

    def _take_slot(self, p: _Prepared, start_block: int) -> int:
        """The next stamp slot, cleared, and ``p``'s argument cells pointed at it (with
        the slice's block offset)."""
        slot = self._slot
        self._slot = (slot + 1) & (_TS_SLOTS - 1)
        self._ts[2 * slot] = 0
        self._ts[2 * slot + 1] = 0
        p.ts.value = self._ts_dev + 16 * slot
        p.cnt.value = self._cnt_dev + 4 * slot
        p.off.value = start_block
        return slot

    def _submit_armed(self, launch: Launch, p: _Prepared, stream, issue: int, seq: int) -> None:
        """Hand the slice to the native thread, to go out right after chained HP step
        ``seq`` (behind its event); if the thread issued that step meanwhile, launch it
        here as ``submit`` would."""
        from hbtui.engine.backends.hpchain import Arm, HpChainError

        cu = self._cu
        name = launch.kernel.name
        hp = launch.after.id  # type: ignore[union-attr]
        # the thread launches a step's slots in slot order: after those pending for it
        aslot = 1 + max((a.slot for a in self._armed), default=-1)
        if aslot >= self._chain.arm_slots:  # type: ignore[union-attr]
            raise BackendError(
                f"launch {launch.id}: more than {aslot} LP slices armed behind HP launch {hp}"
            )
        ap = self._arm_args.get((name, aslot))
        if ap is None:  # its own cells: the thread reads them after this returns
            ap = _Prepared(p.spec, p.layout, p.func, p.bufs, p.blocks_per_sm, p.smem)
            self._arm_args[(name, aslot)] = ap
        slot = self._take_slot(ap, launch.start_block)
        grid = launch.end_block - launch.start_block
        ev = self._events.pop() if self._events else self._new_event()
        b = ap.block
        arm = Arm(
            hp_id=hp, func=int(ap.func), stream=int(stream), params=ap.params_addr,
            event=int(ev), grid=grid, bx=b[0], by=b[1], bz=b[2], smem=ap.smem,
        )  # fmt: skip
        try:
            armed_ok = self._chain.arm(aslot, arm, seq)  # type: ignore[union-attr]
        except HpChainError as e:
            raise BackendError(f"launch {launch.id}: {e}") from e
        if armed_ok:
            launch.armed = True
            rec = _Arm(launch.stream, hp, aslot)
            item: tuple = (launch, ev, slot, rec)  # item[3]: armed
            self._armed.append(rec)
            self.arm_stats["armed"] += 1
        else:
            self.arm_stats["too_late"] += 1
            self._armed_settle(launch.stream, -1)  # the slices armed before it go first
            r = cu.cuStreamWaitEvent(stream, self._chain_ev[hp][0], 0)
            if r[0] != self._OK:
                raise BackendError(f"cuStreamWaitEvent failed: {_err_name(cu, r[0])}")
            r = cu.cuLaunchKernel(
                ap.func, grid, 1, 1, b[0], b[1], b[2], ap.smem, stream, ap.params_addr, 0
            )
            if r[0] != self._OK:
                raise BackendError(f"cuLaunchKernel({name}) failed: {_err_name(cu, r[0])}")
            r = cu.cuEventRecord(ev, stream)
            if r[0] != self._OK:
                raise BackendError(f"cuEventRecord failed: {_err_name(cu, r[0])}")
            item = (launch, ev, slot)
        launch.issue_ns = issue
        self._queues[launch.stream].append(item)
        self._inflight += 1

    def _armed_settle(self, stream: int, keep_hp: int) -> None:
        """Wait until the slices armed on ``stream`` are out — but those behind HP launch
        ``keep_hp``, to which more are being added (arming also frees the slots of arms
        behind any other HP launch). The native thread launches them right after their HP
        step, at most that step's host gap away; hummingbird never submits LP behind a
        pending arm, so the wait only covers a policy switch in between."""
        ch = self._chain
        keep = []
        for a in self._armed:
            hp = a.hp
            if ch is None or a.launched(ch):
                continue
            if hp == keep_hp or (a.stream != stream and keep_hp < 0):
                keep.append(a)
                continue
            deadline = time.perf_counter_ns() + int(_STALL_S * 1e9)
            while not a.launched(ch):
                if ch.failed:
                    raise BackendError(
                        f"native HP issue failed before HP launch {hp} went out, so the LP "
                        "slices armed behind it never will (the CUDA context is unusable)"
                    )
                if time.perf_counter_ns() > deadline:
                    raise BackendError(
                        f"native HP issue: the LP slice armed behind HP launch {hp} was not "
                        f"launched in {_STALL_S:.0f} s"
                    )
        self._armed = keep

    def can_arm(self, kernel: KernelSpec) -> bool:
        p = self._prepared.get(kernel.name)
        return self._chain is not None and p is not None and not p.user

    def can_chain(self, kernel: KernelSpec) -> bool:
        p = self._prepared.get(kernel.name)
        return self._chain is not None and p is not None and not p.user

    def submit_chain(self, launches, gaps_ns, not_before_ns: int) -> None:  # noqa: ANN001
        from hbtui.engine.backends.hpchain import Step

        if self._chain is None:
            raise BackendError("submit_chain: native HP issue is not running")
        # everything that can fail first; then commit the bookkeeping
        plan = []
        for la, gap in zip(launches, gaps_ns, strict=True):
            name = la.kernel.name
            p = self._chain_args.get(name)
            if p is None:
                q = self._prepared.get(name)
                if q is None or q.user:
                    raise BackendError(f"kernel {name!r} cannot be chained")
                p = _Prepared(q.spec, q.layout, q.func, q.bufs, q.blocks_per_sm, q.smem)
                self._chain_args[name] = p
            stream = self._streams.get(la.stream)
            if stream is None:
                stream = self._lp_stream(la.stream)
            ev = self._chain_ev_pool.pop() if self._chain_ev_pool else self._new_event()
            plan.append((la, int(gap), p, stream, ev))
        if not self._chain.pending and not self._chain_backlog:
            self._chain_progress = time.perf_counter_ns()  # the stall clock starts now
        steps = []
        for i, (la, gap, p, stream, ev) in enumerate(plan):
            self._chain_ev[la.id] = (ev, self._chain_seq)
            self._chain_seq += 1
            self._chain_launches[la.id] = la
            b = p.block
            steps.append(
                Step(
                    id=la.id,
                    func=int(p.func),
                    stream=int(stream),
                    params=p.params_addr,
                    ts_cell=ctypes.addressof(p.ts),
                    cnt_cell=ctypes.addressof(p.cnt),
                    gap_ns=gap,
                    not_before=not_before_ns if i == 0 else -1,
                    event=int(ev),
                    grid=p.total,
                    bx=b[0],
                    by=b[1],
                    bz=b[2],
                    smem=p.smem,
                )  # fmt: skip
            )
        self._inflight += len(steps)
        # the native ring holds 4096 steps: the rest waits here in ring-sized chunks (the
        # steps are independent: only a request's first carries its arrival)
        for k in range(0, len(steps), _CHAIN_MAX_PENDING):
            self._chain_backlog.append(steps[k : k + _CHAIN_MAX_PENDING])
        self._chain_flush()

    def _chain_flush(self) -> None:
        ch, backlog = self._chain, self._chain_backlog
        while backlog and ch.pending + len(backlog[0]) <= _CHAIN_MAX_PENDING:
            ch.push(backlog.popleft())

    def chain_issued(self, launch: Launch) -> bool:
        if self._chain is None:
            return True
        e = self._chain_ev.get(launch.id)
        return e is None or self._chain.issued > e[1]  # done, or launched and recorded

    def chain_expect(self, t_ns: int) -> None:
        if self._chain is not None:
            self._chain.expect(t_ns)

    def _chain_poll(self, now: int) -> list[Launch]:
        ch = self._chain
        out = []
        for d in ch.poll():
            la = self._chain_launches.pop(d.id, None)
            ev = self._chain_ev.pop(d.id, None)
            if ev is not None:
                self._chain_ev_pool.append(ev[0])
            if d.err:
                what = f"launch {d.id} ({la.kernel.name})" if la is not None else "start-up"
                raise BackendError(
                    f"native HP issue: {what} failed: {_err_name(self._cu, d.err)} "
                    "(the CUDA context is unusable)"
                )
            if la is None:  # not a launch we know (cannot happen; never crash over it)
                self._inflight -= 1  # it was counted when pushed
                continue
            la.issue_ns = d.issue_ns
            la.seen_ns = d.seen_ns
            out.append(self._times(la, d.g0, d.g1, d.seen_ns))
        if out:
            self._chain_progress = now
        elif ch.pending and now - self._chain_progress > _STALL_S * 1e9:
            raise BackendError(
                f"native HP issue: no HP kernel completed for {_STALL_S:.0f} s: hung kernel?"
            )
        if self._chain_backlog:
            self._chain_flush()
        return out

    def _submit_user(self, launch: Launch, p: _UserPrepared, stream, issue: int) -> None:
        cu = self._cu
        s0, s1 = launch.start_block, launch.end_block
        b = p.block
        ev0 = self._tevents.pop() if self._tevents else self._new_timing_event()
        ev1 = self._tevents.pop() if self._tevents else self._new_timing_event()
        r = cu.cuEventRecord(ev0, stream)
        if r[0] != self._OK:
            raise BackendError(f"cuEventRecord failed: {_err_name(cu, r[0])}")
        name = launch.kernel.name
        if not p.sliced:
            if (s0, s1) != (0, p.total):
                raise BackendError(
                    f"launch {launch.id}: {name!r} is not sliceable; got blocks [{s0}, {s1})"
                )
            g = p.grid
            if p.spec.cooperative:
                r = cu.cuLaunchCooperativeKernel(
                    p.func, *g, b[0], b[1], b[2], p.smem, stream, p.params_addr
                )
            else:
                r = cu.cuLaunchKernel(
                    p.func, *g, b[0], b[1], b[2], p.smem, stream, p.params_addr, 0
                )
            if r[0] != self._OK:
                raise BackendError(f"launch of {name} failed: {_err_name(cu, r[0])}")
        else:
            sv = p.slice_vals
            for ln in plan_launches(s0, s1, p.grid):
                sv[0].value, sv[1].value, sv[2].value = ln.offset
                g = ln.grid
                r = cu.cuLaunchKernel(
                    p.func, *g, b[0], b[1], b[2], p.smem, stream, p.params_addr, 0
                )
                if r[0] != self._OK:
                    raise BackendError(f"cuLaunchKernel({name}) failed: {_err_name(cu, r[0])}")
        r = cu.cuEventRecord(ev1, stream)
        if r[0] != self._OK:
            raise BackendError(f"cuEventRecord failed: {_err_name(cu, r[0])}")
        launch.issue_ns = issue
        self._queues[launch.stream].append((launch, ev1, -1, ev0))
        self._inflight += 1

    def _new_timing_event(self):
        return self._check(self._cu.cuEventCreate(0), "cuEventCreate")

    def wait(self, until_ns: int) -> list[Launch]:
        query = self._cu.cuEventQuery
        OK, NR = self._OK, self._NOT_READY
        clock = time.perf_counter_ns
        ts = self._ts
        chain = self._chain
        while True:
            done: list[tuple[Launch, Any, int]] = []
            chained: list[Launch] = []
            if chain is not None and (chain.pending or self._chain_backlog):
                chained = self._chain_poll(clock())
            if self._inflight:
                for q in self._qlist:
                    while q:
                        item = q[0]
                        slot = item[2]
                        if slot >= 0 and len(item) > 3 and not item[3].launched(chain):
                            # armed and not marked launched: its event may not be recorded
                            # yet, so it must not go back to the pool even if it has ended
                            break
                        if slot >= 0 and ts[2 * slot + 1]:
                            # The end stamp landed: the last block is done. Reading it is
                            # ~0.1 µs against ~1 µs per cuEventQuery, and it is seen before
                            # the event completes (sticky errors still surface on the next
                            # query or launch).
                            q.popleft()
                            done.append(item)
                            continue
                        r = query(item[1])[0]
                        if r == OK:
                            q.popleft()
                            done.append(item)
                        elif r == NR:
                            break
                        else:
                            self._fail("cuEventQuery", r)
            now = clock()
            if done or chained:
                self._inflight -= len(done) + len(chained)
                out = [self._finish(it, now) for it in done] + chained
                if len(out) > 1:
                    out.sort(key=lambda la: la.end_ns)
                return out
            if now >= until_ns:
                if self._inflight:
                    self._stall_check(now)
                return []
            if not self._inflight and until_ns - now > 2 * _SLEEP_MARGIN_NS:
                time.sleep((until_ns - now - _SLEEP_MARGIN_NS) / 1e9)

    def launch_latency_ns(self) -> int:
        return self._latency_ns

    def start_gpu_sampling(self) -> None:
        if self._nvml is None:
            from hbtui.engine.nvml import BackgroundSampler

            self._nvml = BackgroundSampler(self.pci_bus_id)

    def gpu_sample(self) -> dict[str, Any] | None:
        return None if self._nvml is None else self._nvml.latest()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        cu = self._cu
        if self._chain is not None:  # stop the native thread before the context goes
            self._chain.close()
            self._chain = None
        try:
            cu.cuCtxSynchronize()
        except Exception:  # noqa: BLE001 - closing after a sticky error: free what we can
            pass
        for q in self._queues.values():
            for it in q:
                if it[2] < 0:  # user kernel: two timing events
                    self._tevents += [it[1], it[3]]
                else:
                    self._events.append(it[1])
            q.clear()
        chain_evs = list(getattr(self, "_chain_ev_pool", []))
        chain_evs += [e for e, _ in getattr(self, "_chain_ev", {}).values()]
        for ev in self._events + self._tevents + chain_evs:
            cu.cuEventDestroy(ev)
        for s in self._streams.values():
            cu.cuStreamDestroy(s)
        for ptr in self._allocs:
            cu.cuMemFree(ptr)
        if getattr(self, "_ts_host", None):
            cu.cuMemFreeHost(self._ts_host)
        if getattr(self, "_chain_ts_host", None):
            cu.cuMemFreeHost(self._chain_ts_host)
        for m in self._modules:
            cu.cuModuleUnload(m)
        if self._nvml is not None:
            self._nvml.close()
        cu.cuDevicePrimaryCtxRelease(self._dev)

    def __enter__(self) -> CudaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ completions
    def _finish(self, item: tuple, seen_ns: int) -> Launch:
        launch, ev, slot = item[0], item[1], item[2]
        if slot < 0:
            return self._finish_user(launch, ev, item[3], seen_ns)
        self._events.append(ev)
        return self._times(launch, self._ts[2 * slot], self._ts[2 * slot + 1], seen_ns)

    def _times(self, launch: Launch, g0: int, g1: int, seen_ns: int) -> Launch:
        """GPU stamps → host times, tracking the clock offset (module docstring)."""
        issue = launch.issue_ns
        off = self._off + (seen_ns - self._off_t) // _RELAX_DIV
        if g1 and seen_ns - g1 < off:  # it ended before we saw it done
            off = seen_ns - g1
        if g0 and issue - g0 > off:  # and started after it was issued
            off = issue - g0
            self.clock_stats["raised"] += 1
        self._off, self._off_t = off, seen_ns
        start = g0 + off if g0 else issue
        end = g1 + off if g1 else seen_ns
        if not (g0 and g1):
            self.clock_stats["no_stamp"] += 1
        start = max(start, issue)
        end = min(max(end, start), seen_ns)
        last = self._last_end.get(launch.stream, 0)
        if end < last:  # keep per-stream FIFO visible
            end = last
        self._last_end[launch.stream] = end
        launch.start_ns = min(start, end)
        launch.end_ns = end
        return launch

    def _finish_user(self, launch: Launch, ev1, ev0, seen_ns: int) -> Launch:
        """Events around the sub-launches: exact GPU duration, end = the poll that saw it."""
        r = self._cu.cuEventElapsedTime(ev0, ev1)
        self._tevents += [ev0, ev1]
        if r[0] != self._OK:
            self._fail("cuEventElapsedTime", r[0])
        dur = int(float(r[1]) * 1e6)
        end = seen_ns
        last = self._last_end.get(launch.stream, 0)
        if end < last:  # keep per-stream FIFO visible
            end = last
        self._last_end[launch.stream] = end
        launch.start_ns = min(end, max(launch.issue_ns, end - dur))
        launch.end_ns = end
        return launch

    def _fail(self, op: str, err) -> None:
        raise BackendError(
            f"{op} failed: {_err_name(self._cu, err)} (the CUDA context is unusable)"
        )

    def _stall_check(self, now: int) -> None:
        for q in self._qlist:
            if q and now - q[0][0].issue_ns > _STALL_S * 1e9:
                la = q[0][0]
                # a sticky error shows on any query; cuCtxSynchronize could block forever
                for st in self._streams.values():
                    r = self._cu.cuStreamQuery(st)[0]
                    if r not in (self._OK, self._NOT_READY):
                        self._fail("cuStreamQuery", r)
                raise BackendError(
                    f"launch {la.id} ({la.kernel.name}) not complete {_STALL_S:.0f} s after issue: "
                    "hung kernel?"
                )

    # ------------------------------------------------------------------ calibration
    def _calibrate(self, n: int) -> None:
        """Initial %globaltimer → perf_counter_ns offset, and the launch latency."""
        cu = self._cu
        p = getattr(self, "_calib_p", None)
        if p is None:
            spin = KernelSpec(
                "__hb_calib", grid=(1, 1, 1), block=(32, 1, 1), builtin="spin",
                params={"us": 0, "blocks": 1, "threads": 32},
            )  # fmt: skip
            self.prepare(spin)
            p = self._calib_p = self._prepared.pop(spin.name)
        clock = time.perf_counter_ns
        samples: list[tuple[int, int, int]] = []  # (h0, g, h_seen)
        deadline = clock() + 5_000_000_000
        for _ in range(n):
            slot = self._take_slot(p, 0)
            h0 = clock()
            self._check(
                cu.cuLaunchKernel(p.func, 1, 1, 1, 32, 1, 1, 0, self._hp, p.params_addr, 0),
                "cuLaunchKernel(calibration)",
            )
            while self._ts[2 * slot] == 0:
                if clock() > deadline:
                    raise BackendError("calibration kernel never wrote its start stamp")
            h_seen = clock()
            samples.append((h0, self._ts[2 * slot], h_seen))
            self.synchronize()
        # offset ∈ [max(h0 - g), min(h_seen - g)]; use the upper bound (stamps become
        # visible late, never early); the first samples are cold, drop them.
        use = samples[n // 8 :]
        up = min(h - g for _, g, h in use)
        lo = max(h0 - g for h0, g, _ in use)
        self._off, self._off_t = up, clock()
        self.gt_bound_ns = up - lo
        lat = [g + up - h0 for h0, g, _ in use]
        self._latency_ns = int(statistics.median(lat))
        self.latency_samples_ns = lat
        self._last_end: dict[int, int] = {}

    def recalibrate(self, samples: int = 64) -> dict[str, int]:
        """Calibrate again (needs an idle GPU); report how far the tracked offset was
        from the fresh one (positive: the tracked offset was early)."""
        if self._inflight:
            raise BackendError("recalibrate needs no launches in flight")
        tracked = self._off + (time.perf_counter_ns() - self._off_t) // _RELAX_DIV
        first = self._first_off
        self._calibrate(samples)
        return {
            "tracked_vs_fresh_ns": self._off - tracked,
            "drift_since_start_ns": self._off - first,
        }

    # ------------------------------------------------------------------ tests / tools
    def clock_info(self) -> dict[str, Any]:
        """Calibration results and online correction counters."""
        return {
            "gt_bound_ns": self.gt_bound_ns,
            "launch_latency_ns": self._latency_ns,
            "offset_ns": self._off,
            "offset_drift_since_start_ns": self._off - self._first_off,
            **self.clock_stats,
        }

    def synchronize(self) -> None:
        self._check(self._cu.cuCtxSynchronize(), "cuCtxSynchronize")

    def buffers(self, kernel_name: str) -> dict[str, tuple[int, int, bool]]:
        """name → (device pointer, bytes, is_output) of a prepared kernel."""
        p = self._prepared[kernel_name]
        return {k: (ptr, b.nbytes, b.output) for k, (ptr, b) in p.bufs.items()}

    def read_buffer(self, kernel_name: str, buf: str) -> bytes:
        ptr, b = self._prepared[kernel_name].bufs[buf]
        self.synchronize()
        host = bytearray(b.nbytes)
        arr = (ctypes.c_char * b.nbytes).from_buffer(host)
        self._check(self._cu.cuMemcpyDtoH(ctypes.addressof(arr), ptr, b.nbytes), "cuMemcpyDtoH")
        return bytes(host)

    def refill(self, kernel_name: str, seed: int) -> None:
        """Fresh random inputs (from ``seed``) and NaN-poisoned outputs."""
        p = self._prepared[kernel_name]
        if p.user:  # user kernels keep their init kinds (a zeroed counter stays zero)
            self._init_user(p, seed * 7919)  # type: ignore[arg-type]
            self.synchronize()
            return
        for i, (ptr, b) in enumerate(p.bufs.values()):
            self._fill(ptr, b, seed * 7919 + i)
        self.synchronize()

    def poison_outputs(self, kernel_name: str) -> None:
        for ptr, b in self._prepared[kernel_name].bufs.values():
            if b.output:
                self._fill(ptr, b, 0)
        self.synchronize()

    def blocks_per_sm(self, kernel_name: str) -> int:
        return self._prepared[kernel_name].blocks_per_sm
