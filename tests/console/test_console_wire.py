"""The console's checks on telemetry (hbtui.console.wire) and what the model does with a bad
message: counts it, says which field, applies nothing of it, never raises."""

from __future__ import annotations

import math

import pytest
from console_fixtures import attached_state_body, slice_body, state_body, stats_body

from hbtui.console import wire
from hbtui.console.model import EngineModel
from hbtui.console.pane import StatusHeader, fmt_event


def env(kind: str, seq: int, body: object, eid: str = "e1") -> dict:
    return {"v": 1, "type": kind, "seq": seq, "ts_ns": 0, "engine_id": eid, "body": body}


def test_the_fixtures_and_an_attached_state_pass() -> None:
    wire.state(state_body())
    wire.state(attached_state_body())
    wire.stats(stats_body(3))
    wire.slice_(slice_body())


def _stats_task(**fields: object) -> dict:
    return {"tasks": {"llm": {"class": "hp", **fields}}}


# (kind, body, the field the error must name)
HOSTILE = [
    ("stats", _stats_task(p99_ms=1e308), "stats.tasks.llm.p99_ms"),
    ("stats", _stats_task(p99_ms=math.nan), "stats.tasks.llm.p99_ms"),
    ("stats", _stats_task(p50_ms=math.inf), "stats.tasks.llm.p50_ms"),
    ("stats", _stats_task(p99_ms=-1.0), "stats.tasks.llm.p99_ms"),
    ("stats", _stats_task(slo_attainment=1.5), "stats.tasks.llm.slo_attainment"),
    ("stats", _stats_task(requests=True), "stats.tasks.llm.requests"),
    ("stats", _stats_task(requests="9"), "stats.tasks.llm.requests"),
    ("stats", _stats_task(preemption_us=[1, 2]), "stats.tasks.llm.preemption_us"),
    ("stats", _stats_task(window={"p99_ms": "x"}), "stats.tasks.llm.window.p99_ms"),
    ("stats", {"tasks": [{"name": "llm"}]}, "stats.tasks"),
    ("stats", {"window": {"harvest_ratio": 1e300}}, "stats.window.harvest_ratio"),
    ("stats", {"telemetry": {"dropped": -5}}, "stats.telemetry.dropped"),
    ("stats", {"baseline_p99_ms": {"llm": "13"}}, "stats.baseline_p99_ms.llm"),
    ("state", {"tasks": {"x": {}}}, "state.tasks"),
    ("state", {"tasks": [{"class": "hp"}]}, "state.tasks[0]: no name"),
    ("state", {"tasks": [{"name": 5}]}, "state.tasks[0].name"),
    ("state", {"tasks": [{"name": "x" * 5000}]}, "state.tasks[0].name"),
    ("state", {"tasks": [{"name": "t", "priority": 2**64}]}, "state.tasks[0].priority"),
    ("state", {"tasks": [{"name": "t", "attached": [1]}]}, "state.tasks[0].attached"),
    ("state", {"tasks": [{"name": "t", "attached": {"cmd": "rm -rf"}}]}, "attached.cmd"),
    ("state", {"tasks": [{"name": "t", "attached": {"sliceable_share": 7}}]}, "sliceable_share"),
    ("state", {"profile": "default"}, "state.profile"),
    ("state", {"readonly": "yes"}, "state.readonly"),
    ("state", {"tasks": [{"name": str(i)} for i in range(5000)]}, "state.tasks"),
    ("slice", {"end_ns": [1, 2], "start_ns": [1]}, "slice.end_ns"),
    ("slice", {"end_ns": "x"}, "slice.end_ns"),
    ("event", {"kind": ["set_slice"]}, "event.kind"),
    ("gpu", {"util_pct": "high"}, "gpu.util_pct"),
    ("gpu", {"power_w": 1e308}, "gpu.power_w"),
]


@pytest.mark.parametrize(("kind", "body", "field"), HOSTILE)
def test_hostile_bodies_are_refused_naming_the_field(kind: str, body: dict, field: str) -> None:
    with pytest.raises(wire.BadMessage) as e:
        wire.BODIES[kind](body)
    assert field in str(e.value) and len(str(e.value)) < 200


@pytest.mark.parametrize(("kind", "body", "field"), HOSTILE)
def test_model_counts_a_bad_message_and_keeps_what_it_showed(
    kind: str, body: dict, field: str
) -> None:
    m = EngineModel()
    m.apply(env("state", 1, state_body()), 0.0)
    m.apply(env("stats", 2, stats_body(0)), 0.0)
    before = (dict(m.tasks), m.tasks["llm"].p99_ms, len(m.history["hp_p99_ms"]), m.profile)
    m.take_changes()
    m.apply(env(kind, 3, body), 0.0)
    assert m.bad_messages == 1 and field.split(":")[0] in m.last_bad
    assert m.take_changes().header  # the header shows the new count
    after = (dict(m.tasks), m.tasks["llm"].p99_ms, len(m.history["hp_p99_ms"]), m.profile)
    assert after == before
    assert m.received == 3 and m.gaps == 0  # it arrived (seq accounted), only not applied


@pytest.mark.parametrize(
    "envelope",
    [
        {"type": "stats", "seq": "3", "engine_id": "e1", "body": {}},
        {"type": "stats", "seq": 3, "engine_id": ["e1"], "body": {}},
        {"type": "stats", "seq": -1, "engine_id": "e1", "body": {}},
        {"type": ["stats"], "seq": 3, "engine_id": "e1", "body": {}},
        {"type": "stats", "seq": 3, "engine_id": "e1", "body": [1, 2]},
        {"type": "state", "seq": 3, "engine_id": "e1", "body": "x" * 10},
    ],
)
def test_bad_envelopes_are_counted(envelope: dict) -> None:
    m = EngineModel()
    m.apply(envelope, 0.0)
    assert m.bad_messages == 1 and m.last_bad


def test_unknown_types_and_fields_are_not_bad() -> None:
    """Forward compatibility: a newer engine's additions are ignored, not refused."""
    m = EngineModel()
    m.apply(env("future_type", 1, {"anything": [1, {"x": None}]}), 0.0)
    m.apply(env("stats", 2, dict(stats_body(0), new_field={"a": [1]})), 0.0)
    assert m.bad_messages == 0 and m.tasks["llm"].p99_ms is not None


def test_get_state_reply_is_checked_too() -> None:
    m = EngineModel()
    m.apply_state({"tasks": [{"name": "a", "class": "hp", "slo_ms": math.nan}]})  # type: ignore[typeddict-item]
    m.apply_state("not a map")  # type: ignore[arg-type]
    assert m.bad_messages == 2 and not m.tasks
    assert m.received == 0  # a control reply is not telemetry


def test_header_shows_the_bad_count_and_the_last_reason() -> None:
    m = EngineModel()
    m.apply(env("state", 1, state_body()), 1.0)
    m.apply(env("stats", 2, _stats_task(p99_ms=1e308)), 1.0)
    m.set_bad_frames(2)  # undecodable frames, from the link's subscriber
    shown: list = []
    hdr = StatusHeader()
    hdr.update = shown.append  # type: ignore[method-assign]  # no app needed to render
    hdr.show(m, 1.0, "", "")
    text = shown[-1].plain
    assert "bad messages: 3" in text and "stats.tasks.llm.p99_ms" in text


def test_event_lines_are_bounded_whatever_the_engine_sends() -> None:
    nested: dict = {"k": 1}
    for _ in range(50):
        nested = {"deeper": nested, "more": list(range(1000))}
    t = fmt_event({"kind": "x" * 500, "big": nested, "s": "y" * 100_000, "n": 2**62})
    assert len(t.plain) <= 400 and "…" in t.plain


def test_short_never_prints_a_huge_value() -> None:
    assert len(wire.short(10**4000)) < 40
    assert len(wire.short("z" * 10**6)) < 40
    assert wire.short(math.nan) == "nan"
