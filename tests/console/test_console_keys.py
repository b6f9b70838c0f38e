"""Issue-17 keys without an engine (fixed model, fake control link): the profile picker asks
before discarding unsaved edits, ``w`` on a shipped profile asks for a new name, saves go
by name and the toast names the file; ``x`` blanks the figures; ``z`` zooms; a profile
load marks the charts; the table scrolls sideways at 80 columns."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from console_fixtures import demo_model, frozen_clock
from textual.widgets import Input, OptionList, Static

from hbtui.console.app import ConsoleApp
from hbtui.console.charts import HistoryChart
from hbtui.console.link import Target
from hbtui.console.pane import value_line
from hbtui.console.screens import ConfirmModal, EditModal, PickerModal
from hbtui.engine.client import ClientError

PROFILES = [
    {"name": "default", "origin": "shipped", "path": "/opt/hbtui/profiles/default.toml"},
    {"name": "heavy-lp", "origin": "shipped", "path": "/opt/hbtui/profiles/heavy-lp.toml"},
    {"name": "mine", "origin": "user", "path": "~/.config/hbtui/profiles/mine.toml"},
]


class FakeEngine:
    """The control ops these keys send, answered like the engine does (or refused)."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.refuse = refuse or set()

    def sent(self, op: str) -> list[dict]:
        return [a for o, a in self.calls if o == op]

    async def call(self, op: str, args: dict | None = None, timeout: float | None = None) -> Any:
        args = args or {}
        self.calls.append((op, args))
        if op in self.refuse:
            raise ClientError("profile_error", f"{op}: not today", op)
        if op == "list_profiles":
            return {"profiles": PROFILES}
        if op == "save_profile":
            return {"name": args["name"], "path": f"~/.config/hbtui/profiles/{args['name']}.toml"}
        if op == "load_profile":
            return {"profile": args["name"], "path": "/opt/x.toml", "tasks": []}
        return {}


def app_and_engine(**kw: Any) -> tuple[ConsoleApp, FakeEngine]:
    app = ConsoleApp([Target("ipc:///n/ctl", "ipc:///n/pub")], live=False,
                     models=[demo_model()], clock=frozen_clock)  # fmt: skip
    eng = FakeEngine(**kw)
    app.links[0].call = eng.call  # type: ignore[method-assign]
    return app, eng


async def until(pilot: Any, pred: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.02)


def toasts(app: ConsoleApp) -> list[str]:
    return [n.message for n in app._notifications]


async def pick(pilot: Any, app: ConsoleApp, name: str) -> None:
    await pilot.press("l")
    await until(pilot, lambda: isinstance(app.screen, PickerModal), "the picker")
    opts = app.screen.query_one(OptionList)
    opts.highlighted = [o for o, _ in app.screen.options].index(name)  # type: ignore[attr-defined]
    opts.action_select()


async def test_loading_over_unsaved_edits_asks_first() -> None:
    app, eng = app_and_engine()
    async with app.run_test(size=(120, 40)) as pilot:
        m = app.models[0]
        m.mark_dirty(True)
        await pick(pilot, app, "heavy-lp")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await pilot.press("n")
        await pilot.pause()
        assert not eng.sent("load_profile") and m.dirty  # nothing lost
        await pick(pilot, app, "heavy-lp")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await pilot.press("y")
        await until(pilot, lambda: bool(eng.sent("load_profile")), "the load")
        assert eng.sent("load_profile") == [{"name": "heavy-lp"}]  # by name, never a path
        await until(pilot, lambda: not m.dirty, "clean after the load")
        assert m.marks and m.marks[-1] == m.samples  # the charts mark the load
        assert any("loaded profile heavy-lp" in t for t in toasts(app))


async def test_loading_without_edits_does_not_ask() -> None:
    app, eng = app_and_engine()
    async with app.run_test(size=(120, 40)) as pilot:
        await pick(pilot, app, "mine")
        await until(pilot, lambda: bool(eng.sent("load_profile")), "the load")
        assert not isinstance(app.screen, ConfirmModal)


async def test_w_on_a_shipped_profile_asks_for_a_new_name() -> None:
    app, eng = app_and_engine()
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.models[0].profile == "default"  # shipped, per list_profiles
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, EditModal), "save as")
        hint = "\n".join(str(w.render()) for w in app.screen.query(".hint"))
        assert "'default' is a shipped profile" in hint
        inp = app.screen.query_one(Input)
        assert inp.value == "default-edited"
        error = app.screen.query_one("#error", Static)
        for bad, why in (("default", "shipped profile"), ("/etc/x.toml", "not a path"),
                         ("../up", "not a path"), (".hidden", "letters, digits")):  # fmt: skip
            inp.value = bad
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, EditModal) and why in str(error.render()), bad
        assert not eng.sent("save_profile")
        inp.value = "tuned"
        await pilot.press("enter")
        await until(pilot, lambda: bool(eng.sent("save_profile")), "the save")
        assert eng.sent("save_profile") == [{"name": "tuned"}]
        path = "~/.config/hbtui/profiles/tuned.toml"
        await until(pilot, lambda: any(path in t for t in toasts(app)), "a toast naming it")


async def test_w_on_a_user_profile_saves_it_and_overwrite_asks() -> None:
    app, eng = app_and_engine()
    async with app.run_test(size=(120, 40)) as pilot:
        app.models[0].profile = "mine"
        await pilot.press("w")
        await until(pilot, lambda: bool(eng.sent("save_profile")), "the save")
        assert eng.sent("save_profile") == [{"name": "mine"}]
        app.models[0].profile = "default"
        await pilot.press("W")  # save as an existing user profile: asks first
        await until(pilot, lambda: isinstance(app.screen, EditModal), "save as")
        app.screen.query_one(Input).value = "mine"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "overwrite?")
        await pilot.press("escape")
        await pilot.pause()
        assert eng.sent("save_profile") == [{"name": "mine"}]  # only the first


async def test_a_refused_save_is_an_error_toast_and_the_console_goes_on() -> None:
    app, eng = app_and_engine(refuse={"save_profile"})
    async with app.run_test(size=(120, 40)) as pilot:
        app.models[0].profile = "mine"
        app.models[0].mark_dirty(True)
        await pilot.press("w")
        await until(pilot, lambda: any("not today" in t for t in toasts(app)), "the refusal")
        assert app.models[0].dirty and app.is_running


async def test_reset_stats_blanks_the_figures_at_once() -> None:
    app, eng = app_and_engine()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("TaskTable")
        assert table.get_cell("llm", "p99").plain != "–"
        await pilot.press("x")
        await until(pilot, lambda: table.get_cell("llm", "p99").plain == "–", "blank p99")
        assert eng.sent("reset_stats") == [{}]
        assert not app.models[0].history["attainment"] and not app.models[0].dirty
        assert any("stats reset" in t for t in toasts(app))


async def test_z_zooms_the_fixed_range_charts() -> None:
    app, _ = app_and_engine()
    async with app.run_test(size=(120, 40)) as pilot:
        att = app.query_one("#c-att", HistoryChart)
        assert att.scale(att.values) == (0.0, 100.0)
        await pilot.press("z")
        lo, hi = att.scale(att.values)
        assert 90 < lo < min(att.values) and max(att.values) < hi <= 100.0
        assert "zoomed" in att.render().plain
        await pilot.press("z")
        assert att.scale(att.values) == (0.0, 100.0)


async def test_a_profile_load_is_marked_on_the_charts() -> None:
    app, _ = app_and_engine()
    async with app.run_test(size=(200, 60)) as pilot:
        m = app.models[0]
        m.apply({"type": "event", "seq": 500, "engine_id": "sim-7f3a",
                 "body": {"kind": "load_profile", "profile": "heavy-lp"}}, 0.0)  # fmt: skip
        app.tick()
        await pilot.pause()
        att = app.query_one("#c-att", HistoryChart)
        assert att.marks == [len(att.values)]  # after the newest point
        out = att.render()
        assert "│ profile loaded" in out.plain
        # the newest column (the last of each row) is the load's: magenta on every row
        ends, pos = [], 0
        for line in out.plain.split("\n"):
            pos += len(line) + 1
            ends.append(pos - 2)
        styles = {str(sp.style) for sp in out.spans for e in ends[1:] if sp.start == e}
        assert styles == {"bold magenta"}, styles  # the whole column, on every row


async def test_the_table_scrolls_sideways_at_80_columns() -> None:
    app, _ = app_and_engine()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("escape")  # the intro
        table = app.query_one("TaskTable")
        await until(pilot, lambda: table.max_scroll_x > 0, "a table wider than the screen")
        detail = app.query_one("#detail", Static)
        app.tick()
        assert detail.display and "more columns" in str(detail.render())
        table.focus()
        await pilot.press("right", "right", "right")
        await until(pilot, lambda: table.scroll_x > 0, "scrolled right")


def test_value_line_shows_exclusive_attainment_when_the_engine_sends_it() -> None:
    m = demo_model()
    assert "(alone: p99 2.2 ms" in value_line(m, {"llm": 2.2}).plain
    m.apply({"type": "stats", "seq": 900, "engine_id": "sim-7f3a",
             "body": {"baseline_attainment": {"llm": 0.991}}}, 0.0)  # fmt: skip
    assert m.bad_messages == 0
    assert "(alone: 99.1 %)" in value_line(m, {"llm": 2.2}).plain
