"""CUDA backend: real launches through cuda.bindings (driver API), one engine thread.

The backend in rooms: driver helpers (engine.backends.driver), prepared kernels and their
launches (engine.backends.cuda_kernels), GPU → host clock (engine.backends.clock), HP
issue by a native thread (engine.backends.cuda_chain over engine.backends.hpchain), user
kernels' compile and checks (engine.backends.user_kernels), test tools
(engine.backends.cuda_testing). This module: the streams, the in-flight queues and the
Backend API.

Streams. Launch.stream 0 (HP) maps to a stream of the context's greatest priority;
every distinct LP stream number ≥ 1 gets its own least-priority stream (non-blocking,
so nothing serialises with the legacy default stream).

Timing. Built-in kernels stamp both ends with %globaltimer into a slot of host-mapped
pinned memory (no copy, no API call to read); ``ClockTracker`` turns the stamps into host
times (engine.backends.clock). Events (timing disabled) only say "done" and surface
sticky errors. ``clock_info()`` and ``recalibrate()`` report the offset and its drift.
The event-poll loop visits only the head of each stream (FIFO), HP first.

User kernels cannot stamp %globaltimer, so timing comes from two timing events recorded
around all sub-launches of the Launch: the GPU duration is their elapsed time (exact,
~0.5 µs resolution), the end is the host time of the poll that saw the end event done
(late by the poll latency, like the native end bound) and start = end − duration, kept
≥ the issue time. The start event fires when the stream reaches the launch, so behind
another stream's resident blocks the duration includes the wait for SMs. User-kernel
completions do not feed the %globaltimer offset tracking.
"""

from __future__ import annotations

import collections
import ctypes
import os
import time
from typing import Any

from hbtui.engine.backends import native
from hbtui.engine.backends.base import Backend, BackendError
from hbtui.engine.backends.clock import ClockTracker, calibrate
from hbtui.engine.backends.cuda_chain import STALL_S, ChainIssue
from hbtui.engine.backends.cuda_kernels import (
    KernelLoader,
    Prepared,
    PreparedBuiltin,
    PreparedUser,
)
from hbtui.engine.backends.driver import (  # noqa: F401 - cuda_available, smi_bus_id: public here
    Driver,
    cuda_available,
    err_name,
    load_driver,
    smi_bus_id,
)
from hbtui.engine.backends.inflight import ArmedSlice, InFlight
from hbtui.engine.model import HP, KernelSpec, Launch

_TS_SLOTS = 1 << 16  # ring of (start, end) stamps; in-flight launches never get near this
_SLEEP_MARGIN_NS = 1_000_000  # idle waits sleep until this close to until_ns, then spin:
# time.sleep overshoots by 100s of µs on busy VMs, and an HP arrival must not wait for it


class CudaBackend(ChainIssue, Backend):
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
        self._arm_args: dict[tuple[str, int], PreparedBuiltin] = {}
        self._armed: list[ArmedSlice] = []  # armed slices not yet seen launched
        self.arm_stats = {"armed": 0, "too_late": 0}  # too late: launched from Python
        hp_issue = hp_issue or os.environ.get("HBTUI_HP_ISSUE") or "auto"
        if hp_issue not in ("auto", "native", "python"):
            raise BackendError(f"hp_issue must be auto, native or python, got {hp_issue!r}")
        cu = load_driver()
        drv = self._drv = Driver(cu)
        self._cu = cu
        self._OK = drv.OK
        self._NOT_READY = drv.NOT_READY
        self._seed = seed
        try:
            drv.check(cu.cuInit(0), "cuInit")
        except BackendError:
            raise
        except Exception as e:  # noqa: BLE001 - DynamicLibNotFoundError: no driver
            raise BackendError(f"cuInit failed: {type(e).__name__}: {e}") from e
        n = drv.check(cu.cuDeviceGetCount(), "cuDeviceGetCount")
        if not 0 <= device < n:
            raise BackendError(f"CUDA device {device} does not exist ({n} visible)")
        self._dev = drv.dev = drv.check(cu.cuDeviceGet(device), "cuDeviceGet")
        self._ctx = drv.check(cu.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        self._closed = False
        drv.check(cu.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        name = drv.check(cu.cuDeviceGetName(256, self._dev), "cuDeviceGetName")
        self._name = name.split(b"\0", 1)[0].decode()
        A = cu.CUdevice_attribute
        self._sms = drv.attr(A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        self.cc = (
            drv.attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            drv.attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        )
        bus = drv.check(cu.cuDeviceGetPCIBusId(32, self._dev), "cuDeviceGetPCIBusId")
        self.pci_bus_id = smi_bus_id(bus)
        least, greatest = drv.check(cu.cuCtxGetStreamPriorityRange(), "cuCtxGetStreamPriorityRange")
        self.priority_range = (int(least), int(greatest))
        flags = cu.CUstream_flags.CU_STREAM_NON_BLOCKING
        self._streams: dict[int, Any] = {}
        self._queues: dict[int, collections.deque[InFlight]] = {}
        self._qlist: list[collections.deque[InFlight]] = []  # poll order: HP first
        self._hp = drv.stream(flags, greatest)
        self._streams[0] = self._hp
        self._queues[0] = collections.deque()
        self._qlist.append(self._queues[0])
        self._lp_flags, self._lp_prio = flags, least
        self._inflight = 0
        self._events: list[Any] = [drv.new_event() for _ in range(256)]
        self._tevents: list[Any] = []  # timing-enabled events, for user kernels only
        # host-mapped ring of (start, end) stamps
        self._ts_host, self._ts_dev = drv.host_mapped(16 * _TS_SLOTS)
        self._ts = (ctypes.c_uint64 * (2 * _TS_SLOTS)).from_address(self._ts_host)
        self._cnt_dev = drv.malloc(4 * _TS_SLOTS)  # per-slot block counters (kernels reset)
        drv.check(cu.cuMemsetD32(self._cnt_dev, 0, _TS_SLOTS), "cuMemsetD32")
        self._slot = 0
        # kernels
        self.target = native.target_for(self.cc)
        self._kernels = KernelLoader(drv, self._hp, self.target, cache)
        self._prepared: dict[str, Prepared] = {}
        self._nvml: Any = None  # BackgroundSampler, from start_gpu_sampling()
        self._latency_ns = 5_000
        self._calibrate(calibration_samples)
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

    # ------------------------------------------------------------------ helpers
    def _lp_stream(self, idx: int) -> Any:
        s = self._drv.stream(self._lp_flags, self._lp_prio)
        self._streams[idx] = s
        q: collections.deque[InFlight] = collections.deque()
        self._queues[idx] = q
        self._qlist.append(q)
        return s

    def _take_slot(self, p: PreparedBuiltin, start_block: int) -> int:
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

    def _fail(self, op: str, err: Any) -> None:
        self._drv.fail(op, err)

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
        seed = self._seed * 7919 + len(self._prepared) * 131
        p: Prepared
        if kernel.source:
            p = self._kernels.user(kernel, self._sms, seed)
        else:
            p = self._kernels.builtin(kernel, seed)
        self._prepared[kernel.name] = p
        return p.blocks_per_sm

    def sliceable(self, kernel: KernelSpec) -> bool:
        p = self._prepared.get(kernel.name)
        return kernel.sliceable and not (p is not None and p.user and not p.sliced)

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
                raise BackendError(f"cuStreamWaitEvent failed: {err_name(self._cu, r[0])}")
        if p.user:
            return self._submit_user(launch, p, stream, issue)  # type: ignore[arg-type]
        if armed >= 0:
            return self._submit_armed(launch, p, stream, issue, armed)  # type: ignore[arg-type]
        slot = self._take_slot(p, s0)  # type: ignore[arg-type]
        cu = self._cu
        p.launch(self._drv, stream, s1 - s0)  # type: ignore[call-arg]
        ev = self._events.pop() if self._events else self._drv.new_event()
        r = cu.cuEventRecord(ev, stream)
        if r[0] != self._OK:
            raise BackendError(f"cuEventRecord failed: {err_name(cu, r[0])}")
        launch.issue_ns = issue
        self._queues[launch.stream].append(InFlight(launch, ev, slot))
        self._inflight += 1

    def _submit_user(self, launch: Launch, p: PreparedUser, stream: Any, issue: int) -> None:
        cu = self._cu
        ev0 = self._tevents.pop() if self._tevents else self._drv.new_timing_event()
        ev1 = self._tevents.pop() if self._tevents else self._drv.new_timing_event()
        r = cu.cuEventRecord(ev0, stream)
        if r[0] != self._OK:
            raise BackendError(f"cuEventRecord failed: {err_name(cu, r[0])}")
        p.launch(self._drv, stream, launch.start_block, launch.end_block, launch.id)
        r = cu.cuEventRecord(ev1, stream)
        if r[0] != self._OK:
            raise BackendError(f"cuEventRecord failed: {err_name(cu, r[0])}")
        launch.issue_ns = issue
        self._queues[launch.stream].append(InFlight(launch, ev1, -1, ev0))
        self._inflight += 1

    def wait(self, until_ns: int) -> list[Launch]:
        query = self._cu.cuEventQuery
        OK, NR = self._OK, self._NOT_READY
        clock = time.perf_counter_ns
        ts = self._ts
        chain = self._chain
        while True:
            done: list[InFlight] = []
            chained: list[Launch] = []
            if chain is not None and (chain.pending or self._chain_backlog):
                chained = self._chain_poll(clock())
            if self._inflight:
                for q in self._qlist:
                    while q:
                        item = q[0]
                        slot = item.slot
                        if item.arm is not None and not item.arm.launched(chain):
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
                        r = query(item.event)[0]
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

    def synchronize(self) -> None:
        self._drv.check(self._cu.cuCtxSynchronize(), "cuCtxSynchronize")

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
                if it.user:  # two timing events
                    self._tevents += [it.event, it.start_event]
                else:
                    self._events.append(it.event)
            q.clear()
        chain_evs = list(getattr(self, "_chain_ev_pool", []))
        chain_evs += [e for e, _ in getattr(self, "_chain_ev", {}).values()]
        for ev in self._events + self._tevents + chain_evs:
            cu.cuEventDestroy(ev)
        for s in self._streams.values():
            cu.cuStreamDestroy(s)
        for ptr in self._drv.allocs:
            cu.cuMemFree(ptr)
        if getattr(self, "_ts_host", None):
            cu.cuMemFreeHost(self._ts_host)
        if getattr(self, "_chain_ts_host", None):
            cu.cuMemFreeHost(self._chain_ts_host)
        for m in getattr(self, "_kernels", None) and self._kernels.modules or []:
            cu.cuModuleUnload(m)
        if getattr(self, "_nvml", None) is not None:
            self._nvml.close()
        cu.cuDevicePrimaryCtxRelease(self._dev)

    def __enter__(self) -> CudaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ completions
    def _finish(self, item: InFlight, seen_ns: int) -> Launch:
        if item.user:
            return self._finish_user(item.launch, item.event, item.start_event, seen_ns)
        self._events.append(item.event)
        slot = item.slot
        return self._times(item.launch, self._ts[2 * slot], self._ts[2 * slot + 1], seen_ns)

    def _times(self, launch: Launch, g0: int, g1: int, seen_ns: int) -> Launch:
        """GPU stamps → host times, tracking the clock offset (engine.backends.clock)."""
        launch.start_ns, launch.end_ns = self._clock.times(
            launch.stream, launch.issue_ns, g0, g1, seen_ns
        )
        return launch

    def _finish_user(self, launch: Launch, ev1: Any, ev0: Any, seen_ns: int) -> Launch:
        """Events around the sub-launches: exact GPU duration, end = the poll that saw it."""
        r = self._cu.cuEventElapsedTime(ev0, ev1)
        self._tevents += [ev0, ev1]
        if r[0] != self._OK:
            self._fail("cuEventElapsedTime", r[0])
        dur = int(float(r[1]) * 1e6)
        launch.start_ns, launch.end_ns = self._clock.event_times(
            launch.stream, launch.issue_ns, dur, seen_ns
        )
        return launch

    def _stall_check(self, now: int) -> None:
        for q in self._qlist:
            if q and now - q[0].launch.issue_ns > STALL_S * 1e9:
                la = q[0].launch
                # a sticky error shows on any query; cuCtxSynchronize could block forever
                for st in self._streams.values():
                    r = self._cu.cuStreamQuery(st)[0]
                    if r not in (self._OK, self._NOT_READY):
                        self._fail("cuStreamQuery", r)
                raise BackendError(
                    f"launch {la.id} ({la.kernel.name}) not complete {STALL_S:.0f} s after issue: "
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
            self._drv.check(
                cu.cuLaunchKernel(p.func, 1, 1, 1, 32, 1, 1, 0, self._hp, p.params_addr, 0),
                "cuLaunchKernel(calibration)",
            )
            while self._ts[2 * slot] == 0:
                if clock() > deadline:
                    raise BackendError("calibration kernel never wrote its start stamp")
            h_seen = clock()
            samples.append((h0, self._ts[2 * slot], h_seen))
            self.synchronize()
        cal = calibrate(samples)
        if getattr(self, "_clock", None) is None:
            self._clock = ClockTracker(cal.offset_ns, clock())
        else:
            self._clock.reset(cal.offset_ns, clock())
        self.gt_bound_ns = cal.bound_ns
        self._latency_ns = cal.latency_ns
        self.latency_samples_ns = cal.latency_samples_ns

    def recalibrate(self, samples: int = 64) -> dict[str, int]:
        """Calibrate again (needs an idle GPU); report how far the tracked offset was
        from the fresh one (positive: the tracked offset was early)."""
        if self._inflight:
            raise BackendError("recalibrate needs no launches in flight")
        tracked = self._clock.tracked(time.perf_counter_ns())
        self._calibrate(samples)
        off = self._clock.offset_ns
        return {
            "tracked_vs_fresh_ns": off - tracked,
            "drift_since_start_ns": off - self._clock.first_offset_ns,
        }

    def clock_info(self) -> dict[str, Any]:
        """Calibration results and online correction counters."""
        c = self._clock
        return {
            "gt_bound_ns": self.gt_bound_ns,
            "launch_latency_ns": self._latency_ns,
            "offset_ns": c.offset_ns,
            "offset_drift_since_start_ns": c.offset_ns - c.first_offset_ns,
            **c.stats,
        }
