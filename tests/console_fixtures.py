"""Deterministic telemetry for console tests (no engine, fixed clock); no tests here.

Bodies use the names engine.protocol declares (``StateBody``, ``StatsBody``,
``SliceBody``), a subset of the fields: the console must cope with what is missing."""

from __future__ import annotations

import math

from hbtui.console.model import EngineModel

T0 = 1000.0  # the frozen clock's "now"; messages are stamped 0.3 s before it


def frozen_clock() -> float:
    return T0


def state_body() -> dict:
    return {
        "engine_id": "sim-7f3a",
        "backend": "sim",
        "device": "sim (132 SMs)",
        "policy": "hummingbird",
        "readonly": False,
        "profile": {"name": "default", "path": "/opt/hbtui/profiles/default.toml"},
        "tasks": [
            {
                "name": "llm",
                "class": "hp",
                "priority": 10,
                "paused": False,
                "slo_ms": None,
                "slo_factor": 1.0,
                "slo_effective_ms": 2.41,
            },
            {
                "name": "chat",
                "class": "hp",
                "priority": 5,
                "paused": False,
                "slo_ms": 4.0,
                "slo_factor": None,
                "slo_effective_ms": 4.0,
            },
            {
                "name": "train",
                "class": "lp",
                "priority": 0,
                "paused": False,
                "slice_us": 50.0,
                "slice_blocks": None,
            },
            {
                "name": "batch",
                "class": "lp",
                "priority": 1,
                "paused": True,
                "slice_us": None,
                "slice_blocks": 264,
            },
        ],
    }


def stats_body(i: int) -> dict:
    w = math.sin(i / 5)
    return {
        "tasks": {
            "llm": {
                "class": "hp",
                "requests": 1000 + i,
                "slo_ms": 2.41,
                "slo_attainment": 0.985 + 0.01 * w,
                "p50_ms": 1.62,
                "p99_ms": 2.3 + 0.2 * w,
                "preemption_us": {"p50": 22.0, "p99": 96.0 + 30 * w, "max": 210.0},
            },
            "chat": {
                "class": "hp",
                "requests": 400,
                "slo_ms": 4.0,
                "slo_attainment": 0.87,
                "p50_ms": 2.9,
                "p99_ms": 5.1,
                "preemption_us": {"p50": 40.0, "p99": 620.0, "max": 900.0},
            },
            "train": {
                "class": "lp",
                "work_per_s": 61000.0,
                "throughput_norm": 0.62 + 0.05 * w,
                "slices": 5000,
            },
            "batch": {"class": "lp", "work_per_s": 0.0, "throughput_norm": 0.0, "slices": 0},
        },
        "harvest_ratio": 0.7,  # cumulative; the console shows the window's figures
        "gpu_busy": 0.8,
        "window": {"span_s": 5.0, "gpu_busy": 0.83, "harvest_ratio": 0.71 + 0.05 * w},
        "telemetry": {
            "sent": 100 + i,
            "dropped": 0,
            "dropped_records": 0,
            "control_received": 0,
            "control_errors": 0,
            "control_dropped": 0,
        },
    }


def slice_body() -> dict:
    cols: dict[str, list] = {
        k: []
        for k in (
            "task",
            "kernel",
            "cls",
            "start_block",
            "end_block",
            "issue_ns",
            "start_ns",
            "end_ns",
        )
    }
    t = 10_000_000
    for r in range(8):  # 8 HP kernels with LP slices filling most gaps
        for task, kernel, cls, s, e in (
            ("llm", "qkv", "hp", t, t + 90_000),
            ("train", "fwd_gemm", "lp", t + 110_000, t + 160_000),
            ("train", "fwd_gemm", "lp", t + 165_000, t + 215_000),
        ):
            cols["task"].append(task)
            cols["kernel"].append(kernel)
            cols["cls"].append(cls)
            cols["start_block"].append(0)
            cols["end_block"].append(132)
            cols["issue_ns"].append(s - 5_000)
            cols["start_ns"].append(s)
            cols["end_ns"].append(e)
        t += 250_000 + (r % 3) * 10_000
    return cols


def demo_model() -> EngineModel:
    m = EngineModel()
    seq = 0
    for kind, body in [("state", state_body())] + [("stats", stats_body(i)) for i in range(60)]:
        seq += 1
        m.apply({"type": kind, "seq": seq, "engine_id": "sim-7f3a", "body": body}, T0 - 0.3)
    m.apply(
        {"type": "slice", "seq": seq + 1, "engine_id": "sim-7f3a", "body": slice_body()}, T0 - 0.3
    )
    m.apply(
        {
            "type": "event",
            "seq": seq + 2,
            "engine_id": "sim-7f3a",
            "body": {"kind": "set_slice", "task": "train", "us": 50.0, "blocks": None},
        },
        T0 - 0.3,
    )
    return m


def attached_state_body() -> dict:
    """The demo state plus two programs under `hbtui run`: an HP server and an LP trainer
    (``attached`` is ``hbtui.engine.protocol.AttachedInfo``)."""
    st = state_body()
    st["tasks"] = [t for t in st["tasks"] if t["name"] in ("llm", "train")] + [
        {
            "name": "serve",
            "class": "hp",
            "priority": 20,
            "paused": False,
            "slo_ms": 8.0,
            "slo_factor": None,
            "slo_effective_ms": 8.0,
            "attached": {
                "pid": 4242,
                "launcher_pid": 4240,
                "cmd": ["python", "serve.py", "--model", "llama-3-8b", "--port", "8000"],
                "shm": "/hbtui-4240-serve",
                "status": "attached",
                "gated": False,
                "ungated": False,
                "kernels_per_s": 1520.4,
                "launches": 91234,
                "held": 0,
                "sliceable_share": None,
                "requests_from": "markers",
                "idle_ms": 2.0,
            },  # fmt: skip
        },
        {
            "name": "finetune",
            "class": "lp",
            "priority": 0,
            "paused": False,
            "slice_us": None,
            "slice_blocks": None,
            "attached": {
                "pid": 5151,
                "launcher_pid": 5150,
                "cmd": ["torchrun", "--nproc-per-node", "1", "train.py", "--epochs", "3"],
                "shm": "/hbtui-5150-finetune",
                "status": "attached",
                "gated": True,
                "ungated": False,
                "kernels_per_s": 880.0,
                "launches": 40211,
                "held": 3,
                "sliceable_share": 0.35,
                "requests_from": "bursts",
                "idle_ms": 2.0,
            },  # fmt: skip
        },
    ]
    return st


def attached_stats_body(i: int) -> dict:
    s = stats_body(i)
    s["tasks"] = {k: v for k, v in s["tasks"].items() if k in ("llm", "train")}
    s["tasks"]["serve"] = {"class": "hp", "requests": 800, "slo_ms": 8.0,
                           "slo_attainment": 0.995, "p50_ms": 4.1, "p99_ms": 7.2,
                           "preemption_us": {"p50": 30.0, "p99": 110.0}}  # fmt: skip
    s["tasks"]["finetune"] = {"class": "lp", "work_per_s": 2e4, "throughput_norm": 0.41}
    return s


def attached_model() -> EngineModel:
    m = EngineModel()
    bodies = [("state", attached_state_body())]
    bodies += [("stats", attached_stats_body(i)) for i in range(30)]
    for seq, (kind, body) in enumerate(bodies, 1):
        m.apply({"type": kind, "seq": seq, "engine_id": "sim-7f3a", "body": body}, T0 - 0.3)
    last = {"type": "slice", "seq": len(bodies) + 1, "engine_id": "sim-7f3a", "body": slice_body()}
    m.apply(last, T0 - 0.3)
    return m
