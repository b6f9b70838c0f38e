"""Modal screens: the edit dialog, pickers (policy, profile), a yes/no confirmation and
the help screen.

Every string they show may come from the wire (task and profile names, paths, engine
messages): each goes in as ``rich.text.Text``, never as markup, so ``[/]`` or
``[bold red]`` in a name shows as typed and never raises MarkupError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

_MODAL_CSS = """
NAME { align: center middle; }
NAME > Vertical {
    width: 64; height: auto; max-height: 90%; padding: 1 2;
    border: thick $accent; background: $surface;
}
NAME .title { text-style: bold; margin-bottom: 1; width: 100%; }
NAME .hint { color: $text-muted; margin-top: 1; width: 100%; }
NAME Label { width: 100%; }
NAME .error { color: $error; height: auto; }
"""


class EditModal(ModalScreen[dict[str, Any] | None]):
    """One field of one task. Returns the parsed op args, or None if cancelled.

    ``parse`` turns the text into op args (model.parse_*) and raises ValueError with a
    message the operator sees inline, so nothing invalid is ever sent.
    """

    DEFAULT_CSS = _MODAL_CSS.replace("NAME", "EditModal")
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, current: str, hint: str, parse: Callable[[str], dict[str, Any]]
    ) -> None:
        super().__init__()
        self.title_text = title
        self.current = current
        self.hint = hint
        self.parse = parse

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text), classes="title")
            yield Input(value=self.current, id="value", select_on_focus=True)
            yield Static("", classes="error", id="error")
            yield Label(Text(self.hint + "\nEnter applies, Esc cancels."), classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            args = self.parse(event.value)
        except Exception as e:  # noqa: BLE001 - bad input is an inline error, never a crash
            msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            self.query_one("#error", Static).update(Text(f"✗ {msg}"))
            return
        self.dismiss(args)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#error", Static).update("")  # the error was about the old text

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickerModal(ModalScreen[str | None]):
    """Choose one of a list of (id, label) options. Returns the id or None."""

    DEFAULT_CSS = (
        _MODAL_CSS.replace("NAME", "PickerModal")
        + """
    PickerModal OptionList { height: auto; max-height: 16; }
    """
    )
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, options: Iterable[tuple[str, str]], hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.options = list(options)
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text), classes="title")
            yield OptionList(*(Option(Text(label), id=oid) for oid, label in self.options))
            if self.hint:
                yield Label(Text(self.hint), classes="hint")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmModal(ModalScreen[bool]):
    """A yes/no question. Returns True for yes (y, Enter), False for no (n, Esc)."""

    DEFAULT_CSS = _MODAL_CSS.replace("NAME", "ConfirmModal")
    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, question: str) -> None:
        super().__init__()
        self.title_text = title
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.title_text), classes="title")
            yield Label(Text(self.question))
            yield Label(Text("y / Enter: yes    n / Esc: no"), classes="hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    """Key help, generated from the live bindings so it never drifts from them."""

    DEFAULT_CSS = (
        _MODAL_CSS.replace("NAME", "HelpScreen")
        + """
    HelpScreen > Vertical { width: 84; }
    HelpScreen VerticalScroll { height: auto; max-height: 30; }
    """
    )
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("f1", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, rows: list[tuple[str, str, str]], notes: str = "") -> None:
        super().__init__()
        self.rows = rows  # (keys, description, group)
        self.notes = notes

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        group = None
        for keys, desc, g in self.rows:
            if g != group:
                if group is not None:
                    table.add_row("", "")
                table.add_row(Text(g, style="bold underline"), "")
                group = g
            table.add_row(keys, desc)
        with Vertical():
            yield Label("hbtui console — keys", classes="title")
            with VerticalScroll():
                yield Static(table)
            if self.notes:
                yield Label(Text(self.notes), classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
