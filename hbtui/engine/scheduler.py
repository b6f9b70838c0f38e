"""The scheduling loop: single-threaded and event-driven.

One thread issues HP and LP work (design.md: a second Python thread costs HP ~0.5 ms in
GIL hand-offs). Each iteration: fire due host events (HP arrivals, HP kernels whose host
gap has elapsed), ask the policy for LP launches, then ``backend.wait`` until the next
host event, the policy's wake-up or a completion — never past an HP arrival.

Live control (``set_*``, ``pause_task`` …) mutates task state between iterations; the
policy reads it at the next decision. Telemetry listeners get every completed launch
and request; they must be cheap (the ZeroMQ publisher only appends to a buffer).
"""

from __future__ import annotations

import gc
import heapq
import math
from collections import deque
from dataclasses import replace
from typing import Any, Protocol

from hbtui.engine import policies
from hbtui.engine.backends.base import LP_STREAM, Backend
from hbtui.engine.estimate import RecentQuantile
from hbtui.engine.metrics import Metrics
from hbtui.engine.model import HP, LP, KernelSpec, Launch, Request, Task
from hbtui.engine.policies import (
    AFTER,
    ARMED,
    COLD,
    DEFAULT_SLICE_US,
    LATE_PATHS,
    QUEUED,
    Policy,
    make_policy,
)
from hbtui.engine.workload import Arrivals, request_gaps

_ARRIVAL, _HP_ENQUEUE = 0, 1
_EMA = 0.2  # weight of a new sample in the online models
_MAX_HP_LEAD_NS = 50_000.0  # cap on how early HP enqueue timers fire (dispatch overhead)
_MODEL_MAX_AGE_NS = 20_000_000  # a timing model with no sample for this long: back to its prior
_EXPIRE_EVERY_NS = 1_000_000
_MAX_DEP_NS = 100_000  # cap on one timing sample (queued-slice start, slice lateness): a
# rare ms-long host or driver stall must not poison the learned models


class ControlError(ValueError):
    """A control op was refused; ``code`` is machine-readable, the message names the field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Listener(Protocol):
    def on_launch(self, launch: Launch) -> None: ...
    def on_request(self, task: str, req: Request, latency_ns: int, slo_ok: bool | None) -> None: ...
    def on_event(self, kind: str, body: dict[str, Any]) -> None: ...


class WaveModel:
    """Per-kernel wave size (blocks) and wave duration learned online (EMA of µs/wave)."""

    def __init__(self, sms: int) -> None:
        self.sms = sms
        self._blocks: dict[str, int] = {}
        self._ns: dict[str, float] = {}

    def add(self, kernel: KernelSpec, blocks_per_sm: int) -> None:
        self._blocks[kernel.name] = max(1, self.sms * blocks_per_sm)
        self._ns.setdefault(kernel.name, kernel.block_us * 1000)

    def model(self, kernel: KernelSpec) -> tuple[int, int]:
        return self._blocks[kernel.name], int(self._ns[kernel.name])

    def observe(self, launch: Launch) -> None:
        name = launch.kernel.name
        waves = -(-launch.blocks // self._blocks[name])
        sample = (launch.end_ns - launch.start_ns) / waves
        self._ns[name] += _EMA * (sample - self._ns[name])

    def predict_ns(self, kernel: KernelSpec, blocks: int) -> int:
        wb, ns = self.model(kernel)
        return -(-blocks // wb) * ns

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {k: {"wave_blocks": self._blocks[k], "wave_us": self._ns[k] / 1e3} for k in self._ns}


class _HpState:
    """Per-HP-task request queue and learned timing (host gaps, kernel durations)."""

    def __init__(self, task: Task, arrivals: Arrivals, chain: bool = False) -> None:
        n = len(task.steps)
        self.arrivals = arrivals
        self.queue: deque[Request] = deque()  # queue[0] is the request being served
        # chain: the backend issues this task's kernels (Backend.submit_chain); the
        # launches of each queued request, parallel to ``queue``
        self.chain = chain
        self.launches: deque[list[Launch]] = deque()
        self.step_gap_start = 0  # chain: when the current step's host gap began
        self.gap_ema = [float(s.gap_us * 1000) for s in task.steps]
        self.gap_dev = [float(s.gap_us * 1000 * s.jitter) for s in task.steps]
        self.dur_ema = [0.0] * n
        self.gap_start = -1  # when the current host gap began (-1: a kernel is active)
        self._suffix: list[float] | None = None  # service_ns(i) cache, reset on learning
        self.requests = 0  # arrivals so far (seeds each request's host gaps)

    def learned(self) -> None:
        self._suffix = None

    def gap_low(self, step: int) -> float:
        """A conservative (low) prediction of the host gap before ``step``: the learned
        mean less ``policies.GAP_DEVS`` mean absolute deviations."""
        return max(0.0, self.gap_ema[step] - policies.GAP_DEVS * self.gap_dev[step])

    def service_ns(self, from_step: int = 0) -> float:
        """Predicted time from the host gap before ``from_step`` to the request's end."""
        if self._suffix is None:
            acc, suf = 0.0, [0.0] * (len(self.gap_ema) + 1)
            for i in range(len(self.gap_ema) - 1, -1, -1):
                acc += self.gap_ema[i] + self.dur_ema[i]
                suf[i] = acc
            self._suffix = suf
        return self._suffix[from_step]


class _LpState:
    def __init__(self) -> None:
        self.kernel = 0  # index into task.kernels
        self.next_block = 0
        self.inflight = 0


class Scheduler:
    def __init__(
        self,
        kernels: dict[str, KernelSpec],
        tasks: list[Task],
        backend: Backend,
        policy: str = "hummingbird",
        seed: int = 1,
        baseline_p99_ms: dict[str, float] | None = None,
    ) -> None:
        self.kernels = dict(kernels)
        self.backend = backend
        self.seed = seed
        self.policy: Policy = make_policy(policy)
        self.metrics = Metrics()
        self.waves = WaveModel(backend.sms)
        # issue -> first block of an LP launch with nothing ahead of it, and of an HP kernel
        # (medians of recent launches: the backend's figure is for an idle launch call)
        self._lat = RecentQuantile(0.5, backend.launch_latency_ns())
        self._hp_lat = RecentQuantile(0.5, backend.launch_latency_ns())
        self.baseline_p99_ms: dict[str, float] = dict(baseline_p99_ms or {})
        self.listeners: list[Listener] = []
        self.tasks: dict[str, Task] = {}
        self._lp_order: list[Task] | None = None
        self._warned: set[object] = set()
        self._hp: dict[str, _HpState] = {}
        self._lp: dict[str, _LpState] = {}
        self._timers: list[tuple[int, int, int, str]] = []
        self._orphans: set[int] = set()  # in-flight launches of removed tasks
        self._cold: set[int] = set()  # LP launches issued with nothing ahead on the GPU
        # LP launches first in line behind an HP kernel → the LP launch ahead of them (if any)
        self._dep_probe: dict[int, Launch | None] = {}
        self._tseq = 0
        self._ids = 0
        self._req_ids = 0
        self.inflight: dict[int, Launch] = {}  # issue order (dicts keep insertion order)
        self.stray_completions = 0  # completions of launches this scheduler never issued
        self._chained: dict[int, Launch] = {}  # HP launches handed to the backend's chain
        self._chain_floor = 0  # no pending chained launch can start before this
        self._hp_active: set[int] = set()  # chained HP launches counted as active (due)
        self.lp_inflight: deque[Launch] = deque()
        self.hp_kernels_active = 0  # HP kernels queued or running
        self.hp_requests_in_flight = 0  # HP requests arrived and not completed
        self.bubble_start_ns = 0
        self._hp_lead = 0.0  # learned timer → HP launch call overhead (ns)
        # How late LP slices end against their prediction (a high quantile of recent
        # slices), per issue path: hummingbird ends its slices this much before the next HP
        # kernel is due. The paths differ by an order of magnitude on the H100 (p90: 3 µs
        # armed behind HP, 13 µs pre-issued, 48 µs cold) and one margin for all of them
        # starved the precise ones.
        self._late = {p: RecentQuantile(policies.LATE_QUANTILE, 0.0) for p in LATE_PATHS}
        # HP end → start of an LP slice queued behind it (a GPU-side stream wait), learned
        self._dep = RecentQuantile(0.5, 2_000)
        # decision → submit() of the LP launch it issued (the host loop's own cost: tens of
        # µs on the H100's VM, 0 in the sim): a launch starts no earlier than now + this +
        # launch latency
        self._issue_delay = RecentQuantile(0.5, 0)
        self._decide_ns = -1
        self._models = [self._lat, self._hp_lat, self._dep, self._issue_delay, *self._late.values()]
        self._expired_at = 0
        self.decisions = 0
        for k in self.kernels.values():
            self.waves.add(k, backend.prepare(k))
        for t in tasks:
            self._add(t)
        self.metrics.start_ns = backend.now_ns()

    # -- state the policies read -----------------------------------------------------
    @property
    def launch_latency_ns(self) -> int:
        return int(self._lat.value)

    @property
    def hp_latency_ns(self) -> int:
        return int(self._hp_lat.value)

    @property
    def dep_ns(self) -> int:
        return int(self._dep.value)

    @property
    def issue_delay_ns(self) -> int:
        return int(self._issue_delay.value)

    def margin_ns(self, path: str) -> int:
        """End slices issued by ``path`` (COLD, QUEUED, AFTER, ARMED) this much before the next
        HP kernel is due: their recent lateness."""
        return max(0, int(self._late[path].value))

    @property
    def slice_margin_ns(self) -> dict[str, int]:
        return {p: self.margin_ns(p) for p in LATE_PATHS}

    def lp_tasks(self) -> list[Task]:
        """Runnable LP tasks, most important first (cached; every control op resets it)."""
        if self._lp_order is None:
            ts = [t for t in self.tasks.values() if t.cls == LP and not t.paused and t.kernels]
            ts.sort(key=lambda t: -t.priority)
            self._lp_order = ts
        return self._lp_order

    def lp_kernel(self, task: Task) -> KernelSpec:
        return self.kernels[task.kernels[self._lp[task.name].kernel]]

    def lp_remaining(self, task: Task) -> int:
        st = self._lp[task.name]
        return self.lp_kernel(task).total_blocks - st.next_block

    def lp_inflight_of(self, name: str) -> int:
        return self._lp[name].inflight

    def slo_ns(self, task: Task) -> int | None:
        return task.slo_ns(self.baseline_p99_ms.get(task.name))

    def predicted_bubble_left(self, at_ns: int) -> int:
        """How long the current bubble is predicted to last after ``at_ns``.

        Inside a request the host gap is learned per kernel position; between requests
        the next arrival is not predictable, so only the cap and the SLO bound apply.
        """
        left = math.inf
        for st in self._hp.values():
            if st.queue and st.gap_start >= 0:
                step = st.queue[0].step
                end = st.gap_start + st.gap_low(step) + self.hp_latency_ns
                left = min(left, end - at_ns)
        return int(left) if left != math.inf else 1 << 62

    def slack_bound(self, now: int, reserve: float = 0.0) -> int:
        """Longest LP slice the HP SLOs can absorb now (``reserve``: the fraction of each
        SLO that LP may never use).

        Each remaining HP kernel of a request can wait behind at most one slice, so a
        request's slack (SLO − elapsed − predicted remaining service) is shared among
        its remaining kernels. With no request in flight, a new arrival's slack is its
        SLO minus one predicted service time, and only its first kernel can be hit.
        """
        bound = 1 << 62
        for name, st in self._hp.items():
            task = self.tasks[name]
            slo = self.slo_ns(task)
            if slo is None or (task.paused and not st.queue):
                continue
            slo = slo * (1.0 - reserve)
            if not st.queue:
                bound = min(bound, int(slo - st.service_ns()))
                continue
            # The last queued request has the least slack: it waits for all before it.
            ahead = st.service_ns() * (len(st.queue) - 1)
            cur = st.queue[0]
            remaining = st.service_ns(cur.step) + ahead
            last = st.queue[-1]
            slack = slo - (now - last.arrival_ns) - remaining
            kernels_left = len(task.steps) - cur.step + (len(st.queue) - 1) * len(task.steps)
            bound = min(bound, int(slack / max(1, kernels_left)))
        return bound

    # -- actions -------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Launches of this scheduler still on (or handed to) the backend."""
        return bool(self.inflight or self._chained)

    def next_chained_hp(self) -> tuple[_HpState, Launch, bool] | None:
        """The chained HP task's next kernel when nothing else HP is active: the one
        running or due, or (no HP kernel active) the one whose host gap is running now,
        with whether the backend has issued it yet. LP issued with ``issue_lp(after=…)``
        starts on the GPU when that kernel ends: behind it on the stream once it is issued,
        and armed to go out right after its launch while it is not."""
        if self.hp_kernels_active == 1 and len(self._hp_active) == 1:
            la = self._chained.get(next(iter(self._hp_active)))
            st = None if la is None else self._hp.get(la.task)
        elif self.hp_kernels_active == 0:
            st = next((h for h in self._hp.values() if h.chain and h.gap_start >= 0), None)
            la = st.launches[0][st.queue[0].step] if st and st.queue and st.launches else None
        else:
            return None
        if la is None or st is None or la.id in self._orphans or la.end_ns >= 0:
            return None  # done, or its task was removed
        if not st.queue or not st.launches or st.launches[0][st.queue[0].step] is not la:
            return None  # (a task re-added under the same name: not its kernel)
        return st, la, self.backend.chain_issued(la)

    def issue_lp(
        self, task: Task, blocks: int, start_ns: int | None = None, after: Launch | None = None
    ) -> Launch:
        """Issue blocks [cursor, cursor+blocks) of the task's current LP kernel; with
        ``after`` (a chained HP launch) it starts on the GPU only when that one ends."""
        st = self._lp[task.name]
        kernel = self.lp_kernel(task)
        first = st.next_block
        blocks = max(1, min(blocks, kernel.total_blocks - first))
        self._ids += 1
        launch = Launch(self._ids, task.name, LP, kernel, first, first + blocks, LP_STREAM)
        st.next_block += blocks
        if st.next_block >= kernel.total_blocks:
            st.kernel = (st.kernel + 1) % len(task.kernels)
            st.next_block = 0
        st.inflight += 1
        begin = start_ns if start_ns is not None else self.backend.now_ns()
        launch.predicted_ns = begin + self.waves.predict_ns(kernel, blocks)
        launch.after = after
        if after is not None and not (self.lp_inflight and self.lp_inflight[-1].after is after):
            # the first behind it starts when it ends, unless LP ahead of it ends later
            self._dep_probe[launch.id] = self.lp_inflight[-1] if self.lp_inflight else None
        if not self.lp_inflight and after is None:
            self._cold.add(launch.id)  # nothing ahead of it: its start measures issue → start
        self.backend.submit(launch)
        if self._decide_ns >= 0:
            self._issue_delay.add(max(0, launch.issue_ns - self._decide_ns), launch.issue_ns)
            self._decide_ns = -1  # one sample per decision
        self.inflight[launch.id] = launch
        self.lp_inflight.append(launch)
        return launch

    def _issue_hp(self, name: str, req: Request) -> Launch:
        task = self.tasks[name]
        kernel = self.kernels[task.steps[req.step].kernel]
        self._ids += 1
        launch = Launch(self._ids, name, HP, kernel, 0, kernel.total_blocks, self.policy.hp_stream)
        launch.request = req.id
        self.hp_kernels_active += 1
        self._hp[name].gap_start = -1
        self.backend.submit(launch)
        self.inflight[launch.id] = launch
        return launch

    def _timer(self, t: int, kind: int, name: str) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (t, self._tseq, kind, name))
        if kind == _ARRIVAL and (st := self._hp.get(name)) is not None and st.chain:
            self.backend.chain_expect(t)  # the idle issuer spins from just before it

    # -- the loop ------------------------------------------------------------------
    def run_until(self, end_ns: int, max_wait_ns: int | None = None, tick=None) -> None:  # noqa: ANN001
        """Run the loop until the backend clock reaches ``end_ns``.

        ``tick`` (if given) is called between iterations at least every ``max_wait_ns``
        of backend time; the ZeroMQ server uses it to serve control and publish.
        """
        # No cyclic-GC pauses inside the loop: the hot path makes no reference cycles, and a
        # gen-2 collection would stall HP issue for milliseconds. Collection resumes on
        # return (the bench and the server call this in short chunks).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            self._loop(end_ns, max_wait_ns, tick)
        finally:
            if gc_was_on:
                gc.enable()

    def _loop(self, end_ns: int, max_wait_ns: int | None, tick) -> None:  # noqa: ANN001
        be = self.backend
        timers = self._timers
        while True:
            now = be.now_ns()
            if now >= end_ns:
                return
            while timers and timers[0][0] <= now:
                t, _, kind, name = heapq.heappop(timers)
                if name in self.tasks:
                    if kind == _ARRIVAL:
                        self._on_arrival(name, t)
                    else:
                        self._on_hp_enqueue(name, timed=True)
                now = be.now_ns()
            if now - self._expired_at > _EXPIRE_EVERY_NS:
                self._expired_at = now
                for m in self._models:  # a model that stopped its own samples: retry it
                    m.expire(now, _MODEL_MAX_AGE_NS)
            self.decisions += 1
            self._decide_ns = now
            wake = self.policy.decide(self, now)
            until = end_ns
            if timers and timers[0][0] < until:
                until = timers[0][0]
            if wake is not None and wake < until:
                until = wake
            if max_wait_ns is not None and now + max_wait_ns < until:
                until = now + max_wait_ns
            done = be.wait(until)
            if done:
                seen = be.now_ns()  # when the host saw them: HP host gaps start here
                for launch in done:
                    self._on_done(launch, seen)
            if tick is not None:
                tick()

    def _on_arrival(self, name: str, t: int) -> None:
        st = self._hp[name]
        task = self.tasks[name]
        nxt = st.arrivals.next()
        if nxt is not None:
            self._timer(nxt, _ARRIVAL, name)
        if task.paused:  # open loop: the arrival is dropped; closed loop: retried later
            if st.arrivals.spec.kind == "closed":
                self._timer(t + 1_000_000, _ARRIVAL, name)
            return
        self._req_ids += 1
        st.requests += 1  # gaps are seeded per task: other tasks never shift them
        req = Request(self._req_ids, name, t, 0, request_gaps(task, self.seed, st.requests))
        st.queue.append(req)
        self.hp_requests_in_flight += 1
        if st.chain:
            self._chain_request(name, task, req, t)
        if len(st.queue) == 1:
            self._next_hp_kernel(name, req, t)

    def _next_hp_kernel(self, name: str, req: Request, now: int) -> None:
        """The host gap before the request's next kernel starts now: issue it when the gap
        is zero (no loop round trip on the critical path), else arm a timer."""
        st = self._hp[name]
        st.gap_start = now
        if st.chain:  # the backend issues it; only mark it active when due
            st.step_gap_start = now
            due = now + req.gaps_ns[req.step]
            if due <= self.backend.now_ns():
                self._chain_due(name)
            else:
                self._timer(due, _HP_ENQUEUE, name)
            return
        gap = req.gaps_ns[req.step] - int(self._hp_lead)
        if gap <= 0:
            self._on_hp_enqueue(name)
        else:
            self._timer(now + gap, _HP_ENQUEUE, name)

    def _chain_request(self, name: str, task: Task, req: Request, t: int) -> None:
        """Hand a whole request to the backend's HP chain (it issues the kernels)."""
        launches = []
        for step in task.steps:
            kernel = self.kernels[step.kernel]
            self._ids += 1
            la = Launch(self._ids, name, HP, kernel, 0, kernel.total_blocks, self.policy.hp_stream)
            la.request = req.id
            launches.append(la)
        if not self._chained:
            self._chain_floor = t
        for la in launches:
            self._chained[la.id] = la
        self._hp[name].launches.append(launches)
        self.backend.submit_chain(launches, req.gaps_ns, t)

    def _chain_due(self, name: str) -> None:
        """A chained HP kernel's host gap has elapsed: the backend issues it now, so
        count it as active (policies stop LP issue) until its completion comes back."""
        st = self._hp[name]
        if not st.queue or st.gap_start < 0:
            return
        req = st.queue[0]
        if self.backend.now_ns() < st.gap_start + req.gaps_ns[req.step]:
            return  # a timer of an earlier step that completed before it fired
        st.gap_start = -1
        self._hp_active.add(st.launches[0][req.step].id)
        self.hp_kernels_active += 1

    def _on_hp_enqueue(self, name: str, timed: bool = False) -> None:
        st = self._hp[name]
        if st.chain:
            self._chain_due(name)
            return
        if st.queue:
            req = st.queue[0]
            gap_start = st.gap_start
            target = gap_start + req.gaps_ns[req.step]
            launch = self._issue_hp(name, req)
            self._learn(st.gap_ema, st.gap_dev, req.step, launch.issue_ns - gap_start)
            st.learned()
            if timed:
                # The workload says "enqueue `gap` after the completion was seen"; the loop
                # needs a few µs from timer to cuLaunchKernel, so timers fire that early.
                lead = self._hp_lead + _EMA * (launch.issue_ns - target)
                self._hp_lead = min(max(lead, 0.0), _MAX_HP_LEAD_NS)

    @staticmethod
    def _learn(ema: list[float], dev: list[float], i: int, sample: float) -> None:
        dev[i] += _EMA * (abs(sample - ema[i]) - dev[i])
        ema[i] += _EMA * (sample - ema[i])

    def _on_done(self, launch: Launch, seen: int) -> None:
        """Account one completion. HP progression comes first: the next HP kernel's host
        gap starts when the completion was seen, and bookkeeping overlaps that gap."""
        if self.inflight.pop(launch.id, None) is None:
            if self._chained.pop(launch.id, None) is None:
                # not ours (a backend shared with an earlier scheduler that did not drain):
                # never crash the loop over it
                self.stray_completions += 1
                return
            self._chain_floor = launch.seen_ns  # the chain issues nothing before this
        orphan = launch.id in self._orphans
        if orphan:
            self._orphans.discard(launch.id)
        if launch.cls == HP:
            self._hp_done(launch, seen, orphan)
        else:
            self.lp_inflight.remove(launch)
            if not orphan:
                self._lp[launch.task].inflight -= 1
            self.waves.observe(launch)
            dep = launch.after
            if dep is not None:  # (the backend says whether its HP issuer launched it)
                path = ARMED if launch.armed else AFTER
            else:
                path = COLD if launch.id in self._cold else QUEUED
            if launch.id in self._cold:
                # Learn the real issue → start delay (the backend's figure is for an idle
                # launch call; through submit() it is longer on a real GPU).
                self._cold.discard(launch.id)
                self._lat.add(launch.start_ns - launch.issue_ns, seen)
            first = launch.id in self._dep_probe
            ahead = self._dep_probe.pop(launch.id, None)
            if first and dep is not None and 0 <= launch.issue_ns < dep.end_ns:
                # queued before the HP kernel ended, and did not wait for LP ahead of it
                if ahead is None or ahead.end_ns <= dep.end_ns:
                    self._dep.add(min(max(launch.start_ns - dep.end_ns, 0), _MAX_DEP_NS), seen)
            late = min(max(launch.end_ns - launch.predicted_ns, -_MAX_DEP_NS), _MAX_DEP_NS)
            self._late[path].add(late, seen)
            if self.lp_inflight:
                # The queued slice starts when this one ended: re-base its predicted end so
                # one late slice does not make every later prediction late.
                nxt = self.lp_inflight[0]
                nxt.predicted_ns = launch.end_ns + self.waves.predict_ns(nxt.kernel, nxt.blocks)
        horizon = next(iter(self.inflight.values())).issue_ns if self.inflight else launch.end_ns
        if self._chained:
            horizon = min(horizon, self._chain_floor)
        self.metrics.on_launch_done(launch, horizon)
        for li in self.listeners:
            li.on_launch(launch)

    def _hp_done(self, launch: Launch, now: int, orphan: bool = False) -> None:
        chained = launch.seen_ns >= 0
        if chained:
            now = launch.seen_ns  # the chain's own view: its next host gap starts here
            if launch.id in self._hp_active:
                self._hp_active.discard(launch.id)
                self.hp_kernels_active -= 1
        else:
            self.hp_kernels_active -= 1
        if self.hp_kernels_active == 0:
            self.bubble_start_ns = now
        if launch.start_ns >= launch.issue_ns:
            self._hp_lat.add(launch.start_ns - launch.issue_ns, now)
        if orphan:  # its task was removed while the kernel ran
            return
        name = launch.task
        st = self._hp[name]
        req = st.queue[0]
        step = req.step
        if chained:
            st.gap_start = -1  # done, whether or not its due timer fired yet
            self._learn(st.gap_ema, st.gap_dev, step, launch.issue_ns - st.step_gap_start)
        req.step += 1
        if req.step < len(req.gaps_ns):
            self._next_hp_kernel(name, req, now)
        st.dur_ema[step] += _EMA * (launch.end_ns - launch.start_ns - st.dur_ema[step])
        nxt = self.lp_inflight[0] if self.lp_inflight else None
        if nxt is not None and nxt.after is launch and nxt.id in self._dep_probe:
            # the slice queued first behind this kernel starts now: re-base its predicted end
            nxt.predicted_ns = (
                launch.end_ns + self.dep_ns + self.waves.predict_ns(nxt.kernel, nxt.blocks)
            )
        st.learned()
        if req.step < len(req.gaps_ns):
            return
        task = self.tasks[name]
        st.queue.popleft()
        if st.chain:
            st.launches.popleft()
        self.hp_requests_in_flight -= 1
        req.done_ns = launch.end_ns
        latency = req.done_ns - req.arrival_ns
        slo = self.slo_ns(task)
        self.metrics.on_request_done(name, latency, slo)
        for li in self.listeners:
            li.on_request(name, req, latency, None if slo is None else latency <= slo)
        released = st.arrivals.on_complete(now)
        if released is not None:
            self._timer(released, _ARRIVAL, name)
        if st.queue:
            self._next_hp_kernel(name, st.queue[0], now)

    # -- tasks and live control --------------------------------------------------------
    def _add(self, task: Task) -> None:
        self.tasks[task.name] = task
        self._lp_order = None
        self.metrics.task(task.name, task.cls)
        if task.cls == HP:
            arrivals = Arrivals(task, self.seed, self.backend.now_ns())
            # one HP task on the backend's chain (it serves requests FIFO, one at a time);
            # further HP tasks are issued from here
            be = self.backend
            chain = (
                be.hp_chain
                and not any(st.chain for st in self._hp.values())
                and all(be.can_chain(self.kernels[s.kernel]) for s in task.steps)
            )
            self._hp[task.name] = _HpState(task, arrivals, chain)
            first = arrivals.next()
            if first is not None:
                self._timer(first, _ARRIVAL, task.name)
        else:
            self._lp[task.name] = _LpState()

    def _task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise ControlError("unknown_task", f"no task named {name!r}") from None

    def warn_once(self, key: object, message: str) -> None:
        """Publish a warning event once per key (until the next control change)."""
        if key not in self._warned:
            self._warned.add(key)
            for li in self.listeners:
                li.on_event("warning", {"message": message})

    def _event(self, kind: str, **body: Any) -> None:
        self._lp_order = None  # task state changed: re-rank at the next decision
        self._warned.clear()
        for li in self.listeners:
            li.on_event(kind, body)

    def set_priority(self, name: str, priority: int) -> None:
        self._task(name).priority = int(priority)
        self._event("set_priority", task=name, priority=int(priority))

    def set_slice(self, name: str, us: float | None = None, blocks: int | None = None) -> None:
        task = self._task(name)
        if (us is None) == (blocks is None):
            raise ControlError("bad_args", "set_slice: give exactly one of 'us' or 'blocks'")
        if us is not None:
            if not (isinstance(us, int | float) and math.isfinite(us) and us > 0):
                raise ControlError("bad_value", f"set_slice: 'us' must be > 0, got {us!r}")
            task.slice_us, task.slice_blocks = float(us), None
        else:
            if not (isinstance(blocks, int) and blocks > 0):
                raise ControlError("bad_value", f"set_slice: 'blocks' must be > 0, got {blocks!r}")
            task.slice_us, task.slice_blocks = None, blocks
        self._event("set_slice", task=name, us=task.slice_us, blocks=task.slice_blocks)

    def set_policy(self, name: str) -> None:
        try:
            self.policy = make_policy(name)
        except ValueError as e:
            raise ControlError("bad_value", f"set_policy: {e}") from None
        # slice lateness learned under another policy (e.g. whole spatial kernels) is not
        # this one's
        for est in self._late.values():
            est.reset()
        self._event("set_policy", policy=name)

    def set_slo(self, name: str, ms: float | None = None, factor: float | None = None) -> None:
        task = self._task(name)
        if task.cls != HP:
            raise ControlError("bad_task", f"set_slo: task {name!r} is not an hp task")
        if (ms is None) == (factor is None):
            raise ControlError("bad_args", "set_slo: give exactly one of 'ms' or 'factor'")
        v = ms if ms is not None else factor
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            field = "ms" if ms is not None else "factor"
            raise ControlError("bad_value", f"set_slo: {field!r} must be > 0, got {v!r}")
        task.slo_ms, task.slo_factor = (float(ms), None) if ms is not None else (None, float(v))
        self._event("set_slo", task=name, slo_ms=task.slo_ms, slo_factor=task.slo_factor)

    def set_paused(self, name: str, paused: bool) -> None:
        self._task(name).paused = paused
        self._event("pause_task" if paused else "resume_task", task=name)

    def add_task(self, task: Task) -> None:
        if task.name in self.tasks:
            raise ControlError("exists", f"add_task: a task named {task.name!r} exists")
        for k in (s.kernel for s in task.steps) if task.cls == HP else task.kernels:
            if k not in self.kernels:
                raise ControlError("bad_value", f"add_task: unknown kernel {k!r}")
        self._add(replace(task))
        self._event("add_task", task=task.name)

    def remove_task(self, name: str) -> None:
        self._task(name)
        del self.tasks[name]
        st = self._hp.pop(name, None)
        if st is not None:
            self.hp_requests_in_flight -= len(st.queue)
        self._lp.pop(name, None)
        # Its timers go; its launches still on the GPU complete as orphans, so a task added
        # later under the same name never sees them.
        self._timers = [x for x in self._timers if x[3] != name]
        heapq.heapify(self._timers)
        self._orphans.update(i for i, x in self.inflight.items() if x.task == name)
        self._orphans.update(i for i, x in self._chained.items() if x.task == name)
        self._event("remove_task", task=name)

    def reset_stats(self) -> None:
        self.metrics.reset(self.backend.now_ns())
        self._event("reset_stats")

    # -- summaries ---------------------------------------------------------------------
    def summary(self, lp_alone: dict[str, float] | None = None) -> dict[str, Any]:
        """Per-task and GPU-wide figures since the last reset (bench JSON building block)."""
        now = self.backend.now_ns()
        wall = now - self.metrics.start_ns
        tasks = {}
        for name, ts in self.metrics.tasks.items():
            task = self.tasks.get(name)
            slo = self.slo_ns(task) if task is not None and task.cls == HP else None
            alone = (lp_alone or {}).get(name)
            tasks[name] = ts.summary(slo, wall, alone, self.metrics.preempt_baseline_ns)
        return {"tasks": tasks, **self.metrics.gpu_figures(now), "decisions": self.decisions}

    def task_state(self, task: Task) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": task.name,
            "class": task.cls,
            "priority": task.priority,
            "paused": task.paused,
        }
        if task.cls == HP:
            d.update(slo_ms=task.slo_ms, slo_factor=task.slo_factor)
            slo = self.slo_ns(task)
            d["slo_effective_ms"] = slo / 1e6 if slo else None
        else:
            d.update(
                slice_us=task.slice_us if task.slice_blocks is None else None,
                slice_blocks=task.slice_blocks,
                slice_default_us=DEFAULT_SLICE_US,
            )
        return d
