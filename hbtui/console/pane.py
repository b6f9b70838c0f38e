"""One engine's view: status header, task table, charts, timeline strip and GPU panel.

The pane owns an ``EngineModel`` and redraws from it on the app's tick (``refresh_from
_model``); telemetry never touches widgets directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from hbtui.console.charts import HistoryChart, TimelineStrip
from hbtui.console.model import DISCONNECTED, LIVE, STALE, EngineModel
from hbtui.console.table import TaskTable


def _fmt(v: Any, fmt: str, unit: str = "") -> str:
    return "N/A" if v is None else fmt.format(v) + unit


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader { height: 2; background: $boost; padding: 0 1; }
    """

    def show(self, m: EngineModel, now: float, label: str, extra: str) -> None:
        age = m.age(now)
        conn_style = {LIVE: "bold green", STALE: "bold yellow", DISCONNECTED: "bold red"}
        t = Text.assemble(("engine ", "dim"), (m.engine_id or "?", "bold"), "  ")
        if m.backend == "sim":
            t.append(" simulated GPU ", style="bold black on yellow")
        else:
            t.append(m.device or m.backend or "?", style="bold")
            if m.device_index is not None:  # one engine per GPU: say which one
                t.append(f" #{m.device_index}", style="bold")
                if m.pci_bus_id:
                    t.append(f" ({m.pci_bus_id})", style="dim")
            if m.hp_issue == "python":  # a real GPU with HP issued from the Python loop
                t.append(" HP issued from Python ", style="bold black on yellow")
        t.append("  policy ", style="dim")
        t.append(m.policy or "?", style="bold cyan")
        t.append("  profile ", style="dim")
        t.append(m.profile or "?", style="bold")
        if m.phase and m.phase != "running":
            t.append(f"  {m.phase}…", style="bold yellow")
        if m.dirty:
            t.append(" ● unsaved", style="bold yellow")
        if m.readonly:
            t.append("  READ-ONLY", style="bold black on cyan")
        t.append("\n")
        t.append(f"● {m.connection}", style=conn_style.get(m.connection, "yellow"))
        t.append(" last msg ", style="dim")
        t.append("never" if age is None else f"{age:.1f}s ago")
        t.append("  dropped ", style="dim")
        dropped = m.gaps + m.engine_dropped
        t.append(str(dropped), style="bold red" if dropped else "")
        t.append(f" (seq gaps {m.gaps}, engine {m.engine_dropped})", style="dim")
        t.append(f"  {label}", style="dim")
        if extra:
            t.append(f"  {extra}", style="bold yellow")
        self.update(t)


class GpuPanel(Static):
    DEFAULT_CSS = """
    GpuPanel { width: 100%; height: 9; border: round $primary; padding: 0 1; }
    """

    def show(self, m: EngineModel) -> None:
        g = m.gpu or {}
        mem = "N/A"
        if g.get("mem_used_mb") is not None and g.get("mem_total_mb"):
            mem = f"{g['mem_used_mb'] / 1024:.1f}/{g['mem_total_mb'] / 1024:.0f} GiB"
        name = g.get("name") or ("simulated" if m.backend == "sim" else m.device or "N/A")
        busy = _fmt(None if m.gpu_busy is None else m.gpu_busy * 100, "{:.0f}", " %")
        harvest = _fmt(None if m.harvest_ratio is None else m.harvest_ratio * 100, "{:.0f}", " %")
        lines = [
            ("GPU", str(name)[:24]),
            ("util", _fmt(g.get("util_gpu", g.get("util_pct")), "{:.0f}", " %")),
            ("SM clock", _fmt(g.get("sm_clock_mhz"), "{:.0f}", " MHz")),
            ("power", _fmt(g.get("power_w"), "{:.0f}", " W")),
            ("memory", mem),
            ("busy (engine)", busy),
            ("harvest", harvest),
        ]
        t = Text()
        for i, (k, v) in enumerate(lines):
            if i:
                t.append("\n")
            t.append(f"{k:<14}", style="dim")
            t.append(v, style="dim" if v == "N/A" else "bold")
        self.update(t)


class EnginePane(Vertical):
    """Everything about one engine. ``label`` names its endpoints for the header."""

    DEFAULT_CSS = """
    EnginePane { height: 1fr; }
    EnginePane #charts { height: auto; }
    EnginePane .chartcol { width: 1fr; height: 100%; }
    EnginePane .chartcol HistoryChart { height: 1fr; min-height: 3; max-height: 8; }
    EnginePane #lower { height: 1fr; min-height: 12; }
    EnginePane #side { width: 34; height: 100%; }
    EnginePane #events {
        height: 1fr; color: $text-muted; padding: 0 1; border: round $panel; overflow: hidden;
    }
    """

    def __init__(
        self, model: EngineModel, label: str, clock: Callable[[], float], *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.model = model
        self.label = label
        self.clock = clock
        self.timeline_span_ns = 2_000_000
        self.extra = ""  # pending-op note shown in the header

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield TaskTable(id="tasks")
        with Horizontal(id="lower"):
            with Vertical(classes="chartcol"):
                yield HistoryChart(
                    "SLO attainment", "{:.3f}", id="c-att", lo=None, hi=1.0, higher_is_better=True
                )
                yield HistoryChart("HP p99 ms vs SLO", "{:.2f}", id="c-p99", lo=None)
                yield HistoryChart("preemption p99 µs", "{:.0f}", id="c-pre", lo=None)
            with Vertical(classes="chartcol"):
                yield HistoryChart("LP normalised throughput", "{:.2f}", id="c-lp", lo=None)
                yield HistoryChart("harvest ratio", "{:.2f}", id="c-harvest", hi=1.0)
            with Vertical(id="side"):
                yield GpuPanel(id="gpu")
                yield Static(id="events")
        yield TimelineStrip(id="timeline")

    def on_mount(self) -> None:
        self.refresh_from_model(full=True)

    def refresh_from_model(self, full: bool = False) -> None:
        tables = self.query(TaskTable)
        if not self.is_attached or not tables:
            return  # the refresh tick can fire while the pane mounts or unmounts: keep changes
        table = tables.first()
        m = self.model
        ch = m.take_changes()
        if full:
            ch.added = list(m.tasks)
        table.sync(m.tasks, ch.rows, ch.added, ch.removed)
        # The header shows a message age, so it changes every tick anyway.
        self.query_one(StatusHeader).show(m, self.clock(), self.label, self.extra)
        if full or ch.charts:
            h = m.history
            self.query_one("#c-att", HistoryChart).set_data(h["attainment"])
            self.query_one("#c-p99", HistoryChart).set_data(h["hp_p99_ms"], m.slo_line_ms)
            self.query_one("#c-pre", HistoryChart).set_data(h["preempt_p99_us"])
            self.query_one("#c-lp", HistoryChart).set_data(h["lp_norm"])
            self.query_one("#c-harvest", HistoryChart).set_data(h["harvest"])
        if full or ch.gpu or ch.charts:
            self.query_one(GpuPanel).show(m)
        strip = self.query_one(TimelineStrip)
        cols = strip.columns()
        if (full or ch.timeline or cols != len(strip.hp)) and not m.charts_paused:
            hp, lp = m.timeline(cols, self.timeline_span_ns)
            strip.set_data(hp, lp, self.timeline_span_ns)
        if full or ch.events:
            lines = []
            for e in reversed(list(m.events)[-12:]):
                kind = e.get("kind", "event")
                rest = " ".join(
                    f"{k}={v}" for k, v in e.items() if k not in ("kind", "ts_ns") and v is not None
                )
                lines.append(f"{kind} {rest}")
            self.query_one("#events", Static).update("\n".join(lines) or "no events yet")

    def selected_task(self) -> str | None:
        return self.query_one(TaskTable).selected_task()
