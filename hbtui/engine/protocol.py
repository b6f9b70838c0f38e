"""Wire protocol shared by the engine server and its clients (spec: docs/protocol.md).

Everything on the wire is msgpack with string map keys (``strict_map_key``), decoded with
``raw=False``; never pickle. This module holds the constants, the encode/decode helpers
and request parsing, so the server and the clients cannot disagree about them.

Versioning: ``v`` is the protocol *major* version. The reply shape
``{"v", "id", "ok", "error": {"code", "message"}}`` is frozen across majors, so a client
of another major always gets a readable ``version_mismatch`` error, not garbage.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

PROTOCOL_VERSION = 1  # major: bumped only for incompatible changes
PROTOCOL_MINOR = 1  # additive changes (new fields, ops, types); 1: state.pci_bus_id

DEFAULT_PUB = "tcp://127.0.0.1:5555"
DEFAULT_CTL = "tcp://127.0.0.1:5556"

# Control frames larger than this are refused by ZeroMQ itself (ZMQ_MAXMSGSIZE on the
# ROUTER): the offending peer is disconnected before the engine sees a byte.
MAX_CONTROL_BYTES = 64 * 1024
MAX_SLICE_BATCH = 4096  # records per `slice` message; bigger flushes are split
MAX_REQUEST_BATCH = 4096  # records per `request` message

TYPES = ("slice", "request", "stats", "gpu", "state", "event")
SLICE_FIELDS = (
    "task", "kernel", "cls", "start_block", "end_block", "issue_ns", "start_ns", "end_ns",
)  # fmt: skip
REQUEST_FIELDS = ("task", "id", "arrival_ns", "latency_ns", "slo_ok")

READ_OPS = frozenset({"ping", "get_state"})
MUTATING_OPS = frozenset(
    {
        "set_priority", "set_slice", "set_policy", "set_slo", "pause_task", "resume_task",
        "add_task", "remove_task", "load_profile", "save_profile", "reset_stats",
    }
)  # fmt: skip
OPS = READ_OPS | MUTATING_OPS

# Error codes (machine-readable; messages are for humans and name the op and field).
BAD_REQUEST = "bad_request"  # undecodable frame, not a map, missing/mistyped v/id/op/args
VERSION_MISMATCH = "version_mismatch"
UNKNOWN_OP = "unknown_op"
BAD_ARGS = "bad_args"  # missing, unknown or mistyped argument
BAD_VALUE = "bad_value"  # well-typed but out of range (negative slice, NaN SLO ...)
UNKNOWN_TASK = "unknown_task"
READONLY = "readonly"
BUSY = "busy"  # engine calibrating: only read ops are served
PROFILE_ERROR = "profile_error"
INTERNAL = "internal"


class ProtocolError(ValueError):
    """A request the engine refuses; ``code`` is one of the codes above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode(data: bytes, max_size: int | None = None) -> Any:
    """Decode one msgpack object; any malformation raises ``ProtocolError(bad_request)``."""
    if max_size is not None and len(data) > max_size:
        raise ProtocolError(BAD_REQUEST, f"frame of {len(data)} bytes exceeds {max_size}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # ExtraData, FormatError, StackError, UnicodeDecodeError, ...
        raise ProtocolError(
            BAD_REQUEST, f"undecodable msgpack frame ({type(e).__name__})"
        ) from None


def envelope(kind: str, seq: int, ts_ns: int, engine_id: str, body: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "type": kind, "seq": seq, "ts_ns": ts_ns,
            "engine_id": engine_id, "body": body}  # fmt: skip


def request(req_id: str, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": req_id, "op": op, "args": args or {}}


def reply_ok(req_id: str | None, result: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result}


def reply_err(req_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": False,
            "error": {"code": code, "message": message}}  # fmt: skip


def parse_request(data: bytes) -> tuple[str, str, dict[str, Any]]:
    """Decode and check a control frame → (id, op, args).

    Raises ProtocolError; its ``request_id`` attribute carries the id when one was
    readable, so the error reply can still be matched by the client.
    """
    msg = decode(data, MAX_CONTROL_BYTES)
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_REQUEST, f"request must be a map, got {type(msg).__name__}")
    rid = msg.get("id")
    try:
        if not isinstance(rid, str) or not 0 < len(rid) <= 128:
            raise ProtocolError(BAD_REQUEST, "request field 'id' must be a string of 1-128 chars")
        v = msg.get("v")
        if isinstance(v, bool) or not isinstance(v, int):
            raise ProtocolError(BAD_REQUEST, "request field 'v' must be an integer")
        if v != PROTOCOL_VERSION:
            raise ProtocolError(
                VERSION_MISMATCH,
                f"client speaks protocol v{v}, this engine speaks v{PROTOCOL_VERSION}",
            )
        op = msg.get("op")
        if not isinstance(op, str):
            raise ProtocolError(BAD_REQUEST, "request field 'op' must be a string")
        if op not in OPS:
            raise ProtocolError(UNKNOWN_OP, f"unknown op {op[:64]!r}")
        args = msg.get("args", {})
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise ProtocolError(BAD_ARGS, f"{op}: 'args' must be a map with string keys")
        extra = set(msg) - {"v", "id", "op", "args"}
        if extra:
            raise ProtocolError(BAD_REQUEST, f"{op}: unknown request field {sorted(extra)[0]!r}")
    except ProtocolError as e:
        e.request_id = rid if isinstance(rid, str) and len(rid) <= 128 else None  # type: ignore[attr-defined]
        raise
    return rid, op, args


# -- argument checkers (raise ProtocolError naming op and field) -----------------------
def check_keys(op: str, args: dict[str, Any], required: set[str], optional: set[str]) -> None:
    for k in required:
        if k not in args:
            raise ProtocolError(BAD_ARGS, f"{op}: missing argument {k!r}")
    for k in args:
        if k not in required and k not in optional:
            raise ProtocolError(BAD_ARGS, f"{op}: unknown argument {k[:64]!r}")


def arg_str(op: str, args: dict[str, Any], key: str, max_len: int = 256) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not 0 < len(v) <= max_len:
        raise ProtocolError(BAD_ARGS, f"{op}: {key!r} must be a string of 1-{max_len} chars")
    return v


def arg_int(op: str, args: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(BAD_ARGS, f"{op}: {key!r} must be an integer, got {_show(v)}")
    if not lo <= v <= hi:
        raise ProtocolError(BAD_VALUE, f"{op}: {key!r} must be in {lo}..{hi}, got {v}")
    return v


def arg_pos(op: str, args: dict[str, Any], key: str, hi: float) -> float:
    """A finite number in (0, hi]."""
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProtocolError(BAD_ARGS, f"{op}: {key!r} must be a number, got {_show(v)}")
    if not math.isfinite(v) or not 0 < v <= hi:
        raise ProtocolError(BAD_VALUE, f"{op}: {key!r} must be finite and in (0, {hi:g}], got {v}")
    return float(v)


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."
