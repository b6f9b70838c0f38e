"""What a policy sees of the scheduler: a narrow, typed view (no scheduler internals).

Policies import this module, never ``hbtui.engine.scheduler``; the scheduler satisfies
``SchedulerView`` structurally.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from hbtui.engine.model import KernelSpec, Launch, Task
from hbtui.engine.timing import WaveModel


class ArmingBackend(Protocol):
    """The backend facts a policy asks about."""

    @property
    def slo_reserve(self) -> float: ...
    def chain_issued(self, launch: Launch) -> bool: ...
    def can_arm(self, kernel: KernelSpec) -> bool: ...


@dataclass(frozen=True, slots=True)
class NextHp:
    """The chained HP task's next kernel (see ``SchedulerView.next_chained_hp``).

    ``due_ns``: when the chain issues it (its host gap's start + the request's gap);
    ``dur_ns``: its learned duration; ``next_gap_ns``/``next_gap_dev_ns``: the learned
    host gap after it (mean, mean absolute deviation), None for a request's last kernel.
    """

    launch: Launch
    issued: bool
    due_ns: int
    dur_ns: float
    next_gap_ns: float | None
    next_gap_dev_ns: float | None


class SchedulerView(Protocol):
    """Live state and actions a policy uses at a decision."""

    backend: ArmingBackend
    waves: WaveModel
    lp_inflight: deque[Launch]  # LP launches in issue order (the GPU runs them in order)
    hp_kernels_active: int  # HP kernels queued or running
    hp_requests_in_flight: int  # HP requests arrived and not completed
    bubble_start_ns: int  # when the last HP kernel ended

    @property
    def launch_latency_ns(self) -> int: ...
    @property
    def hp_latency_ns(self) -> int: ...
    @property
    def dep_ns(self) -> int: ...
    @property
    def issue_delay_ns(self) -> int: ...
    def margin_ns(self, path: str) -> int: ...
    def lp_tasks(self) -> list[Task]: ...
    def lp_kernel(self, task: Task) -> KernelSpec: ...
    def lp_remaining(self, task: Task) -> int: ...
    def lp_inflight_of(self, name: str) -> int: ...
    def predicted_bubble_left(self, at_ns: int, gap_devs: float) -> int: ...
    def slack_bound(self, now: int, reserve: float = 0.0) -> int: ...
    def next_chained_hp(self) -> NextHp | None: ...
    def issue_lp(
        self, task: Task, blocks: int, start_ns: int | None = None, after: Launch | None = None
    ) -> Launch: ...
    def warn_once(self, key: object, message: str) -> None: ...
