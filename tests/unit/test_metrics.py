"""Metrics on small hand-computed timelines (definitions in docs/ARCHITECTURE.md)."""

import random

import pytest

from hbtui.engine.metrics import Histogram, IntervalUnion, Metrics
from hbtui.engine.model import HP, LP, KernelSpec, Launch

K = KernelSpec("k", (8, 1, 1))


def done(i: int, cls: str, issue: int, start: int, end: int, task: str) -> Launch:
    return Launch(i, task, cls, K, 0, 8, 0 if cls == HP else 1, issue, start, end)


def test_histogram_percentiles_are_within_bucket_precision() -> None:
    h = Histogram()
    rng = random.Random(7)
    vals = sorted(rng.randint(0, 50_000_000) for _ in range(20_000))
    for v in vals:
        h.add(v)
    for p in (50, 90, 99, 99.9):
        exact = vals[int(p / 100 * len(vals)) - 1]
        assert h.percentile(p) == pytest.approx(exact, rel=0.01, abs=2)
    assert h.percentile(100) == vals[-1] == h.max
    assert h.n == len(vals)


def test_histogram_small_exact_and_fraction() -> None:
    h = Histogram()
    for v in (1, 2, 3, 4):
        h.add(v)
    assert h.percentile(50) == 2
    assert h.fraction_le(3) == 0.75
    assert Histogram().percentile(99) == 0.0


def test_interval_union_merges_out_of_order_and_folds_before_horizon() -> None:
    u = IntervalUnion()
    u.add(0, 10, horizon=0)
    u.add(20, 30, horizon=0)
    u.add(12, 35, horizon=0)  # starts in a gap, ends after the last one
    u.add(5, 8, horizon=0)  # inside the first
    assert u.total() == 10 + 23
    u.add(40, 50, horizon=36)  # everything before 36 is final
    assert u.closed == 33
    assert u.total() == 43
    assert u.total(upto=45) == 38


def test_slo_attainment_latency_and_preemption_on_a_timeline() -> None:
    m = Metrics()
    m.task("hp", HP)
    m.task("lp", LP)
    # HP kernel enqueued at 0, starts at 10 (baseline wait 4 → preemption 6), ends at 20.
    m.preempt_baseline_ns = {"k": 4}
    m.on_launch_done(done(1, HP, 0, 10, 20, "hp"), horizon=0)
    # LP slice runs 20..50 (inside the bubble after HP), another 60..70.
    m.on_launch_done(done(2, LP, 15, 20, 50, "lp"), horizon=15)
    m.on_launch_done(done(3, LP, 55, 60, 70, "lp"), horizon=55)
    for lat in (1_000_000, 2_000_000, 3_000_000):
        m.on_request_done("hp", lat, slo_ns=2_000_000)
    ts = m.tasks["hp"]
    s = ts.summary(2_000_000, 100, None, m.preempt_baseline_ns)
    assert s["slo_attainment"] == pytest.approx(2 / 3)
    assert s["p50_ms"] == pytest.approx(2.0, rel=0.01)
    assert s["preemption_us"]["max"] == pytest.approx(6 / 1e3)
    g = m.gpu_figures(100)
    assert g["gpu_busy"] == pytest.approx((10 + 30 + 10) / 100)  # 10..20, 20..50, 60..70
    # HP active (queued or running) 0..20 → bubble 80 ns; LP inside it 30 + 10.
    assert g["harvest_ratio"] == pytest.approx(40 / 80)
    lp = m.tasks["lp"].summary(None, 100, 1.6e8, {})
    assert lp["work_per_s"] == pytest.approx(16 / 100e-9)  # 16 blocks in 100 ns
    assert lp["throughput_norm"] == pytest.approx(16 / 100e-9 / 1.6e8)


def test_lp_overlapping_hp_is_not_counted_as_harvest() -> None:
    m = Metrics()
    m.task("hp", HP)
    m.task("lp", LP)
    m.on_launch_done(done(1, LP, 0, 0, 40, "lp"), horizon=0)  # co-runs with HP 10..30
    m.on_launch_done(done(2, HP, 10, 12, 30, "hp"), horizon=10)
    g = m.gpu_figures(100)
    # bubble = 100 - 20 = 80; LP outside HP-active = 0..10 and 30..40 = 20
    assert g["harvest_ratio"] == pytest.approx(20 / 80)


def test_reset_keeps_tasks_and_baseline() -> None:
    m = Metrics()
    m.task("hp", HP)
    m.preempt_baseline_ns = {"k": 5}
    m.on_request_done("hp", 10, None)
    m.reset(1000)
    assert m.tasks["hp"].requests == 0
    assert m.preempt_baseline_ns == {"k": 5}
    assert m.start_ns == 1000


def test_attainment_is_unknown_without_an_slo() -> None:
    m = Metrics()
    m.task("hp", HP)
    m.on_request_done("hp", 1_000, None)
    assert m.tasks["hp"].summary(None, 100, None, {})["slo_attainment"] is None
