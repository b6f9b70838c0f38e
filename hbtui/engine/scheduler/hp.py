"""HP request handling: a request queue per HP task and two ways of issuing its kernels.

``PythonIssue``: the scheduling loop launches each kernel when its host gap has elapsed.
``ChainIssue``: the whole request is handed to the backend's HP chain (a native thread on
the cuda backend), which launches each kernel exactly its host gap after the previous one
completed; the loop only marks a kernel active when it is due. Both answer the same calls
from the scheduler (``arrived``, ``gap_started``, ``due``, ``done``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from hbtui.engine.model import HP, Launch, Request, Task
from hbtui.engine.timing import EMA, HpTiming
from hbtui.engine.workload import Arrivals

if TYPE_CHECKING:
    from hbtui.engine.scheduler.core import Scheduler

ARRIVAL, HP_ENQUEUE = 0, 1  # timer kinds
MAX_HP_LEAD_NS = 50_000.0  # cap on how early HP enqueue timers fire (dispatch overhead)


class HpState:
    """One HP task's request queue and learned timing."""

    def __init__(self, task: Task, arrivals: Arrivals, issue: HpIssue) -> None:
        self.arrivals = arrivals
        self.issue = issue
        self.queue: deque[Request] = deque()  # queue[0] is the request being served
        # chain: the launches of each queued request, parallel to ``queue``
        self.launches: deque[list[Launch]] = deque()
        self.step_gap_start = 0  # chain: when the current step's host gap began
        self.timing = HpTiming(task)
        self.gap_start = -1  # when the current host gap began (-1: a kernel is active)
        self.requests = 0  # arrivals so far (seeds each request's host gaps)

    @property
    def chain(self) -> bool:
        return isinstance(self.issue, ChainIssue)


class HpIssue:
    """How an HP task's kernels reach the backend."""

    def __init__(self, s: Scheduler) -> None:
        self.s = s

    def arrived(self, name: str, task: Task, req: Request, t: int) -> None:
        """A request was queued (before its first host gap starts)."""

    def gap_started(self, name: str, st: HpState, req: Request, now: int) -> None:
        """The host gap before the request's next kernel starts now."""
        raise NotImplementedError

    def due(self, name: str, st: HpState, timed: bool) -> None:
        """The host gap has elapsed (``timed``: a timer fired)."""
        raise NotImplementedError


class PythonIssue(HpIssue):
    def __init__(self, s: Scheduler) -> None:
        super().__init__(s)
        self.lead = 0.0  # learned timer → HP launch call overhead (ns)

    def gap_started(self, name: str, st: HpState, req: Request, now: int) -> None:
        # a zero gap issues at once (no loop round trip on the critical path)
        gap = req.gaps_ns[req.step] - int(self.lead)
        if gap <= 0:
            self.due(name, st, False)
        else:
            self.s._timer(now + gap, HP_ENQUEUE, name)

    def due(self, name: str, st: HpState, timed: bool) -> None:
        if not st.queue:
            return
        req = st.queue[0]
        gap_start = st.gap_start
        target = gap_start + req.gaps_ns[req.step]
        launch = self._launch(name, st, req)
        st.timing.learn_gap(req.step, launch.issue_ns - gap_start)
        if timed:
            # The workload says "enqueue `gap` after the completion was seen"; the loop
            # needs a few µs from timer to cuLaunchKernel, so timers fire that early.
            lead = self.lead + EMA * (launch.issue_ns - target)
            self.lead = min(max(lead, 0.0), MAX_HP_LEAD_NS)

    def _launch(self, name: str, st: HpState, req: Request) -> Launch:
        s = self.s
        task = s.tasks[name]
        kernel = s.kernels[task.steps[req.step].kernel]
        s._ids += 1
        launch = Launch(s._ids, name, HP, kernel, 0, kernel.total_blocks, s.policy.hp_stream)
        launch.request = req.id
        s.hp_kernels_active += 1
        st.gap_start = -1
        s.backend.submit(launch)
        s.inflight[launch.id] = launch
        return launch


class ChainIssue(HpIssue):
    def arrived(self, name: str, task: Task, req: Request, t: int) -> None:
        """Hand the whole request to the backend's HP chain (it issues the kernels)."""
        s = self.s
        launches = []
        for step in task.steps:
            kernel = s.kernels[step.kernel]
            s._ids += 1
            la = Launch(s._ids, name, HP, kernel, 0, kernel.total_blocks, s.policy.hp_stream)
            la.request = req.id
            launches.append(la)
        if not s._chained:
            s._chain_floor = t
        for la in launches:
            s._chained[la.id] = la
        s._hp[name].launches.append(launches)
        s.backend.submit_chain(launches, req.gaps_ns, t)

    def gap_started(self, name: str, st: HpState, req: Request, now: int) -> None:
        # the backend issues it; only mark it active when due
        st.step_gap_start = now
        due = now + req.gaps_ns[req.step]
        if due <= self.s.backend.now_ns():
            self.due(name, st, False)
        else:
            self.s._timer(due, HP_ENQUEUE, name)

    def due(self, name: str, st: HpState, timed: bool) -> None:
        """A chained HP kernel's host gap has elapsed: the backend issues it now, so
        count it as active (policies stop LP issue) until its completion comes back."""
        if not st.queue or st.gap_start < 0:
            return
        s = self.s
        req = st.queue[0]
        if s.backend.now_ns() < st.gap_start + req.gaps_ns[req.step]:
            return  # a timer of an earlier step that completed before it fired
        st.gap_start = -1
        s._hp_active.add(st.launches[0][req.step].id)
        s.hp_kernels_active += 1


def bubble_left(states: Iterable[HpState], at_ns: int, gap_devs: float, hp_lat_ns: int) -> int:
    """How long the current bubble is predicted to last after ``at_ns``, planning each
    host gap ``gap_devs`` mean absolute deviations below its learned mean.

    Inside a request the host gap is learned per kernel position; between requests
    the next arrival is not predictable, so only the cap and the SLO bound apply.
    """
    left = math.inf
    for st in states:
        if st.queue and st.gap_start >= 0:
            step = st.queue[0].step
            end = st.gap_start + st.timing.gap_low(step, gap_devs) + hp_lat_ns
            left = min(left, end - at_ns)
    return int(left) if left != math.inf else 1 << 62


def slack_bound(
    states: dict[str, HpState],
    tasks: dict[str, Task],
    slo_ns: Callable[[Task], int | None],
    now: int,
    reserve: float = 0.0,
) -> int:
    """Longest LP slice the HP SLOs can absorb now (``reserve``: the fraction of each
    SLO that LP may never use).

    Each remaining HP kernel of a request can wait behind at most one slice, so a
    request's slack (SLO − elapsed − predicted remaining service) is shared among
    its remaining kernels. With no request in flight, a new arrival's slack is its
    SLO minus one predicted service time, and only its first kernel can be hit.
    """
    bound = 1 << 62
    for name, st in states.items():
        task = tasks[name]
        slo = slo_ns(task)
        if slo is None or (task.paused and not st.queue):
            continue
        slo = slo * (1.0 - reserve)
        service = st.timing.service_ns
        if not st.queue:
            bound = min(bound, int(slo - service()))
            continue
        # The last queued request has the least slack: it waits for all before it.
        ahead = service() * (len(st.queue) - 1)
        cur = st.queue[0]
        remaining = service(cur.step) + ahead
        last = st.queue[-1]
        slack = slo - (now - last.arrival_ns) - remaining
        kernels_left = len(task.steps) - cur.step + (len(st.queue) - 1) * len(task.steps)
        bound = min(bound, int(slack / max(1, kernels_left)))
    return bound
