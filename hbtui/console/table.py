"""The task table: keyed rows, cells updated in place with ``update_cell``, never rebuilt.

Columns size to their content as it changes (``update_width``), never to the first
frame, so a value is never cut; every number carries its unit in the header or cell.
The sorted column's header carries ▲/▼. Programs under ``hbtui run`` add their own
columns (``hbtui.console.programs``) once an engine reports one. The task column stays
put while the others scroll sideways (← →) in a narrow terminal.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from hbtui.console import programs
from hbtui.console.model import TaskRow

# (column key, label); the key is also the sort key name.
COLUMNS = (
    ("name", "task"),
    ("cls", "class"),
    ("priority", "prio"),
    ("slo", "SLO"),
    ("attainment", "attain %"),
    ("p50", "p50 ms"),
    ("p99", "p99 ms"),
    ("pre99", "preempt p99 µs"),
    ("lpnorm", "LP × solo"),
    ("slice", "slice"),
    ("state", "state"),
)
COLUMN_KEYS = tuple(k for k, _ in COLUMNS) + tuple(k for k, _ in programs.COLUMNS)
LABELS = dict(COLUMNS) | dict(programs.COLUMNS)


def slo_text(row: TaskRow) -> str:
    """The SLO with its unit; a factor also in ms once the engine knows it (1x = 13.6 ms)."""
    if row.cls != "hp":
        return "–"
    if row.slo_ms is not None:
        return f"{row.slo_ms:g} ms"
    if row.slo_factor is not None:
        eff = row.slo_effective_ms
        return (
            f"{row.slo_factor:g}x = {eff:.3g} ms" if eff else f"{row.slo_factor:g}x (calibrating)"
        )
    return "–"


def slice_text(row: TaskRow) -> str:
    if row.cls != "lp":
        return "–"
    if row.slice_blocks is not None:
        return f"{row.slice_blocks} blk"
    if row.slice_us is not None:
        return f"{row.slice_us:g} µs"
    return "auto"


def _num(v: float | None, fmt: str, style: str = "") -> Text:
    return Text("–" if v is None else fmt.format(v), style=style, justify="right")


def attainment_style(a: float | None) -> str:
    if a is None:
        return "dim"
    return "green" if a >= 0.99 else "yellow" if a >= 0.90 else "bold red"


def latency_style(p99: float | None, slo: float | None) -> str:
    if p99 is None or not slo:
        return ""
    return "green" if p99 <= slo else "yellow" if p99 <= 1.2 * slo else "bold red"


def preempt_style(us: float | None) -> str:
    if us is None:
        return ""
    return "green" if us < 150 else "yellow" if us < 500 else "bold red"


def cells(row: TaskRow) -> dict[str, Text]:
    """Rendered cells of one row, by column key (threshold colours applied here)."""
    hp = row.cls == "hp"
    slo = row.slo_effective_ms or row.slo_ms
    att = row.attainment * 100 if (hp and row.attainment is not None) else None
    norm = row.throughput_norm if not hp else None
    state_style = "yellow" if row.pending else "dim" if row.paused else "green"
    state = row.state_text()
    if row.attached is not None and not row.pending:
        state = programs.status_text(row)
        if row.attached.get("status") == "detached":
            state_style = "dim"
    name = programs.cut(row.name, programs.NAME_CELL)
    return {
        "name": Text(
            f"{programs.MARK} {name}" if row.attached is not None else name, style="bold"
        ),  # fmt: skip
        "cls": Text(row.cls.upper(), style="magenta" if hp else "cyan"),
        "priority": Text(str(row.priority), justify="right"),
        "slo": Text(slo_text(row), justify="right"),
        "attainment": _num(att, "{:.1f}", attainment_style(row.attainment if hp else None)),
        "p50": _num(row.p50_ms if hp else None, "{:.2f}"),
        "p99": _num(row.p99_ms if hp else None, "{:.2f}", latency_style(row.p99_ms, slo)),
        "pre99": _num(
            row.preempt_p99_us if hp else None, "{:.0f}", preempt_style(row.preempt_p99_us)
        ),
        "lpnorm": _num(norm, "{:.2f}"),
        "slice": Text(slice_text(row), justify="right"),
        "state": Text(state, style=state_style),
    }


def sort_value(cell: Any) -> tuple[int, Any]:
    """Numbers before text, so '–' (no data) sorts last."""
    s = cell.plain if isinstance(cell, Text) else str(cell)
    try:
        return (0, float(s.split()[0]))
    except (ValueError, IndexError):
        return (1, s)


class TaskTable(DataTable):
    """Tasks keyed by name. ``sync`` touches only the rows the model says changed."""

    DEFAULT_CSS = """
    TaskTable { height: auto; max-height: 13; overflow-x: auto; scrollbar-size-horizontal: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.fixed_columns = 1  # the task name stays while the others scroll sideways
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.programs = False  # the program columns are shown
        self._shown: dict[str, dict[str, str]] = {}  # what each cell shows now

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)
        self._mark_sorted()

    def keys(self) -> tuple[str, ...]:
        """The keys of the columns shown now, in order."""
        return tuple(k for k in COLUMN_KEYS if k in self.columns)

    def _cells(self, row: TaskRow) -> dict[str, Text]:
        c = cells(row)
        if self.programs:
            c |= programs.cells(row)
        return c

    def _add_program_columns(self, rows: dict[str, TaskRow]) -> None:
        self.programs = True
        for key, label in programs.COLUMNS:
            self.add_column(label, key=key, default=Text("–"))
        for name in self._shown:
            if name in rows:
                for key, cell in programs.cells(rows[name]).items():
                    self.update_cell(name, key, cell, update_width=True)
                    self._shown[name][key] = cell.markup

    def hidden_columns(self) -> int:
        """How many columns lie (partly) right of the visible area: ← → scroll to them."""
        if self.max_scroll_x <= 0:
            return 0
        edge = self.scroll_x + self.scrollable_content_region.width
        x, n = 0, 0
        for col in self.ordered_columns:
            x += col.get_render_width(self)
            if x > edge:
                n += 1
        return n

    def sync(
        self, rows: dict[str, TaskRow], changed: set[str], added: list[str], removed: list[str]
    ) -> None:
        if not self.programs and any(r.attached is not None for r in rows.values()):
            self._add_program_columns(rows)
        for name in removed:
            if name in self._shown:
                self.remove_row(name)
                del self._shown[name]
        for name in added:
            if name in rows and name not in self._shown:
                c = self._cells(rows[name])
                self.add_row(*(c[k] for k in self.keys()), key=name)
                self._shown[name] = {k: v.markup for k, v in c.items()}
        for name in changed:
            if name not in rows or name not in self._shown:
                continue
            shown = self._shown[name]
            for key, cell in self._cells(rows[name]).items():
                m = cell.markup
                if shown.get(key) != m:  # skip identical cells: no redraw for them
                    self.update_cell(name, key, cell, update_width=True)
                    shown[key] = m
        if self.sort_column and (changed or added):
            self.apply_sort()

    def apply_sort(self) -> None:
        self._mark_sorted()
        if self.sort_column and self.row_count:
            self.sort(self.sort_column, key=sort_value, reverse=self.sort_reverse)

    def _mark_sorted(self) -> None:
        """▲/▼ after the sorted column's label; the others plain."""
        changed = False
        for key, label in LABELS.items():
            col = self.columns.get(key)  # type: ignore[call-overload]
            if col is None:
                continue
            want = label
            if key == self.sort_column:
                want = f"{label} {'▼' if self.sort_reverse else '▲'}"
            if col.label.plain != want:
                col.label = Text(want)
                col.content_width = max(col.content_width, len(want))
                changed = True
        if changed:
            self._require_update_dimensions = True
            self.refresh()

    def sort_label(self) -> str:
        if not self.sort_column:
            return "nothing"
        order = "descending" if self.sort_reverse else "ascending"
        return f"{LABELS[self.sort_column]} ({order})"

    def cycle_sort(self) -> str:
        keys = list(self.keys())
        i = keys.index(self.sort_column) + 1 if self.sort_column in keys else 0
        self.sort_column = keys[i % len(keys)]
        self.apply_sort()
        return self.sort_column

    def selected_task(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value
