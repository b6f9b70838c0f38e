"""Checks on everything the console reads off the wire, before the model applies it.

Each telemetry body (and a ``get_state`` reply) is checked against the shape that
``hbtui.engine.protocol`` declares for it. The rule, one for every field:

- a field that is *missing* is fine (older engines, a subset of fields), and a field
  the protocol does not declare is ignored (newer minor versions add fields);
- a field that is *present* with the wrong type (a list where a map is declared, a
  string where a number is), a number that is not finite (NaN, inf), negative where a
  duration, rate or count is meant, or beyond ``MAX_NUM`` (1e12: no latency, rate or
  size the console shows comes near it; 1e308 would overflow the charts' arithmetic)
  makes the whole message *bad*: ``check`` raises ``BadMessage`` naming the field, the
  model counts it, shows the count and applies nothing of it.

Strings are capped in length (``MAX_TEXT``), lists in size (``MAX_ITEMS``), so a hostile
message cannot make the console do unbounded work per message. The per-record columns of
``slice`` messages are checked for shape here (lists of one length) and element by
element where they are read (the timeline skips records that are not ints), so a busy
engine's tens of thousands of records per second cost no per-record work on arrival.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

MAX_NUM = 1e12  # magnitude bound for every float the console shows
MAX_INT = 2**63 - 1  # counts, ids and nanosecond stamps (msgpack's int64)
MAX_TEXT = 1024  # characters of any one string (names, kinds, messages)
MAX_ITEMS = 4096  # entries of any list or map (tasks, kernels, slice records)
FRACTION = (0.0, 1.0)  # SLO attainment, sliceable share
RATIO = (-10.0, 10.0)  # window ratios (busy, harvest): may wobble outside 0..1 a little


class BadMessage(ValueError):
    """A message whose shape is not the declared one; the text names the field."""


def short(v: Any, n: int = 24) -> str:
    """A value for an error message: never long, never a huge int's 4000 digits."""
    if isinstance(v, str):
        s = repr(v[:n])
    elif isinstance(v, float | bool) or v is None:
        s = repr(v)
    elif isinstance(v, int):
        s = repr(v) if abs(v) < 10**24 else f"an int of {v.bit_length()} bits"
    else:
        s = type(v).__name__
    return s if len(s) <= n + 2 else s[:n] + "…"


def _bad(path: str, v: Any, want: str) -> BadMessage:
    return BadMessage(f"{path}: {short(v)} is not {want}")


def num(path: str, v: Any, lo: float = 0.0, hi: float = MAX_NUM) -> None:
    """A finite int or float in [lo, hi], or None."""
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(path, v, "a number")
    if isinstance(v, float) and not math.isfinite(v):
        raise _bad(path, v, "a finite number")
    if not lo <= v <= hi:
        raise _bad(path, v, f"in {lo:g}..{hi:g}")


def integer(path: str, v: Any, lo: int = 0, hi: int = MAX_INT) -> None:
    """An int (not a bool) in [lo, hi], or None."""
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(path, v, "a whole number")
    if not lo <= v <= hi:
        raise _bad(path, v, f"in {lo}..{hi}")


def text(path: str, v: Any, max_len: int = MAX_TEXT) -> None:
    if v is None:
        return
    if not isinstance(v, str):
        raise _bad(path, v, "a string")
    if len(v) > max_len:
        raise BadMessage(f"{path}: a string of {len(v)} characters (at most {max_len})")


def flag(path: str, v: Any) -> None:
    if v is not None and not isinstance(v, bool):
        raise _bad(path, v, "true or false")


def mapping(path: str, v: Any) -> dict[str, Any]:
    """The map (or {} when missing); string keys only, at most MAX_ITEMS entries."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(path, v, "a map")
    if len(v) > MAX_ITEMS:
        raise BadMessage(f"{path}: {len(v)} entries (at most {MAX_ITEMS})")
    for k in v:
        if not isinstance(k, str) or len(k) > MAX_TEXT:
            raise _bad(path, k, "a key (a string)")
    return v


def listing(path: str, v: Any) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _bad(path, v, "a list")
    if len(v) > MAX_ITEMS:
        raise BadMessage(f"{path}: {len(v)} items (at most {MAX_ITEMS})")
    return v


Check = Callable[[str, Any], None]


def fields(path: str, d: dict[str, Any], spec: dict[str, Check]) -> None:
    """Check each declared field that is present; others are ignored."""
    for key, check in spec.items():
        if key in d:
            check(f"{path}.{key}", d[key])


def _nums(lo: float = 0.0, hi: float = MAX_NUM) -> Check:
    return lambda p, v: num(p, v, lo, hi)


def _num_map(path: str, v: Any) -> None:
    for k, x in mapping(path, v).items():
        num(f"{path}.{k}", x)


def _int_map(path: str, v: Any) -> None:
    for k, x in mapping(path, v).items():
        integer(f"{path}.{k}", x)


def _fraction_map(path: str, v: Any) -> None:
    for k, x in mapping(path, v).items():
        num(f"{path}.{k}", x, *FRACTION)


def _text_list(path: str, v: Any) -> None:
    for i, x in enumerate(listing(path, v)):
        text(f"{path}[{i}]", x)


def _any_map(path: str, v: Any) -> None:
    mapping(path, v)


def _map_of(spec: dict[str, Check]) -> Check:
    return lambda p, v: fields(p, mapping(p, v), spec)


_ATTACHED: dict[str, Check] = {
    "pid": integer,
    "launcher_pid": integer,
    "cmd": _text_list,
    "shm": text,
    "status": text,
    "gated": flag,
    "ungated": flag,
    "kernels_per_s": num,
    "launches": integer,
    "held": integer,
    "sliceable_share": _nums(*FRACTION),
    "sliced_share": _nums(*FRACTION),
    "slicing": flag,
    "requests_from": text,
    "idle_ms": num,
    "mps": flag,
    "sm_percent": lambda p, v: integer(p, v, 1, 100),
    "harvest_cost": num,
    "harvest_held_off": flag,
    "lp_bubbles_per_request": num,
    "lp_bubble_cost_us": _nums(-MAX_NUM, MAX_NUM),  # (a difference of medians)
    "completion_every_us": lambda p, v: integer(p, v, 0, 1_000_000),
    "predicted_bubbles": integer,
}
attached = _map_of(_ATTACHED)

_TASK_STATE: dict[str, Check] = {
    "class": text,
    "priority": lambda p, v: integer(p, v, -MAX_INT, MAX_INT),
    "paused": flag,
    "slo_ms": num,
    "slo_factor": num,
    "slo_effective_ms": num,
    "slice_us": num,
    "slice_blocks": integer,
    "slice_default_us": num,
    "attached": attached,
}

_STATE: dict[str, Check] = {
    "engine_id": text,
    "version": text,
    "protocol": integer,
    "protocol_minor": integer,
    "backend": text,
    "device": text,
    "device_index": lambda p, v: integer(p, v, 0, 1 << 16),
    "pci_bus_id": text,
    "hp_issue": text,
    "paced": flag,
    "policy": text,
    "readonly": flag,
    "phase": text,
    "profile": _map_of({"name": text, "path": text}),
    "kernels": _any_map,  # the console does not read kernels
    "policies": _text_list,
    "baseline_p99_ms": _num_map,
    "baseline_attainment": _fraction_map,
    "lp_alone": _num_map,
    "backend_now_ns": integer,
    "uptime_s": num,
}


def state(b: dict[str, Any]) -> None:
    fields("state", b, _STATE)
    for i, t in enumerate(listing("state.tasks", b.get("tasks"))):
        p = f"state.tasks[{i}]"
        t = mapping(p, t)
        if "name" not in t:
            raise BadMessage(f"{p}: no name")
        text(f"{p}.name", t["name"])
        fields(p, t, _TASK_STATE)


_PERCENTILES = _map_of({"p50": num, "p99": num, "max": num})
_TASK_FIGURES: dict[str, Check] = {
    "class": text,
    "requests": integer,
    "slo_ms": num,
    "slo_attainment": _nums(*FRACTION),
    "p50_ms": num,
    "p99_ms": num,
    "preemption_us": _PERCENTILES,
    "work_per_s": num,
    "throughput_norm": num,
    "slices": integer,
    "slices_per_s": num,
    "attached": attached,
}
_TASK_STATS = {**_TASK_FIGURES, "window": _map_of(_TASK_FIGURES)}

_STATS: dict[str, Check] = {
    "phase": text,
    "policy": text,
    "wall_s": num,
    "gpu_busy": _nums(*RATIO),
    "harvest_ratio": _nums(*RATIO),
    "bubble_s": num,
    "decisions": integer,
    "window": _map_of({"span_s": num, "gpu_busy": _nums(*RATIO), "harvest_ratio": _nums(*RATIO)}),
    "baseline_p99_ms": _num_map,
    "baseline_attainment": _fraction_map,
    "lp_alone": _num_map,
    "telemetry": _int_map,
    "loop": _num_map,
}


def stats(b: dict[str, Any]) -> None:
    fields("stats", b, _STATS)
    for name, t in mapping("stats.tasks", b.get("tasks")).items():
        p = f"stats.tasks.{name[:32]}"
        fields(p, mapping(p, t), _TASK_STATS)


def slice_(b: dict[str, Any]) -> None:
    n = None
    for k in ("task", "kernel", "cls", "start_block", "end_block", "issue_ns", "start_ns",
              "end_ns"):  # fmt: skip
        if k in b:
            col = listing(f"slice.{k}", b[k])
            if n is not None and len(col) != n:
                raise BadMessage(f"slice.{k}: {len(col)} records, other columns {n}")
            n = len(col)


def request(b: dict[str, Any]) -> None:
    n = None
    for k in ("task", "id", "arrival_ns", "latency_ns", "slo_ok"):
        if k in b:
            col = listing(f"request.{k}", b[k])
            if n is not None and len(col) != n:
                raise BadMessage(f"request.{k}: {len(col)} records, other columns {n}")
            n = len(col)


def event(b: dict[str, Any]) -> None:
    fields("event", b, {"kind": lambda p, v: text(p, v, 128), "level": text, "message": text,
                        "request_id": text})  # fmt: skip
    # Other fields are the op's own; the events pane formats them with bounded depth,
    # items and length (pane.fmt_value), so any value is safe to show.


def gpu(b: dict[str, Any]) -> None:
    n = _nums(0.0, MAX_NUM)
    fields("gpu", b, {"name": text, "util_pct": n, "util_gpu": n, "mem_util_pct": n,
                      "sm_clock_mhz": n, "mem_clock_mhz": n, "power_w": n, "mem_used_mb": n,
                      "mem_total_mb": n, "temp_c": _nums(-300.0), "nvml_ms": n})  # fmt: skip


BODIES: dict[str, Callable[[dict[str, Any]], None]] = {
    "state": state,
    "stats": stats,
    "slice": slice_,
    "request": request,
    "event": event,
    "gpu": gpu,
}


def envelope(env: dict[str, Any]) -> None:
    """The envelope's own fields; a known type's body must be a map of its shape."""
    kind = env.get("type")
    text("type", kind, 32)
    integer("seq", env.get("seq"))
    integer("ts_ns", env.get("ts_ns"))
    text("engine_id", env.get("engine_id"), 128)
    check = BODIES.get(kind) if isinstance(kind, str) else None
    if check is not None:
        body = env.get("body")
        if not isinstance(body, dict):
            raise _bad(f"{kind} body", body, "a map")
        check(body)
