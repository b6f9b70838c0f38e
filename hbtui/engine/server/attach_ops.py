"""The ``attach``/``detach`` ops: programs under ``hbtui run`` join and leave the engine.

Argument checks live here beside the two handlers; the work is the engine's
``AttachedSet`` (engine.attached). Both ops are mutating (a ``--readonly`` engine refuses
them) but also run while the engine calibrates: a program must not run ungated because
it started in the engine's first second.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from hbtui.engine.attached import AttachError
from hbtui.engine.limits import NAME_RE
from hbtui.engine.protocol import BAD_ARGS, BAD_VALUE, AttachResult, DetachResult
from hbtui.engine.scheduler import ControlError

if TYPE_CHECKING:
    from hbtui.engine.server.engine import Engine
    from hbtui.engine.server.ops import Call

_SHM_RE = re.compile(r"^/hbtui-[0-9]+-[0-9]+-[0-9a-f]{1,16}$")
MAX_CMD_ARGS = 64
MAX_ARG_CHARS = 1024


def task_name(op: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):  # the names profile tasks may have
        raise ControlError(BAD_VALUE, f"{op}: {key!r} must match {NAME_RE.pattern}")
    return v


def task_class(op: str, key: str, v: Any) -> str:
    if v not in ("hp", "lp"):
        raise ControlError(BAD_VALUE, f"{op}: {key!r} must be 'hp' or 'lp'")
    return str(v)


def shm_name(op: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or not _SHM_RE.match(v):
        raise ControlError(BAD_VALUE, f"{op}: {key!r} must be an hbtui segment name "
                                      f"(/hbtui-UID-PID-HEX)")  # fmt: skip
    return v


def command(op: str, key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not 0 < len(v) <= MAX_CMD_ARGS:
        raise ControlError(BAD_ARGS, f"{op}: {key!r} must be a list of 1-{MAX_CMD_ARGS} strings")
    if not all(isinstance(a, str) for a in v):
        raise ControlError(BAD_ARGS, f"{op}: {key!r} must hold strings only")
    return [a[:MAX_ARG_CHARS] for a in v]


def attach(eng: Engine, c: Call) -> AttachResult:
    a = c.args
    try:
        t = eng.attached.attach(
            task=a["task"], cls=a["class"], shm=a["shm"], launcher_pid=a["pid"],
            cmd=a["cmd"], layout=a["layout"], slo_ms=a.get("slo_ms"),
            idle_ms=a.get("idle_ms"), mps=a.get("mps", False), taken=eng.task_names(),
            sm_percent=a.get("sm_percent"),
        )  # fmt: skip
    except AttachError as e:
        raise ControlError(e.code, f"{c.op}: {e}") from None
    eng.tel.event("attach", task=t.name, cls=t.cls, pid=t.launcher_pid, cmd=t.cmd[:8])
    eng.tel.state_dirty = True
    return {"task": t.name, "gated": t.gated}


def detach(eng: Engine, c: Call) -> DetachResult:
    t = eng.attached.detach(c.args["shm"], c.args.get("exit_code"))
    if t is None:
        raise ControlError(BAD_VALUE, f"{c.op}: no program attached with shm {c.args['shm']!r}")
    eng.tel.event("detach", task=t.name, exit_code=c.args.get("exit_code"))
    eng.tel.state_dirty = True
    return {"task": t.name}
