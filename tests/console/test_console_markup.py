"""Rich markup in anything from the wire shows as typed, in every place the console shows
it (table, header, modals, picker, toasts, events, detail line), and never raises
MarkupError. No engine: fixed models and a fake control link."""

from __future__ import annotations

from typing import Any

from console_fixtures import T0, frozen_clock, state_body
from textual.widgets import Input, Label, OptionList
from textual.widgets._toast import Toast

from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target
from hbtui.console.model import EngineModel
from hbtui.console.screens import ConfirmModal, EditModal, PickerModal
from hbtui.engine.client import ClientError

EVIL = ["[/]", "x[/y]", "[bold red]evil"]


def evil_model() -> EngineModel:
    st = state_body()
    st["profile"] = {"name": "[b]prof[/]", "path": "/p/[x].toml"}
    st["tasks"] = [
        {"name": EVIL[0], "class": "hp", "priority": 9, "paused": False, "slo_ms": 5.0},
        {"name": EVIL[1], "class": "lp", "priority": 1, "paused": False, "slice_us": 50.0},
        {"name": EVIL[2], "class": "lp", "priority": 0, "paused": False,
         "attached": {"pid": 7, "cmd": ["[red]x[/]", "[/]"], "status": "attached"}},
    ]  # fmt: skip
    m = EngineModel()
    m.apply({"type": "state", "seq": 1, "engine_id": "[i]e[/i]", "body": st}, T0)
    m.apply({"type": "event", "seq": 2, "engine_id": "[i]e[/i]",
             "body": {"kind": "[/]", "level": "error", "message": "x[/y] [bold red]boom",
                      "task": "[/]"}}, T0)  # fmt: skip
    return m


class FakeLink:
    """Answers the control ops the test needs; errors carry markup too."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    async def call(self, op: str, args: dict | None = None, timeout: float | None = None) -> Any:
        self.calls.append((op, args or {}))
        if op == "list_profiles":
            return {"profiles": [
                {"name": "[/]", "origin": "shipped", "path": "/x/[/].toml"},
                {"name": "x[/y]", "origin": "user", "path": "~/.config/hbtui/profiles/x.toml"},
            ]}  # fmt: skip
        raise ClientError("bad_value", f"{op}: x[/y] [bold red]refused[/]", op)


def app_with(model: EngineModel) -> tuple[ConsoleApp, FakeLink]:
    app = ConsoleApp([Target("ipc:///n/ctl", "ipc:///n/pub")], live=False, models=[model],
                     clock=frozen_clock, description="[/] x[/y]")  # fmt: skip
    link = FakeLink()
    app.links[0].call = link.call  # type: ignore[method-assign]
    return app, link


async def until_toast(pilot: Any, text: str) -> None:
    for _ in range(40):
        shown = [str(t.render()) for t in pilot.app.screen.query(Toast)]
        if any(text in s for s in shown):
            return
        await pilot.pause(0.05)
    raise AssertionError(f"no toast shows {text!r} as typed: {shown}")


def labels(screen: Any) -> str:
    return "\n".join(str(w.render()) for w in screen.query(Label))


async def test_markup_in_names_events_and_errors_shows_literally() -> None:
    app, link = app_with(evil_model())
    async with app.run_test(size=(160, 50), notifications=True) as pilot:  # toasts drawn
        await pilot.pause()
        table = app.query_one("TaskTable")
        assert table.get_cell(EVIL[0], "name").plain == EVIL[0]
        assert table.get_cell(EVIL[1], "name").plain == EVIL[1]
        assert table.get_cell(EVIL[2], "name").plain == f"⚙ {EVIL[2]}"
        header = app.query_one("StatusHeader").render().plain
        assert "[b]prof[/]" in header and "[i]e[/i]" in header
        assert "x[/y] [bold red]boom" in str(app.query_one("#events").render())
        assert "[/] x[/y]" in str(app.query_one("#intro").render())
        # the priority modal of a task named "[/]": its title names it as typed
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, EditModal) and "'[/]'" in labels(app.screen)
        app.screen.query_one(Input).value = "3"
        await pilot.press("enter")  # sent: the engine's refusal (with markup) is a toast
        await pilot.pause()
        await pilot.pause()
        assert ("set_priority", {"task": "[/]", "priority": 3}) in link.calls
        want = "x[/y] [bold red]refused[/] [bad_value]"
        assert any(want in n.message for n in app._notifications)
        await until_toast(pilot, want)  # rendered as sent, not styled
        # the profile picker: names, [shipped]/[user] tags and paths as sent
        await pilot.press("l")
        for _ in range(20):
            if isinstance(app.screen, PickerModal):
                break
            await pilot.pause(0.05)
        assert isinstance(app.screen, PickerModal)
        prompts = [str(o.prompt) for o in app.screen.query_one(OptionList).options]
        assert prompts[0] == "[/]  [shipped]  /x/[/].toml"
        assert prompts[1].startswith("x[/y]  [user]  ~/.config")
        await pilot.press("escape")
        # the detail line of the attached task, its command with markup
        table.move_cursor(row=table.get_row_index(EVIL[2]))
        app.tick()
        await pilot.pause()
        detail = str(app.query_one("#detail").render())
        assert "[red]x[/]" in detail and EVIL[2] in detail
        assert app.is_running and app.return_code is None


async def test_remove_confirm_names_a_markup_task_as_typed() -> None:
    app, link = app_with(evil_model())
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        table = app.query_one("TaskTable")
        table.move_cursor(row=table.get_row_index(EVIL[1]))
        await pilot.press("delete")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal) and "'x[/y]'" in labels(app.screen)
        await pilot.press("y")
        await pilot.pause()
        await pilot.pause()
        assert ("remove_task", {"task": "x[/y]"}) in link.calls
        assert app.is_running
