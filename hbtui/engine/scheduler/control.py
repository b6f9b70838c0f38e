"""Live control of a running scheduler: priorities, slice sizes, policy, SLOs, tasks.

Each op mutates task state between loop iterations; the policy reads it at the next
decision. Ops validate first and apply fully or not at all; a refusal is a
``ControlError`` whose message names the op and the field.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from hbtui.engine.model import HP, Task
from hbtui.engine.policies import make_policy
from hbtui.engine.timing import DEFAULT_SLICE_US

if TYPE_CHECKING:
    from hbtui.engine.scheduler.core import Scheduler


class ControlError(ValueError):
    """A control op was refused; ``code`` is machine-readable, the message names the field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class LiveControl:
    """The scheduler's control ops (mixed into ``Scheduler``)."""

    def _task(self: Scheduler, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise ControlError("unknown_task", f"no task named {name!r}") from None

    def warn_once(self: Scheduler, key: object, message: str) -> None:
        """Publish a warning event once per key (until the next control change)."""
        if key not in self._warned:
            self._warned.add(key)
            for li in self.listeners:
                li.on_event("warning", {"message": message})

    def _event(self: Scheduler, kind: str, **body: Any) -> None:
        self._lp_order = None  # task state changed: re-rank at the next decision
        self._warned.clear()
        for li in self.listeners:
            li.on_event(kind, body)

    def set_priority(self: Scheduler, name: str, priority: int) -> None:
        self._task(name).priority = int(priority)
        self._event("set_priority", task=name, priority=int(priority))

    def set_slice(
        self: Scheduler, name: str, us: float | None = None, blocks: int | None = None
    ) -> None:
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

    def set_policy(self: Scheduler, name: str) -> None:
        try:
            self.policy = make_policy(name, self.hummingbird)
        except ValueError as e:
            raise ControlError("bad_value", f"set_policy: {e}") from None
        # slice lateness learned under another policy (e.g. whole spatial kernels) is not
        # this one's
        for est in self.paths.late.values():
            est.reset()
        self._event("set_policy", policy=name)

    def set_slo(
        self: Scheduler, name: str, ms: float | None = None, factor: float | None = None
    ) -> None:
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

    def set_paused(self: Scheduler, name: str, paused: bool) -> None:
        self._task(name).paused = paused
        self._event("pause_task" if paused else "resume_task", task=name)

    def add_task(self: Scheduler, task: Task) -> None:
        if task.name in self.tasks:
            raise ControlError("exists", f"add_task: a task named {task.name!r} exists")
        for k in (s.kernel for s in task.steps) if task.cls == HP else task.kernels:
            if k not in self.kernels:
                raise ControlError("bad_value", f"add_task: unknown kernel {k!r}")
        self._add(replace(task))
        self._event("add_task", task=task.name)

    def remove_task(self: Scheduler, name: str) -> None:
        self._task(name)
        del self.tasks[name]
        st = self._hp.pop(name, None)
        if st is not None:
            self.hp_requests_in_flight -= len(st.queue)
        self._lp.pop(name, None)
        # Its timers go (in place: the loop holds the list); its launches still on the GPU
        # complete as orphans, so a task added later under the same name never sees them.
        self._timers[:] = [x for x in self._timers if x[3] != name]
        heapq.heapify(self._timers)
        self._orphans.update(i for i, x in self.inflight.items() if x.task == name)
        self._orphans.update(i for i, x in self._chained.items() if x.task == name)
        self._event("remove_task", task=name)

    def reset_stats(self: Scheduler) -> None:
        self.metrics.reset(self.backend.now_ns())
        self._event("reset_stats")

    def task_state(self: Scheduler, task: Task) -> dict[str, Any]:
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
