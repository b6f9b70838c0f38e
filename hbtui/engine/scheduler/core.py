"""The scheduling loop: single-threaded and event-driven.

One thread issues HP and LP work (design.md: a second Python thread costs HP ~0.5 ms in
GIL hand-offs). Each iteration: fire due host events (HP arrivals, HP kernels whose host
gap has elapsed), ask the policy for LP launches, then ``backend.wait`` until the next
host event, the policy's wake-up or a completion — never past an HP arrival.

Telemetry listeners get every completed launch and request; they must be cheap (the
ZeroMQ publisher only appends to a buffer). HP request handling is in ``hp``, live
control in ``control``, the learned models in ``hbtui.engine.timing``.
"""

from __future__ import annotations

import gc
import heapq
from collections import deque
from dataclasses import replace
from typing import Any, Protocol

from hbtui.engine.backends.base import LP_STREAM, Backend
from hbtui.engine.metrics import Metrics
from hbtui.engine.model import HP, LP, KernelSpec, Launch, Request, Task
from hbtui.engine.policies import HummingbirdConfig, Policy, make_policy
from hbtui.engine.scheduler.control import LiveControl
from hbtui.engine.scheduler.hp import (
    ARRIVAL,
    ChainIssue,
    HpState,
    PythonIssue,
    bubble_left,
    slack_bound,
)
from hbtui.engine.timing import (
    AFTER,
    ARMED,
    COLD,
    LATE_PATHS,
    MAX_DEP_NS,
    QUEUED,
    LaunchPaths,
    WaveModel,
)
from hbtui.engine.view import NextHp
from hbtui.engine.workload import Arrivals, request_gaps

_EXPIRE_EVERY_NS = 1_000_000


class Listener(Protocol):
    def on_launch(self, launch: Launch) -> None: ...
    def on_request(self, task: str, req: Request, latency_ns: int, slo_ok: bool | None) -> None: ...
    def on_event(self, kind: str, body: dict[str, Any]) -> None: ...


class LpCursor:
    """Where an LP task is in its kernel sequence: kernel index and next block."""

    __slots__ = ("kernel", "next_block", "inflight")

    def __init__(self) -> None:
        self.kernel = 0  # index into task.kernels
        self.next_block = 0
        self.inflight = 0


class Scheduler(LiveControl):
    def __init__(
        self,
        kernels: dict[str, KernelSpec],
        tasks: list[Task],
        backend: Backend,
        policy: str = "hummingbird",
        seed: int = 1,
        baseline_p99_ms: dict[str, float] | None = None,
        hummingbird: HummingbirdConfig | None = None,
    ) -> None:
        self.kernels = dict(kernels)
        self.backend = backend
        self.seed = seed
        self.hummingbird = hummingbird  # tuning of the hummingbird policy (None: defaults)
        self.policy: Policy = make_policy(policy, hummingbird)
        self.metrics = Metrics()
        self.waves = WaveModel(backend.sms)
        self.paths = LaunchPaths(backend.launch_latency_ns())
        self.baseline_p99_ms: dict[str, float] = dict(baseline_p99_ms or {})
        self.listeners: list[Listener] = []
        self.tasks: dict[str, Task] = {}
        self._lp_order: list[Task] | None = None
        self._warned: set[object] = set()
        self._hp: dict[str, HpState] = {}
        self._lp: dict[str, LpCursor] = {}
        self._python_issue, self._chain_issue = PythonIssue(self), ChainIssue(self)
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
        self._decide_ns = -1
        self._expired_at = 0
        self.decisions = 0
        for k in list(self.kernels.values()):
            self.waves.add(k, backend.prepare(k))
            if k.sliceable and not backend.sliceable(k):  # refused once compiled: run whole
                self.kernels[k.name] = replace(k, sliceable=False)
        for t in tasks:
            self._add(t)
        self.metrics.start_ns = backend.now_ns()

    # -- state the policies read (hbtui.engine.view.SchedulerView) -------------------
    @property
    def launch_latency_ns(self) -> int:
        return int(self.paths.lat.value)

    @property
    def hp_latency_ns(self) -> int:
        return int(self.paths.hp_lat.value)

    @property
    def dep_ns(self) -> int:
        return int(self.paths.dep.value)

    @property
    def issue_delay_ns(self) -> int:
        return int(self.paths.issue_delay.value)

    def margin_ns(self, path: str) -> int:
        """End slices issued by ``path`` (COLD, QUEUED, AFTER, ARMED) this much before the next
        HP kernel is due: their recent lateness."""
        return self.paths.margin_ns(path)

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

    def predicted_bubble_left(self, at_ns: int, gap_devs: float) -> int:
        return bubble_left(self._hp.values(), at_ns, gap_devs, self.hp_latency_ns)

    def slack_bound(self, now: int, reserve: float = 0.0) -> int:
        return slack_bound(self._hp, self.tasks, self.slo_ns, now, reserve)

    @property
    def busy(self) -> bool:
        """Launches of this scheduler still on (or handed to) the backend."""
        return bool(self.inflight or self._chained)

    def next_chained_hp(self) -> NextHp | None:
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
        req = st.queue[0]
        step, tm = req.step, st.timing
        last = step + 1 >= len(req.gaps_ns)
        return NextHp(
            launch=la,
            issued=self.backend.chain_issued(la),
            due_ns=st.step_gap_start + req.gaps_ns[step],
            dur_ns=tm.dur_ema[step],
            next_gap_ns=None if last else tm.gap_ema[step + 1],
            next_gap_dev_ns=None if last else tm.gap_dev[step + 1],
        )

    # -- actions -------------------------------------------------------------------
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
            self.paths.issue_delay.add(max(0, launch.issue_ns - self._decide_ns), launch.issue_ns)
            self._decide_ns = -1  # one sample per decision
        self.inflight[launch.id] = launch
        self.lp_inflight.append(launch)
        return launch

    def _timer(self, t: int, kind: int, name: str) -> None:
        self._tseq += 1
        heapq.heappush(self._timers, (t, self._tseq, kind, name))
        if kind == ARRIVAL and (st := self._hp.get(name)) is not None and st.chain:
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
        timers = self._timers  # (control ops edit it in place)
        while True:
            now = be.now_ns()
            if now >= end_ns:
                return
            while timers and timers[0][0] <= now:
                t, _, kind, name = heapq.heappop(timers)
                if name in self.tasks:
                    if kind == ARRIVAL:
                        self._on_arrival(name, t)
                    else:
                        st = self._hp[name]
                        st.issue.due(name, st, True)
                now = be.now_ns()
            if now - self._expired_at > _EXPIRE_EVERY_NS:
                self._expired_at = now
                self.paths.expire(now)
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
            self._timer(nxt, ARRIVAL, name)
        if task.paused:  # open loop: the arrival is dropped; closed loop: retried later
            if st.arrivals.spec.kind == "closed":
                self._timer(t + 1_000_000, ARRIVAL, name)
            return
        self._req_ids += 1
        st.requests += 1  # gaps are seeded per task: other tasks never shift them
        req = Request(self._req_ids, name, t, 0, request_gaps(task, self.seed, st.requests))
        st.queue.append(req)
        self.hp_requests_in_flight += 1
        st.issue.arrived(name, task, req, t)
        if len(st.queue) == 1:
            self._next_hp_kernel(name, req, t)

    def _next_hp_kernel(self, name: str, req: Request, now: int) -> None:
        st = self._hp[name]
        st.gap_start = now
        st.issue.gap_started(name, st, req, now)

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
            self._lp_done(launch, seen, orphan)
        horizon = next(iter(self.inflight.values())).issue_ns if self.inflight else launch.end_ns
        if self._chained:
            horizon = min(horizon, self._chain_floor)
        self.metrics.on_launch_done(launch, horizon)
        for li in self.listeners:
            li.on_launch(launch)

    def _lp_done(self, launch: Launch, seen: int, orphan: bool) -> None:
        """Learn from an LP completion: wave model, issue-path delays and lateness."""
        paths = self.paths
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
            paths.lat.add(launch.start_ns - launch.issue_ns, seen)
        first = launch.id in self._dep_probe
        ahead = self._dep_probe.pop(launch.id, None)
        if first and dep is not None and 0 <= launch.issue_ns < dep.end_ns:
            # queued before the HP kernel ended, and did not wait for LP ahead of it
            if ahead is None or ahead.end_ns <= dep.end_ns:
                paths.dep.add(min(max(launch.start_ns - dep.end_ns, 0), MAX_DEP_NS), seen)
        late = min(max(launch.end_ns - launch.predicted_ns, -MAX_DEP_NS), MAX_DEP_NS)
        paths.late[path].add(late, seen)
        if self.lp_inflight:
            # The queued slice starts when this one ended: re-base its predicted end so
            # one late slice does not make every later prediction late.
            nxt = self.lp_inflight[0]
            nxt.predicted_ns = launch.end_ns + self.waves.predict_ns(nxt.kernel, nxt.blocks)

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
            self.paths.hp_lat.add(launch.start_ns - launch.issue_ns, now)
        if orphan:  # its task was removed while the kernel ran
            return
        name = launch.task
        st = self._hp[name]
        req = st.queue[0]
        step = req.step
        if chained:
            st.gap_start = -1  # done, whether or not its due timer fired yet
            st.timing.learn_gap(step, launch.issue_ns - st.step_gap_start)
        req.step += 1
        if req.step < len(req.gaps_ns):
            self._next_hp_kernel(name, req, now)
        st.timing.learn_duration(step, launch.end_ns - launch.start_ns)
        nxt = self.lp_inflight[0] if self.lp_inflight else None
        if nxt is not None and nxt.after is launch and nxt.id in self._dep_probe:
            # the slice queued first behind this kernel starts now: re-base its predicted end
            nxt.predicted_ns = (
                launch.end_ns + self.dep_ns + self.waves.predict_ns(nxt.kernel, nxt.blocks)
            )
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
            self._timer(released, ARRIVAL, name)
        if st.queue:
            self._next_hp_kernel(name, st.queue[0], now)

    # -- tasks ---------------------------------------------------------------------
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
            issue = self._chain_issue if chain else self._python_issue
            self._hp[task.name] = HpState(task, arrivals, issue)
            first = arrivals.next()
            if first is not None:
                self._timer(first, ARRIVAL, task.name)
        else:
            self._lp[task.name] = LpCursor()

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
