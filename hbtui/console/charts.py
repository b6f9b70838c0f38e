"""Small text charts: a history bar chart with a y scale and a labelled threshold line, and
the GPU timeline strip.

Both render from plain lists handed to them on the UI tick, so they cost nothing
between ticks and draw the same thing for the same data (snapshot tests rely on it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

_BARS = " ▁▂▃▄▅▆▇█"
_SHADE = " ░▒▓█"


def _level(v: float, lo: float, hi: float, levels: int) -> int:
    """v's bar height in eighths of a row, 0..levels; 0 where the scale is degenerate
    (hi - lo zero, or overflowing to inf for values near ±1e308)."""
    frac = (min(max(v, lo), hi) - lo) / (hi - lo) if hi > lo else 0.0
    return round(frac * levels) if math.isfinite(frac) else 0


class HistoryChart(Widget):
    """A labelled bar chart of the last N values, newest on the right.

    The head line says what it is, the latest value, the span shown and the threshold
    (``limit_label``, e.g. "SLO"); the left axis gives the top and bottom of the scale.
    ``lo``/``hi`` fix the range where the metric has one (attainment 0–100 %); None
    means auto. ``limit`` draws a labelled dotted line at that value and colours bars on
    its bad side red; ``higher_is_better`` flips which side is bad. The height is set by
    the layout (it grows with the terminal). ``marks`` are points where a profile was
    loaded (a magenta │ before that point); ``zoomed`` scales a fixed-range chart to its
    data (within the fixed range), for a 98–100 % wobble.
    """

    DEFAULT_CSS = """
    HistoryChart {
        height: 4; width: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    """
    AXIS = 7  # width of the y-scale labels

    def __init__(
        self,
        title: str,
        fmt: str = "{:.2f}",
        *,
        id: str | None = None,
        lo: float | None = 0.0,
        hi: float | None = None,
        higher_is_better: bool = False,
        unit: str = "",
        limit_label: str = "limit",
        sample_s: float = 1.0,
    ) -> None:
        super().__init__(id=id)
        self.title = title
        self.fmt = fmt
        self.unit = unit
        self.lo, self.hi = lo, hi
        self.higher_is_better = higher_is_better
        self.limit_label = limit_label
        self.sample_s = sample_s  # seconds between points (the engine's stats period)
        self.values: list[float] = []
        self.limit: float | None = None
        self.marks: list[int] = []
        self.zoomed = False

    def set_data(
        self, values: Sequence[float], limit: float | None = None, marks: Sequence[int] = ()
    ) -> None:
        """``marks``: positions among ``values`` (0 = the oldest) where a profile loaded."""
        self.values = [v for v in values if math.isfinite(v)]
        self.limit = limit if limit is not None and math.isfinite(limit) else None
        self.marks = list(marks)
        self.refresh()

    def _v(self, v: float) -> str:
        return self.fmt.format(v) + self.unit

    def scale(self, vals: Sequence[float]) -> tuple[float, float]:
        """(bottom, top) of the y axis for these values."""
        if self.zoomed and (self.lo is not None or self.hi is not None):
            return self._zoom(vals)
        lo = self.lo
        if lo is None:  # auto range: leave a margin under the minimum so it shows as a bar
            vmin, vmax = min(vals), max(vals)
            if self.limit is not None:
                vmin = min(vmin, self.limit)
            lo = max(0.0, vmin - 0.25 * max(vmax - vmin, abs(vmin) * 0.05, 1e-9))
        hi = self.hi
        if hi is None:
            hi = max([*vals, self.limit if self.limit is not None else lo])
            hi += 0.1 * (hi - lo)
        return lo, max(hi, lo + 1e-9)

    def _zoom(self, vals: Sequence[float]) -> tuple[float, float]:
        """The data's range (and the threshold) with a margin, inside the fixed range."""
        pts = [*vals, *([self.limit] if self.limit is not None else [])]
        # clamped into the fixed range first: data wholly above (or below) it zoom to that edge
        if self.lo is not None:
            pts = [max(p, self.lo) for p in pts]
        if self.hi is not None:
            pts = [min(p, self.hi) for p in pts]
        vmin, vmax = min(pts), max(pts)
        margin = max(0.1 * (vmax - vmin), abs(vmax) * 1e-3, 1e-6)
        lo, hi = vmin - margin, vmax + margin
        if self.lo is not None:
            lo = max(lo, self.lo)
        if self.hi is not None:
            hi = min(hi, self.hi)
        return lo, max(hi, lo + 1e-9)

    def render(self) -> Text:
        width = max(1, self.size.width - 2 - self.AXIS)
        rows = max(1, self.size.height - 1)
        vals = self.values[-width:]
        last = self._v(vals[-1]) if vals else "–"
        head = Text.assemble((self.title, "bold"), "  ", (last, "bold cyan"))
        # a mark at i sits before point i; one after the newest point, on the last column
        marks = (
            {min(width - 1, max(0, width - len(vals) + i)) for i in self.marks} if vals else set()
        )
        # What does not fit is left out whole, never cut: the value first, then zoomed,
        # the threshold, the profile-load legend and the span.
        extras = []
        if self.zoomed and (self.lo is not None or self.hi is not None):
            extras.append((" zoomed", "bold yellow"))  # the scale is not the fixed one
        if self.limit is not None:
            extras.append((f"  ┈ {self.limit_label} {self._v(self.limit)}", "yellow"))
        if marks:
            extras.append(("  │ profile loaded", "magenta"))
        if vals:
            extras.append((f"  last {len(vals) * self.sample_s:g} s", "dim"))
        for text, style in extras:
            if head.cell_len + len(text) <= width + self.AXIS:
                head.append(text, style=style)
        if not vals:
            blank = " " * (self.AXIS + width)
            out = head + Text("\n" + "\n".join(blank for _ in range(rows)))
            out.no_wrap, out.overflow = True, "ellipsis"
            return out
        lo, hi = self.scale(vals)
        levels = rows * 8
        heights = [_level(v, lo, hi, levels) for v in vals]
        lim_level = None
        if self.limit is not None and lo <= self.limit <= hi:
            lim_level = _level(self.limit, lo, hi, levels)
        out = Text(no_wrap=True, overflow="ellipsis")  # a narrow chart cuts its head line with …
        out.append_text(head)
        pad = width - len(vals)
        for r in range(rows - 1, -1, -1):
            out.append("\n")
            axis = ""
            if r == rows - 1:
                axis = self._axis(hi)
            elif r == 0:
                axis = self._axis(lo)
            out.append(axis.rjust(self.AXIS - 1)[: self.AXIS - 1] + "┤", style="dim")
            line_here = lim_level is not None and min(lim_level // 8, rows - 1) == r
            for x in range(pad):
                if x in marks:
                    out.append("│", style="magenta")
                else:
                    out.append("┈" if line_here else " ", style="yellow")
            for i, (h, v) in enumerate(zip(heights, vals, strict=True)):
                level = max(0, min(8, h - r * 8))
                bad = False
                if self.limit is not None:
                    bad = v < self.limit if self.higher_is_better else v > self.limit
                if pad + i in marks:  # the load's column: magenta, a line where no bar is
                    out.append("│" if level == 0 else _BARS[level], style="bold magenta")
                elif level == 0 and line_here:
                    out.append("┈", style="yellow")
                else:
                    out.append(_BARS[level], style="red" if bad else "green")
        return out

    def _axis(self, v: float) -> str:
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


class TimelineStrip(Widget):
    """The last few ms of GPU time: HP kernels on one row, LP slices on the next.

    Shading is the busy fraction of each column, so the gaps in the HP row that the LP
    row fills are the harvested bubbles.
    """

    DEFAULT_CSS = """
    TimelineStrip { height: 4; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.hp: list[float] = []
        self.lp: list[float] = []
        self.span_ns = 2_000_000

    def label_width(self) -> int:
        return 4

    def columns(self) -> int:
        return max(1, self.size.width - 2 - self.label_width())

    def set_data(self, hp: list[float], lp: list[float], span_ns: int) -> None:
        self.hp, self.lp, self.span_ns = hp, lp, span_ns
        self.refresh()

    def render(self) -> Text:
        out = Text.assemble(
            ("GPU timeline", "bold"),
            (f"  last {self.span_ns / 1e6:g} ms  ", "dim"),
            ("█ HP kernels", "magenta"),
            ("  ", ""),
            ("█ LP slices", "cyan"),
            ("  blank = idle", "dim"),
        )
        for label, row, style in (("HP ", self.hp, "magenta"), ("LP ", self.lp, "cyan")):
            out.append("\n" + label.ljust(self.label_width()), style="bold")
            if not row:
                out.append("·" * self.columns(), style="dim")
                continue
            out.append("".join(_SHADE[min(4, round(f * 4))] for f in row), style=style)
        return out
