"""The control-plane side of ``hbtui run``: tell an engine a program attached or left.

Two ops over the engine's existing control protocol (docs/protocol.md, docs/attach.md):

``attach`` args ``{task: str, class: "hp"|"lp", slo_ms: float (optional), shm: str,
pid: int, cmd: [str], layout: int}`` -> ``{gated: bool}``. The engine maps the segment
``shm`` (``hbtui.attach.segment.Attachment``), checks ``layout`` (the segment layout
version), starts heart-beating, and for LP switches it to GATED before replying (so the
program's first launch is already gated); ``pid`` is the launcher's, whose life bounds
the segment. ``detach`` args ``{shm: str, exit_code: int (optional)}`` -> ``{}``.

``EngineLink`` is the small interface the launcher needs; ``ZmqEngineLink`` implements it
with ``hbtui.engine.client.EngineClient``. An engine that does not answer, or does not
know the op yet (``unknown_op``), yields ``AttachResult(attached=False, reason=...)``:
the launcher then runs the program ungated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from hbtui.attach import layout

ATTACH_OP = "attach"
DETACH_OP = "detach"


@dataclass(frozen=True, slots=True)
class AttachInfo:
    task: str
    cls: str  # "hp" | "lp"
    shm: str
    pid: int
    cmd: list[str]
    slo_ms: float | None = None
    idle_ms: float | None = None
    mps: bool = False  # an MPS control daemon answers for this program (mps_serving())
    sm_percent: int | None = None  # LP under MPS: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE

    def args(self) -> dict[str, Any]:
        a: dict[str, Any] = {"task": self.task, "class": self.cls, "shm": self.shm,
                             "pid": self.pid, "cmd": list(self.cmd)[:64],
                             "layout": layout.VERSION}  # fmt: skip
        if self.slo_ms is not None:
            a["slo_ms"] = float(self.slo_ms)
        if self.idle_ms is not None:
            a["idle_ms"] = float(self.idle_ms)
        a["mps"] = self.mps
        if self.sm_percent is not None:
            a["sm_percent"] = int(self.sm_percent)
        return a


def mps_serving(env: dict[str, str]) -> bool:
    """Whether an NVIDIA MPS control daemon serves a program started with ``env``: its
    pipe directory (``CUDA_MPS_PIPE_DIRECTORY``, default /tmp/nvidia-mps) holds the
    daemon's ``control`` socket, and it accepts a connection (a daemon that crashed
    leaves the socket file behind). With MPS, kernels of different processes run
    concurrently; without it, the GPU time-slices between their contexts."""
    import os
    import socket

    d = env.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(0.5)
            c.connect(os.path.join(d, "control"))
        return True
    except OSError:  # no socket, nobody listening, not ours
        return False


@dataclass(frozen=True, slots=True)
class AttachResult:
    attached: bool
    gated: bool = False
    reason: str = ""
    reply: dict[str, Any] = field(default_factory=dict)


class EngineLink(Protocol):
    def attach(self, info: AttachInfo) -> AttachResult: ...

    def detach(self, shm: str, exit_code: int | None = None) -> None: ...

    def close(self) -> None: ...


class NoEngine:
    """A link to no engine (``--no-engine``): the program runs observed, ungated."""

    def attach(self, info: AttachInfo) -> AttachResult:
        return AttachResult(False, reason="")

    def detach(self, shm: str, exit_code: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class ZmqEngineLink:
    """``EngineLink`` over the engine's control socket (DEALER, like ``hbtui connect``)."""

    def __init__(self, endpoint: str, timeout: float = 1.0) -> None:
        from hbtui.engine.client import EngineClient

        self.endpoint = endpoint
        self.timeout = timeout
        self._c = EngineClient(endpoint, timeout=timeout)

    def attach(self, info: AttachInfo) -> AttachResult:
        from hbtui.engine.client import ClientError, ClientTimeout

        try:
            rep = self._c.call(ATTACH_OP, info.args())
        except ClientTimeout:
            return AttachResult(False, reason=f"no engine answers at {self.endpoint}")
        except ClientError as e:
            if e.code == "unknown_op":
                why = f"the engine at {self.endpoint} does not support attach"
            else:
                why = f"the engine at {self.endpoint} refused attach: [{e.code}] {e.message}"
            return AttachResult(False, reason=why)
        rep = rep if isinstance(rep, dict) else {}
        return AttachResult(True, gated=bool(rep.get("gated", False)), reply=rep)

    def detach(self, shm: str, exit_code: int | None = None) -> None:
        from hbtui.engine.client import ClientError

        args: dict[str, Any] = {"shm": shm}
        if exit_code is not None:
            args["exit_code"] = int(exit_code)
        try:
            self._c.call(DETACH_OP, args, timeout=min(self.timeout, 0.5))
        except ClientError:
            pass  # the engine is gone or forgot us: nothing to undo

    def close(self) -> None:
        self._c.close()
