"""Unit tests of the wire helpers, the rolling window and endpoint checks (no sockets)."""

from __future__ import annotations

import math

import msgpack
import pytest

from hbtui.engine import protocol as P
from hbtui.engine.server import is_loopback
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
def test_arg_pos_refuses_out_of_range(bad: object) -> None:
    with pytest.raises(P.ProtocolError) as e:
        P.arg_pos("set_slice", {"us": bad}, "us", 1e6)
    assert "set_slice" in e.value.message and "'us'" in e.value.message


def test_arg_int_and_keys() -> None:
    assert P.arg_int("op", {"p": 3}, "p", 0, 5) == 3
    with pytest.raises(P.ProtocolError) as e:
        P.arg_int("op", {"p": 1.5}, "p", 0, 5)
    assert e.value.code == P.BAD_ARGS
    with pytest.raises(P.ProtocolError) as e:
        P.arg_int("op", {"p": 9}, "p", 0, 5)
    assert e.value.code == P.BAD_VALUE
    with pytest.raises(P.ProtocolError) as e:
        P.check_keys("op", {"a": 1, "zzz": 2}, {"a"}, set())
    assert "zzz" in e.value.message


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
