"""Arrival processes and the paced (wall-clock) sim mode."""

import time
from dataclasses import replace

from hbtui.engine.backends.sim import SimBackend
from hbtui.engine.model import Arrival
from hbtui.engine.profile import load, shipped_dir
from hbtui.engine.scheduler import Scheduler
from hbtui.engine.workload import Arrivals, request_gaps

PROFILE = load(shipped_dir() / "default.toml")
HP_TASK = PROFILE.tasks[0]


def test_periodic_and_poisson_arrivals_are_seeded() -> None:
    per = Arrivals(replace(HP_TASK, arrival=Arrival("periodic", rate_hz=1000.0)), seed=1)
    assert [per.next() for _ in range(3)] == [1_000_000, 2_000_000, 3_000_000]
    a = Arrivals(HP_TASK, seed=1)
    b = Arrivals(HP_TASK, seed=1)
    c = Arrivals(HP_TASK, seed=2)
    xs = [a.next() for _ in range(1000)]
    assert xs == [b.next() for _ in range(1000)]
    assert xs != [c.next() for _ in range(1000)]
    mean_gap_s = xs[-1] / 1000 / 1e9
    assert abs(mean_gap_s * HP_TASK.arrival.rate_hz - 1) < 0.1  # 650 Hz on average


def test_trace_replays_back_to_back() -> None:
    t = Arrivals(replace(HP_TASK, arrival=Arrival("trace", times_ms=(0.0, 1.0))), seed=0)
    assert [t.next() for _ in range(4)] == [0, 1_000_000, 1_000_001, 2_000_001]


def test_gaps_follow_the_jitter_and_are_identical_across_runs() -> None:
    g = request_gaps(HP_TASK, 1, 7)
    assert g == request_gaps(HP_TASK, 1, 7)
    for step, v in zip(HP_TASK.steps, g, strict=True):
        assert step.gap_us * 800 <= v <= step.gap_us * 1200  # ±20 %


def test_closed_loop_keeps_n_requests_outstanding() -> None:
    task = replace(HP_TASK, arrival=Arrival("closed", outstanding=2, think_us=50.0))
    be = SimBackend(PROFILE.sim)
    s = Scheduler(PROFILE.kernels, [task], be, "exclusive", 1)
    peak = 0
    for i in range(1, 200):
        s.run_until(i * 100_000)
        peak = max(peak, s.hp_requests_in_flight)
        assert s.hp_requests_in_flight <= 2
    assert peak == 2
    assert s.metrics.tasks["llm"].requests > 10  # ~1.3 ms each, served one at a time


def test_paced_mode_follows_the_wall_clock() -> None:
    be = SimBackend(PROFILE.sim, realtime=True)
    s = Scheduler(PROFILE.kernels, [replace(t) for t in PROFILE.tasks], be, "hummingbird", 1)
    t0 = time.monotonic()
    s.run_until(be.now_ns() + 150_000_000, max_wait_ns=2_000_000)
    wall = time.monotonic() - t0
    assert 0.14 <= wall < 1.0
    assert s.metrics.tasks["train"].blocks > 0
