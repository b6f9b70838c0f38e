"""Test helper: a sim backend that checks an invariant at every submit and keeps launches."""

from __future__ import annotations

from collections.abc import Callable

from hbtui.engine.backends.sim import SimBackend, SimParams
from hbtui.engine.model import Launch
from hbtui.engine.policies import HummingbirdConfig
from hbtui.engine.scheduler import Scheduler


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


def run_default(
    be: Recorder, policy: str, ms: int = 300, hummingbird: HummingbirdConfig | None = None
) -> tuple[Scheduler, Recorder]:
    """The shipped default profile on ``be`` (seed 3, SLO 5 ms) for ``ms`` simulated ms."""
    from dataclasses import replace

    from hbtui.engine.profile import load, shipped_dir

    prof = load(shipped_dir() / "default.toml")
    tasks = [replace(t) for t in prof.tasks]
    s = Scheduler(
        prof.kernels, tasks, be, policy, seed=3, baseline_p99_ms={"llm": 5.0},
        hummingbird=hummingbird,
    )  # fmt: skip
    be.sched = s
    s.run_until(ms * 1_000_000)
    return s, be
