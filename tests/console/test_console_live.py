"""Pilot tests of the console against a REAL engine process (sim backend, ipc sockets).

Each test starts ``hbtui.engine.server`` in its own process with endpoints under tmp_path,
drives the real app headless with Pilot, and checks what the engine did over its own
control socket. Every wait has a deadline, so a broken engine fails a test, never hangs it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_pilot import press, until
from engines import START_S, start_engine, stop
from textual.widgets import Input

from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target
from hbtui.console.model import DISCONNECTED, LIVE
from hbtui.console.spawn import EmbeddedEngine

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("hbtui.engine.server") is None, reason="engine.server not present"
    ),
]


def start_console_engine(d: Path, *extra: str) -> subprocess.Popen[str]:
    # A short calibration (0.45 s, not 1.5 s): these tests need a running engine with an
    # exclusive baseline, not a precise one.
    return start_engine("--profile", "default", "--backend", "sim", "--pub", f"ipc://{d}/pub",
                        "--ctl", f"ipc://{d}/ctl", "--calibrate", "0.3", *extra,
                        log=d / "engine.log")  # fmt: skip


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def engine(engine_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    p = start_console_engine(engine_dir)
    yield p
    stop(p)


def target(d: Path) -> Target:
    return Target(f"ipc://{d}/ctl", f"ipc://{d}/pub")


def running(app: ConsoleApp) -> bool:
    m = app.models[0]
    return m.connection == LIVE and "train" in m.tasks and m.phase in ("running", "")


async def test_key_press_changes_slice_size(engine_dir: Path, engine) -> None:  # noqa: ANN001
    app = ConsoleApp([target(engine_dir)])
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: running(app), START_S, "engine running")
        m = app.models[0]
        before = m.tasks["train"].slice_us
        assert before is not None
        # Quick key: ']' doubles the selected LP task's slice.
        await press(pilot, "right_square_bracket")
        await until(pilot, lambda: m.tasks["train"].slice_us == before * 2, 5, "slice x2")
        # Modal path: s, type a block count, enter.
        await press(pilot, "s")
        await until(pilot, lambda: isinstance(app.focused, Input), 3, "the dialog's input")
        await press(pilot, *"132b", "enter")
        # Telemetry may show the new size before the reply: wait for the reply too (pending is
        # set before the op goes and cleared once its answer is in and the table redrawn).
        await until(pilot, lambda: (r := m.tasks["train"]).slice_blocks == 132 and not r.pending,
                    5, "slice 132 blocks, acknowledged")  # fmt: skip
        # The change came back as telemetry too (the engine's `event`), and the table shows it.
        await until(
            pilot,
            lambda: any(e.get("kind") == "set_slice" and e.get("blocks") == 132 for e in m.events),
            3,
            "set_slice event",
        )
        table = app.query_one("TaskTable")
        assert table.get_cell("train", "slice").plain == "132 blk"
        assert m.dirty  # unsaved-changes marker after a successful edit
    from hbtui.engine.client import EngineClient

    with EngineClient(target(engine_dir).ctl, timeout=3) as c:
        tasks = {t["name"]: t for t in c.get_state()["tasks"]}
    assert tasks["train"]["slice_blocks"] == 132


async def test_readonly_console_refuses_edits(engine_dir: Path, engine) -> None:  # noqa: ANN001
    app = ConsoleApp([target(engine_dir)], readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: running(app), START_S, "engine running")
        m = app.models[0]
        before = m.tasks["train"].slice_us
        assert not app.check_action("slice_up", ())
        await press(pilot, "right_square_bracket", "s", "t")
        await pilot.pause(0.5)
        assert not isinstance(app.screen, type(None)) and app.screen.__class__.__name__ == "Screen"
        assert m.tasks["train"].slice_us == before and not m.tasks["train"].paused
        assert not m.dirty
        app.control("set_slice", {"task": "train", "us": 7.0}, "direct call")  # refused too
        await pilot.pause(0.3)
    from hbtui.engine.client import EngineClient

    with EngineClient(target(engine_dir).ctl, timeout=3) as c:
        tasks = {t["name"]: t for t in c.get_state()["tasks"]}
    assert tasks["train"]["slice_us"] == before and tasks["train"]["slice_blocks"] is None


async def test_readonly_engine_makes_console_readonly(engine_dir: Path) -> None:
    p = start_console_engine(engine_dir, "--readonly")
    try:
        app = ConsoleApp([target(engine_dir)])
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: running(app), START_S, "engine running")
            await until(pilot, lambda: app.models[0].readonly, 3, "readonly state")
            assert not app.check_action("edit_slice", ())
    finally:
        stop(p)


async def test_engine_killed_then_restarted_recovers(engine_dir: Path) -> None:
    p = start_console_engine(engine_dir)
    try:
        app = ConsoleApp([target(engine_dir)])
        async with app.run_test(size=(120, 40)) as pilot:
            m = app.models[0]
            await until(pilot, lambda: running(app), START_S, "engine running")
            first_id = m.engine_id
            p.kill()
            p.wait(5)
            await until(pilot, lambda: m.connection == DISCONNECTED, 10, "disconnected")
            # Keys still work while disconnected (the UI never freezes).
            await press(pilot, "plus")
            await pilot.pause(0.1)
            assert app.rate_hz > 10
            for f in ("ctl", "pub"):
                (engine_dir / f).unlink(missing_ok=True)
            p = start_console_engine(engine_dir)
            await until(pilot, lambda: m.connection == LIVE and m.engine_id != first_id,
                        START_S, "recovered")  # fmt: skip
            assert app.links[0].reconnects >= 1
    finally:
        stop(p)


async def test_embedded_engine_leaves_nothing_behind() -> None:
    eng = EmbeddedEngine("default", "sim")
    assert oct(eng.dir.stat().st_mode & 0o777) == "0o700"
    eng.start()
    from hbtui.engine.client import AsyncEngineClient, ClientError

    c = AsyncEngineClient(eng.target.ctl, timeout=1.0)
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                assert (await c.ping())["protocol"] == 1
                break
            except ClientError:
                assert time.monotonic() < deadline, eng.log_tail()
                await asyncio.sleep(0.1)
    finally:
        c.close()
        eng.stop()
    assert eng.proc is not None and eng.proc.poll() is not None
    assert not eng.dir.exists()
