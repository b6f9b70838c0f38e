"""Explicit HP request boundaries for programs under ``hbtui run``.

    import hbtui

    with hbtui.request():   # one request of the service
        out = model(batch)
        torch.cuda.synchronize()

The markers go to the preloaded interceptor (``hbtui_request_begin``/``_end``, also the C
API): the engine then measures each request from its begin marker to the GPU completion
of the last launch before its end marker, instead of inferring requests from bursts.
Outside ``hbtui run`` the calls do nothing (and cost one attribute lookup).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _lookup() -> tuple[Callable[[], None], Callable[[], None]] | None:
    try:
        lib = ctypes.CDLL(None)
        return lib.hbtui_request_begin, lib.hbtui_request_end
    except (OSError, AttributeError):
        return None  # not under hbtui run: the interceptor is not loaded


_FNS = _lookup()


def begin() -> None:
    """An HP request starts now."""
    if _FNS is not None:
        _FNS[0]()


def end() -> None:
    """The current request ends once the GPU completed what it launched so far."""
    if _FNS is not None:
        _FNS[1]()


def under_hbtui() -> bool:
    """Whether this process runs under ``hbtui run`` (the interceptor is loaded)."""
    return _FNS is not None


@contextmanager
def request() -> Iterator[None]:
    """One HP request (see the module docstring)."""
    begin()
    try:
        yield
    finally:
        end()
