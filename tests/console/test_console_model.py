"""Unit tests of the console's data model (pure Python, no Textual, no engine)."""

from __future__ import annotations

import pytest
from console_fixtures import slice_body, state_body, stats_body

from hbtui.console.limits import parse_priority, parse_slice, parse_slo
from hbtui.console.model import DISCONNECTED, LIVE, EngineModel
from hbtui.engine import protocol as P


def env(kind: str, seq: int, body: dict, eid: str = "e1") -> dict:
    return {"v": 1, "type": kind, "seq": seq, "ts_ns": 0, "engine_id": eid, "body": body}


def test_state_creates_rows_and_changes_are_coalesced() -> None:
    m = EngineModel()
    m.apply(env("state", 1, state_body()), 1.0)
    ch = m.take_changes()
    assert ch.added == ["llm", "chat", "train", "batch"]
    assert ch.header and m.backend == "sim" and m.profile == "default"
    # The same snapshot again changes nothing: the UI has nothing to redraw.
    m.apply(env("state", 2, state_body()), 1.1)
    assert not m.take_changes().rows
    # 100 stats messages between two ticks: one change set, the latest values.
    for i in range(100):
        m.apply(env("stats", 3 + i, stats_body(i)), 2.0)
    ch = m.take_changes()
    assert ch.rows == {"llm", "chat", "train", "batch"} and ch.charts
    assert m.tasks["llm"].p99_ms == pytest.approx(stats_body(99)["tasks"]["llm"]["p99_ms"])
    assert len(m.history["attainment"]) == 100


def test_state_changes_mark_only_that_row() -> None:
    m = EngineModel()
    m.apply(env("state", 1, state_body()), 1.0)
    m.take_changes()
    st = state_body()
    st["tasks"][2]["slice_us"] = 80.0
    st["profile"] = {"name": "default", "path": "/x/default.toml"}
    m.apply(env("state", 2, st), 1.0)
    ch = m.take_changes()
    assert ch.rows == {"train"}
    assert m.tasks["train"].slice_text() == "80 µs"
    st["tasks"].pop()  # a task removed by the engine disappears from the table
    m.apply(env("state", 3, st), 1.0)
    assert m.take_changes().removed == ["batch"] and "batch" not in m.tasks


def test_seq_gaps_count_drops_and_engine_restart_resets() -> None:
    m = EngineModel()
    for seq in (1, 2, 5, 6, 10):
        m.apply(env("event", seq, {"kind": "x"}), 0.0)
    assert m.gaps == 2 + 3
    assert m.published() == 10 and m.received == 5
    m.apply(env("event", 1, {"kind": "started"}, eid="e2"), 0.0)  # restarted engine
    assert m.engine_id == "e2" and m.gaps == 5 and m.published() == 1


def test_window_figures_win_and_engine_drops_are_summed() -> None:
    m = EngineModel()
    body = stats_body(0)
    body["tasks"]["llm"]["window"] = {"p99_ms": 9.9, "slo_attainment": 0.5}
    body["window"] = {"harvest_ratio": 0.25}
    body["telemetry"] = {"sent": 10, "dropped": 3, "dropped_records": 4}
    m.apply(env("stats", 1, body), 0.0)
    assert m.tasks["llm"].p99_ms == 9.9 and m.tasks["llm"].attainment == 0.5
    assert m.harvest_ratio == 0.25 and m.engine_dropped == 7


def test_connection_age_and_pending() -> None:
    m = EngineModel()
    assert m.age(5.0) is None
    m.apply(env("state", 1, state_body()), 5.0)
    assert m.connection == LIVE and m.age(7.5) == 2.5
    m.set_connection(DISCONNECTED)
    assert m.take_changes().header
    m.set_pending("train", "slice → 80µs")
    assert m.tasks["train"].state_text().startswith("⧗")
    m.set_pending("train", "")
    assert m.tasks["train"].state_text() == "running"


def test_paused_charts_keep_table_live() -> None:
    m = EngineModel()
    m.charts_paused = True
    m.apply(env("stats", 1, stats_body(0)), 0.0)
    m.apply(env("slice", 2, slice_body()), 0.0)
    assert not m.history["attainment"] and not m.slices
    assert m.tasks["llm"].p99_ms is not None


def test_timeline_busy_fractions() -> None:
    m = EngineModel()
    m.apply(env("slice", 1, slice_body()), 0.0)
    hp, lp = m.timeline(100, 2_000_000)
    assert len(hp) == len(lp) == 100
    assert all(0.0 <= f <= 1.0 for f in hp + lp)
    # HP kernels (90 µs of every ~255 µs) and LP slices (100 µs) fill the strip in turns.
    assert 0.25 < sum(hp) / 100 < 0.45 and 0.3 < sum(lp) / 100 < 0.5
    assert not any(h > 0.9 and lp_ > 0.9 for h, lp_ in zip(hp, lp, strict=True))


@pytest.mark.parametrize(
    ("text", "want"),
    [("50", {"us": 50.0}), ("12.5us", {"us": 12.5}), ("80 µs", {"us": 80.0}),
     ("264b", {"blocks": 264}), ("64 blocks", {"blocks": 64})],
)  # fmt: skip
def test_parse_slice(text: str, want: dict) -> None:
    assert parse_slice(text) == want


@pytest.mark.parametrize("text", ["", "-5", "0", "1.5b", "fast", "5s"])
def test_parse_slice_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="slice"):
        parse_slice(text)


def test_parse_slo_and_priority() -> None:
    assert parse_slo("5") == {"ms": 5.0} and parse_slo("2.5ms") == {"ms": 2.5}
    assert parse_slo("1.2x") == {"factor": 1.2}
    assert parse_priority(" 7 ") == {"priority": 7}
    with pytest.raises(ValueError):
        parse_slo("0")
    with pytest.raises(ValueError):
        parse_priority("high")


def test_hp_issue_is_tracked_and_shown_for_a_gpu_issuing_hp_from_python() -> None:
    from hbtui.console.pane import StatusHeader

    m = EngineModel()
    body = dict(state_body(), backend="cuda", device="NVIDIA H100 80GB HBM3", hp_issue="python")
    m.apply(env("state", 1, body), 1.0)
    assert m.hp_issue == "python" and m.take_changes().header
    shown: list = []
    hdr = StatusHeader()
    hdr.update = shown.append  # type: ignore[method-assign]  # no app needed to render
    hdr.show(m, 1.0, "", "")
    text = shown[0].plain
    assert "HP issued from Python" in text and "H100" in text
    m.apply(env("state", 2, dict(body, hp_issue="native")), 1.1)
    assert m.take_changes().header
    hdr.show(m, 1.1, "", "")
    assert "HP issued from Python" not in shown[-1].plain


def test_header_names_which_gpu_of_the_box() -> None:
    """One engine per GPU: identical GPUs are told apart by index and PCI bus id."""
    from hbtui.console.pane import StatusHeader

    m = EngineModel()
    body = dict(state_body(), backend="cuda", device="NVIDIA H200", hp_issue="native")
    m.apply(env("state", 1, dict(body, device_index=1, pci_bus_id="00000000:2A:00.0")), 1.0)
    assert (m.device_index, m.pci_bus_id) == (1, "00000000:2A:00.0")
    assert m.take_changes().header
    shown: list = []
    hdr = StatusHeader()
    hdr.update = shown.append  # type: ignore[method-assign]
    hdr.show(m, 1.0, "", "")
    assert "NVIDIA H200 #1 (00000000:2A:00.0)" in shown[-1].plain
    # a bad index makes the message bad: counted, nothing of it applied
    m.apply(env("state", 2, dict(body, device_index=True)), 1.1)
    assert (m.device_index, m.pci_bus_id) == (1, "00000000:2A:00.0")
    assert m.bad_messages == 1 and "state.device_index" in m.last_bad
    # an older engine (protocol minor 0) sends neither
    m.apply(env("state", 3, body), 1.2)
    assert (m.device_index, m.pci_bus_id) == (None, "") and m.take_changes().header
    hdr.show(m, 1.2, "", "")
    assert "#" not in shown[-1].plain.split("\n")[0]


def _declared(td: type) -> set[str]:
    return set(td.__required_keys__ | td.__optional_keys__)  # type: ignore[attr-defined]


def test_fixtures_use_only_declared_names() -> None:
    st, stats = state_body(), stats_body(0)
    assert set(st) <= _declared(P.StateBody)
    assert all(set(t) <= _declared(P.TaskState) for t in st["tasks"])
    assert set(stats) <= _declared(P.StatsBody)
    assert all(set(t) <= _declared(P.TaskStats) for t in stats["tasks"].values())
    assert tuple(slice_body()) == P.SLICE_FIELDS


def test_alias_names_are_not_read() -> None:
    """The console reads exactly the declared names; old alternatives are ignored, and a
    declared name with another shape (a bare-string profile, tasks as a map) makes the
    message bad: counted, nothing of it applied."""
    m = EngineModel()
    st = state_body()
    st["tasks"] = [dict(t) for t in st["tasks"]]
    st["tasks"][0]["cls"] = st["tasks"][0].pop("class")
    m.apply(env("state", 1, st), 0.0)
    assert m.tasks["llm"].cls == "?" and m.tasks["chat"].cls == "hp" and m.bad_messages == 0
    m.apply(env("state", 2, dict(st, profile="other")), 0.0)  # not {"name", "path"}
    assert m.profile == "default" and m.bad_messages == 1 and "state.profile" in m.last_bad
    m.apply(env("state", 3, dict(st, tasks={"x": {"class": "lp"}})), 0.0)  # a map
    assert "x" not in m.tasks and "llm" in m.tasks and m.bad_messages == 2
    body = {
        "tasks": {"chat": {"class": "hp", "attainment": 0.5, "preemption_p99_us": 9.0}},
        "harvest_ratio": 0.4,  # cumulative: the console shows window.harvest_ratio
        "dropped": 5,  # not telemetry.dropped
    }
    m.apply(env("stats", 4, body), 0.0)
    chat = m.tasks["chat"]
    assert chat.attainment is None and chat.preempt_p99_us is None
    assert m.harvest_ratio is None and m.engine_dropped == 0 and m.bad_messages == 2
    m.apply(env("stats", 5, {"tasks": [{"name": "chat", "class": "lp"}]}), 0.0)  # a list
    assert m.tasks["chat"].cls == "hp" and m.bad_messages == 3


BAD = [
    ("state", {"tasks": [None, 3, {"name": 5}, {"name": "t", "class": 7, "priority": "x"}]}),
    ("state", {"profile": [1], "device_index": True, "pci_bus_id": 3, "engine_id": 9}),
    ("state", {"tasks": "all"}),
    ("stats", {"tasks": {"t": {"window": [1], "preemption_us": 5, "requests": "9"}}}),
    ("stats", {"tasks": {7: {}}, "window": 3, "telemetry": {"dropped": "x"}}),
    ("stats", {"tasks": {"h": {"class": "hp", "slo_attainment": float("nan")}}}),
    ("slice", {"end_ns": [5, 6], "start_ns": "x", "cls": ["hp"]}),
    ("slice", {"end_ns": [10**12, 10**12 + 5], "start_ns": [float("nan"), "a"], "cls": [1, 2]}),
    ("slice", {"end_ns": "x"}),
    ("event", {"kind": "set_policy", "policy": 3}),
    ("gpu", {"util_pct": "high"}),
    ("request", {"task": 1}),
    ("nonsense", {"a": 1}),
]


@pytest.mark.parametrize(("kind", "body"), BAD)
def test_bad_messages_never_raise(kind: str, body: dict) -> None:
    m = EngineModel()
    m.apply(env("state", 1, state_body()), 0.0)
    m.apply(env(kind, 2, body), 0.0)
    m.apply({"type": kind, "seq": "3", "body": [body]}, 0.0)
    m.apply_state(body)  # type: ignore[arg-type]
    m.timeline(50, 1_000_000)
    m.take_changes()
    assert "llm" in m.tasks or kind == "state"
