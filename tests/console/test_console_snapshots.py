"""Snapshot tests of the console (pytest-textual-snapshot) with deterministic data.

No engine: the app shows a fixed model (``live=False``) and a frozen clock, so message
ages, charts and the timeline render identically on every run. Update the SVGs under
tests/__snapshots__ with ``pytest tests/test_console_snapshots.py --snapshot-update``
after checking the change is intended.
"""

from __future__ import annotations

from console_fixtures import demo_model, frozen_clock
from textual.widgets import Input

from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target

SIZE = (120, 40)


def make_app(**kw: object) -> ConsoleApp:
    return ConsoleApp(
        [Target("ipc:///run/hbtui/ctl", "ipc:///run/hbtui/pub")],
        live=False,
        models=[demo_model()],
        clock=frozen_clock,
        **kw,
    )


def test_main_screen(snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE)


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


def test_readonly_main_screen(snap_compare) -> None:
    assert snap_compare(make_app(readonly=True), terminal_size=SIZE)
