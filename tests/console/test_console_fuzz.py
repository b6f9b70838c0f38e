"""Property: no text typed into an edit modal kills the console or reaches the engine
unchecked. Every modal (slice, SLO, priority) is driven through Pilot with arbitrary
strings against a REAL sim engine; after a refusal the engine's state, read over its own
control socket, is unchanged, and nothing was sent (no toast, nothing pending). Four
Hypothesis examples of 8 inputs each, ~1.5 s an example on an idle 2-core box: keys go
through ``console_pilot.press`` and every step waits for its own outcome (Pilot's wait for
an idle CPU cost up to 2 s a key while telemetry streams: 17 s for two examples, 99 s on
a loaded box)."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator

import pytest
from console_pilot import ToastApp, press, until
from engines import START_S, start_engine, stop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual.widgets import Input

from hbtui.console import limits
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
                     "--ctl", f"ipc://{d}/ctl", "--calibrate", "0.3",  # an SLO base, quickly
                     log=d / "engine.log")  # fmt: skip
    yield Target(f"ipc://{d}/ctl", f"ipc://{d}/pub")
    stop(p)


def config(client: EngineClient) -> dict:
    """What an edit could change: each task's priority, slice and SLO."""
    keys = ("priority", "slice_us", "slice_blocks", "slo_ms", "slo_factor", "paused")
    return {t["name"]: {k: t.get(k) for k in keys} for t in client.get_state()["tasks"]}


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


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(sorted(MODALS)), TEXT), min_size=8, max_size=8))
def test_edit_modals_survive_any_text(target: Target, inputs: list[tuple[str, str]]) -> None:
    asyncio.run(drive(target, inputs))


async def drive(target: Target, inputs: list[tuple[str, str]]) -> None:
    app = ToastApp([target], rate_hz=2.0)  # few redraws: keys answer fast on a busy CI core
    with EngineClient(target.ctl, timeout=3) as client:
        async with app.run_test(size=(80, 24)) as pilot:  # the smallest it supports
            m = app.models[0]
            await until(pilot, lambda: m.connection == LIVE and "train" in m.tasks, START_S,
                        "live")  # fmt: skip
            for key, text in inputs:
                before, toasts = config(client), len(app.toasts)
                await press(pilot, key)
                await until(pilot, lambda: isinstance(app.focused, Input), 3, "the dialog's input")
                assert isinstance(app.screen, EditModal)
                app.screen.query_one(Input).value = text
                await press(pilot, "enter")
                assert app.is_running and app.return_code is None
                try:
                    MODALS[key](text)
                    accepted = True
                except ValueError:
                    accepted = False
                if accepted:  # sent: wait for the engine's answer (applied or refused)
                    await until(pilot, lambda: len(app.toasts) > toasts, 5, "reply")  # noqa: B023
                    assert not isinstance(app.screen, EditModal)
                    assert not any(r.pending for r in m.tasks.values())
                    last = app.toasts[-1]  # applied, or the engine's refusal [code]
                    assert last.startswith("✓") or last.endswith("]"), last
                    assert "[timeout]" not in last and "[disconnected]" not in last, last
                else:  # refused inline; Esc closes the dialog and nothing was sent
                    await until(pilot, lambda: "✗" in error_text(app), 3, f"{text!r} refused")
                    assert isinstance(app.screen, EditModal), f"{text!r} closed the dialog"
                    await press(pilot, "escape")
                    await until(pilot, lambda: not isinstance(app.screen, EditModal), 3, "closed")
                    assert len(app.toasts) == toasts, app.toasts[toasts:]
                    assert not any(r.pending for r in m.tasks.values()), f"{text!r} was sent"
                    assert config(client) == before, f"{text!r} changed the engine"
                assert app.is_running


def error_text(app: ToastApp) -> str:
    screen = app.screen
    return str(screen.query_one("#error").render()) if isinstance(screen, EditModal) else ""
