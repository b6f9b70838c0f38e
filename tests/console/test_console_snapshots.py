"""Snapshot tests of the console (pytest-textual-snapshot) with deterministic data.

No engine: the app shows a fixed model (``live=False``) and a frozen clock, so message
ages, charts and the timeline render identically on every run. Update the SVGs under
tests/console/__snapshots__ with ``pytest tests/console/test_console_snapshots.py
--snapshot-update`` after checking the change is intended.
"""

from __future__ import annotations

from console_fixtures import T0, attached_model, demo_model, frozen_clock
from textual.widgets import Input

from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target

SIZE = (120, 40)


def calibrated_model():  # noqa: ANN201
    """The demo model plus the engine's `calibrated` event (HP alone p99 for the value line)."""
    m = demo_model()
    body = {"kind": "calibrated", "level": "info", "baseline_p99_ms": {"llm": 2.2, "chat": 2.9},
            "lp_alone": {"train": 98000.0}, "seconds": 1.5}  # fmt: skip
    m.apply({"type": "event", "seq": 1000, "engine_id": "sim-7f3a", "body": body}, T0 - 0.3)
    return m


def make_app(**kw: object) -> ConsoleApp:
    return ConsoleApp(
        [Target("ipc:///run/hbtui/ctl", "ipc:///run/hbtui/pub")],
        live=False,
        models=[calibrated_model()],
        clock=frozen_clock,
        **kw,
    )


def test_main_screen(snap_compare) -> None:
    assert snap_compare(make_app(description="LLM-serving-like HP + training-like LP"),
                        terminal_size=SIZE)  # fmt: skip


def test_main_screen_80x24(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), press=["escape"])


def test_main_screen_200x60(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(200, 60), press=["escape"])


def test_too_small_notice(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(70, 20))


def test_help_screen(snap_compare) -> None:
    assert snap_compare(make_app(), press=["question_mark"], terminal_size=SIZE)


def test_edit_slice_modal(snap_compare) -> None:
    async def select_train(pilot) -> None:  # noqa: ANN001
        await pilot.press("down", "down")  # cursor to the 'train' row
        await pilot.press("s")
        await pilot.pause()
        # a blinking cursor is caught on or off depending on the machine's speed
        pilot.app.screen.query_one(Input).cursor_blink = False
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=select_train)


def test_edit_modal_with_an_error(snap_compare) -> None:
    async def bad_priority(pilot) -> None:  # noqa: ANN001
        await pilot.press("i")
        await pilot.pause()
        inp = pilot.app.screen.query_one(Input)
        inp.cursor_blink = False
        inp.value = "99999999999999999999"
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=bad_priority)


def test_readonly_main_screen(snap_compare) -> None:
    assert snap_compare(make_app(readonly=True), terminal_size=SIZE)


def test_two_engines_one_disconnected(snap_compare) -> None:
    from hbtui.console.model import DISCONNECTED

    second = calibrated_model()
    second.set_connection(DISCONNECTED)
    app = ConsoleApp(
        [Target("ipc:///run/a/ctl", "ipc:///run/a/pub"), Target("ipc:///run/b/ctl", "ipc:///run/b/pub")],
        live=False, models=[calibrated_model(), second], clock=frozen_clock,
    )  # fmt: skip
    assert snap_compare(app, terminal_size=SIZE, press=["escape", "tab"])


def test_attached_programs(snap_compare) -> None:
    """An attached HP server and LP trainer beside profile tasks; the LP one selected, so
    the detail line under the table shows its whole command."""
    app = ConsoleApp([Target("ipc:///run/hbtui/ctl", "ipc:///run/hbtui/pub")], live=False,
                     models=[attached_model()], clock=frozen_clock)  # fmt: skip

    async def select_finetune(pilot) -> None:  # noqa: ANN001
        await pilot.press("escape", "down", "down", "down")  # cursor to 'finetune'
        pilot.app.tick()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(160, 40), run_before=select_finetune)
