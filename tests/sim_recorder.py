"""Test helper: a sim backend that checks an invariant at every submit and keeps launches."""

from __future__ import annotations

from collections.abc import Callable

from engine.backends.sim import SimBackend, SimParams
from engine.model import Launch
from engine.scheduler import Scheduler


class Recorder(SimBackend):
    def __init__(self, sim: SimParams, check: Callable[[Scheduler, Launch], None]) -> None:
        super().__init__(sim)
        self.check = check
        self.sched: Scheduler | None = None
        self.launches: list[Launch] = []

    def submit(self, launch: Launch) -> None:
        assert self.sched is not None
        self.check(self.sched, launch)
        super().submit(launch)
        self.launches.append(launch)
