"""Start-up calibration for a live engine (the bench does the same with longer runs).

1. ``exclusive`` with the HP tasks only, for ``exclusive_s``: per-HP-task request p99
   (the base of ``slo_factor`` SLOs) and per-kernel median enqueue→start wait (the
   preemption baseline).
2. The LP tasks alone under ``spatial`` for ``lp_alone_s``: per-task LP work/s, the
   denominator of normalised throughput.

Each phase first runs a warm-up whose statistics are discarded (the bench's rule: 10 % of
the phase, at most 1 s): a fresh scheduler's first requests run on untrained models, and
one slow start must not become the SLO. Each phase runs its own Scheduler on a backend
from ``backend_for_phase`` (a fresh one for the sim; the same device, drained, for CUDA)
and calls ``tick`` between iterations, so the engine keeps answering control while it
calibrates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hbtui.engine.backends.base import Backend
from hbtui.engine.metrics import Histogram
from hbtui.engine.model import HP, LP
from hbtui.engine.profile import Profile
from hbtui.engine.scheduler import Scheduler

Tick = Callable[[], None]
_STEP_NS = 50_000_000  # run in chunks so a stop request is seen within ~50 ms
_MAX_WAIT_NS = 1_000_000


@dataclass
class Calibration:
    baseline_p99_ms: dict[str, float] = field(default_factory=dict)
    wait_medians_ns: dict[str, int] = field(default_factory=dict)
    # per HP task: the exclusive run's request latencies, so the share within *today's*
    # SLO ("alone: 99.1 %") can be given after any set_slo
    baseline_latency: dict[str, Histogram] = field(default_factory=dict)
    lp_alone: dict[str, float] = field(default_factory=dict)  # task -> blocks/s
    exclusive_s: float = 0.0
    lp_alone_s: float = 0.0

    def attainment_alone(self, slo_ns: dict[str, int | None]) -> dict[str, float]:
        """Per HP task: the share of the exclusive run's requests within ``slo_ns``."""
        out = {}
        for name, ns in slo_ns.items():
            h = self.baseline_latency.get(name)
            if h is not None and h.n and ns is not None:
                out[name] = h.fraction_le(ns)
        return out


def run_for(
    sched: Scheduler, duration_ns: int, tick: Tick | None, stop: Callable[[], bool] | None = None
) -> None:
    """Run ``sched`` for ``duration_ns`` of backend time in chunks, honouring ``stop``."""
    end = sched.backend.now_ns() + duration_ns
    while (now := sched.backend.now_ns()) < end and not (stop and stop()):
        sched.run_until(min(end, now + _STEP_NS), _MAX_WAIT_NS, tick)


def drain(sched: Scheduler, tick: Tick | None, limit_ns: int = 2_000_000_000) -> bool:
    """Stop issuing (remove every task) and run until nothing is in flight.

    Returns False if launches were still in flight after ``limit_ns`` of backend time.
    """
    listeners, sched.listeners = sched.listeners, []  # no events for the teardown
    for name in list(sched.tasks):
        sched.remove_task(name)
    sched.listeners = listeners
    end = sched.backend.now_ns() + limit_ns
    while sched.busy and sched.backend.now_ns() < end:
        sched.run_until(sched.backend.now_ns() + _MAX_WAIT_NS, _MAX_WAIT_NS, tick)
    return not sched.busy


def _warm(s: Scheduler, phase_s: float, tick: Tick | None, stop: Callable[[], bool] | None) -> None:
    run_for(s, int(min(1.0, 0.1 * phase_s) * 1e9), tick, stop)
    s.reset_stats()


def calibrate(
    prof: Profile,
    backend_for_phase: Callable[[], Backend],
    tick: Tick | None = None,
    exclusive_s: float = 1.0,
    lp_alone_s: float = 0.5,
    stop: Callable[[], bool] | None = None,
) -> Calibration:
    cal = Calibration()
    hp = [replace(t, paused=False) for t in prof.tasks if t.cls == HP]
    lp = [replace(t, paused=False) for t in prof.tasks if t.cls == LP]
    if hp and exclusive_s > 0:
        s = Scheduler(prof.kernels, hp, backend_for_phase(), "exclusive", prof.seed)
        _warm(s, exclusive_s, tick, stop)
        run_for(s, int(exclusive_s * 1e9), tick, stop)
        for name, ts in s.metrics.tasks.items():
            if ts.cls == HP and ts.requests:
                cal.baseline_p99_ms[name] = ts.latency.percentile(99) / 1e6
                cal.baseline_latency[name] = ts.latency
        cal.wait_medians_ns = s.metrics.wait_medians()
        cal.exclusive_s = s.summary()["wall_s"]
        drain(s, tick)
    if lp and lp_alone_s > 0:
        s = Scheduler(prof.kernels, lp, backend_for_phase(), "spatial", prof.seed)
        _warm(s, lp_alone_s, tick, stop)
        run_for(s, int(lp_alone_s * 1e9), tick, stop)
        wall = s.summary()["wall_s"]
        for name, ts in s.metrics.tasks.items():
            if ts.cls == LP and wall > 0:
                cal.lp_alone[name] = ts.blocks / wall
        cal.lp_alone_s = wall
        drain(s, tick)
    return cal
