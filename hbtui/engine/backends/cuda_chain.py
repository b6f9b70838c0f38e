"""HP issue by the native thread ("HP chain") for the cuda backend, and LP slices armed
behind chained HP launches.

Unless ``hp_issue="python"`` (or ``$HBTUI_HP_ISSUE=python``), HP requests are handed
whole to a native thread (``native/hpchain.c``, engine.backends.hpchain): it issues
kernel i+1 its host gap after it saw kernel i's end stamp, with its own stamp slots and
argument arrays, and the completions come back through ``wait``. The Python loop then
only issues LP. User kernels (no stamps) are issued from Python. ``hp_issue="auto"``
falls back to Python issue, with ``hp_issue_note`` saying why, when the library cannot
be built.

``ChainIssue`` is a part of ``CudaBackend`` (a mixin): it uses the backend's driver,
streams, stamp slots and in-flight queues.
"""

from __future__ import annotations

import collections
import ctypes
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.cuda_kernels import PreparedBuiltin
from hbtui.engine.backends.driver import err_name
from hbtui.engine.backends.inflight import ArmedSlice, InFlight
from hbtui.engine.model import KernelSpec, Launch

if TYPE_CHECKING:
    from hbtui.engine.backends.cuda import CudaBackend

CHAIN_SLOTS = 1024  # stamp slots of the HP chain (one kernel in flight at a time)
CHAIN_MAX_PENDING = 4000  # steps in the native ring (4096); more wait in a backlog here
STALL_S = 60.0  # a launch not done after this long is reported as hung


class ChainIssue:
    """The HP-chain half of CudaBackend (see the module docstring)."""

    def _start_chain(self: CudaBackend) -> None:
        from hbtui.engine.backends import hpchain

        drv = self._drv
        lib = ctypes.CDLL("libcuda.so.1")  # the driver cuda.bindings loaded: same handle

        def fn(name: str) -> int:
            return int(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0)

        self._chain_ts_host, ts_dev = drv.host_mapped(16 * CHAIN_SLOTS)
        cnt_dev = drv.malloc(4 * CHAIN_SLOTS)
        drv.check(drv.cu.cuMemsetD32(cnt_dev, 0, CHAIN_SLOTS), "cuMemsetD32")
        self.synchronize()
        self._chain_args: dict[str, PreparedBuiltin] = {}  # the chain's own argument arrays
        self._chain_launches: dict[int, Launch] = {}
        self._chain_backlog: collections.deque = collections.deque()
        self._chain_progress = time.perf_counter_ns()
        self._chain = hpchain.Chain(
            fn("cuLaunchKernel"), fn("cuStreamQuery"), self._chain_ts_host, ts_dev, cnt_dev,
            CHAIN_SLOTS, setctx=fn("cuCtxSetCurrent"), ctx=int(self._ctx),
            record=fn("cuEventRecord"), wait=fn("cuStreamWaitEvent"),
        )  # fmt: skip
        # launch id → (event recorded after it, its step number in push order)
        self._chain_ev: dict[int, tuple[Any, int]] = {}
        self._chain_ev_pool: list[Any] = []
        self._chain_seq = 0  # steps submitted so far (the ring's push order, backlog included)

    def can_arm(self: CudaBackend, kernel: KernelSpec) -> bool:
        p = self._prepared.get(kernel.name)
        return self._chain is not None and p is not None and not p.user

    def can_chain(self: CudaBackend, kernel: KernelSpec) -> bool:
        p = self._prepared.get(kernel.name)
        return self._chain is not None and p is not None and not p.user

    def submit_chain(
        self: CudaBackend, launches: Sequence[Launch], gaps_ns: Sequence[int], not_before_ns: int
    ) -> None:
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
                p = q.copy()  # type: ignore[union-attr]
                self._chain_args[name] = p
            stream = self._streams.get(la.stream)
            if stream is None:
                stream = self._lp_stream(la.stream)
            ev = self._chain_ev_pool.pop() if self._chain_ev_pool else self._drv.new_event()
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
        for k in range(0, len(steps), CHAIN_MAX_PENDING):
            self._chain_backlog.append(steps[k : k + CHAIN_MAX_PENDING])
        self._chain_flush()

    def _chain_flush(self: CudaBackend) -> None:
        ch, backlog = self._chain, self._chain_backlog
        while backlog and ch.pending + len(backlog[0]) <= CHAIN_MAX_PENDING:
            ch.push(backlog.popleft())

    def chain_issued(self: CudaBackend, launch: Launch) -> bool:
        if self._chain is None:
            return True
        e = self._chain_ev.get(launch.id)
        return e is None or self._chain.issued > e[1]  # done, or launched and recorded

    def chain_expect(self: CudaBackend, t_ns: int) -> None:
        if self._chain is not None:
            self._chain.expect(t_ns)

    def _chain_poll(self: CudaBackend, now: int) -> list[Launch]:
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
                    f"native HP issue: {what} failed: {err_name(self._cu, d.err)} "
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
        elif ch.pending and now - self._chain_progress > STALL_S * 1e9:
            raise BackendError(
                f"native HP issue: no HP kernel completed for {STALL_S:.0f} s: hung kernel?"
            )
        if self._chain_backlog:
            self._chain_flush()
        return out

    def _submit_armed(
        self: CudaBackend, launch: Launch, p: PreparedBuiltin, stream: Any, issue: int, seq: int
    ) -> None:
        """Hand the slice to the native thread, to go out right after chained HP step
        ``seq`` (behind its event); if the thread issued that step meanwhile, launch it
        here as ``submit`` would."""
        from hbtui.engine.backends.hpchain import Arm, HpChainError

        cu = self._cu
        name = launch.kernel.name
        hp = launch.after.id  # type: ignore[union-attr]
        # the thread launches a step's slots in slot order: after those pending for it
        aslot = 1 + max((a.slot for a in self._armed), default=-1)
        if aslot >= self._chain.arm_slots:
            raise BackendError(
                f"launch {launch.id}: more than {aslot} LP slices armed behind HP launch {hp}"
            )
        ap = self._arm_args.get((name, aslot))
        if ap is None:  # its own cells: the thread reads them after this returns
            ap = p.copy()
            self._arm_args[(name, aslot)] = ap
        slot = self._take_slot(ap, launch.start_block)
        grid = launch.end_block - launch.start_block
        ev = self._events.pop() if self._events else self._drv.new_event()
        b = ap.block
        arm = Arm(
            hp_id=hp, func=int(ap.func), stream=int(stream), params=ap.params_addr,
            event=int(ev), grid=grid, bx=b[0], by=b[1], bz=b[2], smem=ap.smem,
        )  # fmt: skip
        try:
            armed_ok = self._chain.arm(aslot, arm, seq)
        except HpChainError as e:
            raise BackendError(f"launch {launch.id}: {e}") from e
        if armed_ok:
            launch.armed = True
            rec = ArmedSlice(launch.stream, hp, aslot)
            item = InFlight(launch, ev, slot, arm=rec)
            self._armed.append(rec)
            self.arm_stats["armed"] += 1
        else:
            self.arm_stats["too_late"] += 1
            self._armed_settle(launch.stream, -1)  # the slices armed before it go first
            r = cu.cuStreamWaitEvent(stream, self._chain_ev[hp][0], 0)
            if r[0] != self._OK:
                raise BackendError(f"cuStreamWaitEvent failed: {err_name(cu, r[0])}")
            ap.launch(self._drv, stream, grid)
            r = cu.cuEventRecord(ev, stream)
            if r[0] != self._OK:
                raise BackendError(f"cuEventRecord failed: {err_name(cu, r[0])}")
            item = InFlight(launch, ev, slot)
        launch.issue_ns = issue
        self._queues[launch.stream].append(item)
        self._inflight += 1

    def _armed_settle(self: CudaBackend, stream: int, keep_hp: int) -> None:
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
            deadline = time.perf_counter_ns() + int(STALL_S * 1e9)
            while not a.launched(ch):
                if ch.failed:
                    raise BackendError(
                        f"native HP issue failed before HP launch {hp} went out, so the LP "
                        "slices armed behind it never will (the CUDA context is unusable)"
                    )
                if time.perf_counter_ns() > deadline:
                    raise BackendError(
                        f"native HP issue: the LP slice armed behind HP launch {hp} was not "
                        f"launched in {STALL_S:.0f} s"
                    )
        self._armed = keep
