"""The console's profile picker asks the engine (``list_profiles``) what it can load, so a
console on another machine lists the engine's profiles, not its own; picking one loads it
by name. A real sim engine with its own HOME and profile dir, the real app under Pilot."""

from __future__ import annotations

import time
from pathlib import Path

import engines
import pytest
from engines import START_S, start_engine, stop, wait_running
from textual.widgets import OptionList

from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target
from hbtui.console.model import LIVE
from hbtui.console.screens import PickerModal

PROFILE = """
version = 1
name = "mine"
[engine]
backend = "sim"
policy = "temporal"
[kernels.k]
grid = 132
block_us = 10.0
[[tasks]]
name = "solo"
class = "lp"
kernels = ["k"]
"""


async def until(pilot, pred, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await pilot.pause(0.05)


async def test_picker_lists_the_engines_profiles_and_loads_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "cfg" / "hbtui" / "profiles").mkdir(parents=True)
    (home / "cfg" / "hbtui" / "profiles" / "mine.toml").write_text(PROFILE)
    monkeypatch.setitem(engines.ENV, "HOME", str(home))
    monkeypatch.setitem(engines.ENV, "XDG_CONFIG_HOME", str(home / "cfg"))
    # the console's own profile dir is elsewhere and empty: it must not be what is listed
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "console-cfg"))
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    ctl, pub = f"ipc://{d}/ctl", f"ipc://{d}/pub"
    proc = start_engine("--profile", "default", "--backend", "sim", "--pub", pub,
                        "--ctl", ctl, "--calibrate", "0", log=d / "engine.log")  # fmt: skip
    try:
        app = ConsoleApp([Target(ctl, pub)])
        async with app.run_test(size=(120, 40)) as pilot:
            m = app.models[0]
            await until(pilot, lambda: m.connection == LIVE and m.phase == "running",
                        START_S, "engine running")  # fmt: skip
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, PickerModal), 5, "the picker")
            picker = app.screen
            assert isinstance(picker, PickerModal)
            ids = [oid for oid, _ in picker.options]
            labels = dict(picker.options)
            assert "mine" in ids and "default" in ids
            assert labels["mine"] == "mine  [user]  ~/cfg/hbtui/profiles/mine.toml"
            assert "[shipped]" in labels["default"]
            opts = picker.query_one(OptionList)
            opts.highlighted = ids.index("mine")
            opts.action_select()
            await until(pilot, lambda: m.profile == "mine", 10, "profile mine loaded")
        c = wait_running(ctl)
        st = c.get_state()
        c.close()
        assert st["profile"]["name"] == "mine" and st["policy"] == "temporal"
    finally:
        rc, err = stop(proc)
    assert rc == 0, err
