"""CUDA backend: real launches through cuda.bindings (driver API), one engine thread.

Streams. Launch.stream 0 (HP) maps to a stream of the context's greatest priority;
every distinct LP stream number ≥ 1 gets its own least-priority stream (non-blocking,
so nothing serialises with the legacy default stream).

Slices. Only built-in kernels (``native/*.cu``, see engine.backends.native) are
launchable for now: each takes a block offset and its original grid, so the slice
[start, end) is one launch of ``end - start`` 1-D blocks. The per-kernel argument
array (ctypes, built once in prepare) is passed by address; submit only rewrites the
block offset and the start-stamp slot before cuLaunchKernel.

Timing, and how GPU times reach the host clock (``now_ns`` = time.perf_counter_ns):
- start_ns: block 0 of every launch writes %globaltimer at entry into a slot of
  host-mapped pinned memory (no copy, no API call to read it). The globaltimer→host
  offset is calibrated at start-up by launching a one-block kernel N times and
  spinning on that slot: offset = min over samples of (host time the stamp became
  visible − stamp), an upper bound on the true offset; the gap to the lower bound
  max(host time before the launch − stamp) is reported as ``gt_bound_ns``. Converted
  starts are therefore late by at most the PCIe write + poll latency (~1 µs).
  Event timestamps would be wrong here: an event recorded before an HP kernel fires
  when the stream reaches it, not when the kernel gets SMs behind running LP blocks.
- end_ns: a CUDA event recorded after each launch; host time = host time of a
  reference event + cuEventElapsedTime(reference, event). The reference's host time
  is the intersection over N samples of [host time before record, host time its
  query first succeeded] shifted by the elapsed time (``ev_bound_ns`` = width). The
  reference moves to a fresh completed event every second because the elapsed time is
  a float32 of ms (ulp 61 ns at 1 s).
- online correction: a completion cannot end after the host saw it complete, nor start
  before it was issued; a conversion that breaks either moves the offset just enough
  (counted in ``clock_stats``), which also absorbs slow drift between the clocks.
The event-poll loop visits only the head of each stream (FIFO), HP first.
"""

from __future__ import annotations

import collections
import ctypes
import statistics
import time
from pathlib import Path
from typing import Any

from engine.backends import native
from engine.backends.base import Backend, BackendError
from engine.model import KernelSpec, Launch

builtin_launch_shape = native.builtin_launch_shape  # re-export for profiles

_TS_SLOTS = 1 << 16  # ring of start stamps (in-flight launches never get near this)
_REANCHOR_MS = 1000.0  # move the event reference this often (float32 ms precision)
_TICK_NS = 500_000_000  # without completions, re-anchor on a marker event this often
_STALL_S = 60.0  # a launch not done after this long is reported as hung
_SLEEP_MARGIN_NS = 200_000  # idle waits sleep until this close to until_ns, then spin


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


class _Prepared:
    """A kernel made launchable: function, buffers and a reusable argument array."""

    __slots__ = (
        "spec",
        "layout",
        "func",
        "total",
        "block",
        "smem",
        "bufs",
        "ts",
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
        self.off = ctypes.c_uint32(0)
        g = layout.grid
        vals: list[Any] = [self.ts, self.off, *(ctypes.c_uint32(x) for x in g)]
        vals += [ctypes.c_uint64(bufs[b.name][0]) for b in layout.buffers]
        vals += [_CTYPES[t](v) for t, v in layout.scalars]
        self._vals = vals  # keep the ctypes objects alive: params points at them
        self.params = (ctypes.c_void_p * len(vals))(*(ctypes.addressof(v) for v in vals))
        self.params_addr = ctypes.addressof(self.params)
        self.blocks_per_sm = bps


class CudaBackend(Backend):
    name = "cuda"

    def __init__(
        self,
        device: int = 0,
        *,
        seed: int = 1,
        calibration_samples: int = 64,
        cache: str | None = None,
    ) -> None:
        self._closed = True
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
        self.pci_bus_id = (bus if isinstance(bus, str) else bus.split(b"\0", 1)[0].decode()).strip(
            "\0"
        )
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
        # host-mapped ring of start stamps
        flags_h = cu.CU_MEMHOSTALLOC_DEVICEMAP | cu.CU_MEMHOSTALLOC_PORTABLE
        self._ts_host = int(
            self._check(cu.cuMemHostAlloc(8 * _TS_SLOTS, flags_h), "cuMemHostAlloc")
        )
        self._ts_dev = int(
            self._check(cu.cuMemHostGetDevicePointer(self._ts_host, 0), "cuMemHostGetDevicePointer")
        )
        self._ts = (ctypes.c_uint64 * _TS_SLOTS).from_address(self._ts_host)
        ctypes.memset(self._ts_host, 0, 8 * _TS_SLOTS)
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
        self._nvml = None
        self._nvml_tried = False
        self.clock_stats = {
            "end_clamped": 0,
            "start_clamped": 0,
            "start_after_end": 0,
            "reanchors": 0,
        }
        self._latency_ns = 5_000
        self._calibrate(calibration_samples)

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
            self._cu.cuEventCreate(self._cu.CUevent_flags.CU_EVENT_DEFAULT), "cuEventCreate"
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
        slot = self._slot
        self._slot = (slot + 1) & (_TS_SLOTS - 1)
        self._ts[slot] = 0
        p.ts.value = self._ts_dev + 8 * slot
        p.off.value = s0
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

    def wait(self, until_ns: int) -> list[Launch]:
        query = self._cu.cuEventQuery
        OK, NR = self._OK, self._NOT_READY
        clock = time.perf_counter_ns
        while True:
            done: list[tuple[Launch, Any, int]] = []
            if self._inflight:
                for q in self._qlist:
                    while q:
                        item = q[0]
                        r = query(item[1])[0]
                        if r == OK:
                            q.popleft()
                            done.append(item)
                        elif r == NR:
                            break
                        else:
                            self._fail("cuEventQuery", r)
            now = clock()
            if done:
                self._inflight -= len(done)
                out = []
                for it in done:
                    la = self._finish(it, now)
                    if la is not None:
                        out.append(la)
                if out:
                    if len(out) > 1:
                        out.sort(key=lambda la: la.end_ns)
                    return out
            if now - self._ref_set_ns > _TICK_NS and not self._tick_pending:
                self._tick()
            if now >= until_ns:
                if self._inflight:
                    self._stall_check(now)
                return []
            if not self._inflight and until_ns - now > 2 * _SLEEP_MARGIN_NS:
                time.sleep((until_ns - now - _SLEEP_MARGIN_NS) / 1e9)

    def launch_latency_ns(self) -> int:
        return self._latency_ns

    def gpu_sample(self) -> dict[str, Any] | None:
        if not self._nvml_tried:
            self._nvml_tried = True
            from engine.nvml import open_sampler

            self._nvml = open_sampler(self.pci_bus_id)
        return None if self._nvml is None else self._nvml.sample()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        cu = self._cu
        try:
            cu.cuCtxSynchronize()
        except Exception:  # noqa: BLE001 - closing after a sticky error: free what we can
            pass
        for q in self._queues.values():
            self._events.extend(it[1] for it in q)
            q.clear()
        for ev in self._events:
            cu.cuEventDestroy(ev)
        if getattr(self, "_ref_ev", None) is not None:
            cu.cuEventDestroy(self._ref_ev)
        for s in self._streams.values():
            cu.cuStreamDestroy(s)
        for ptr in self._allocs:
            cu.cuMemFree(ptr)
        if getattr(self, "_ts_host", None):
            cu.cuMemFreeHost(self._ts_host)
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
    def _tick(self) -> None:
        """Record a marker event on the HP stream; when done it becomes the reference, so
        elapsed times stay short (float32 ms) even when no launch completes for long."""
        ev = self._events.pop() if self._events else self._new_event()
        self._check(self._cu.cuEventRecord(ev, self._hp), "cuEventRecord(tick)")
        self._queues[0].append((None, ev, -1))
        self._inflight += 1
        self._tick_pending = True

    def _finish(self, item: tuple[Launch | None, Any, int], seen_ns: int) -> Launch | None:
        launch, ev, slot = item
        r, ms = self._cu.cuEventElapsedTime(self._ref_ev, ev)
        if r != self._OK:
            self._fail("cuEventElapsedTime", r)
        end = self._ref_host + int(ms * 1e6)
        if end > seen_ns:  # it cannot have ended after we saw it done
            self._ref_host -= end - seen_ns
            end = seen_ns
            self.clock_stats["end_clamped"] += 1
        if launch is None:  # tick: re-anchor on it
            self._events.append(self._ref_ev)
            self._ref_ev, self._ref_host, self._ref_set_ns = ev, end, seen_ns
            self._tick_pending = False
            self.clock_stats["reanchors"] += 1
            return None
        last = self._last_end.get(launch.stream, 0)
        if end < last:  # keep per-stream FIFO visible after a clamp moved the offset
            end = last
        self._last_end[launch.stream] = end
        g = self._ts[slot]
        if g:
            start = g + self._gt_off
            if start < launch.issue_ns:  # nor started before it was issued
                self._gt_off += launch.issue_ns - start
                start = launch.issue_ns
                self.clock_stats["start_clamped"] += 1
            if start > end:
                start = end
                self.clock_stats["start_after_end"] += 1
        else:
            start = launch.issue_ns  # kernel wrote no stamp (should not happen for builtins)
        launch.start_ns = start
        launch.end_ns = end
        if ms > _REANCHOR_MS:
            self._events.append(self._ref_ev)
            self._ref_ev, self._ref_host, self._ref_set_ns = ev, end, seen_ns
            self.clock_stats["reanchors"] += 1
        else:
            self._events.append(ev)
        return launch

    def _fail(self, op: str, err) -> None:
        raise BackendError(
            f"{op} failed: {_err_name(self._cu, err)} (the CUDA context is unusable)"
        )

    def _stall_check(self, now: int) -> None:
        for q in self._qlist:
            if q and q[0][0] is not None and now - q[0][0].issue_ns > _STALL_S * 1e9:
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
        """Map %globaltimer and event times to perf_counter_ns; measure launch latency."""
        cu = self._cu
        spin = KernelSpec(
            "__hb_calib",
            grid=(1, 1, 1),
            block=(32, 1, 1),
            builtin="spin",
            params={"us": 0, "blocks": 1, "threads": 32},
        )
        p = getattr(self, "_calib_p", None)
        if p is None:
            self.prepare(spin)
            p = self._calib_p = self._prepared.pop(spin.name)
        clock = time.perf_counter_ns
        evs = [self._new_event() for _ in range(n)]
        lo_e: list[int] = []
        hi_e: list[int] = []
        samples: list[tuple[int, int, int]] = []  # (h0, g, h_seen)
        deadline = clock() + 5_000_000_000
        for i in range(n):
            slot = self._slot
            self._slot = (slot + 1) & (_TS_SLOTS - 1)
            self._ts[slot] = 0
            p.ts.value = self._ts_dev + 8 * slot
            p.off.value = 0
            h0 = clock()
            self._check(
                cu.cuLaunchKernel(p.func, 1, 1, 1, 32, 1, 1, 0, self._hp, p.params_addr, 0),
                "cuLaunchKernel(calibration)",
            )
            while self._ts[slot] == 0:
                if clock() > deadline:
                    raise BackendError("calibration kernel never wrote its start stamp")
            h_seen = clock()
            samples.append((h0, self._ts[slot], h_seen))
            self.synchronize()
            t0 = clock()
            self._check(cu.cuEventRecord(evs[i], self._hp), "cuEventRecord")
            while True:
                r = cu.cuEventQuery(evs[i])[0]
                if r == self._OK:
                    break
                if r != self._NOT_READY:
                    self._fail("cuEventQuery", r)
            t1 = clock()
            lo_e.append(t0)
            hi_e.append(t1)
        # globaltimer: offset ∈ [max(h0 - g), min(h_seen - g)]; use the upper bound
        # (stamps visible late, never early), drop the first (cold) samples.
        use = samples[n // 8 :]
        up = min(h - g for _, g, h in use)
        lo = max(h0 - g for h0, g, _ in use)
        self._gt_off = up
        self.gt_bound_ns = up - lo
        lat = [g + up - h0 for h0, g, _ in use]
        self._latency_ns = int(statistics.median(lat))
        self.latency_samples_ns = lat
        # events: host(ref) ∈ ∩ [lo_i - d_i, hi_i - d_i], ref = the first event
        ref = evs[0]
        lo_r, hi_r = -(1 << 62), 1 << 62
        for i in range(n // 8, n):
            d = int(self._check(cu.cuEventElapsedTime(ref, evs[i]), "cuEventElapsedTime") * 1e6)
            lo_r = max(lo_r, lo_e[i] - d)
            hi_r = min(hi_r, hi_e[i] - d)
        if lo_r > hi_r:  # inconsistent (timer resolution): fall back to the tightest sample
            lo_r = hi_r
        self._ref_ev = ref
        self._ref_host = (lo_r + hi_r) // 2
        self.ev_bound_ns = hi_r - lo_r
        self._ref_set_ns = clock()
        self._tick_pending = False
        self._last_end: dict[int, int] = {}
        self._events.extend(evs[1:])
        self.calibrated_at_ns = clock()

    def recalibrate(self, samples: int = 64) -> dict[str, int]:
        """Calibrate again (needs an idle GPU) and report how far the old mapping had
        drifted: gt_shift_ns / ev_shift_ns = new − old host time of the same instant."""
        if self._inflight:
            raise BackendError("recalibrate needs no launches in flight")
        old_gt, old_ev, old_host, old_at = (
            self._gt_off,
            self._ref_ev,
            self._ref_host,
            self._ref_set_ns,
        )
        self._calibrate(samples)
        ms = self._check(self._cu.cuEventElapsedTime(old_ev, self._ref_ev), "cuEventElapsedTime")
        self._events.append(old_ev)
        return {
            "interval_ns": self._ref_set_ns - old_at,
            "gt_shift_ns": self._gt_off - old_gt,
            "ev_shift_ns": self._ref_host - (old_host + int(ms * 1e6)),
        }

    # ------------------------------------------------------------------ tests / tools
    def clock_info(self) -> dict[str, Any]:
        """Calibration results and online correction counters."""
        return {
            "gt_bound_ns": self.gt_bound_ns,
            "ev_bound_ns": self.ev_bound_ns,
            "launch_latency_ns": self._latency_ns,
            "gt_offset_ns": self._gt_off,
            "ref_host_ns": self._ref_host,
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
