"""Ops whose work runs off the scheduling thread (``load_profile`` reads and parses there).

A handler returns a ``Deferred``: ``work`` runs on a worker thread; the engine's control
poll sees it done and calls ``finish`` with its value on the loop thread, whose return
is the op's result (or whose ``ControlError`` is the error reply). Meanwhile the loop
keeps scheduling and answering other requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Deferred:
    """One op in progress on a worker thread; the loop polls ``done`` and calls ``result``."""

    def __init__(self, op: str, work: Callable[[], Any], finish: Callable[[Any], Any]) -> None:
        self.op = op
        self.request_id: str | None = None  # set by the engine (the reply echoes it)
        self._finish = finish
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._work = work
        threading.Thread(target=self._run, name=f"hbtui-{op}", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as e:  # noqa: BLE001 - handed to the loop thread, raised there
            self._error = e
        finally:
            self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> Any:
        """On the loop thread, once done: ``finish(value)``, or the worker's exception."""
        if self._error is not None:
            raise self._error
        return self._finish(self._value)
