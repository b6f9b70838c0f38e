"""Unit tests of the wire helpers, the op table's validation, the rolling window and
endpoint checks (no sockets)."""

from __future__ import annotations

import math
from pathlib import Path

import msgpack
import pytest

from hbtui.engine import protocol as P
from hbtui.engine.scheduler import ControlError
from hbtui.engine.server import is_loopback, ops
from hbtui.engine.window import CoarseHist, Window, percentile


def _req(**kw: object) -> bytes:
    msg = {"v": 1, "id": "r1", "op": "ping", "args": {}}
    msg.update(kw)
    return msgpack.packb(msg)


def test_parse_request_accepts_a_good_frame() -> None:
    assert P.parse_request(_req(op="set_slice", args={"task": "t", "us": 5})) == (
        "r1",
        "set_slice",
        {"task": "t", "us": 5},
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1", P.BAD_REQUEST),  # never-used msgpack byte
        (b"\x91" * 3000, P.BAD_REQUEST),  # nesting deeper than the unpacker's stack
        (msgpack.packb([1, 2]), P.BAD_REQUEST),
        (msgpack.packb({1: 2}), P.BAD_REQUEST),  # non-string key (strict_map_key)
        (_req(v=2), P.VERSION_MISMATCH),
        (_req(v="1"), P.BAD_REQUEST),
        (_req(id=7), P.BAD_REQUEST),
        (_req(op="drop_tables"), P.UNKNOWN_OP),
        (_req(args=[1]), P.BAD_ARGS),
        (_req(extra=1), P.BAD_REQUEST),
        (b"\x00" * (P.MAX_CONTROL_BYTES + 1), P.BAD_REQUEST),
    ],
)
def test_parse_request_refuses_with_a_code(frame: bytes, code: str) -> None:
    with pytest.raises(P.ProtocolError) as e:
        P.parse_request(frame)
    assert e.value.code == code and e.value.message


def test_version_mismatch_keeps_the_request_id() -> None:
    with pytest.raises(P.ProtocolError) as e:
        P.parse_request(_req(v=3, id="abc"))
    assert e.value.request_id == "abc"  # type: ignore[attr-defined]
    assert "v3" in e.value.message and "v1" in e.value.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0, True, "5", None, 2e6])
def test_positive_refuses_out_of_range(bad: object) -> None:
    with pytest.raises(ControlError) as e:
        ops.positive(1e6)("set_slice", "us", bad)
    assert "set_slice" in str(e.value) and "'us'" in str(e.value)
    assert e.value.code in (P.BAD_ARGS, P.BAD_VALUE)


def test_integer_and_keys() -> None:
    assert ops.integer(0, 5)("op", "p", 3) == 3
    with pytest.raises(ControlError) as e:
        ops.integer(0, 5)("op", "p", 1.5)
    assert e.value.code == P.BAD_ARGS
    with pytest.raises(ControlError) as e:
        ops.integer(0, 5)("op", "p", 9)
    assert e.value.code == P.BAD_VALUE
    with pytest.raises(ControlError) as e:
        ops.validate(None, "reset_stats", ops.TABLE["reset_stats"], {"zzz": 2})  # type: ignore[arg-type]
    assert e.value.code == P.BAD_ARGS and "zzz" in str(e.value)


@pytest.mark.parametrize(
    ("op", "args", "code", "text"),
    [
        ("load_profile", {}, P.BAD_ARGS, "exactly one of 'path' or 'name'"),
        ("load_profile", {"path": "a", "name": "b"}, P.BAD_ARGS, "exactly one of"),
        ("load_profile", {"name": "../etc"}, P.BAD_VALUE, "'name' must match"),
        ("load_profile", {"path": 7}, P.BAD_ARGS, "'path' must be a string of 1-4096"),
        ("save_profile", {"path": "x.txt"}, P.BAD_VALUE, "must end in .toml"),
        ("set_policy", {"policy": "fifo"}, P.BAD_VALUE, "unknown policy 'fifo'"),
        ("set_policy", {}, P.BAD_ARGS, "missing argument 'policy'"),
        ("add_task", {"task": [1]}, P.BAD_ARGS, "'task' must be a map"),
        ("ping", {"x": 1}, P.BAD_ARGS, "unknown argument 'x'"),
    ],
)
def test_validation_names_op_and_field(op: str, args: dict, code: str, text: str) -> None:
    """One validation layer (no task needed for these): the scheduler's ControlError."""
    with pytest.raises(ControlError) as e:
        ops.validate(None, op, ops.TABLE[op], args)  # type: ignore[arg-type]
    assert e.value.code == code and str(e.value).startswith(f"{op}: ") and text in str(e.value)


def test_validation_converts_values() -> None:
    c = ops.validate(None, "save_profile", ops.TABLE["save_profile"], {"path": "/t/p.toml"})  # type: ignore[arg-type]
    assert c.args == {"path": Path("/t/p.toml")} and c.task is None


def test_op_table_matches_the_wire_declaration() -> None:
    assert set(ops.TABLE) == P.OPS and "list_profiles" in P.READ_OPS
    assert {n for n, s in ops.TABLE.items() if s.mutating} == P.MUTATING_OPS
    for name, spec in ops.TABLE.items():
        assert not set(spec.required) & set(spec.optional), name
        if spec.one_of is not None:
            assert set(spec.one_of) <= set(spec.optional), name
        if spec.task is not None:
            assert "task" in spec.required, name


def test_columnar_fields_are_the_declared_bodies() -> None:
    assert P.SLICE_FIELDS == tuple(P.SliceBody.__annotations__)
    assert P.SLICE_FIELDS[:3] == ("task", "kernel", "cls")  # wire column order
    assert P.REQUEST_FIELDS == ("task", "id", "arrival_ns", "latency_ns", "slo_ok")
    assert P.EventBody.__required_keys__ == {"kind", "level"}
    assert "class" in P.TaskState.__required_keys__


def test_envelope_round_trip() -> None:
    env = P.envelope("stats", 5, 123, "e1", {"x": [1, 2]})
    assert P.decode(P.encode(env)) == env
    assert set(env) == {"v", "type", "seq", "ts_ns", "engine_id", "body"}


@pytest.mark.parametrize(
    ("ep", "loop"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/x", True),
        ("tcp://*:5555", False),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://192.168.1.5:5555", False),
        ("tcp://eth0:5555", False),
        ("garbage", False),
    ],
)
def test_is_loopback(ep: str, loop: bool) -> None:
    assert is_loopback(ep) is loop


def test_coarse_percentiles_are_close() -> None:
    h = CoarseHist()
    for v in range(1, 10_001):
        h.add(v * 1000)
    p50, p99 = percentile([h], 50), percentile([h], 99)
    assert p50 == pytest.approx(5_000_000, rel=0.05)
    assert p99 == pytest.approx(9_900_000, rel=0.05)
    assert percentile([CoarseHist()], 50) is None


def test_window_forgets_old_slots() -> None:
    w = Window(slots=4, slot_ns=1000)
    mark = {"busy": 0, "hp": 0, "lpu": 0, "blocks": {"lp": 0}, "slices": {"lp": 0}}
    w.clear(0, mark)
    w.on_request("hp", 5_000_000, True)
    w.on_request("hp", 7_000_000, False)
    f = w.figures(500, mark, ["hp"], ["lp"], {})
    assert f["tasks"]["hp"]["requests"] == 2 and f["tasks"]["hp"]["slo_attainment"] == 0.5
    for t in range(1000, 6001, 1000):  # advance past the whole window
        w.advance(t, lambda: mark)
    f = w.figures(6000, mark, ["hp"], ["lp"], {})
    assert f["tasks"]["hp"]["requests"] == 0 and f["tasks"]["hp"]["p99_ms"] is None


def test_window_lp_rate_from_marks() -> None:
    w = Window(slots=4, slot_ns=1_000_000_000)
    m0 = {"busy": 0, "hp": 0, "lpu": 0, "blocks": {"lp": 0}, "slices": {"lp": 0}}
    w.clear(0, m0)
    m1 = {
        "busy": 1_500_000_000,
        "hp": 500_000_000,
        "lpu": 1_500_000_000,
        "blocks": {"lp": 2000},
        "slices": {"lp": 20},
    }
    f = w.figures(2_000_000_000, m1, [], ["lp"], {"lp": 2000.0})
    assert f["tasks"]["lp"]["work_per_s"] == pytest.approx(1000)
    assert f["tasks"]["lp"]["throughput_norm"] == pytest.approx(0.5)
    assert f["gpu_busy"] == pytest.approx(0.75)
    assert f["harvest_ratio"] == pytest.approx(1.0 / 1.5)


def test_slice_and_slo_ranges_keep_the_arithmetic_finite() -> None:
    """A 0.0009-µs slice cap divided the policy by zero waves; 1e305 overflowed int()."""
    from hbtui.engine.server.ops import _SLICE, _SLO

    cases = [
        (_SLICE, "us", 0.0009, 1.0),
        (_SLICE, "us", 1e305, 1e6),
        (_SLO, "ms", 0.001, 0.01),
        (_SLO, "factor", 0.01, 0.1),
    ]
    for table, key, bad, good in cases:
        with pytest.raises(ControlError, match=key):
            table[key]("set_x", key, bad)
        assert table[key]("set_x", key, good) == good
