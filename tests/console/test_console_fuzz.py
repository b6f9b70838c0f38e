"""Property: no text typed into an edit modal kills the console or reaches the engine
unchecked. Every modal (slice, SLO, priority) is driven through Pilot with arbitrary
strings against a REAL sim engine; after a refusal the engine's state, read over its own
control socket, is unchanged. Two Hypothesis examples of 8 inputs each (~15 s on an
idle 2-core box; Pilot's per-key idle wait dominates while telemetry streams)."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Iterator

import pytest
from engines import START_S, start_engine, stop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual.widgets import Input

from hbtui.console import limits
from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target
from hbtui.console.model import LIVE
from hbtui.console.screens import EditModal
from hbtui.engine.client import EngineClient

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hbtui.engine.server") is None, reason="engine.server not present"
)

MODALS = {"s": limits.parse_slice, "o": limits.parse_slo, "i": limits.parse_priority}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    d = tmp_path_factory.mktemp("fuzz")
    p = start_engine("--profile", "default", "--backend", "sim", "--pub", f"ipc://{d}/pub",
                     "--ctl", f"ipc://{d}/ctl", log=d / "engine.log")  # fmt: skip
    yield Target(f"ipc://{d}/ctl", f"ipc://{d}/pub")
    stop(p)


def config(client: EngineClient) -> dict:
    """What an edit could change: each task's priority, slice and SLO."""
    keys = ("priority", "slice_us", "slice_blocks", "slo_ms", "slo_factor", "paused")
    return {t["name"]: {k: t.get(k) for k in keys} for t in client.get_state()["tasks"]}


async def wait(pilot, pred, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.02)


# Arbitrary text, plus the inputs that used to get through or crash.
TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(
        [
            "99999999999999999999",
            "5000000us",
            "1e9b",
            "-0",
            "1e400",
            "nan",
            "0x10",
            "٣",
            "50us",
            "2ms",
            "1.5x",
            "7",
            "264b",
            " 12 ",
            "",
            "inf",
        ]
    ),  # fmt: skip
)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(MODALS)), TEXT), min_size=8, max_size=8))
def test_edit_modals_survive_any_text(target: Target, inputs: list[tuple[str, str]]) -> None:
    asyncio.run(drive(target, inputs))


async def drive(target: Target, inputs: list[tuple[str, str]]) -> None:
    app = ConsoleApp([target], rate_hz=2.0)  # few redraws: keys answer fast on a busy CI core
    with EngineClient(target.ctl, timeout=3) as client:
        async with app.run_test(size=(120, 40)) as pilot:
            m = app.models[0]
            await wait(pilot, lambda: m.connection == LIVE and "train" in m.tasks, START_S, "live")
            for key, text in inputs:
                before = config(client)
                await pilot.press(key)
                await wait(pilot, lambda: isinstance(app.screen, EditModal), 3, "modal")
                app.screen.query_one(Input).value = text
                await pilot.press("enter")
                await pilot.pause()
                assert app.is_running and app.return_code is None
                try:
                    MODALS[key](text)
                    accepted = True
                except ValueError:
                    accepted = False
                if accepted:  # sent: wait for the engine's answer (applied or refused)
                    assert not isinstance(app.screen, EditModal)
                    await wait(pilot, lambda: not any(r.pending for r in m.tasks.values()), 5,
                               "reply")  # fmt: skip
                else:
                    assert isinstance(app.screen, EditModal), f"{text!r} was not refused"
                    assert "✗" in str(app.screen.query_one("#error").render())
                    await pilot.press("escape")
                    assert config(client) == before, f"{text!r} changed the engine"
                assert app.is_running
