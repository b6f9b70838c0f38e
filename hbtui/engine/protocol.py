"""Wire protocol shared by the engine server and its clients (spec: docs/protocol.md).

Everything on the wire is msgpack with string map keys (``strict_map_key``), decoded with
``raw=False``; never pickle. This module holds the constants, the encode/decode helpers
and request parsing, so the server and the clients cannot disagree about them.

Versioning: ``v`` is the protocol *major* version. The reply shape
``{"v", "id", "ok", "error": {"code", "message"}}`` is frozen across majors, so a client
of another major always gets a readable ``version_mismatch`` error, not garbage.
"""

# No `from __future__ import annotations`: the TypedDicts below keep real annotations, so
# their required/optional keys are right at run time (tests check bodies against them).
from typing import Any, NotRequired, TypedDict

import msgpack

PROTOCOL_VERSION = 1  # major: bumped only for incompatible changes
PROTOCOL_MINOR = 4  # additive changes (new fields, ops, types); 1: state.pci_bus_id,
# 2: the list_profiles op, 3: attach/detach (hbtui run) and attached tasks in state/stats,
# 4: ping's optional subscriber/received/gaps and stats.telemetry.subscriber_* (drops)

DEFAULT_PUB = "tcp://127.0.0.1:5555"
DEFAULT_CTL = "tcp://127.0.0.1:5556"

# Control frames larger than this are refused by ZeroMQ itself (ZMQ_MAXMSGSIZE on the
# ROUTER): the offending peer is disconnected before the engine sees a byte.
MAX_CONTROL_BYTES = 64 * 1024
# Telemetry frames larger than this are refused by a subscriber's ZeroMQ socket (the
# engine's largest, a full slice batch of 4096 rows with 64-char names, is ~1.5 MB).
MAX_TELEMETRY_BYTES = 16 * 1024 * 1024
MAX_SLICE_BATCH = 4096  # records per `slice` message; bigger flushes are split
MAX_REQUEST_BATCH = 4096  # records per `request` message

TYPES = ("slice", "request", "stats", "gpu", "state", "event")

READ_OPS = frozenset({"ping", "get_state", "list_profiles"})
MUTATING_OPS = frozenset(
    {
        "set_priority", "set_slice", "set_policy", "set_slo", "pause_task", "resume_task",
        "add_task", "remove_task", "load_profile", "save_profile", "reset_stats",
        "attach", "detach",
    }
)  # fmt: skip
OPS = READ_OPS | MUTATING_OPS

# -- message bodies ---------------------------------------------------------------------
# Each telemetry type's ``body`` and each op's ``result``, declared once: the engine builds
# them, the console parses exactly these names. Plain dicts on the wire (TypedDicts are a
# static declaration only); unknown fields must be ignored by readers (minor versions).


class SliceBody(TypedDict):
    """``slice``: completed launches, columnar; every column has the same length."""

    task: list[str]
    kernel: list[str]
    cls: list[str]  # "hp" | "lp"
    start_block: list[int]
    end_block: list[int]
    issue_ns: list[int]
    start_ns: list[int]
    end_ns: list[int]


class RequestBody(TypedDict):
    """``request``: completed HP requests, columnar."""

    task: list[str]
    id: list[int]
    arrival_ns: list[int]
    latency_ns: list[int]
    slo_ok: list[bool | None]


SLICE_FIELDS = tuple(SliceBody.__annotations__)  # column order on the wire
REQUEST_FIELDS = tuple(RequestBody.__annotations__)


class EventBody(TypedDict):
    """``event``; carries the kind's own fields too (an op's event: its result fields)."""

    kind: str
    level: str  # "info" | "warning" | "error"
    request_id: NotRequired[str]  # the control request that caused it
    message: NotRequired[str]  # warnings and errors


class GpuBody(TypedDict, total=False):
    """``gpu``: the backend's NVML sample as is (absent fields: not readable there)."""

    name: str
    util_pct: int | None
    mem_util_pct: int | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    power_w: float | None
    mem_used_mb: float | None
    mem_total_mb: float | None
    temp_c: int | None
    nvml_ms: float


class ProfileRef(TypedDict):
    name: str
    path: str


# "class" is a Python keyword, hence the functional form.
TaskState = TypedDict(
    "TaskState",
    {
        "name": str,
        "class": str,  # "hp" | "lp"
        "priority": int,
        "paused": bool,
        "slo_ms": NotRequired[float | None],  # hp
        "slo_factor": NotRequired[float | None],  # hp
        "slo_effective_ms": NotRequired[float | None],  # hp
        "slice_us": NotRequired[float | None],  # lp
        "slice_blocks": NotRequired[int | None],  # lp
        "slice_default_us": NotRequired[float],  # lp, once the scheduler runs
        "attached": NotRequired["AttachedInfo"],  # a program under `hbtui run`
    },
)


class AttachedInfo(TypedDict):
    """What an operator of a real program needs beside the task's own fields."""

    pid: int  # the program's pid (0 until its first CUDA call); launcher_pid: hbtui run
    launcher_pid: int
    cmd: list[str]
    shm: str
    status: str  # "attached" | "detached"
    gated: bool  # lp: launches wait for grants (False: spatial or detached)
    ungated: bool  # lp: the program stopped waiting (heartbeat lost)
    kernels_per_s: float  # launches per second over the last stats period
    launches: int
    held: int  # lp: launches waiting for a grant now
    waited: NotRequired[list[float] | None]  # lp: launches that waited for a grant, their s
    sliceable_share: float | None  # lp: GPU time in kernels the slicer sliced / all (None: no data)
    sliceable_kernels: NotRequired[int]  # lp: kernel handles the slicer sliced
    sliced_share: NotRequired[float | None]  # lp: GPU time that ran as slices / all
    slicing: NotRequired[bool]  # lp: sliceable launches run as slices now (hummingbird)
    modules: NotRequired[dict[str, int]]  # lp: modules by slicer status (ok, missing, pending, ...)
    requests_from: str  # hp: "markers" (explicit) or "bursts" (inferred, idle_ms)
    # hp: its pace with LP inside its requests over without (None: not measured yet), and
    # whether LP is kept out of them for costing more than --harvest-guard
    harvest_cost: NotRequired[float | None]
    harvest_held_off: NotRequired[bool]
    lp_bubbles_per_request: NotRequired[float | None]  # hp: its bubbles LP entered, a request
    predicted_bubbles: NotRequired[int]  # hp: bubbles predicted (--bubble-quiet-us)
    # hp: how much longer its first kernel after a bubble took when LP ran in the bubble
    # (a difference of medians: may be negative)
    lp_bubble_cost_us: NotRequired[float | None]
    # hp: the period of its GPU completion writes in force: the engine's ask (100 us while
    # an LP program follows it, 1000 otherwise) or the program's own HBTUI_COMP_EVERY_US
    # (0-1000000; 0: a write per launch); None: not set yet
    completion_every_us: NotRequired[int | None]
    idle_ms: float
    mps: bool  # an MPS daemon serves the program (else the GPU time-slices contexts)
    # lp under MPS: the share of the SMs it may use (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE;
    # None: all of them)
    sm_percent: NotRequired[int | None]


class KernelState(TypedDict):
    grid: list[int]
    block: list[int]
    blocks_per_sm: int
    block_us: float
    sliceable: bool
    wave_blocks: NotRequired[int]  # learned, once the kernel ran
    wave_us: NotRequired[float]


class StateBody(TypedDict):
    """``state`` and the ``get_state`` result."""

    engine_id: str
    version: str
    protocol: int
    protocol_minor: int
    backend: str
    device: str
    device_index: int
    pci_bus_id: str | None
    hp_issue: str
    paced: bool
    policy: str
    readonly: bool
    phase: str  # "calibrating" | "running"
    profile: ProfileRef
    tasks: list[TaskState]
    kernels: dict[str, KernelState]
    policies: list[str]
    baseline_p99_ms: dict[str, float]
    baseline_attainment: NotRequired[dict[str, float]]  # share of exclusive requests in SLO
    lp_alone: dict[str, float]
    backend_now_ns: int
    uptime_s: float


class Percentiles(TypedDict):
    p50: float | None
    p99: float | None
    max: NotRequired[float]  # cumulative figures only


class TaskWindow(TypedDict, total=False):
    """A task's figures over the rolling window: hp or lp fields."""

    requests: int
    slo_attainment: float | None
    p50_ms: float | None
    p99_ms: float | None
    preemption_us: Percentiles
    work_per_s: float | None
    throughput_norm: float | None
    slices_per_s: float | None


TaskStats = TypedDict(
    "TaskStats",
    {
        "name": str,
        "class": str,
        "requests": NotRequired[int],  # hp
        "slo_ms": NotRequired[float | None],
        "slo_attainment": NotRequired[float | None],
        "p50_ms": NotRequired[float],
        "p99_ms": NotRequired[float],
        "preemption_us": NotRequired[Percentiles],
        "work_per_s": NotRequired[float],  # lp
        "throughput_norm": NotRequired[float | None],
        "slices": NotRequired[int],
        "window": NotRequired[TaskWindow],
        "attached": NotRequired[AttachedInfo],  # a program under `hbtui run`
    },
)


class WindowFigures(TypedDict):
    span_s: float
    gpu_busy: float | None
    harvest_ratio: float | None


class TelemetryCounters(TypedDict):
    sent: int
    dropped: int  # sends ZeroMQ refused (a subscriber's queue full) + messages not encodable
    encode_errors: int  # messages not encodable (also in dropped); protocol minor 3
    dropped_records: int
    control_received: int
    control_errors: int
    control_dropped: int
    # per-subscriber drops, as subscribers report them with ping (protocol minor 4)
    subscribers_reporting: int
    subscriber_received: int
    subscriber_gaps: int


class LoopFigures(TypedDict):
    lag_ms: float
    lag_max_ms: float
    tick_gap_max_ms: float
    decisions_per_s: float


class StatsBody(TypedDict):
    """``stats``: cumulative since the last reset, plus the rolling ``window``."""

    phase: str
    policy: str
    wall_s: float
    gpu_busy: float
    harvest_ratio: float
    bubble_s: float
    decisions: int
    tasks: dict[str, TaskStats]
    window: WindowFigures
    baseline_p99_ms: dict[str, float]
    baseline_attainment: NotRequired[dict[str, float]]  # share of exclusive requests in SLO
    lp_alone: dict[str, float]
    telemetry: TelemetryCounters
    loop: LoopFigures


# -- control results (the reply's ``result``, per op) ------------------------------------
class PingResult(TypedDict):
    engine_version: str
    protocol: int
    protocol_minor: int
    engine_id: str
    phase: str
    readonly: bool


class ProfileEntry(TypedDict):
    name: str
    origin: str  # "user" | "dir" (hbtui engine --profile-dir) | "shipped"
    path: str  # for display: the home directory shortened to "~"


class ListProfilesResult(TypedDict):
    profiles: list[ProfileEntry]


class SetPriorityResult(TypedDict):
    task: str
    priority: int


class SetSliceResult(TypedDict):
    task: str
    us: float | None
    blocks: int | None


class SetPolicyResult(TypedDict):
    policy: str


class SetSloResult(TypedDict):
    task: str
    slo_ms: float | None
    slo_factor: float | None


class PausedResult(TypedDict):
    """``pause_task`` and ``resume_task``."""

    task: str
    paused: bool


class AddTaskResult(TypedDict):
    task: TaskState


class RemoveTaskResult(TypedDict):
    task: str


class LoadProfileResult(TypedDict):
    profile: str
    path: str
    tasks: list[str]


class SaveProfileResult(TypedDict):
    path: str
    name: str


class AttachResult(TypedDict):
    task: str
    gated: bool


class DetachResult(TypedDict):
    task: str


class ResetStatsResult(TypedDict):
    pass


# Error codes (machine-readable; messages are for humans and name the op and field).
BAD_REQUEST = "bad_request"  # undecodable frame, not a map, missing/mistyped v/id/op/args
VERSION_MISMATCH = "version_mismatch"
UNKNOWN_OP = "unknown_op"
BAD_ARGS = "bad_args"  # missing, unknown or mistyped argument
BAD_VALUE = "bad_value"  # well-typed but out of range (negative slice, NaN SLO ...)
UNKNOWN_TASK = "unknown_task"
BAD_TASK = "bad_task"  # the op does not apply to that task's class
EXISTS = "exists"  # add_task: the name is taken
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
