"""Console behaviour without an engine (fixed models, frozen clock): keys, labels, notices."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_fixtures import demo_model, frozen_clock
from textual.widgets import Input, Static, TabbedContent

from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target
from hbtui.console.model import DISCONNECTED, LIVE
from hbtui.console.pane import EnginePane, fmt_event, value_line
from hbtui.console.prefs import Prefs
from hbtui.console.screens import EditModal


def targets(n: int) -> list[Target]:
    return [Target(f"ipc:///run/hb{i}/ctl", f"ipc:///run/hb{i}/pub") for i in range(n)]


def app_of(n: int = 1, **kw: object) -> ConsoleApp:
    return ConsoleApp(targets(n), live=False, models=[demo_model() for _ in range(n)],
                      clock=frozen_clock, **kw)  # fmt: skip


async def test_tab_and_shift_tab_switch_engines() -> None:
    app = app_of(3)
    async with app.run_test(size=(120, 40)) as pilot:
        tabs = app.query_one(TabbedContent)
        assert tabs.active == "tab-0"
        await pilot.press("tab")
        assert tabs.active == "tab-1"
        await pilot.press("tab", "tab")
        assert tabs.active == "tab-0"
        await pilot.press("shift+tab")
        assert tabs.active == "tab-2"


async def test_tab_labels_follow_health() -> None:
    app = app_of(2)
    async with app.run_test(size=(120, 40)) as pilot:
        app.models[1].set_connection(DISCONNECTED)
        app.tick()
        await pilot.pause()
        label = app.query_one(TabbedContent).get_tab("tab-1").label
        assert "disconnected" in label.plain
        assert any("red" in str(span.style) for span in label.spans)  # a Content label
        assert "live" in app.query_one(TabbedContent).get_tab("tab-0").label.plain


async def test_modal_shows_inline_error_and_stays_open() -> None:
    app = app_of()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, EditModal)
        app.screen.query_one(Input).value = "99999999999999999999"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, EditModal)  # not sent, not crashed
        err = str(app.screen.query_one("#error", Static).render())
        assert "out of range" in err


async def test_sort_toast_uses_labels_and_header_marks_the_column() -> None:
    app = app_of()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("TaskTable")
        for _ in range(8):  # to "preempt p99 µs"
            await pilot.press("c")
        assert table.sort_column == "pre99"
        notes = [n.message for n in app._notifications]
        assert notes[-1] == "sorted by preempt p99 µs (ascending)"
        assert not any("pre99" in n for n in notes)
        assert table.columns["pre99"].label.plain.endswith("▲")
        await pilot.press("r")
        assert table.columns["pre99"].label.plain.endswith("▼")
        assert table.columns["p99"].label.plain == "p99 ms"


async def test_columns_grow_to_their_content() -> None:
    app = app_of()
    async with app.run_test(size=(160, 40)) as pilot:
        m = app.models[0]
        m.apply_state({"tasks": [{"name": "train", "class": "lp", "slice_us": 123456.0}]
                       + [t for t in _state_tasks() if t["name"] != "train"]})  # fmt: skip
        app.tick()
        await pilot.pause()
        table = app.query_one("TaskTable")
        assert table.get_cell("train", "slice").plain == "123456 µs"
        assert table.columns["slice"].get_render_width(table) >= len("123456 µs") + 2
        assert table.get_cell("llm", "slo").plain == "1x = 2.41 ms"


def _state_tasks() -> list[dict]:
    from console_fixtures import state_body

    return state_body()["tasks"]


def test_value_line_states_hp_lp_and_preemption() -> None:
    m = demo_model()
    line = value_line(m, {"llm": 2.2}).plain
    assert line.startswith("HP ") and "% of requests within SLO 2.41 ms" in line
    assert "(alone: p99 2.2 ms" in line
    assert "LP at 0.59 of its solo speed" in line and "preemption p99" in line
    assert "0.9" not in line.split("%")[0]  # percent, not a fraction


def test_events_are_formatted_not_dicts() -> None:
    t = fmt_event({"kind": "calibrated", "level": "info", "baseline_p99_ms": {"llm": 2.4131},
                   "seconds": 1.25, "ts_ns": 5})  # fmt: skip
    assert t.plain == "calibrated  baseline p99 llm 2.413 ms · seconds 1.25"
    assert "{" not in t.plain


async def test_too_small_terminal_says_so() -> None:
    app = app_of()
    async with app.run_test(size=(70, 20)) as pilot:
        await pilot.pause()
        note = app.query_one("#too-small", Static)
        assert note.display and "terminal too small (need 80×24" in str(note.render())
        assert not app.query_one(EnginePane).display
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        app.tick()
        assert not note.display and app.query_one(EnginePane).display


async def test_ctrl_c_quits() -> None:
    app = app_of()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_code == 0


async def test_escape_hides_the_intro() -> None:
    app = app_of(description="demo profile")
    async with app.run_test(size=(120, 40)) as pilot:
        intro = app.query_one("#intro", Static)
        assert "Profile: demo profile" in str(intro.render()) and "HP = " in str(intro.render())
        await pilot.press("escape")
        assert not intro.display


async def test_stale_values_dimmed_when_disconnected() -> None:
    app = app_of()
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.query_one(EnginePane)
        assert not pane.has_class("stale")
        app.models[0].set_connection(DISCONNECTED)
        app.tick()
        await pilot.pause()
        assert pane.has_class("stale")
        app.models[0].set_connection(LIVE)
        app.tick()
        assert not pane.has_class("stale")


async def test_unreachable_engine_shows_a_waiting_state() -> None:
    app = ConsoleApp([Target("ipc:///nonexistent/hb/ctl", "ipc:///nonexistent/hb/pub")],
                     clock=frozen_clock)  # fmt: skip
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        w = app.query_one("#waiting", Static)
        assert w.display
        assert "Waiting for the engine at ctl ipc:///nonexistent/hb/ctl" in str(w.render())


async def test_screenshot_falls_back_when_downloads_is_missing(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/Downloads
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    app = app_of()
    async with app.run_test(size=(120, 40)) as pilot:
        app.deliver_screenshot("shot.svg")
        await pilot.pause()
        saved = tmp_path / "state" / "hbtui" / "screenshots" / "shot.svg"
        assert saved.is_file()
        assert any(str(saved) in n.message for n in app._notifications)


async def test_palette_has_one_help_and_readable_entries() -> None:
    app = app_of()
    async with app.run_test(size=(120, 40)):
        cmds = list(app.get_system_commands(app.screen))
        titles = [c.title for c in cmds]
        assert titles.count("Help") == 1 and "Keys" not in titles
        assert len(titles) == len(set(titles))
        assert not any("_" in c.help for c in cmds if c.title not in ("Theme", "Screenshot"))


async def test_preferences_are_used_and_saved(tmp_path: Path) -> None:
    path = tmp_path / "hbtui" / "console.toml"
    path.parent.mkdir()
    path.write_text('rate_hz = 5.0\nsort_column = "p99"\nsort_reverse = true\n')
    app = app_of(prefs=Prefs.load(path))
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.rate_hz == 5.0
        assert app.query_one("TaskTable").sort_column == "p99"
        await pilot.press("plus")
    assert "rate_hz = 10.0" in path.read_text()


def test_malformed_preferences_reported_once_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    path.write_text("rate_hz = = 3\n")
    p = Prefs.load(path)
    assert p.rate_hz == 10.0 and "ignored" in p.problem and str(path) in p.problem
    p2 = Prefs.load(_write(tmp_path / "b.toml", "rate_hz = 0\n"))
    assert p2.rate_hz == 10.0 and "rate_hz" in p2.problem


def test_prefs_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    p = Prefs.load(tmp_path / "d" / "console.toml")
    p.rate_hz = 20.0
    p.save()
    assert Prefs.load(tmp_path / "d" / "console.toml").rate_hz == 20.0
    assert [f.name for f in (tmp_path / "d").iterdir()] == ["console.toml"]


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.mark.parametrize("rate", [0.0, -3.0, 1e9])
async def test_app_never_divides_by_a_bad_rate(rate: float) -> None:
    app = app_of(rate_hz=rate)  # the CLI refuses these; the app clamps anyway
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert 0.5 <= app.rate_hz <= 60


def test_embedded_engine_log_is_kept_under_the_state_dir(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import os

    from hbtui.console.spawn import EmbeddedEngine

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    eng = EmbeddedEngine("default", "sim")
    try:
        assert eng.log_path == tmp_path / "hbtui" / f"engine-{os.getpid()}.log"
        assert eng.dir not in eng.log_path.parents  # not removed with the runtime dir
    finally:
        eng.stop()
    assert not eng.dir.exists()


async def test_ticks_behind_a_dialog_redraw_the_pane_once_a_second(monkeypatch) -> None:  # noqa: ANN001
    """Textual re-renders a dialog's dimmed backdrop whole on any change beneath it: behind a
    dialog the tick redraws the pane once a second, and never re-sets an unchanged size
    notice (with both, an edit dialog open at 10 Hz on a sim engine cost 36 % of a core
    instead of 11 %). The pane is redrawn on every tick again once the dialog is closed."""
    from types import SimpleNamespace

    from hbtui.console import chrome

    now = [0.0]
    monkeypatch.setattr(chrome, "time", SimpleNamespace(monotonic=lambda: now[0]))
    app = app_of()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        pane = app.query_one(EnginePane)
        redraws: list[int] = []
        updates: list[int] = []
        monkeypatch.setattr(pane, "refresh_from_model", lambda *a, **k: redraws.append(1))
        monkeypatch.setattr(app.query_one("#too-small", Static), "update",
                            lambda *a, **k: updates.append(1))  # fmt: skip
        for _ in range(3):
            app.tick()
        assert len(redraws) == 3  # the main screen: every tick
        await pilot.press("s")
        assert isinstance(app.screen, EditModal)
        now[0], redraws[:] = 100.0, []
        for _ in range(5):
            app.tick()
        assert len(redraws) == 1
        now[0] = 100.9
        app.tick()
        assert len(redraws) == 1
        now[0] = 101.0
        app.tick()
        assert len(redraws) == 2
        await pilot.press("escape")
        assert not isinstance(app.screen, EditModal)
        redraws[:] = []
        for _ in range(3):
            app.tick()
        assert len(redraws) == 3
        assert not updates  # the size never changed
