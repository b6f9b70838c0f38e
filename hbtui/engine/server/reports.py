"""Report builders: the ``state`` and ``stats`` bodies, the final summary and its log.

Pure reads of the engine (plus the stats cadence counters they reset), so what goes on
the wire is built in one place; the bodies' shapes are declared in engine.protocol.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from hbtui.engine.model import HP, LP, Task
from hbtui.engine.policies import POLICIES
from hbtui.engine.protocol import (
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    KernelState,
    StateBody,
    StatsBody,
    TaskState,
)

if TYPE_CHECKING:
    from hbtui.engine.server.engine import Engine

log = logging.getLogger("hbtui.engine")


def stats_body(eng: Engine) -> StatsBody:
    """The ``stats`` body; resets the loop's per-period maxima (tick gap, decision rate)."""
    sched = eng.sched
    assert sched is not None
    now = eng.backend.now_ns()
    s: dict[str, Any] = sched.summary(eng.cal.lp_alone)
    hp = [n for n, t in sched.tasks.items() if t.cls == HP]
    lp = [n for n, t in sched.tasks.items() if t.cls == LP]
    win = eng.window.figures(now, eng.mark(), hp, lp, eng.cal.lp_alone)
    tasks = s["tasks"]
    for name, fig in win.pop("tasks").items():
        if name in tasks:
            tasks[name]["window"] = fig
    for name in list(tasks):
        if name not in sched.tasks:  # removed tasks keep metrics but leave stats
            del tasks[name]
    tasks.update(eng.attached.stats())
    w = time.monotonic_ns()
    lag = (w - eng.pace0[0]) - (now - eng.pace0[1]) if eng.paced else 0
    w0, d0 = eng.stats_mark
    dps = (sched.decisions - d0) / max(1e-9, (w - w0) / 1e9) if d0 <= sched.decisions else 0
    eng.stats_mark = (w, sched.decisions)
    s.update(
        phase=eng.phase,
        policy=sched.policy.name,
        window=win,
        baseline_p99_ms=eng.cal.baseline_p99_ms,
        baseline_attainment=baseline_attainment(eng),
        lp_alone=eng.cal.lp_alone,
        telemetry={
            "sent": eng.pub.sent,
            "dropped": eng.pub.dropped,
            "encode_errors": eng.pub.encode_errors,
            "dropped_records": eng.tel.dropped_records,
            "control_received": eng.ctl_received,
            "control_errors": eng.ctl_errors,
            "control_dropped": eng.ctl_dropped,
            **_subscriber_drops(eng),
        },
        loop={
            "lag_ms": max(0, lag) / 1e6,
            "lag_max_ms": eng.lag_max / 1e6,
            "tick_gap_max_ms": eng.gap_max / 1e6,
            "decisions_per_s": dps,
        },
    )
    eng.gap_max = 0
    return cast(StatsBody, s)


def _subscriber_drops(eng: Engine) -> dict[str, int]:
    n, received, gaps = eng.sub_reports.totals(time.monotonic_ns())
    return {"subscribers_reporting": n, "subscriber_received": received, "subscriber_gaps": gaps}


def baseline_attainment(eng: Engine) -> dict[str, float]:
    """Per HP task with an SLO: the share of its exclusive-run requests within that SLO."""
    sched, cal = eng.sched, eng.cal
    if sched is None or not cal.baseline_latency:
        return {}
    slo = {n: t.slo_ns(cal.baseline_p99_ms.get(n)) for n, t in sched.tasks.items() if t.cls == HP}
    return cal.attainment_alone(slo)


def state_body(eng: Engine) -> StateBody:
    """The ``state`` body (also the ``get_state`` result); valid while calibrating too."""
    sched = eng.sched
    kernels = sched.kernels if sched is not None else eng.prof.kernels
    waves = sched.waves.snapshot() if sched is not None else {}
    if sched is not None:
        tasks = [cast(TaskState, sched.task_state(t)) for t in sched.tasks.values()]
        policy = sched.policy.name
    else:
        tasks = [static_task_state(t) for t in eng.prof.tasks]
        policy = eng.prof.policy
    tasks += [cast(TaskState, d) for d in eng.attached.task_states()]
    be = eng.backend
    return {
        "engine_id": eng.engine_id,
        "version": eng.version,
        "protocol": PROTOCOL_VERSION,
        "protocol_minor": PROTOCOL_MINOR,
        "backend": be.name,
        "device": be.device,
        "device_index": eng.device_index,
        "pci_bus_id": be.pci_bus_id,
        "hp_issue": be.hp_issue,
        "paced": eng.paced,
        "policy": policy,
        "readonly": eng.readonly,
        "phase": eng.phase,
        "profile": {"name": eng.prof.name, "path": eng.prof.path},
        "tasks": tasks,
        "kernels": {
            k.name: cast(
                KernelState,
                {
                    "grid": list(k.grid),
                    "block": list(k.block),
                    "blocks_per_sm": k.blocks_per_sm,
                    "block_us": k.block_us,
                    "sliceable": k.sliceable,
                    **waves.get(k.name, {}),
                },
            )
            for k in kernels.values()
        },
        "policies": list(POLICIES),
        "baseline_p99_ms": eng.cal.baseline_p99_ms,
        "baseline_attainment": baseline_attainment(eng),
        "lp_alone": eng.cal.lp_alone,
        "backend_now_ns": be.now_ns(),
        "uptime_s": (time.monotonic_ns() - eng.started_wall) / 1e9,
    }


def static_task_state(t: Task) -> TaskState:
    """A task's state before its scheduler exists (while calibrating)."""
    d: dict[str, Any] = {"name": t.name, "class": t.cls, "priority": t.priority,
                         "paused": t.paused}  # fmt: skip
    if t.cls == HP:
        d.update(slo_ms=t.slo_ms, slo_factor=t.slo_factor, slo_effective_ms=t.slo_ms)
    else:
        d.update(slice_us=t.slice_us if t.slice_blocks is None else None,
                 slice_blocks=t.slice_blocks)  # fmt: skip
    return cast(TaskState, d)


def final_summary(eng: Engine, stats: StatsBody | None) -> dict[str, Any]:
    """The ``--summary-json`` document (schema 1)."""
    cal = eng.cal
    return {
        "schema": 1,
        "engine_id": eng.engine_id,
        "profile": eng.prof.name,
        "backend": eng.backend.name,
        "device": eng.backend.device,
        "paced": eng.paced,
        "policy": eng.sched.policy.name if eng.sched else eng.prof.policy,
        "calibration": {
            "baseline_p99_ms": cal.baseline_p99_ms,
            "preempt_baseline_us": {k: v / 1e3 for k, v in cal.wait_medians_ns.items()},
            "lp_alone": cal.lp_alone,
            "exclusive_s": cal.exclusive_s,
            "lp_alone_s": cal.lp_alone_s,
        },
        "stats": stats,
        "attached_departed": eng.attached.departed,  # programs that left, their last figures
        "slicer": eng.attached.variants.summary(),  # LP programs' modules: sliced or cached
    }


def log_summary(summary: dict[str, Any]) -> None:
    """The final summary on stderr, one line per task."""
    st = summary.get("stats") or {}
    log.info(
        "stopped: %s policy %s, %.1fs measured, gpu busy %.3f, harvest %.3f",
        summary["profile"],
        summary["policy"],
        st.get("wall_s", 0.0),
        st.get("gpu_busy", 0.0),
        st.get("harvest_ratio", 0.0),
    )
    for name, t in (st.get("tasks") or {}).items():
        if t["class"] == HP:
            att = t.get("slo_attainment")
            log.info(
                "  %s (hp): %d requests, SLO %s ms, attainment %s, p99 %.3f ms, preempt p99 %.1f us"
                "",
                name,
                t["requests"],
                t.get("slo_ms"),
                "-" if att is None else f"{att:.4f}",
                t["p99_ms"],
                t["preemption_us"]["p99"],
            )
        else:
            norm = t.get("throughput_norm")
            log.info(
                "  %s (lp): %.0f blocks/s, normalised %s, %d slices",
                name,
                t["work_per_s"],
                "-" if norm is None else f"{norm:.3f}",
                t["slices"],
            )
    tel = st.get("telemetry") or {}
    if tel:
        log.info("  telemetry: %d sent, %d dropped, %d records dropped",
                 tel["sent"], tel["dropped"], tel["dropped_records"])  # fmt: skip
