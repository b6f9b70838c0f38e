"""The console's frame around the engine panes: tab labels, the too-small notice, the
command palette, screenshots, preferences on the way out and ending on an error with one
line. A mixin of ``ConsoleApp`` (kept apart so app.py
stays about keys and control ops)."""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.content import Content
from textual.widgets import Static, TabbedContent

from hbtui.console.limits import RATE_HZ_MAX, RATE_HZ_MIN
from hbtui.console.model import DISCONNECTED, LIVE, STALE
from hbtui.console.pane import EnginePane
from hbtui.console.paths import log_dir, screenshot_dir
from hbtui.console.table import TaskTable

RATES_HZ = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
BEHIND_DIALOG_S = 1.0  # the pane behind a dialog is redrawn at most this often


class ConsoleChrome:
    """Needs the app's ``targets``, ``models``, ``links``, ``prefs``, ``clock``, ``live``."""

    MIN_SIZE = (80, 24)
    targets: Any
    models: Any
    links: Any
    prefs: Any
    clock: Any
    BINDINGS: Any
    _tab_states: dict[int, str]
    _initial_theme: str
    fatal: str | None
    charts_zoomed: bool
    _behind_dialog_at: float = float("-inf")
    _size_shown: tuple[bool, int, int] | None = None

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Toasts are plain text: they carry names and messages from the wire, and Rich
        markup in them (``[/]``, ``[bold red]``) must show as sent, never style or raise."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def _pane_due(self) -> bool:
        """Whether this tick redraws the pane: always, but at most once every
        ``BEHIND_DIALOG_S`` while a dialog is up. Textual re-renders a dialog's dimmed
        backdrop whole on any change beneath it: redrawing the pane at 10 Hz behind an edit
        dialog took a console on a sim engine from 15 % to 37 % of a core."""
        if not self.screen.is_modal:  # type: ignore[attr-defined]
            return True
        now = time.monotonic()
        if now - self._behind_dialog_at < BEHIND_DIALOG_S:
            return False
        self._behind_dialog_at = now
        return True

    def on_resize(self) -> None:
        self._check_size()

    def _check_size(self) -> None:
        """Below 80×24 the panes cannot show their figures: say so instead of cutting them."""
        w, h = self.size
        small = w < self.MIN_SIZE[0] or h < self.MIN_SIZE[1]
        try:
            note = self.query_one("#too-small", Static)
        except Exception:  # noqa: BLE001 - not composed yet
            return
        if (small, w, h) == self._size_shown:
            return  # every tick asks: Static.update would lay the screen out again each time
        self._size_shown = (small, w, h)
        need = f"{self.MIN_SIZE[0]}×{self.MIN_SIZE[1]}"
        note.update(f"terminal too small (need {need}, have {w}×{h})\nenlarge it, or q to quit")
        note.display = small
        for w_ in self.query("EnginePane, TabbedContent"):
            if w_.parent is self.screen:
                w_.display = not small

    def _pane(self, i: int) -> EnginePane | None:
        try:
            return self.query_one(f"#engine-{i}", EnginePane)
        except Exception:  # noqa: BLE001
            return None

    def _tab_label(self, i: int) -> Content:
        """A tab's label: the engine's endpoint, coloured by its link's health."""
        conn = self.models[i].connection
        style = {LIVE: "green", STALE: "yellow", DISCONNECTED: "red"}.get(conn, "dim")
        return Content.from_rich_text(
            Text.assemble(("● ", style), (self.targets[i].tab_name, ""), (f" {conn}", "dim"))
        )

    def _update_tab_labels(self) -> None:
        if len(self.targets) < 2:
            return
        try:
            tabs = self.query_one(TabbedContent)
        except Exception:  # noqa: BLE001 - not mounted yet
            return
        for i, m in enumerate(self.models):
            if self._tab_states.get(i) != m.connection:
                self._tab_states[i] = m.connection
                with contextlib.suppress(Exception):
                    tabs.get_tab(f"tab-{i}").label = self._tab_label(i)

    # -- command palette -----------------------------------------------------------------------

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        """Save an SVG screenshot: ~/Downloads when it exists, else a writable dir; say where."""
        where = path or str(screenshot_dir())
        try:
            saved = self.save_screenshot(filename, where, time_format)
        except OSError as e:
            self.notify(f"screenshot not saved: {e}", severity="error", timeout=8)
            return None
        self.notify(f"screenshot saved to {saved}", timeout=6)
        return None

    def save_prefs(self) -> None:
        p = self.prefs
        p.rate_hz = self.rate_hz
        if self.theme != self._initial_theme:
            p.theme = self.theme
        try:
            p.save()
        except OSError:
            pass  # preferences are a convenience: never an error on the way out

    # -- ending on an error --------------------------------------------------------------------
    def _fatal_error(self) -> None:
        """An unhandled error ends the app: one line for the CLI to print (``fatal``), the
        traceback to a file under the XDG state dir instead of over the operator's terminal."""
        err = self._exception
        self.fatal = one_line(err) if err is not None else "unexpected error"
        try:
            path = log_dir() / f"console-crash-{os.getpid()}.log"
            tb = "".join(traceback.format_exception(err)) if err is not None else ""
            path.write_text(tb)
            self.fatal += f" (traceback in {path})"
        except OSError:
            pass
        self._close_messages_no_wait()

    def _extra_note(self) -> str:
        bits = []
        if self.current_model() and self.current_model().charts_paused:
            bits.append("CHARTS PAUSED")
        bits.append(f"{self.rate_hz:g} Hz")
        return "  ".join(bits)

    def on_unmount(self) -> None:
        for link in self.links:
            link.close()
        self.save_prefs()

    # -- view actions --------------------------------------------------------------------------
    def _set_rate(self, hz: float) -> None:
        hz = min(RATE_HZ_MAX, max(RATE_HZ_MIN, hz))  # the CLI refuses others; never 1/0 here
        self.rate_hz = hz
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(1.0 / hz, self.tick)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = self.current_pane()
        if pane is not None:
            pane.refresh_from_model(full=True)

    def action_toggle_charts(self) -> None:
        m = self.current_model()
        m.charts_paused = not m.charts_paused
        self.notify("charts paused" if m.charts_paused else "charts resumed", timeout=2)

    def action_zoom_charts(self) -> None:
        self.charts_zoomed = not self.charts_zoomed
        for pane in self.query(EnginePane):
            pane.set_zoom(self.charts_zoomed)
        what = "zoomed to the data" if self.charts_zoomed else "full range (0–100 %)"
        self.notify(f"charts: {what}", timeout=2)

    def action_faster(self) -> None:
        bigger = [r for r in RATES_HZ if r > self.rate_hz]
        if bigger:
            self._set_rate(bigger[0])

    def action_slower(self) -> None:
        smaller = [r for r in RATES_HZ if r < self.rate_hz]
        if smaller:
            self._set_rate(smaller[-1])

    def action_sort_next(self) -> None:
        pane = self.current_pane()
        if pane is not None:
            t = pane.query_one(TaskTable)
            t.cycle_sort()
            self.notify(f"sorted by {t.sort_label()}", timeout=2)
            self._remember_sort(t)

    def action_sort_reverse(self) -> None:
        pane = self.current_pane()
        if pane is not None:
            t = pane.query_one(TaskTable)
            if t.sort_column is None:
                t.cycle_sort()
            t.sort_reverse = not t.sort_reverse
            t.apply_sort()
            self.notify(f"sorted by {t.sort_label()}", timeout=2)
            self._remember_sort(t)

    def _remember_sort(self, t: TaskTable) -> None:
        self.prefs.sort_column = t.sort_column or ""
        self.prefs.sort_reverse = t.sort_reverse

    def action_next_tab(self) -> None:
        self._switch_tab(+1)

    def action_prev_tab(self) -> None:
        self._switch_tab(-1)

    def _switch_tab(self, step: int) -> None:
        if len(self.targets) < 2:
            return
        tabs = self.query_one(TabbedContent)
        tabs.active = f"tab-{(self.current_index() + step) % len(self.targets)}"

    def action_dismiss_intro(self) -> None:
        for pane in self.query(EnginePane):
            pane.hide_intro()


HP_LP = (
    "HP = latency-critical tasks with an SLO (e.g. inference requests); LP = best-effort "
    "tasks (e.g. training) that fill the GPU time HP leaves idle."
)


def one_line(err: BaseException) -> str:
    msg = " ".join(str(err).split())
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def intro_text(description: str) -> str:
    """The first screen's note (dismissed with Esc)."""
    head = f"Profile: {description}\n" if description else ""
    return head + HP_LP + "  [Esc] hides this, [?] lists the keys."


def _key_text(b: Binding, full: bool = False) -> str:
    """How a binding's keys read; ``full`` lists every key, not just the footer label."""
    if b.key_display and not full:
        return b.key_display
    names = {
        "question_mark": "?",
        "plus": "+",
        "minus": "-",
        "right_square_bracket": "]",
        "left_square_bracket": "[",
        "equals_sign": "=",
    }
    return "/".join(names.get(k, k) for k in b.key.split(","))


def _kv(args: dict[str, Any]) -> str:
    units = {"us": "µs", "ms": "ms", "blocks": " blocks", "factor": "x"}
    return ", ".join(
        f"{v:g}{units[k]}" if k in units and isinstance(v, int | float) else f"{v}"
        for k, v in args.items()
    )
