"""Programs under ``hbtui run`` (attached tasks) in the console: rows like profile tasks plus
the ⚙ pid marker, the command (cut in the table, whole in the detail line), attached or
detached, kernels/s, held launches and the sliceable (PTX) share. Fixed model, no engine."""

from __future__ import annotations

from console_fixtures import T0, attached_model, attached_state_body, demo_model, frozen_clock
from textual.widgets import Static

from hbtui.console.app import ConsoleApp
from hbtui.console.link import Target
from hbtui.console.programs import cut
from hbtui.console.screens import ConfirmModal


def app_of(model) -> ConsoleApp:  # noqa: ANN001
    return ConsoleApp([Target("ipc:///n/ctl", "ipc:///n/pub")], live=False, models=[model],
                      clock=frozen_clock)  # fmt: skip


async def test_attached_tasks_have_their_columns_and_detail_line() -> None:
    app = app_of(attached_model())
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        table = app.query_one("TaskTable")
        cell = table.get_cell
        assert cell("serve", "name").plain == "⚙ serve"
        assert cell("llm", "name").plain == "llm"  # a profile task: no marker
        assert cell("serve", "program").plain == "⚙ pid 4242 python serve.py --model…"
        assert cell("finetune", "kps").plain == "880" and cell("serve", "kps").plain == "1520"
        assert cell("finetune", "held").plain == "3" and cell("serve", "held").plain == "–"
        assert cell("finetune", "ptx").plain == "PTX 35 %"
        assert cell("llm", "program").plain == "–" and cell("train", "ptx").plain == "–"
        assert cell("serve", "state").plain == "attached"
        assert cell("serve", "p99").plain == "7.20"  # its figures, like a profile task's
        table.move_cursor(row=table.get_row_index("finetune"))
        app.tick()
        await pilot.pause()
        detail = app.query_one("#detail", Static)
        text = str(detail.render())
        assert detail.display
        assert "torchrun --nproc-per-node 1 train.py --epochs 3" in text  # whole command
        assert "hbtui run pid 5150" in text and "gated" in text and "PTX 35 % sliceable" in text


async def test_detached_and_no_ptx_data_read_as_such() -> None:
    m = attached_model()
    st = attached_state_body()
    st["tasks"][3]["attached"] = dict(st["tasks"][3]["attached"], status="detached",
                                      sliceable_share=None, held=0)  # fmt: skip
    m.apply({"type": "state", "seq": 100, "engine_id": "sim-7f3a", "body": st}, T0)
    app = app_of(m)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        table = app.query_one("TaskTable")
        assert table.get_cell("finetune", "state").plain == "detached"
        assert table.get_cell("finetune", "ptx").plain == "—"


async def test_removing_a_program_is_refused_with_a_reason() -> None:
    app = app_of(attached_model())
    sent: list = []
    app.control = lambda *a, **k: sent.append(a)  # type: ignore[method-assign]
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one("TaskTable")
        table.move_cursor(row=table.get_row_index("serve"))
        await pilot.press("delete")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal) and not sent
        texts = [n.message for n in app._notifications]
        assert any("serve is a program under hbtui run (pid 4242)" in t for t in texts), texts


async def test_no_program_columns_without_programs() -> None:
    app = app_of(demo_model())
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.pause()
        assert "program" not in app.query_one("TaskTable").columns


def test_cut_marks_what_it_cuts() -> None:
    assert cut("abcdef", 4) == "abc…" and cut("abc", 4) == "abc"


async def _detail_line(task: str, **attached: object) -> str:
    """The detail line of ``task`` once its ``attached`` map has ``attached`` in it."""
    m = attached_model()
    st = attached_state_body()
    i = next(k for k, t in enumerate(st["tasks"]) if t["name"] == task)
    st["tasks"][i]["attached"] = dict(st["tasks"][i]["attached"], **attached)
    m.apply({"type": "state", "seq": 100, "engine_id": "sim-7f3a", "body": st}, T0)
    app = app_of(m)
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one("TaskTable")
        table.move_cursor(row=table.get_row_index(task))
        app.tick()
        await pilot.pause()
        return str(app.query_one("#detail", Static).render())


async def test_an_hp_program_s_harvest_cost_is_in_its_detail_line() -> None:
    text = await _detail_line("serve", harvest_cost=1.5, harvest_held_off=True,
                              lp_bubbles_per_request=12.25, lp_bubble_cost_us=-3.5,
                              mps=False)  # fmt: skip
    assert (
        "LP in its requests costs it +50.0 % (12.2 bubbles with LP a request, -4 µs "
        "each to its next kernel) — LP kept out of its requests"
    ) in text
    assert " · time-sliced (no MPS)" in text


async def test_an_hp_program_s_completion_write_period_is_in_its_detail_line() -> None:
    for every, want in ((1000, "coalesced to 1 ms"), (100, "coalesced to 100 µs"),
                        (1_000_000, "coalesced to 1000 ms"), (0, None)):  # fmt: skip
        text = await _detail_line("serve", completion_every_us=every)
        assert (
            f" · completion writes {want}" if want else " · a completion write per launch"
        ) in text
    for odd in (None, True):
        assert "completion write" not in await _detail_line("serve", completion_every_us=odd)


async def test_an_lp_program_confined_under_mps_says_so() -> None:
    text = await _detail_line("finetune", mps=True, sm_percent=50)
    assert " · under MPS on ≤ 50 % of the SMs" in text
