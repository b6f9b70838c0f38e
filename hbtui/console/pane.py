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

from hbtui.console import programs
from hbtui.console.charts import HistoryChart, TimelineStrip
from hbtui.console.model import DISCONNECTED, LIVE, STALE, EngineModel
from hbtui.console.table import TaskTable
from hbtui.console.wire import MAX_NUM


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
        t.no_wrap, t.overflow = True, "ellipsis"  # two lines, cut with … (never wrapped)
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
        if dropped:
            t.append(f" (seq gaps {m.gaps}, engine {m.engine_dropped})", style="dim")
        bad = m.bad_total()
        if bad:
            t.append(f"  bad messages: {bad}", style="bold red")
            if m.last_bad:
                t.append(f" (last: {programs.cut(m.last_bad, 60)})", style="dim")
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


EVENT_ITEMS = 8  # entries of a list or map shown in an event line
EVENT_TEXT = 80  # characters of one string shown in an event line
EVENT_LINE = 240  # characters of one event line


def fmt_value(key: str, v: Any, depth: int = 0) -> str:
    """An event field for people: units from the key's suffix, dicts as ``k v, k v``.
    Bounded whatever the engine sends: nesting, items and lengths are cut with …"""
    if depth > 2:
        return "…"
    unit = ""
    for suffix, u in (("_ms", " ms"), ("_us", " µs"), ("_ns", " ns"), ("_s", " s"), ("_pct", " %")):
        if key.endswith(suffix):
            unit = u
            break
    if isinstance(v, dict | list | tuple):
        items = list(v.items())[: EVENT_ITEMS + 1] if isinstance(v, dict) else list(v)
        parts = [
            f"{programs.cut(str(x[0]), EVENT_TEXT)} {fmt_value(key, x[1], depth + 1)}"
            if isinstance(v, dict)
            else fmt_value(key, x, depth + 1)
            for x in items[:EVENT_ITEMS]
        ]
        if len(v) > EVENT_ITEMS:
            parts.append("…")
        return ", ".join(parts) or "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}{unit}"
    if isinstance(v, int):
        return f"{v}{unit}" if abs(v) < 10**18 else f"{v:.4g}{unit}"
    return programs.cut(str(v), EVENT_TEXT)


def fmt_event(e: dict[str, Any]) -> Text:
    """One event line: ``kind  key value · key value`` (no Python reprs)."""
    level = e.get("level", "info")
    style = {"error": "bold red", "warning": "yellow"}.get(str(level), "bold")
    t = Text(programs.cut(str(e.get("kind", "event")), EVENT_TEXT), style=style)
    parts = []
    for k, v in list(e.items())[:32]:
        if k in ("kind", "ts_ns", "level") or v is None:
            continue
        k = programs.cut(str(k), EVENT_TEXT)
        name = k
        for suffix in ("_ms", "_us", "_ns", "_pct"):
            name = name.removesuffix(suffix)
        parts.append(f"{name.replace('_', ' ')} {fmt_value(k, v)}")
    if parts:
        t.append(programs.cut("  " + " · ".join(parts), EVENT_LINE))
    return t


def value_line(m: EngineModel, baseline_ms: dict[str, float]) -> Text:
    """What the scheduler buys, from live data: HP's SLO attainment next to what HP gets
    running alone (the exclusive attainment when the engine reports it, else the
    exclusive p99 from its calibration), LP's speed against running alone, and how long
    HP waits for the GPU (preemption p99)."""
    hp = [r for r in m.tasks.values() if r.cls == "hp"]
    lp = [r for r in m.tasks.values() if r.cls == "lp"]
    t = Text()
    top = max(hp, key=lambda r: r.priority, default=None)
    if top is None:
        return Text("no HP task", style="dim")
    if top.attainment is None:
        t.append(f"HP {top.name}: no requests measured yet", style="dim")
    else:
        style = (
            "bold green"
            if top.attainment >= 0.99
            else "bold yellow"
            if top.attainment >= 0.9
            else "bold red"
        )
        t.append("HP ", style="bold magenta")
        t.append(f"{top.attainment * 100:.1f} %", style=style)
        slo = top.slo_effective_ms or top.slo_ms
        t.append(" of requests within SLO" + (f" {slo:.3g} ms" if slo else ""))
    alone_att = m.baseline_attainment.get(top.name)
    alone = baseline_ms.get(top.name)
    if alone_att is not None:
        t.append(f" (alone: {alone_att * 100:.1f} %)", style="dim")
    elif alone is not None:
        t.append(f" (alone: p99 {alone:.3g} ms", style="dim")
        if top.p99_ms is not None:
            t.append(f", now {top.p99_ms:.3g} ms", style="dim")
        t.append(")", style="dim")
    norms = [r.throughput_norm for r in lp if r.throughput_norm is not None]
    if lp:
        t.append(" · ", style="dim")
        t.append("LP ", style="bold cyan")
        if norms:
            t.append("at ")
            t.append(f"{sum(norms):.2f}", style="bold")
            t.append(" of its solo speed")
        else:
            t.append("speed not measured yet", style="dim")
    if top.preempt_p99_us is not None:
        t.append(" · preemption p99 ")
        t.append(f"{top.preempt_p99_us:.0f} µs", style="bold")
    return t


def baseline_from_events(m: EngineModel) -> dict[str, float]:
    """The exclusive p99 per HP task: from state/stats, else the `calibrated` event."""
    if m.baseline_p99_ms:
        return m.baseline_p99_ms
    for e in reversed(m.events):
        b = e.get("baseline_p99_ms")
        if e.get("kind") == "calibrated" and isinstance(b, dict):
            return {
                str(k): float(v)
                for k, v in b.items()
                if isinstance(v, int | float) and 0 <= v <= MAX_NUM
            }
    return {}


class EnginePane(Vertical):
    """Everything about one engine. ``label`` names its endpoints for the header."""

    DEFAULT_CSS = """
    EnginePane { height: 1fr; }
    EnginePane #value { height: auto; padding: 0 1; }
    EnginePane #detail { height: 1; padding: 0 1; display: none; text-wrap: nowrap; }
    EnginePane #intro { height: auto; padding: 0 1; color: $text-muted; border: round $accent; }
    EnginePane #waiting {
        height: auto; padding: 1 2; border: heavy $warning; color: $warning; display: none;
    }
    EnginePane .chartcol { width: 1fr; height: 100%; }
    EnginePane .chartcol HistoryChart { height: 1fr; min-height: 3; }
    EnginePane #lower { height: 1fr; min-height: 12; }
    EnginePane #side { width: 34; height: 100%; }
    EnginePane #events {
        height: 1fr; color: $text-muted; padding: 0 1; border: round $panel; overflow: hidden;
    }
    EnginePane.stale #tasks, EnginePane.stale #lower, EnginePane.stale #timeline,
    EnginePane.stale #value { text-opacity: 55%; }
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
        self.intro = ""  # first-screen note; Esc hides it
        self.baseline_ms: dict[str, float] = {}  # exclusive (HP alone) p99 per task

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield Static(id="value")
        if self.intro:
            yield Static(Text(self.intro), id="intro")
        yield Static(id="waiting")
        yield TaskTable(id="tasks")
        yield Static(id="detail")
        with Horizontal(id="lower"):
            with Vertical(classes="chartcol"):
                yield HistoryChart(
                    "HP within SLO", "{:.1f}", id="c-att", lo=0.0, hi=100.0,
                    higher_is_better=True, unit=" %", limit_label="target",
                )  # fmt: skip
                yield HistoryChart(
                    "HP p99", "{:.3g}", id="c-p99", lo=None, unit=" ms", limit_label="SLO"
                )
                yield HistoryChart("preemption p99", "{:.0f}", id="c-pre", lo=0.0, unit=" µs")
            with Vertical(classes="chartcol"):
                yield HistoryChart(
                    "LP vs solo", "{:.2f}", id="c-lp", lo=0.0, unit="×",
                    higher_is_better=True, limit_label="solo",
                )  # fmt: skip
                yield HistoryChart("harvest", "{:.0f}", id="c-harvest", lo=0.0, hi=100.0, unit=" %")
            with Vertical(id="side"):
                yield GpuPanel(id="gpu")
                yield Static(id="events")
        yield TimelineStrip(id="timeline")

    def on_mount(self) -> None:
        self.refresh_from_model(full=True)

    def hide_intro(self) -> None:
        for w in self.query("#intro"):
            w.display = False

    def _connection_view(self) -> None:
        m = self.model
        never = m.received == 0 and not m.tasks
        waiting = self.query_one("#waiting", Static)
        if never and m.connection != LIVE:
            what = "no reply yet" if m.connection != DISCONNECTED else "not reachable"
            waiting.update(
                Text(
                    f"Waiting for the engine at {self.label.replace('  ', ', ')}: {what}; "
                    "retrying.\nIs it running? Start one with `hbtui engine --profile default`, "
                    "or give its endpoints to `hbtui connect CTL[,PUB]`."
                )
            )
            waiting.display = True
        else:
            waiting.display = False
        self.set_class(not never and m.connection in (STALE, DISCONNECTED), "stale")

    def refresh_from_model(self, full: bool = False) -> None:
        tables = self.query(TaskTable)
        if not self.is_attached or not tables or not self.query(StatusHeader):
            return  # the refresh tick can fire while the pane mounts or unmounts: keep changes
        table = tables.first()
        m = self.model
        ch = m.take_changes()
        if full:
            ch.added = list(m.tasks)
        table.sync(m.tasks, ch.rows, ch.added, ch.removed)
        # The header shows a message age, so it changes every tick anyway.
        self.query_one(StatusHeader).show(m, self.clock(), self.label, self.extra)
        self._connection_view()
        if full or ch.events or ch.header:
            self.baseline_ms = baseline_from_events(m) or self.baseline_ms
        if full or ch.charts or ch.rows or ch.events or ch.header:
            self.query_one("#value", Static).update(value_line(m, self.baseline_ms))
        self._detail_line(table)
        if full or ch.charts:
            self._charts()
        if full or ch.gpu or ch.charts:
            self.query_one(GpuPanel).show(m)
        strip = self.query_one(TimelineStrip)
        cols = strip.columns()
        if (full or ch.timeline or cols != len(strip.hp)) and not m.charts_paused:
            hp, lp = m.timeline(cols, self.timeline_span_ns)
            strip.set_data(hp, lp, self.timeline_span_ns)
        if full or ch.events:
            lines = Text("\n").join(fmt_event(e) for e in reversed(list(m.events)[-12:]))
            self.query_one("#events", Static).update(lines if m.events else "no events yet")

    def _charts(self) -> None:
        m, h = self.model, self.model.history
        for cid, values, limit in (
            ("#c-att", [v * 100 for v in h["attainment"]], 99.0),
            ("#c-p99", list(h["hp_p99_ms"]), m.slo_line_ms),
            ("#c-pre", list(h["preempt_p99_us"]), None),
            ("#c-lp", list(h["lp_norm"]), 1.0),
            ("#c-harvest", [v * 100 for v in h["harvest"]], None),
        ):
            self.query_one(cid, HistoryChart).set_data(
                values, limit, marks=m.marks_in_view(len(values))
            )

    def set_zoom(self, zoomed: bool) -> None:
        """Zoom: charts with a fixed range (attainment 0–100 %) scale to their data."""
        for chart in self.query(HistoryChart):
            chart.zoomed = zoomed
            chart.refresh()

    def _detail_line(self, table: TaskTable) -> None:
        """Under the table: the selected program's pid, whole command and status; else
        how many columns lie off to the right (← → scroll to them)."""
        detail = self.query_one("#detail", Static)
        name = table.selected_task()
        row = self.model.tasks.get(name) if name is not None else None
        hidden = table.hidden_columns()
        line = Text(no_wrap=True, overflow="ellipsis")
        if hidden:
            cols = "column" if hidden == 1 else "columns"
            line.append(f"→ {hidden} more {cols}: ← → scroll the table", style="dim")
        if row is not None and row.attached is not None:
            if hidden:
                line.append("  │  ", style="dim")
            line.append_text(programs.detail(row))
        detail.update(line)
        detail.display = bool(line.plain)

    def selected_task(self) -> str | None:
        return self.query_one(TaskTable).selected_task()
