"""Driving the console against a REAL engine: keys and waits on conditions, never on an
idle CPU; no tests here.

``Pilot.press`` waits, twice per key and up to 1 s each time, for a 20-ms window in which
the test process used under 1 ms of CPU. A console folding a sim engine's telemetry
(about 100 messages a second) seldom has one, so each key cost 0.4-2 s there, and the
full second on a loaded CI core. ``press`` hands the key to the app as the terminal
driver does and waits only until the app has handled it; each test then waits for the
outcome it asserts with ``until`` (a deadline, so a broken console fails, never hangs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual import events
from textual.pilot import Pilot

from hbtui.console.app import ConsoleApp


async def press(pilot: Pilot, *keys: str) -> None:
    """Key names as ``Pilot.press`` takes them (``"s"``, ``"enter"``,
    ``"right_square_bracket"``), one at a time, each handled by the app before the next."""
    for key in keys:
        pilot.app.post_message(events.Key(key, key if len(key) == 1 else None))
        await pilot.pause(0)  # the app's queue is FIFO: the key is handled past this


async def until(pilot: Pilot, pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)


class ToastApp(ConsoleApp):
    """The console, keeping every toast's text: an edit's round trip ends in one (``✓``,
    the engine's refusal, or "not sent"), so a test can wait for exactly that."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.toasts: list[str] = []

    def notify(self, message: str, **kw: Any) -> None:  # type: ignore[override]
        self.toasts.append(message)
        super().notify(message, **kw)
