"""The exporter's arithmetic without an engine: Prometheus buckets from the engine's
histogram, counters that survive source restarts, attached-program LP work, rendering."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hbtui.engine.metrics import Histogram, TaskStats
from hbtui.engine.prom.catalog import LATENCY_BOUNDS_S, METRICS, PREEMPTION_BOUNDS_S
from hbtui.engine.prom.exporter import Monotone, fold, render
from hbtui.engine.prom.sample import Cumulative, Sample, TaskSample, task_cumulative, task_gauges


def test_bounds_are_ascending_and_cover_the_slo_range() -> None:
    for b in (LATENCY_BOUNDS_S, PREEMPTION_BOUNDS_S):
        assert list(b) == sorted(set(b))
    assert LATENCY_BOUNDS_S[0] == 1e-4 and LATENCY_BOUNDS_S[-1] == 10.0
    assert PREEMPTION_BOUNDS_S[0] == 1e-6 and PREEMPTION_BOUNDS_S[-1] == 0.1


def test_cumulative_le_matches_exact_counts_within_bucket_precision() -> None:
    rng = random.Random(3)
    vals = [int(rng.lognormvariate(15, 1.5)) for _ in range(20_000)]  # ~3 ms median, ns
    h = Histogram()
    for v in vals:
        h.add(v)
    bounds = [round(b * 1e9) for b in LATENCY_BOUNDS_S]
    got = h.cumulative_le(bounds)
    for b, n in zip(bounds, got, strict=True):
        lo = sum(v <= b * (1 - 0.008) for v in vals)  # certainly counted
        hi = sum(v <= b * (1 + 0.008) for v in vals)  # possibly counted
        assert lo <= n <= hi, (b, lo, n, hi)
    assert h.sum == sum(vals)  # exact, for _sum


def test_cumulative_le_small_values_are_exact() -> None:
    h = Histogram()
    for v in (0, 1, 5, 5, 100):
        h.add(v)
    assert h.cumulative_le([0, 1, 4, 5, 99, 100, 10**9]) == [1, 2, 2, 4, 4, 5, 5]
    assert Histogram().cumulative_le([1, 2]) == [0, 0]


def test_monotone_adds_differences_and_restarts_from_a_new_token() -> None:
    m = Monotone()
    a, b = object(), object()
    key = ("hbtui_hp_requests_total", ("llm", "hp"))
    assert m.fold(key, Cumulative(a, (10,))) == (10,)
    assert m.fold(key, Cumulative(a, (15,))) == (15,)
    assert m.fold(key, Cumulative(b, (3,))) == (18,)  # a reset: a new TaskStats
    assert m.fold(key, Cumulative(b, (4,))) == (19,)
    assert m.fold(key, Cumulative(b, (1,))) == (20,)  # went down under one token: a restart
    m.keep(set())
    assert m.fold(key, Cumulative(b, (2,))) == (2,)  # forgotten (task removed): from zero


def test_monotone_keeps_histograms_cumulative() -> None:
    m = Monotone()
    key = ("hbtui_hp_request_latency_seconds", ("llm", "hp"))
    t1, t2 = object(), object()
    m.fold(key, Cumulative(t1, (1, 4, 5, 0.5)))
    got = m.fold(key, Cumulative(t2, (2, 2, 3, 0.25)))
    assert got == (3, 6, 8, 0.75)
    assert list(got[:-1]) == sorted(got[:-1])


def _hp_stats() -> TaskStats:
    ts = TaskStats("llm", "hp")
    for lat in (500_000, 1_500_000, 3_000_000):  # 0.5, 1.5, 3 ms
        ts.requests += 1
        ts.latency.add(lat)
        ts.slo_hits += lat <= 2_000_000
    return ts


def test_task_cumulative_hp_and_lp() -> None:
    ts = _hp_stats()
    c = task_cumulative({"class": "hp", "slo_ms": 2.0}, ts, {})
    assert c["hbtui_hp_requests_total"].values == (3,)
    assert c["hbtui_hp_slo_misses_total"].values == (1,)
    lat = c["hbtui_hp_request_latency_seconds"].values
    assert len(lat) == len(LATENCY_BOUNDS_S) + 2 and lat[-2] == 3
    assert lat[-1] == pytest.approx(0.005)
    assert lat[LATENCY_BOUNDS_S.index(0.001)] == 1 and lat[LATENCY_BOUNDS_S.index(0.002)] == 2
    assert "hbtui_hp_slo_misses_total" not in task_cumulative({"class": "hp"}, ts, {})
    # a program under hbtui run: no preemption figure (the engine sees no kernel starts)
    c = task_cumulative({"class": "hp", "slo_ms": 2.0, "attached": {}}, ts, {})
    assert "hbtui_hp_preemption_latency_seconds" not in c
    assert c["hbtui_hp_requests_total"].values == (3,)
    lp = TaskStats("train", "lp")
    lp.blocks, lp.slices = 1000, 7
    c = task_cumulative({"class": "lp", "slices": 7}, lp, {})
    assert c["hbtui_lp_work_total"].values == (1000,)
    assert c["hbtui_lp_slices_total"].values == (7,)
    # a program under hbtui run counts kernels: its work is its completed launches
    c = task_cumulative({"class": "lp", "slices": 42, "attached": {}}, TaskStats("p", "lp"), {})
    assert c["hbtui_lp_work_total"].values == (42,) == c["hbtui_lp_slices_total"].values


def test_task_gauges_in_base_units_and_the_cap_in_its_own_unit() -> None:
    hp = {"class": "hp", "slo_ms": 2.0, "slo_attainment": 0.5, "p99_ms": 3.0,
          "preemption_us": {"p99": 40.0}, "window": {"slo_attainment": 0.75}}  # fmt: skip
    g = task_gauges(hp, None)
    assert g["hbtui_hp_slo_seconds"] == pytest.approx(0.002)
    assert g["hbtui_hp_latency_p99_seconds"] == pytest.approx(0.003)
    assert g["hbtui_hp_preemption_p99_seconds"] == pytest.approx(40e-6)
    assert g["hbtui_hp_window_slo_attainment_ratio"] == 0.75
    lp = {"class": "lp", "throughput_norm": 0.6, "work_per_s": 10.0, "window": {}}
    g = task_gauges(lp, {"slice_us": None, "slice_blocks": 264, "slice_default_us": 100.0})
    assert g["hbtui_lp_slice_cap_blocks"] == 264 and g["hbtui_lp_slice_cap_seconds"] is None
    g = task_gauges(lp, {"slice_us": None, "slice_blocks": None, "slice_default_us": 100.0})
    assert g["hbtui_lp_slice_cap_seconds"] == pytest.approx(1e-4)  # the default cap
    assert g["hbtui_lp_window_throughput_normalized_ratio"] is None  # no window yet


class _Reg:
    def __init__(self, snap: object) -> None:
        self.snap = snap

    def collect(self):  # noqa: ANN201
        return render(self.snap)  # type: ignore[arg-type]


def test_render_serves_the_catalog_types_and_skips_none_gauges() -> None:
    ts = _hp_stats()
    task = TaskSample(
        "llm",
        "hp",
        task_cumulative({"class": "hp", "slo_ms": 2.0}, ts, {}),
        {"hbtui_hp_slo_seconds": 0.002, "hbtui_hp_slo_attainment_ratio": None},
    )
    tok = SimpleNamespace()
    s = Sample({"engine_id": "e1", "policy": "hummingbird"},
               {"hbtui_telemetry_dropped_total": Cumulative(tok, (4,))},
               {"hbtui_harvest_ratio": 0.5}, [task])  # fmt: skip
    reg = CollectorRegistry()
    reg.register(_Reg(fold(Monotone(), s)))
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}
    types = {m.name.removesuffix("_total"): m.type for m in METRICS}
    for name, f in fams.items():
        assert f.type == ("gauge" if types[name] == "info" else types[name]), name
    assert "hbtui_hp_slo_attainment_ratio" not in fams  # None: no series, not NaN
    assert fams["hbtui_telemetry_dropped"].samples[0].value == 4
    assert fams["hbtui_engine_info"].samples[0].labels == {"engine_id": "e1",
                                                           "policy": "hummingbird"}  # fmt: skip
    assert list(render(None)) == []


def test_excess_matches_the_shifted_copy_within_bucket_precision() -> None:
    rng = random.Random(5)
    w = Histogram()
    vals = [int(rng.lognormvariate(10, 1.0)) for _ in range(5_000)]  # waits ~ 22 us, ns
    for v in vals:
        w.add(v)
    by = 20_000
    bounds = [round(b * 1e9) for b in PREEMPTION_BOUNDS_S]
    le, total = w.excess(by, bounds)
    exact = [max(0, v - by) for v in vals]
    for b, n in zip(bounds, le, strict=True):
        lo = sum(x <= b - 0.008 * (b + by) for x in exact)
        hi = sum(x <= b + 0.008 * (b + by) for x in exact)
        assert lo <= n <= hi, (b, lo, n, hi)
    assert total == pytest.approx(sum(exact), rel=0.01)
    # the engine's own preemption figures re-bucket a shifted copy: the same to a bucket
    copy = w.shifted(by).cumulative_le(bounds)
    assert max(abs(a - b) for a, b in zip(le, copy, strict=True)) <= 0.01 * len(vals)
