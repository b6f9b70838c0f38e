"""The model's records: one task row as the table shows it, and the change set the UI
drains on its tick (kept apart from ``model`` so each module stays small)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hbtui.engine.protocol import AttachedInfo


@dataclass
class TaskRow:
    """One task as the table shows it: configuration from `state`, figures from `stats`."""

    name: str
    cls: str = "?"
    priority: int = 0
    slo_ms: float | None = None
    slo_factor: float | None = None
    slo_effective_ms: float | None = None
    slice_us: float | None = None
    slice_blocks: int | None = None
    paused: bool = False
    requests: int | None = None
    attainment: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    preempt_p99_us: float | None = None
    work_per_s: float | None = None
    throughput_norm: float | None = None
    pending: str = ""  # a control op in flight for this task, shown in the state column
    attached: AttachedInfo | None = None  # a program under `hbtui run`, not a profile task

    def slo_text(self) -> str:
        if self.cls != "hp":
            return "-"
        if self.slo_ms is not None:
            return f"{self.slo_ms:g} ms"
        if self.slo_factor is not None:
            eff = f" ({self.slo_effective_ms:.2f})" if self.slo_effective_ms else ""
            return f"{self.slo_factor:g}x{eff}"
        return "-"

    def slice_text(self) -> str:
        if self.cls != "lp":
            return "-"
        if self.slice_blocks is not None:
            return f"{self.slice_blocks} blk"
        if self.slice_us is not None:
            return f"{self.slice_us:g} µs"
        return "auto"

    def state_text(self) -> str:
        if self.pending:
            return f"⧗ {self.pending}"
        return "paused" if self.paused else "running"


@dataclass
class Changes:
    """What changed since the last ``take_changes``: the UI touches only these."""

    rows: set[str] = field(default_factory=set)  # task names whose cells changed
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    header: bool = False
    charts: bool = False
    timeline: bool = False
    gpu: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.rows
            or self.added
            or self.removed
            or self.header
            or self.charts
            or self.timeline
            or self.gpu
            or self.events
        )
