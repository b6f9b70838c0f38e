"""Control ops: one table (op → handler, argument fields with their types, mutating or
not) and one validation layer in front of it.

Every refusal raises the scheduler's ``ControlError`` (a code from engine.protocol and a
message naming op and field). Handlers get checked, converted arguments and the task
already resolved, so the scheduler's own checks only ever see well-formed values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from hbtui.engine import limits
from hbtui.engine import profile as profiles
from hbtui.engine.limits import MAX_TASKS, NAME_RE, RANGES
from hbtui.engine.model import HP, LP, Task
from hbtui.engine.policies import POLICIES
from hbtui.engine.protocol import (
    BAD_ARGS,
    BAD_TASK,
    BAD_VALUE,
    BUSY,
    MUTATING_OPS,
    OPS,
    PROFILE_ERROR,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    READONLY,
    UNKNOWN_TASK,
    AddTaskResult,
    PausedResult,
    PingResult,
    RemoveTaskResult,
    ResetStatsResult,
    SetPolicyResult,
    SetPriorityResult,
    SetSliceResult,
    SetSloResult,
    StateBody,
    TaskState,
)
from hbtui.engine.scheduler import ControlError, Scheduler
from hbtui.engine.server import attach_ops, profile_ops
from hbtui.engine.server.reports import state_body

if TYPE_CHECKING:
    from hbtui.engine.server.engine import Engine

__all__ = ["MAX_TASKS", "NAME_RE"]  # engine.limits' caps, as earlier callers import them

# -- argument types: (op, key, value) -> the value checked and converted ----------------
Check = Callable[[str, str, Any], Any]


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def text(max_len: int = 256) -> Check:
    """A string of 1..max_len chars."""

    def check(op: str, key: str, v: Any) -> str:
        if not isinstance(v, str) or not 0 < len(v) <= max_len:
            raise ControlError(BAD_ARGS, f"{op}: {key!r} must be a string of 1-{max_len} chars")
        return v

    return check


def integer(lo: int, hi: int) -> Check:
    """An integer (not a bool) in lo..hi."""

    def check(op: str, key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ControlError(BAD_ARGS, f"{op}: {key!r} must be an integer, got {_show(v)}")
        if not lo <= v <= hi:
            raise ControlError(BAD_VALUE, f"{op}: {key!r} must be in {lo}..{hi}, got {v}")
        return v

    return check


def positive(hi: float, lo: float = 0.0) -> Check:
    """A finite number in (0, hi] (``lo``: in [lo, hi]), as a float."""

    def check(op: str, key: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ControlError(BAD_ARGS, f"{op}: {key!r} must be a number, got {_show(v)}")
        if not math.isfinite(v) or not 0 < v <= hi or v < lo:
            span = f"[{lo:g}, {hi:g}]" if lo > 0 else f"(0, {hi:g}]"
            raise ControlError(BAD_VALUE, f"{op}: {key!r} must be finite and in {span}, got {v}")
        return float(v)

    return check


def ranged(key: str) -> Check:
    """A number in ``limits.RANGES[key]`` (the range profiles use for the same field)."""
    r = RANGES[key]

    def check(op: str, k: str, v: Any) -> float | int:
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or (r.integer and not isinstance(v, int))
        ):
            what = "an integer" if r.integer else "a number"
            raise ControlError(BAD_ARGS, f"{op}: {k!r} must be {what}, got {_show(v)}")
        why = r.problem(v)
        if why is not None:
            raise ControlError(
                BAD_VALUE, f"{op}: {k!r} must be {why} (range {r.span()}), got {_show(v)}"
            )
        return v if r.integer else float(v)

    return check


def boolean(op: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ControlError(BAD_ARGS, f"{op}: {key!r} must be true or false, got {_show(v)}")
    return v


def profile_name(op: str, key: str, v: Any) -> str:
    """A profile name as the user profile dir stores it (no path separators)."""
    v = text(64)(op, key, v)
    if not NAME_RE.match(v):
        raise ControlError(BAD_VALUE, f"{op}: {key!r} must match {NAME_RE.pattern}")
    return v


def path(op: str, key: str, v: Any) -> Path:
    return Path(text(4096)(op, key, v))


def toml_path(op: str, key: str, v: Any) -> Path:
    p = path(op, key, v)
    if p.suffix != ".toml":
        raise ControlError(BAD_VALUE, f"{op}: {key!r} must end in .toml")
    return p


def policy(op: str, key: str, v: Any) -> str:
    v = text(64)(op, key, v)
    if v not in POLICIES:
        raise ControlError(
            BAD_VALUE, f"{op}: unknown policy {v!r} (choose from {', '.join(POLICIES)})"
        )
    return v


def task_table(op: str, key: str, v: Any) -> dict[str, Any]:
    """A ``[[tasks]]`` table (checked by the profile parser in the handler)."""
    if not isinstance(v, dict):
        raise ControlError(BAD_ARGS, f"{op}: {key!r} must be a map (a [[tasks]] table)")
    return v


# -- the table --------------------------------------------------------------------------
class Call(NamedTuple):
    """One validated request, as a handler sees it."""

    op: str
    args: dict[str, Any]  # checked and converted, only those given
    task: Task | None  # the live task ``args["task"]`` names, for ops with ``task`` set


Handler = Callable[["Engine", Call], Any]
ANY = "any"  # Op.task: a task of either class


@dataclass(frozen=True)
class Op:
    handler: Handler
    mutating: bool
    required: dict[str, Check] = field(default_factory=dict)
    optional: dict[str, Check] = field(default_factory=dict)
    one_of: tuple[str, str] | None = None  # exactly one of these two must be given
    task: str | None = None  # ANY, HP or LP: required "task" names a live task of that class
    while_calibrating: bool = False  # a mutating op that need not wait for the scheduler


def validate(eng: Engine, op: str, spec: Op, args: dict[str, Any]) -> Call:
    """Check ``args`` against ``spec``: keys, then the task, then the one-of pair, then each
    value in declared order (the first problem is the one reported)."""
    for k in spec.required:
        if k not in args:
            raise ControlError(BAD_ARGS, f"{op}: missing argument {k!r}")
    for k in args:
        if k not in spec.required and k not in spec.optional:
            raise ControlError(BAD_ARGS, f"{op}: unknown argument {k[:64]!r}")
    task = None
    if spec.task is not None:
        task = _live_task(eng, op, spec.required["task"](op, "task", args["task"]), spec.task)
    if spec.one_of is not None:
        a, b = spec.one_of
        if (a in args) == (b in args):
            raise ControlError(BAD_ARGS, f"{op}: give exactly one of {a!r} or {b!r}")
    out: dict[str, Any] = {}
    for k, check in (spec.required | spec.optional).items():
        if k in args and not (k == "task" and task is not None):
            out[k] = check(op, k, args[k])
    return Call(op, out, task)


def _live_task(eng: Engine, op: str, name: str, cls: str) -> Task:
    task = _sched(eng).tasks.get(name) or eng.attached.task(name)
    if task is None:
        raise ControlError(UNKNOWN_TASK, f"{op}: no task named {name!r}")
    if cls != ANY and task.cls != cls:
        raise ControlError(BAD_TASK, f"{op}: task {name!r} is {task.cls}, not {cls}")
    return task


def run(eng: Engine, op: str, args: dict[str, Any]) -> Any:
    """Gate (read-only, calibrating), validate and run one op; raises ``ControlError``."""
    spec = TABLE[op]
    if spec.mutating:
        if eng.readonly:
            raise ControlError(READONLY, f"{op}: engine is read-only (--readonly)")
        busy = eng.phase != "running" or eng.sched is None or eng.pending is not None
        # a load being parsed replaces the scheduler when done: edits now would be lost
        busy = busy or any(d.op == "load_profile" for _, d in eng.deferred)
        if busy and not spec.while_calibrating:
            raise ControlError(BUSY, f"{op}: engine is calibrating; retry shortly")
    return spec.handler(eng, validate(eng, op, spec, args))


def _sched(eng: Engine) -> Scheduler:
    assert eng.sched is not None  # mutating ops only run once the scheduler does
    return eng.sched


def _owner(eng: Engine, c: Call) -> Any:
    """Who applies a task edit: the attached set for a program under ``hbtui run``."""
    assert c.task is not None
    return eng.attached if eng.attached.task(c.task.name) is not None else _sched(eng)


# -- handlers ---------------------------------------------------------------------------
def _ping(eng: Engine, c: Call) -> PingResult:
    a = c.args
    if "subscriber" in a:  # a subscriber's own count of what it missed (seq gaps)
        eng.sub_reports.report(a["subscriber"], a.get("received", 0), a.get("gaps", 0),
                               time.monotonic_ns())  # fmt: skip
    return {
        "engine_version": eng.version,
        "protocol": PROTOCOL_VERSION,
        "protocol_minor": PROTOCOL_MINOR,
        "engine_id": eng.engine_id,
        "phase": eng.phase,
        "readonly": eng.readonly,
    }


def _get_state(eng: Engine, c: Call) -> StateBody:
    return state_body(eng)


def _set_priority(eng: Engine, c: Call) -> SetPriorityResult:
    assert c.task is not None
    _owner(eng, c).set_priority(c.task.name, c.args["priority"])
    return {"task": c.task.name, "priority": c.task.priority}


def _set_slice(eng: Engine, c: Call) -> SetSliceResult:
    assert c.task is not None
    _owner(eng, c).set_slice(c.task.name, us=c.args.get("us"), blocks=c.args.get("blocks"))
    return {"task": c.task.name, "us": c.task.slice_us, "blocks": c.task.slice_blocks}


def _set_policy(eng: Engine, c: Call) -> SetPolicyResult:
    _sched(eng).set_policy(c.args["policy"])
    return {"policy": c.args["policy"]}


def _set_slo(eng: Engine, c: Call) -> SetSloResult:
    assert c.task is not None
    _owner(eng, c).set_slo(c.task.name, ms=c.args.get("ms"), factor=c.args.get("factor"))
    return {"task": c.task.name, "slo_ms": c.task.slo_ms, "slo_factor": c.task.slo_factor}


def _pause(paused: bool) -> Handler:
    def handler(eng: Engine, c: Call) -> PausedResult:
        assert c.task is not None
        _owner(eng, c).set_paused(c.task.name, paused)
        return {"task": c.task.name, "paused": paused}

    return handler


def _add_task(eng: Engine, c: Call) -> AddTaskResult:
    sched = _sched(eng)
    raw = c.args["task"]
    arrival = raw.get("arrival")
    if isinstance(arrival, dict) and arrival.get("kind") == "trace":
        # a trace file would be read on the engine host
        raise ControlError(PROFILE_ERROR, f"{c.op}: trace arrivals cannot be added remotely")
    if len(sched.tasks) >= MAX_TASKS:
        raise ControlError(BAD_VALUE, f"{c.op}: at most {MAX_TASKS} tasks")
    try:
        task = profiles.parse_task(raw, sched.kernels, file=c.op)
    except profiles.ProfileError as e:
        raise ControlError(PROFILE_ERROR, str(e)) from None
    rate = limits.hp_kernels_per_s([*sched.tasks.values(), task])
    if rate > limits.MAX_HP_KERNELS_PER_S:
        cap = limits.MAX_HP_KERNELS_PER_S
        raise ControlError(
            BAD_VALUE, f"{c.op}: open-loop hp tasks would ask for {rate:g} kernels/s; max {cap:g}"
        )
    if eng.attached.task(task.name) is not None:  # programs under hbtui run share names
        raise ControlError("exists", f"{c.op}: a task named {task.name!r} exists")
    try:
        sched.add_task(task)
    except ControlError:
        raise
    except Exception:  # a bug: take the half-added task out again, then report it
        if task.name in sched.tasks:
            sched.remove_task(task.name)
        raise
    return {"task": cast(TaskState, sched.task_state(sched.tasks[task.name]))}


def _remove_task(eng: Engine, c: Call) -> RemoveTaskResult:
    assert c.task is not None
    if eng.attached.task(c.task.name) is not None:
        raise ControlError(BAD_TASK, f"{c.op}: {c.task.name!r} is a program under hbtui run; "
                                     "it leaves when the program exits")  # fmt: skip
    _sched(eng).remove_task(c.task.name)
    return {"task": c.task.name}


def _reset_stats(eng: Engine, c: Call) -> ResetStatsResult:
    _sched(eng).reset_stats()
    eng.attached.reset_stats()
    eng.window.clear(eng.backend.now_ns(), eng.mark())
    return {}


# Fields: name -> type. Required ones first; values are checked in this order.
_TASK: dict[str, Check] = {"task": text()}
# Ranges (engine.limits, shared with profiles) keep the policy's arithmetic finite (a
# 0.0009-us slice cap divided by zero waves); the console's hbtui.console.limits mirrors them.
_PRIORITY = {"priority": ranged("priority")}
_SLICE = {"us": ranged("slice_us"), "blocks": ranged("slice_blocks")}
_SLO = {"ms": ranged("slo_ms"), "factor": ranged("slo_factor")}
_LOAD = {"path": path, "name": profile_name}
_SAVE = {"name": profile_name, "path": toml_path, "shadow": boolean}

_PING = {"subscriber": text(64), "received": integer(0, 2**62), "gaps": integer(0, 2**62)}

_ATTACH: dict[str, Check] = {
    "task": attach_ops.task_name, "class": attach_ops.task_class, "shm": attach_ops.shm_name,
    "pid": integer(1, 2**31 - 1), "cmd": attach_ops.command, "layout": integer(0, 2**31),
}  # fmt: skip

TABLE: dict[str, Op] = {
    "ping": Op(_ping, mutating=False, optional=_PING),
    "get_state": Op(_get_state, mutating=False),
    "list_profiles": Op(profile_ops.list_profiles, mutating=False),
    "set_priority": Op(_set_priority, True, _TASK | _PRIORITY, task=ANY),
    "set_slice": Op(_set_slice, True, _TASK, _SLICE, one_of=("us", "blocks"), task=LP),
    "set_policy": Op(_set_policy, True, {"policy": policy}),
    "set_slo": Op(_set_slo, True, _TASK, _SLO, one_of=("ms", "factor"), task=HP),
    "pause_task": Op(_pause(True), True, _TASK, task=ANY),
    "resume_task": Op(_pause(False), True, _TASK, task=ANY),
    "add_task": Op(_add_task, True, {"task": task_table}),
    "remove_task": Op(_remove_task, True, _TASK, task=ANY),
    "load_profile": Op(profile_ops.load_profile, True, optional=_LOAD, one_of=("path", "name")),
    "save_profile": Op(profile_ops.save_profile, True, optional=_SAVE),
    "reset_stats": Op(_reset_stats, mutating=True),
    "attach": Op(
        attach_ops.attach,
        True,
        _ATTACH,
        {
            "slo_ms": _SLO["ms"],
            "idle_ms": positive(1e4, lo=0.01),
            "mps": boolean,
            "sm_percent": integer(1, 100),
        },  # fmt: skip
        while_calibrating=True,
    ),
    "detach": Op(
        attach_ops.detach,
        True,
        {"shm": attach_ops.shm_name},
        {"exit_code": integer(-(2**31), 2**31)},
        while_calibrating=True,
    ),
}

# The wire declares the op names and which mutate (clients read it); this table must agree.
if set(TABLE) != OPS or {n for n, s in TABLE.items() if s.mutating} != MUTATING_OPS:
    raise RuntimeError("engine.server.ops.TABLE disagrees with engine.protocol.OPS")
