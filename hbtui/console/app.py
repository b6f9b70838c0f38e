"""The hbtui console: a Textual app over one or more engines (one tab each).

Data flow: an ``EngineLink`` worker per engine folds telemetry into an ``EngineModel``;
a timer (10 Hz by default, ``+``/``-`` to change) redraws the visible pane from the
model's change set. Control ops run as workers too, so a slow engine never freezes
keys: the op shows as pending, then an acknowledgement toast or the engine's error.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from hbtui.console.chrome import (  # noqa: F401
    HP_LP,
    RATES_HZ,
    ConsoleChrome,
    _key_text,
    _kv,
    intro_text,
    one_line,
)
from hbtui.console.limits import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    clamp_slice,
    parse_priority,
    parse_slice,
    parse_slo,
)
from hbtui.console.link import EngineLink, Target
from hbtui.console.model import EngineModel
from hbtui.console.pane import EnginePane
from hbtui.console.picker import ProfileActions
from hbtui.console.prefs import Prefs
from hbtui.console.screens import ConfirmModal, EditModal, HelpScreen, PickerModal
from hbtui.console.table import COLUMN_KEYS, TaskTable
from hbtui.engine.client import ClientError

# Ops whose success leaves the engine differing from the saved profile (● unsaved).
CONFIG_OPS = {"set_priority", "set_slice", "set_policy", "set_slo", "pause_task",
              "resume_task", "add_task", "remove_task"}  # fmt: skip

POLICIES = ("hummingbird", "temporal", "spatial", "exclusive")

# Actions that change the engine: hidden and refused under --readonly.
MUTATING = {
    "edit_slice",
    "slice_up",
    "slice_down",
    "edit_slo",
    "edit_priority",
    "toggle_pause",
    "pick_policy",
    "load_profile",
    "save_profile",
    "save_profile_as",
    "reset_stats",
    "remove_task",
}

GROUPS = {
    "View": (
        "help",
        "quit",
        "command_palette",
        "toggle_charts",
        "zoom_charts",
        "faster",
        "slower",
        "sort_next",
        "sort_reverse",
        "next_tab",
        "prev_tab",
    ),
    "Live control": (
        "edit_slice",
        "slice_up",
        "slice_down",
        "edit_slo",
        "edit_priority",
        "toggle_pause",
        "remove_task",
        "pick_policy",
        "reset_stats",
    ),
    "Profiles": ("load_profile", "save_profile", "save_profile_as"),
}


class ConsoleApp(ProfileActions, ConsoleChrome, App[int]):
    TITLE = "hbtui"
    CSS = """
    Screen { layout: vertical; }
    TabbedContent, TabPane { height: 1fr; padding: 0; }
    #too-small {
        display: none; height: 1fr; content-align: center middle; text-style: bold;
        color: $warning;
    }
    """

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("ctrl+p", "command_palette", "Commands", show=False),
        Binding("space,p", "toggle_charts", "Freeze charts", key_display="space"),
        Binding("z", "zoom_charts", "Zoom charts", show=False),
        Binding("plus,equals_sign", "faster", "Refresh rate +", key_display="+", show=False),
        Binding("minus", "slower", "Refresh rate -", key_display="-", show=False),
        Binding("s", "edit_slice", "Slice"),
        Binding("right_square_bracket", "slice_up", "Slice x2", key_display="]", show=False),
        Binding("left_square_bracket", "slice_down", "Slice /2", key_display="[", show=False),
        Binding("o", "edit_slo", "SLO"),
        Binding("i", "edit_priority", "Priority"),
        Binding("t", "toggle_pause", "Pause task"),
        Binding("delete", "remove_task", "Remove task", key_display="del", show=False),
        Binding("m", "pick_policy", "Policy"),
        Binding("x", "reset_stats", "Reset stats", show=False),
        Binding("l", "load_profile", "Profiles"),
        Binding("w", "save_profile", "Save", show=False),
        Binding("W", "save_profile_as", "Save as", show=False),
        Binding("c", "sort_next", "Sort column", show=False),
        Binding("r", "sort_reverse", "Reverse sort", show=False),
        # Priority: Textual's focus chain would take tab before the app sees it.
        Binding("tab", "next_tab", "Next engine", show=False, priority=True),
        Binding("shift+tab", "prev_tab", "Previous engine", show=False, priority=True),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("escape", "dismiss_intro", "Dismiss the intro", show=False),
    ]

    def __init__(
        self,
        targets: list[Target],
        *,
        readonly: bool = False,
        clock: Callable[[], float] = time.monotonic,
        live: bool = True,
        models: list[EngineModel] | None = None,
        embedded: Any = None,
        rate_hz: float | None = None,
        prefs: Prefs | None = None,
        handle_signals: bool = False,
        description: str = "",
    ) -> None:
        super().__init__()
        self.prefs = prefs or Prefs()  # the CLI passes the file's; tests get the defaults
        self.handle_signals = handle_signals  # SIGTERM/SIGHUP: exit cleanly (the CLI only)
        self.description = description  # the profile's one line (embedded engine)
        self.targets = targets
        self.readonly_flag = readonly
        self.clock = clock
        self.live = live  # False: show the given models only (snapshot tests, docs)
        self.models = models or [EngineModel() for _ in targets]
        self.links = [EngineLink(t, m, clock) for t, m in zip(targets, self.models, strict=True)]
        self.embedded = embedded  # an EmbeddedEngine this console started, or None
        self.rate_hz = rate_hz or self.prefs.rate_hz
        self._timer: Any = None
        self._initial_theme = ""
        self._engine_exit_reported = False
        self._tab_states: dict[int, str] = {}
        self.fatal: str | None = None  # why the app ended, when an error ended it
        self.charts_zoomed = False

    # -- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        panes = [
            EnginePane(m, t.label, self.clock, id=f"engine-{i}")
            for i, (t, m) in enumerate(zip(self.targets, self.models, strict=True))
        ]
        for p in panes:
            p.intro = intro_text(self.description)
        if len(panes) == 1:
            yield panes[0]
        else:
            with TabbedContent():
                for i, p in enumerate(panes):
                    with TabPane(self._tab_label(i), id=f"tab-{i}"):
                        yield p
        yield Static(id="too-small")
        yield Footer()

    def on_mount(self) -> None:
        if self.prefs.theme and self.prefs.theme in self.available_themes:
            self.theme = self.prefs.theme
        self._initial_theme = self.theme
        if self.prefs.problem:
            self.notify(self.prefs.problem, title="preferences", severity="warning", timeout=8)
        for pane in self.query(EnginePane):
            table = pane.query_one(TaskTable)
            if self.prefs.sort_column in COLUMN_KEYS:
                table.sort_column = self.prefs.sort_column
                table.sort_reverse = self.prefs.sort_reverse
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                # exit through Textual so the terminal is restored (alt screen, raw mode)
                loop.add_signal_handler(sig, partial(self.exit, None, 128 + sig))
        self._check_size()
        if self.live:
            for link in self.links:
                self.run_worker(link.run(), group="links", name=link.target.ctl)
        self._set_rate(self.rate_hz)

    def tick(self) -> None:
        pane = self.current_pane()
        if pane is not None and self._pane_due():
            pane.extra = self._extra_note()
            pane.refresh_from_model()
        self._update_tab_labels()
        self._check_size()
        emb = self.embedded
        if emb is not None and not self._engine_exit_reported and emb.exited() is not None:
            self._engine_exit_reported = True
            self.notify(
                f"embedded engine exited ({emb.exited()}):\n{emb.log_tail(4)}",
                severity="error",
                timeout=30,
            )

    def current_index(self) -> int:
        if len(self.targets) == 1:
            return 0
        try:
            active = self.query_one(TabbedContent).active
        except Exception:
            return 0
        return int(active.split("-")[-1]) if active else 0

    def current_pane(self) -> EnginePane | None:
        try:
            return self.query_one(f"#engine-{self.current_index()}", EnginePane)
        except Exception:
            return None

    def current_model(self) -> EngineModel:
        return self.models[self.current_index()]

    def current_link(self) -> EngineLink:
        return self.links[self.current_index()]

    # -- readonly ------------------------------------------------------------------------------
    @property
    def readonly(self) -> bool:
        return self.readonly_flag or self.current_model().readonly

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATING and self.readonly:
            return False  # hidden from footer, help and palette; the key does nothing
        if action in ("next_tab", "prev_tab") and (len(self.targets) < 2 or self.screen.is_modal):
            return False  # let the key go on (to a dialog's widgets)
        return True

    # -- view actions --------------------------------------------------------------------------
    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        notes = "Edits: pending → acknowledged (toast) or the engine's error."
        if self.readonly:
            notes = "READ-ONLY: live edits and profile changes are disabled."
        notes += "\n" + HP_LP
        if self.embedded is not None:
            notes += f"\nEmbedded engine log: {self.embedded.log_path} (kept after quit)"
        if self.prefs.path is not None:  # None: defaults only (tests)
            notes += f"\nPreferences: {self.prefs.path}"
        self.push_screen(HelpScreen(self.help_rows(), notes))

    def help_rows(self) -> list[tuple[str, str, str]]:
        """(keys, description, group) for every binding allowed now, in group order."""
        by_action: dict[str, list[Binding]] = {}
        for b in self.BINDINGS:
            assert isinstance(b, Binding)
            by_action.setdefault(b.action, []).append(b)
        rows = []
        for group, actions in GROUPS.items():
            for a in actions:
                if a not in by_action or not self.check_action(a, ()):
                    continue
                keys = " ".join(_key_text(b, full=True) for b in by_action[a])
                rows.append((keys, by_action[a][0].description, group))
        return rows

    # -- control -------------------------------------------------------------------------------
    def control(
        self,
        op: str,
        args: dict[str, Any],
        desc: str,
        task: str | None = None,
        on_ok: Callable[[Any], str | None] | None = None,
    ) -> None:
        """Send one op without blocking: pending now, toast or error when the reply comes.
        ``on_ok(result)`` runs on success and may return the toast's text."""
        if self.readonly:
            self.notify("read-only console: edits are disabled", severity="warning")
            return
        model, link = self.current_model(), self.current_link()
        model.set_pending(task, desc)
        self._redraw()  # show "pending" now, not at the next tick
        work = self._control(model, link, op, args, desc, task, on_ok)
        self.run_worker(work, group="control")

    async def _control(
        self,
        model: EngineModel,
        link: EngineLink,
        op: str,
        args: dict[str, Any],
        desc: str,
        task: str | None,
        on_ok: Callable[[Any], str | None] | None = None,
    ) -> None:
        try:
            res = await link.call(op, args)
        except ClientError as e:
            self.notify(
                f"{desc}: {e.message} [{e.code}]",
                title="engine refused",
                severity="error",
                timeout=8,
            )
        except Exception as e:  # noqa: BLE001 - an op that cannot be sent never kills the console
            self.notify(f"{desc}: not sent ({type(e).__name__}: {e})", severity="error", timeout=8)
        else:
            if op in CONFIG_OPS:
                model.mark_dirty(True)
            elif op in ("load_profile", "save_profile"):
                model.mark_dirty(False)
            text = on_ok(res) if on_ok is not None else None
            self.notify(text or f"✓ {desc}", timeout=5 if text else 3)
        finally:
            model.set_pending(task, "")
            self._redraw()  # the acknowledged value is in the model already: show it now

    def _redraw(self) -> None:
        pane = self.current_pane()
        if pane is not None:
            pane.refresh_from_model()

    def _pick_task(self, cls: str | None = None) -> str | None:
        """The selected task, or the first of class ``cls`` when the selection is not one."""
        m = self.current_model()
        pane = self.current_pane()
        name = pane.selected_task() if pane is not None else None
        if name in m.tasks and (cls is None or m.tasks[name].cls == cls):
            return name
        for n, row in m.tasks.items():
            if cls is None or row.cls == cls:
                return n
        self.notify(f"no {cls or ''} task to edit".replace("  ", " "), severity="warning")
        return None

    def _edit(self, op: str, name: str, title: str, label: str, current: str, hint: str,
              parse: Any) -> None:  # fmt: skip
        """The edit modal for one field of task ``name``; on OK, send ``op`` to the engine."""

        def done(args: dict[str, Any] | None) -> None:
            if args:
                self.control(op, {"task": name, **args}, f"{label} {name} → {_kv(args)}", name)

        self.push_screen(EditModal(f"{title} of {name!r}", current, hint, parse), done)

    def action_edit_slice(self) -> None:
        name = self._pick_task("lp")
        if name is None:
            return
        cur = self.current_model().tasks[name].slice_text()
        cur = cur.replace(" blk", "b").replace(" µs", "us")
        self._edit(
            "set_slice",
            name,
            "LP slice size",
            "slice",
            "" if cur == "auto" else cur,
            "1 µs .. 1 s (e.g. 50us, 2ms) or 1 .. 2^31 blocks (e.g. 264b).",
            parse_slice,
        )

    def _scale_slice(self, factor: float) -> None:
        name = self._pick_task("lp")
        if name is None:
            return
        row = self.current_model().tasks[name]
        if row.slice_blocks is not None:
            args: dict[str, Any] = clamp_slice({"blocks": round(row.slice_blocks * factor)})
        else:
            args = clamp_slice({"us": (row.slice_us or 50.0) * factor})
        self.control("set_slice", {"task": name, **args}, f"slice {name} → {_kv(args)}", name)

    def action_slice_up(self) -> None:
        self._scale_slice(2.0)

    def action_slice_down(self) -> None:
        self._scale_slice(0.5)

    def action_edit_slo(self) -> None:
        name = self._pick_task("hp")
        if name is None:
            return
        row = self.current_model().tasks[name]
        cur = (
            f"{row.slo_ms:g}ms" if row.slo_ms else f"{row.slo_factor:g}x" if row.slo_factor else ""
        )
        hint = "0.01 ms .. 1000 s (e.g. 5ms) or 0.1x .. 100x the p99 of HP alone (e.g. 1.2x)."
        self._edit("set_slo", name, "SLO", "SLO", cur, hint, parse_slo)

    def action_edit_priority(self) -> None:
        name = self._pick_task()
        if name is None:
            return
        cur = str(self.current_model().tasks[name].priority)
        hint = f"A whole number, {PRIORITY_MIN} .. {PRIORITY_MAX}; larger is more important."
        self._edit("set_priority", name, "Priority", "priority", cur, hint, parse_priority)

    def action_toggle_pause(self) -> None:
        name = self._pick_task()
        if name is None:
            return
        paused = self.current_model().tasks[name].paused
        op = "resume_task" if paused else "pause_task"
        self.control(op, {"task": name}, f"{op.split('_')[0]} {name}", name)

    def action_pick_policy(self) -> None:
        cur = self.current_model().policy

        def done(policy: str | None) -> None:
            if policy and policy != cur:
                self.control("set_policy", {"policy": policy}, f"policy → {policy}")

        opts = [(p, f"{p}{'  (current)' if p == cur else ''}") for p in POLICIES]
        self.push_screen(PickerModal("Scheduling policy", opts), done)

    def action_reset_stats(self) -> None:
        model = self.current_model()

        def reset(_res: Any) -> str:
            model.reset_figures()  # blank now; the next stats message refills them
            return "✓ stats reset: figures and charts restart from now"

        self.control("reset_stats", {}, "reset stats", on_ok=reset)

    def action_remove_task(self) -> None:
        name = self._pick_task()
        if name is None:
            return
        row = self.current_model().tasks[name]
        if row.attached is not None:
            pid = row.attached.get("pid")
            self.notify(
                f"{name} is a program under hbtui run (pid {pid}): it leaves the engine when "
                "the program exits; stop the program to remove it",
                severity="warning",
                timeout=8,
            )
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.control("remove_task", {"task": name}, f"remove {name}", name)

        q = f"Remove task {name!r} from the engine? (saved profiles are not changed)"
        self.push_screen(ConfirmModal("Remove task?", q), answer)

    # -- command palette -----------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Textual's own "Keys" panel would be a second, different help: ours only.
        for cmd in super().get_system_commands(screen):
            if cmd.title not in ("Keys", "Quit"):
                yield cmd
        yield SystemCommand(
            "Help", "keys and what they do  [? or F1]", partial(self.run_action, "help")
        )
        seen = {"command_palette", "quit", "help", "dismiss_intro"}
        for b in self.BINDINGS:
            assert isinstance(b, Binding)
            if b.action in seen or not self.check_action(b.action, ()):
                continue
            if b.action in GROUPS["View"] or b.action in MUTATING:
                seen.add(b.action)
                group = next(g for g, acts in GROUPS.items() if b.action in acts)
                yield SystemCommand(
                    b.description,
                    f"{group.lower()}  [{_key_text(b)}]",
                    partial(self.run_action, b.action),
                )
        yield SystemCommand("Quit", "quit the console  [q or ctrl+c]", self.action_quit)
