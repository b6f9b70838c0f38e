"""Shared fixtures. Tests live by layer: unit/ (pure logic), sim/ (the scheduler on the
simulated GPU, simulated time), integration/ (real engine processes and sockets),
console/ (Textual Pilot and snapshots), gpu/ (marker ``gpu``, skipped without a GPU),
architecture/ (import contracts). ``engines.py`` and ``sim_recorder.py`` beside this
file are the helpers several layers share (this directory is on ``sys.path``)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from engines import start_engine, stop


@pytest.fixture
def engines() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``hbtui engine`` processes (``engines(*args, log=…)``); all are stopped after."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, **kw: object) -> subprocess.Popen[str]:
        p = start_engine(*args, **kw)  # type: ignore[arg-type]
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            stop(p)
