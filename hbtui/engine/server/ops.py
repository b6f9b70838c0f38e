"""Control ops: one table (op → handler, argument fields with their types, mutating or
not) and one validation layer in front of it.

Every refusal raises the scheduler's ``ControlError`` (a code from engine.protocol and a
message naming op and field). Handlers get checked, converted arguments and the task
already resolved, so the scheduler's own checks only ever see well-formed values.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from hbtui.engine import profile as profiles
from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.user_kernels import check_kernels
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
    ListProfilesResult,
    LoadProfileResult,
    PausedResult,
    PingResult,
    ProfileEntry,
    RemoveTaskResult,
    ResetStatsResult,
    SaveProfileResult,
    SetPolicyResult,
    SetPriorityResult,
    SetSliceResult,
    SetSloResult,
    StateBody,
    TaskState,
)
from hbtui.engine.scheduler import ControlError, Scheduler
from hbtui.engine.server import attach_ops
from hbtui.engine.server.reports import state_body

if TYPE_CHECKING:
    from hbtui.engine.server.engine import Engine

MAX_TASKS = 64
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

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


def _list_profiles(eng: Engine, c: Call) -> ListProfilesResult:
    home = Path(os.path.expanduser("~"))
    out: list[ProfileEntry] = []
    for name, p, origin in profiles.list_profiles():
        shown = str(p)
        if p.is_relative_to(home) and home != Path("/"):
            shown = str(Path("~") / p.relative_to(home))
        out.append({"name": name, "origin": origin, "path": shown})
    return {"profiles": out}


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
    sched.add_task(task)
    return {"task": cast(TaskState, sched.task_state(sched.tasks[task.name]))}


def _remove_task(eng: Engine, c: Call) -> RemoveTaskResult:
    assert c.task is not None
    if eng.attached.task(c.task.name) is not None:
        raise ControlError(BAD_TASK, f"{c.op}: {c.task.name!r} is a program under hbtui run; "
                                     "it leaves when the program exits")  # fmt: skip
    _sched(eng).remove_task(c.task.name)
    return {"task": c.task.name}


def _load_profile(eng: Engine, c: Call) -> LoadProfileResult:
    p = c.args["path"] if "path" in c.args else profiles.resolve(c.args["name"])
    try:
        prof = profiles.load(p)
        # user kernels compile in prepare, after the old scheduler is gone: a bad one must
        # be an answer now, not a failed reload
        check_kernels(prof.kernels)
    except (profiles.ProfileError, BackendError) as e:
        raise ControlError(PROFILE_ERROR, f"{c.op}: {e}") from None
    eng.request_reload(prof)
    eng.tel.event("load_profile", profile=prof.name, path=str(p))
    return {"profile": prof.name, "path": str(p), "tasks": [t.name for t in prof.tasks]}


def _save_profile(eng: Engine, c: Call) -> SaveProfileResult:
    sched = _sched(eng)
    name = c.args.get("name", eng.prof.name)
    p = c.args["path"] if "path" in c.args else profiles.user_dir() / f"{name}.toml"
    prof = replace(
        eng.prof,
        name=name,
        kernels=dict(sched.kernels),
        tasks=[replace(t) for t in sched.tasks.values()],
        policy=sched.policy.name,
    )
    try:
        written = profiles.save(prof, p)
    except (profiles.ProfileError, OSError) as e:
        raise ControlError(PROFILE_ERROR, f"{c.op}: {e}") from None
    eng.tel.event("save_profile", path=str(written), name=name)
    return {"path": str(written), "name": name}


def _reset_stats(eng: Engine, c: Call) -> ResetStatsResult:
    _sched(eng).reset_stats()
    eng.window.clear(eng.backend.now_ns(), eng.mark())
    return {}


# Fields: name -> type. Required ones first; values are checked in this order.
_TASK: dict[str, Check] = {"task": text()}
_PRIORITY = {"priority": integer(-1_000_000, 1_000_000)}
# Ranges that keep the policy's arithmetic finite (a 0.0009-µs slice cap divided by zero
# waves); the console's hbtui.console.limits mirrors them.
_SLICE = {"us": positive(1e6, lo=1.0), "blocks": integer(1, 2**31)}
_SLO = {"ms": positive(1e6, lo=0.01), "factor": positive(1000, lo=0.1)}
_LOAD = {"path": path, "name": profile_name}
_SAVE = {"name": profile_name, "path": toml_path}

_ATTACH: dict[str, Check] = {
    "task": attach_ops.task_name, "class": attach_ops.task_class, "shm": attach_ops.shm_name,
    "pid": integer(1, 2**31), "cmd": attach_ops.command, "layout": integer(0, 2**31),
}  # fmt: skip

TABLE: dict[str, Op] = {
    "ping": Op(_ping, mutating=False),
    "get_state": Op(_get_state, mutating=False),
    "list_profiles": Op(_list_profiles, mutating=False),
    "set_priority": Op(_set_priority, True, _TASK | _PRIORITY, task=ANY),
    "set_slice": Op(_set_slice, True, _TASK, _SLICE, one_of=("us", "blocks"), task=LP),
    "set_policy": Op(_set_policy, True, {"policy": policy}),
    "set_slo": Op(_set_slo, True, _TASK, _SLO, one_of=("ms", "factor"), task=HP),
    "pause_task": Op(_pause(True), True, _TASK, task=ANY),
    "resume_task": Op(_pause(False), True, _TASK, task=ANY),
    "add_task": Op(_add_task, True, {"task": task_table}),
    "remove_task": Op(_remove_task, True, _TASK, task=ANY),
    "load_profile": Op(_load_profile, True, optional=_LOAD, one_of=("path", "name")),
    "save_profile": Op(_save_profile, True, optional=_SAVE),
    "reset_stats": Op(_reset_stats, mutating=True),
    "attach": Op(
        attach_ops.attach,
        True,
        _ATTACH,
        {"slo_ms": _SLO["ms"], "idle_ms": positive(1e4, lo=0.01)},
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
