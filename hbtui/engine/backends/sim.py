"""Deterministic discrete-event model of a GPU (the default where there is no GPU).

What it models, and why that is enough for scheduling decisions:
- SMs with a fixed capacity; a block of a kernel with occupancy ``blocks_per_sm`` uses
  1/blocks_per_sm of an SM (integer units, so no float drift).
- Streams execute launches in order; stream 0 is the greatest priority. When capacity
  frees, queued blocks of higher-priority streams are dispatched first. Running blocks
  are never preempted: an HP kernel waits for the blocks already resident.
- Launch latency: a launch becomes visible to the GPU ``launch_latency_us`` after it is
  enqueued; each enqueue costs the host ``launch_cost_us``.
- Host loop delay (``loop_delay_us``, default 0): every return from ``wait`` (a
  completion seen, or a wake-up) costs the scheduling thread that long before it can
  act, as a busy host does (20–45 µs measured on the lent H100's VM). The native HP
  thread (``hp_chain``) does not pay it.
- Interference: a block that starts while blocks of the other class (hp vs lp) are
  resident runs ``1 + interference`` times longer (memory/cache contention).
- HP chain (``hp_chain``): models the cuda backend's native HP issue thread. A chained
  launch is issued its host gap after the previous one ended (seen at once), costs the
  scheduling thread nothing, and is visible ``launch_latency_us`` after issue. A launch
  with ``after`` (a stream wait on that launch's event) becomes visible
  ``_DEP_NS`` after that launch ends.

Blocks are simulated as *trains*: a group of ``width`` blocks of one launch running in
back-to-back waves. A train costs two events however many waves it runs; when a
higher-priority launch needs capacity, lower-priority trains are cut at their next wave
boundary (that is where a real block scheduler would hand SM slots over), and when
capacity frees up a narrow train is cut so it can be re-dispatched wider.
"""

from __future__ import annotations

import heapq
import time
from collections import deque

from hbtui.engine.backends.base import Backend
from hbtui.engine.backends.simparams import SimParams
from hbtui.engine.model import HP, KernelSpec, Launch

UNITS_PER_SM = 840  # divisible by 1..8: every occupancy maps to whole units
_DEP_NS = 2_000  # a stream waiting on an event starts this long after the event fires


class _Run:
    """Sim-side state of one launch."""

    __slots__ = ("launch", "unit", "undispatched", "trains", "visible")

    def __init__(self, launch: Launch, unit: int) -> None:
        self.launch = launch
        self.unit = unit
        self.undispatched = launch.blocks
        self.trains = 0
        self.visible = False


class _Train:
    __slots__ = ("run", "width", "t0", "wave_ns", "waves", "version", "hp")

    def __init__(self, run: _Run, width: int, t0: int, wave_ns: int, waves: int) -> None:
        self.run = run
        self.width = width
        self.t0 = t0
        self.wave_ns = wave_ns
        self.waves = waves
        self.version = 0
        self.hp = run.launch.cls == HP

    @property
    def end(self) -> int:
        return self.t0 + self.waves * self.wave_ns


_VISIBLE, _TRAIN_END, _CHAIN = 0, 1, 2


class SimBackend(Backend):
    name = "sim"

    def __init__(self, params: SimParams | None = None, realtime: bool = False) -> None:
        self._whole: set[str] = set()  # user kernels the slicer refused once compiled
        self.params = params or SimParams()
        self._capacity = self.params.sms * UNITS_PER_SM
        self._free = self._capacity
        self._now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, int, object, int]] = []
        self._streams: dict[int, deque[_Run]] = {}
        self._stream_order: list[int] = []
        self._trains: list[_Train] = []
        self._resident = {True: 0, False: 0}  # running trains per class (hp=True)
        self._latency_ns = int(self.params.launch_latency_us * 1000)
        self._cost_ns = int(self.params.launch_cost_us * 1000)
        self._loop_ns = int(self.params.loop_delay_us * 1000)
        self._slow = 1.0 + self.params.interference
        self._completed: list[Launch] = []
        self._realtime = realtime
        self._wall0 = time.monotonic_ns()
        self.hp_chain = self.params.hp_chain
        self.hp_issue = "native (simulated)" if self.hp_chain else "python"
        self._chain: deque[tuple[Launch, int, int]] = deque()  # (launch, gap, not_before)
        self._chain_busy = False  # a chained launch is waiting out its gap or running
        self._chain_cur: Launch | None = None  # the chained launch on the GPU
        self._waiters: dict[int, list[_Run]] = {}  # launch id → runs waiting for its end
        self._chain_seen = 0  # when the last chained launch ended

    # -- Backend interface -------------------------------------------------------
    @property
    def device(self) -> str:
        return f"{self.params.name} ({self.params.sms} SMs)"

    @property
    def sms(self) -> int:
        return self.params.sms

    def prepare(self, kernel: KernelSpec) -> int:
        if not 1 <= kernel.blocks_per_sm <= 8:
            raise ValueError(f"kernel {kernel.name}: blocks_per_sm must be 1..8")
        if kernel.source:  # the checks the cuda backend makes (compiling on the CPU)
            from hbtui.engine.backends.user_kernels import resolve

            if kernel.sliceable and not resolve(kernel).sliced:
                self._whole.add(kernel.name)
        return kernel.blocks_per_sm

    def sliceable(self, kernel: KernelSpec) -> bool:
        return kernel.sliceable and kernel.name not in self._whole

    def now_ns(self) -> int:
        return self._now

    def launch_latency_ns(self) -> int:
        return self._latency_ns

    def submit(self, launch: Launch) -> None:
        self._enqueue(launch, self._now)
        self._now += self._cost_ns  # the host is busy issuing

    def can_chain(self, kernel: KernelSpec) -> bool:
        return self.hp_chain

    # HP kernels here slow down only while LP co-runs, and the learned kernel durations
    # carry that: nothing is hidden from the slack model, so no reserve
    slo_reserve = 0.0

    def can_arm(self, kernel: KernelSpec) -> bool:
        return self.hp_chain

    def chain_issued(self, launch: Launch) -> bool:
        return launch is self._chain_cur or launch.end_ns >= 0

    def submit_chain(self, launches, gaps_ns, not_before_ns: int) -> None:  # noqa: ANN001
        if not self.hp_chain:
            raise NotImplementedError("this simulated GPU has hp_chain = false")
        for i, (la, gap) in enumerate(zip(launches, gaps_ns, strict=True)):
            self._chain.append((la, int(gap), not_before_ns if i == 0 else -1))
        self._chain_next()

    def wait(self, until_ns: int) -> list[Launch]:
        heap = self._heap
        while heap and heap[0][0] <= until_ns:
            t = self._event()
            if self._completed and (not heap or heap[0][0] > t):
                break
        if not self._completed and self._now < until_ns:
            self._now = until_ns
        if self._loop_ns:
            self._advance(self._now + self._loop_ns)  # the host notices (and acts) late
        if self._realtime:
            self._pace()
        done, self._completed = self._completed, []
        return done

    # -- internals -----------------------------------------------------------------
    def _event(self) -> int:
        """Process the next GPU event; return its time."""
        t, _, kind, obj, version = heapq.heappop(self._heap)
        if self._now < t:
            self._now = t
        if kind == _VISIBLE:
            obj.visible = True  # type: ignore[attr-defined]
            self._dispatch(t)
        elif kind == _CHAIN:
            self._chain.popleft()
            self._chain_cur = obj  # type: ignore[assignment]
            self._enqueue(obj, t)  # type: ignore[arg-type]
        elif obj.version == version:  # type: ignore[attr-defined]
            self._train_end(obj, t)  # type: ignore[arg-type]
        return t

    def _advance(self, t: int) -> None:
        """The GPU runs on while the host is busy until ``t``; what completes meanwhile is
        returned with what woke the host (it sees both when it gets to them)."""
        while self._heap and self._heap[0][0] <= t:
            self._event()
        self._now = max(self._now, t)

    def _enqueue(self, launch: Launch, t: int) -> None:
        self._advance(t)  # the GPU's state at t: has `after` been issued, or ended, by then?
        launch.issue_ns = t
        run = _Run(launch, UNITS_PER_SM // launch.kernel.blocks_per_sm)
        self._streams.setdefault(launch.stream, deque()).append(run)
        if launch.stream not in self._stream_order:
            self._stream_order.append(launch.stream)
            self._stream_order.sort()
        dep = launch.after
        launch.armed = dep is not None and not self.chain_issued(dep)
        if dep is not None and dep.end_ns < 0:
            self._waiters.setdefault(dep.id, []).append(run)  # visible once dep ends
        else:
            self._push(t + self._latency_ns, _VISIBLE, run, 0)

    def _chain_next(self) -> None:
        """Schedule the next chained launch's issue (its gap after the previous end)."""
        if self._chain_busy or not self._chain:
            return
        la, gap, not_before = self._chain[0]
        ref = max(self._chain_seen, not_before)
        self._chain_busy = True
        self._push(max(ref + gap, self._now), _CHAIN, la, 0)

    def _push(self, t: int, kind: int, obj: object, version: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, obj, version))

    def _pace(self) -> None:
        """Wall-clock mode: sleep until the wall clock catches up with virtual time."""
        ahead = self._now - (time.monotonic_ns() - self._wall0)
        if ahead > 0:
            time.sleep(ahead / 1e9)

    def _dispatch(self, t: int) -> None:
        starved = -1
        for sid in self._stream_order:
            q = self._streams[sid]
            if not q:
                continue
            run = q[0]
            if not run.visible or run.undispatched == 0:
                continue
            fit = self._free // run.unit
            if fit == 0:
                if starved < 0:
                    starved = sid
                continue
            self._start_train(run, min(run.undispatched, fit), t)
            if run.undispatched:  # blocks still waiting: lower streams get nothing now
                starved = sid
                break
        if starved >= 0:
            self._cut_trains(t, starved)
        elif self._free and self._trains:
            # Capacity left over: let narrow trains re-dispatch wider at their next wave.
            self._cut_trains(t, -1)

    def _start_train(self, run: _Run, width: int, t: int) -> None:
        full = self.params.sms * run.launch.kernel.blocks_per_sm
        # A narrow train of a stream that has lower-priority streams below it runs one
        # wave only: its remaining blocks stay queued, so they (not lower-priority blocks)
        # take the next freed slots. Narrow trains of the lowest stream run on (they are
        # cut to widen when capacity frees up), which keeps event counts low.
        narrow = width < full and run.launch.stream < self._stream_order[-1]
        waves = 1 if narrow else run.undispatched // width
        run.undispatched -= waves * width
        run.trains += 1
        launch = run.launch
        if launch.start_ns < 0:
            launch.start_ns = t
        hp = launch.cls == HP
        wave_ns = int(launch.kernel.block_us * 1000)
        if self._resident[not hp]:
            wave_ns = int(wave_ns * self._slow)
        train = _Train(run, width, t, wave_ns, waves)
        self._free -= width * run.unit
        self._resident[hp] += 1
        self._trains.append(train)
        self._seq += 1
        heapq.heappush(self._heap, (t + waves * wave_ns, self._seq, _TRAIN_END, train, 0))

    def _cut_trains(self, t: int, starved: int) -> None:
        """Cut trains at their next wave boundary: those of streams below ``starved``, or
        (``starved`` < 0) narrow ones that the free capacity would widen by ≥ 1/8."""
        free = self._free
        for tr in self._trains:
            if tr.waves <= 1:
                continue
            if starved >= 0:
                if tr.run.launch.stream <= starved:
                    continue
            elif 8 * (free // tr.run.unit) < tr.width:
                continue
            started = (t - tr.t0) // tr.wave_ns + 1  # waves begun by t (the current one runs on)
            if started >= tr.waves:
                continue
            tr.run.undispatched += (tr.waves - started) * tr.width
            tr.waves = started
            tr.version += 1
            self._push(tr.end, _TRAIN_END, tr, tr.version)

    def _train_end(self, tr: _Train, t: int) -> None:
        self._trains.remove(tr)
        run = tr.run
        run.trains -= 1
        self._free += tr.width * run.unit
        self._resident[tr.hp] -= 1
        if run.undispatched == 0 and run.trains == 0:
            launch = run.launch
            launch.end_ns = t
            self._streams[launch.stream].popleft()  # in-order: the finished launch is the head
            self._completed.append(launch)
            for w in self._waiters.pop(launch.id, ()):
                self._push(max(t + _DEP_NS, w.launch.issue_ns + self._latency_ns), _VISIBLE, w, 0)
            if launch is self._chain_cur:
                self._chain_cur = None
                launch.seen_ns = t
                self._chain_seen = t
                self._chain_busy = False
                self._chain_next()
        self._dispatch(t)
