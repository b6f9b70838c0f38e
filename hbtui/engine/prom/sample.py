"""One reading of the engine for the exporter, taken once a second in the flush.

Gauges come from the ``stats`` body (the console's figures); counters and histograms from
the engine's own cumulative aggregates (``engine.metrics.TaskStats``: request, SLO-hit,
block and slice counts and the fixed-size latency histograms), so nothing is re-derived
from rates or percentiles. Each cumulative figure carries a ``token``, the object it is
counted in: a new token (a stats reset, a profile reload, a re-attached program) tells
the exporter the source started again from zero.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hbtui.engine.metrics import Histogram, TaskStats
from hbtui.engine.prom.catalog import LATENCY_BOUNDS_S, PREEMPTION_BOUNDS_S
from hbtui.engine.protocol import StatsBody

if TYPE_CHECKING:
    from hbtui.engine.server.engine import Engine

_LAT_NS = [round(b * 1e9) for b in LATENCY_BOUNDS_S]
_PRE_NS = [round(b * 1e9) for b in PREEMPTION_BOUNDS_S]
HOSTNAME = socket.gethostname()


@dataclass
class Cumulative:
    """A counter (one value) or a histogram (bucket counts, then +Inf, then the sum)."""

    token: object
    values: tuple[float, ...]


@dataclass
class TaskSample:
    name: str
    cls: str
    cumulative: dict[str, Cumulative] = field(default_factory=dict)
    gauges: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Sample:
    info: dict[str, str]
    cumulative: dict[str, Cumulative]
    gauges: dict[str, float | None]
    tasks: list[TaskSample]


def histogram(h: Histogram, bounds_ns: list[int]) -> tuple[float, ...]:
    """Cumulative bucket counts at ``bounds_ns``, the +Inf count and the sum in seconds."""
    return (*h.cumulative_le(bounds_ns), h.n, h.sum / 1e9)


def preemption(ts: TaskStats, baseline_ns: dict[str, int]) -> tuple[float, ...]:
    """As ``histogram(ts.preemption(baseline_ns), ...)``, in a tenth of the time: each
    kernel's waits beyond its baseline, counted straight from its wait histogram."""
    le = [0] * len(_PRE_NS)
    n, total = 0, 0.0
    for k, w in ts.waits.items():
        counts, s = w.excess(baseline_ns.get(k, 0), _PRE_NS)
        le = [a + b for a, b in zip(le, counts, strict=True)]
        n += w.n
        total += s
    return (*le, n, total / 1e9)


def _s(v: float | None, scale: float) -> float | None:
    return None if v is None else v * scale


def task_gauges(t: dict[str, Any], st: dict[str, Any] | None) -> dict[str, float | None]:
    """Gauges of one ``stats`` task entry (and its ``state`` entry for the slice cap)."""
    win = t.get("window") or {}
    if t["class"] == "hp":
        return {
            "hbtui_hp_slo_seconds": _s(t.get("slo_ms"), 1e-3),
            "hbtui_hp_window_slo_attainment_ratio": win.get("slo_attainment"),
            "hbtui_hp_slo_attainment_ratio": t.get("slo_attainment"),
            "hbtui_hp_latency_p99_seconds": _s(t.get("p99_ms"), 1e-3),
            "hbtui_hp_preemption_p99_seconds": _s((t.get("preemption_us") or {}).get("p99"), 1e-6),
        }
    st = st or {}
    blocks = st.get("slice_blocks")
    us = st.get("slice_us") if st.get("slice_us") is not None else st.get("slice_default_us")
    return {
        "hbtui_lp_window_throughput_normalized_ratio": win.get("throughput_norm"),
        "hbtui_lp_throughput_normalized_ratio": t.get("throughput_norm"),
        "hbtui_lp_work_per_second": t.get("work_per_s"),
        "hbtui_lp_slice_cap_seconds": None if blocks is not None else _s(us, 1e-6),
        "hbtui_lp_slice_cap_blocks": None if blocks is None else float(blocks),
    }


def task_cumulative(
    t: dict[str, Any], ts: TaskStats, baseline_ns: dict[str, int]
) -> dict[str, Cumulative]:
    """Counters and histograms of one task from its engine aggregates."""
    if t["class"] == "hp":
        out = {
            "hbtui_hp_requests_total": Cumulative(ts, (ts.requests,)),
            "hbtui_hp_request_latency_seconds": Cumulative(ts, histogram(ts.latency, _LAT_NS)),
        }
        if "attached" not in t:  # the engine sees no kernel starts of a program's HP work
            out["hbtui_hp_preemption_latency_seconds"] = Cumulative(ts, preemption(ts, baseline_ns))
        if t.get("slo_ms") is not None:
            out["hbtui_hp_slo_misses_total"] = Cumulative(ts, (ts.requests - ts.slo_hits,))
        return out
    if "attached" in t:  # a program under hbtui run: its work unit is a kernel launch
        work = slices = int(t.get("slices") or 0)
    else:
        work, slices = ts.blocks, ts.slices
    return {
        "hbtui_lp_work_total": Cumulative(ts, (work,)),
        "hbtui_lp_slices_total": Cumulative(ts, (slices,)),
    }


def take(eng: Engine, stats: StatsBody, state: dict[str, Any]) -> Sample:
    """Read ``eng`` right after it built ``stats`` (and ``state``, the state body)."""
    sched = eng.sched
    assert sched is not None
    states = {t["name"]: t for t in state["tasks"]}
    tasks = []
    for name, t in stats["tasks"].items():
        d: dict[str, Any] = dict(t)
        at = eng.attached.tasks.get(name) if "attached" in d else None
        ts = at.stats if at is not None else sched.metrics.tasks.get(name)
        ts_ = TaskSample(name, d["class"], gauges=task_gauges(d, states.get(name)))
        if ts is not None:
            base = sched.metrics.preempt_baseline_ns if at is None else {}
            ts_.cumulative = task_cumulative(d, ts, base)
        tasks.append(ts_)
    tel = stats["telemetry"]  # engine-lifetime counts
    counters = {
        "hbtui_scheduler_decisions_total": Cumulative(sched, (stats["decisions"],)),
        "hbtui_telemetry_sent_total": Cumulative(eng, (tel["sent"],)),
        "hbtui_telemetry_dropped_total": Cumulative(eng, (tel["dropped"],)),
        "hbtui_telemetry_dropped_records_total": Cumulative(eng, (tel["dropped_records"],)),
        "hbtui_control_requests_total": Cumulative(eng, (tel["control_received"],)),
        "hbtui_control_errors_total": Cumulative(eng, (tel["control_errors"],)),
        "hbtui_control_dropped_total": Cumulative(eng, (tel["control_dropped"],)),
    }
    win = stats["window"]
    gauges = {
        "hbtui_window_harvest_ratio": win.get("harvest_ratio"),
        "hbtui_harvest_ratio": stats["harvest_ratio"],
        "hbtui_subscriber_gaps": tel["subscriber_gaps"],
        "hbtui_window_gpu_busy_ratio": win.get("gpu_busy"),
        "hbtui_gpu_busy_ratio": stats["gpu_busy"],
        "hbtui_loop_lag_seconds": stats["loop"]["lag_ms"] / 1e3,
    }
    info = {
        "engine_id": state["engine_id"],
        "version": state["version"],
        "policy": stats["policy"],
        "profile": state["profile"]["name"],
        "backend": state["backend"],
        "gpu": state["device"],
        "device_index": str(state["device_index"]),
        "pci_bus_id": state["pci_bus_id"] or "",
        "hostname": HOSTNAME,
    }
    return Sample(info, counters, gauges, tasks)
