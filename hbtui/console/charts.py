"""Small text charts: a history bar chart with a limit line, and the GPU timeline strip.

Both render from plain lists handed to them on the UI tick, so they cost nothing
between ticks and draw the same thing for the same data (snapshot tests rely on it).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

_BARS = " ▁▂▃▄▅▆▇█"
_SHADE = " ░▒▓█"


class HistoryChart(Widget):
    """A labelled bar chart of the last N values, newest on the right.

    ``limit`` draws a dotted line at that value (the SLO for HP p99) and colours bars
    above it red; ``higher_is_better`` flips which side of the limit is bad.
    """

    DEFAULT_CSS = """
    HistoryChart { height: 4; width: 1fr; padding: 0 1; }
    """

    def __init__(
        self,
        title: str,
        fmt: str = "{:.2f}",
        *,
        id: str | None = None,
        lo: float | None = 0.0,
        hi: float | None = None,
        higher_is_better: bool = False,
    ) -> None:
        super().__init__(id=id)
        self.title = title
        self.fmt = fmt
        self.lo, self.hi = lo, hi
        self.higher_is_better = higher_is_better
        self.values: list[float] = []
        self.limit: float | None = None

    def set_data(self, values: Sequence[float], limit: float | None = None) -> None:
        self.values = list(values)
        self.limit = limit
        self.refresh()

    def render(self) -> Text:
        width = max(1, self.size.width - 2)
        rows = max(1, self.size.height - 1)
        vals = self.values[-width:]
        last = self.fmt.format(vals[-1]) if vals else "–"
        head = Text.assemble((self.title, "bold"), "  ", (last, "bold cyan"))
        if self.limit is not None:
            head.append(f"  limit {self.fmt.format(self.limit)}", style="dim")
        if not vals:
            return head + Text("\n" + "\n".join(" " * width for _ in range(rows)))
        lo = self.lo
        if lo is None:  # auto range: leave a margin under the minimum so it shows as a bar
            vmin, vmax = min(vals), max(vals)
            lo = vmin - 0.25 * max(vmax - vmin, abs(vmin) * 0.05, 1e-9)
        hi = self.hi if self.hi is not None else max(vals + [self.limit or lo])
        if self.hi is None:
            hi += 0.1 * (hi - lo)
        hi = max(hi, lo + 1e-9)
        levels = rows * 8
        heights = [round((min(max(v, lo), hi) - lo) / (hi - lo) * levels) for v in vals]
        lim_level = None
        if self.limit is not None and lo <= self.limit <= hi:
            lim_level = round((self.limit - lo) / (hi - lo) * levels)
        out = Text()
        out.append_text(head)
        pad = width - len(vals)
        for r in range(rows - 1, -1, -1):
            out.append("\n")
            line_here = lim_level is not None and min(lim_level // 8, rows - 1) == r
            out.append(("┈" if line_here else " ") * pad, style="yellow")
            for h, v in zip(heights, vals, strict=True):
                level = max(0, min(8, h - r * 8))
                bad = False
                if self.limit is not None:
                    bad = v < self.limit if self.higher_is_better else v > self.limit
                if level == 0 and line_here:
                    out.append("┈", style="yellow")
                else:
                    out.append(_BARS[level], style="red" if bad else "green")
        return out


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
