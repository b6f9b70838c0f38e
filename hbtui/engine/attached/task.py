"""One program under ``hbtui run`` as the engine holds it (``AttachedTask``) and the
``attached`` map of its state and stats (protocol.AttachedInfo)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hbtui.attach.segment import Attachment
from hbtui.engine.attached.hp import HpTracker
from hbtui.engine.attached.lp import LpGate
from hbtui.engine.metrics import TaskStats
from hbtui.engine.model import Task


def _us(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e3, 1)


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


class AttachError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class AttachedTask:
    task: Task
    att: Attachment
    shm: str
    launcher_pid: int
    cmd: list[str]
    idle_ms: float
    hp: HpTracker | None = None
    lp: LpGate | None = None
    attached_ns: int = field(default_factory=time.monotonic_ns)
    detached: bool = False
    exit_code: int | None = None
    stats: TaskStats | None = None
    funcs: dict[int, int] = field(default_factory=dict)  # func -> module hash
    func_names: dict[int, int] = field(default_factory=dict)  # func -> hash64 of its name
    modules: dict[int, str] = field(default_factory=dict)  # LP: image hash -> slicer status
    sliceable: set[int] = field(default_factory=set)  # funcs the slicer sliced
    # LP: where the program's PTX images and Triton cache are (from its environment)
    dirs: tuple[str, tuple[str, ...]] | None = None
    rate_mark: tuple[int, int] = (0, 0)  # (ns, launches) at the last stats
    kernels_per_s: float = 0.0
    mps: bool = False  # an MPS daemon serves the program (else: time-sliced contexts)
    beat_ns: int = 0  # when the engine last wrote the segment's heartbeat
    beat_every_ns: int = 0  # ... and the next after: 10 ms, or grace/4 if shorter
    sm_percent: int | None = None  # LP under MPS: its share of the SMs (None: all)

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def cls(self) -> str:
        return self.task.cls

    @property
    def gated(self) -> bool:
        return self.lp is not None and self.lp.gated

    def launches(self) -> int:
        if self.hp is not None:
            return self.hp.launches
        assert self.lp is not None
        return self.lp.kernels

    def info(self) -> dict[str, Any]:
        """The ``attached`` map (protocol.AttachedInfo) of ``state`` and ``stats``."""
        lp = self.lp
        busy = lp.busy_ns if lp is not None else 0.0
        return {
            "pid": int(self.att.h.intercept_pid),
            "launcher_pid": self.launcher_pid,
            "cmd": self.cmd[:16],
            "shm": self.shm,
            "status": "detached" if self.detached else "attached",
            "gated": self.gated,
            "ungated": bool(self.att.h.ungated) if not self.detached else False,
            "kernels_per_s": round(self.kernels_per_s, 1),
            "launches": self.launches(),
            "held": len(self.att.pending()) if lp is not None and not self.detached else 0,
            "waited": lp.waited() if lp is not None and not self.detached else None,
            "sliceable_share": (lp.sliceable_ns / busy) if lp is not None and busy > 0 else None,
            "sliceable_kernels": len(self.sliceable),
            "sliced_share": (lp.slices.sliced_ns / busy) if lp is not None and busy > 0 else None,
            "slicing": bool(lp is not None and lp.slices.on),
            "modules": _count(self.modules.values()),
            "requests_from": "markers" if self.hp is not None and self.hp.markers else "bursts",
            **(
                {
                    "harvest_cost": self.hp.guard.cost,
                    "harvest_held_off": self.hp.guard.held_off,
                    "lp_bubbles_per_request": self.hp.lp_bubbles_per_request,
                    "predicted_bubbles": self.hp.predicted_bubbles,  # --bubble-quiet-us
                    "lp_bubble_cost_us": _us(self.hp.bubble_cost_ns),
                    # what observing it costs now (docs/attach.md, "Coalescing")
                    "completion_every_us": self.att.hp_comp_every_us(),
                }
                if self.hp is not None
                else {}
            ),  # fmt: skip
            "idle_ms": self.idle_ms,
            "mps": self.mps,
            "sm_percent": self.sm_percent,
        }
