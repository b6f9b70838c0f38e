"""Telemetry publisher: scheduler listener callbacks append to bounded buffers; the
loop's tick flushes them as batched, columnar PUB messages (spec: docs/protocol.md).

Nothing here blocks: sends use ``zmq.NOBLOCK`` on a PUB with a small ``SNDHWM``
(ZeroMQ drops per slow subscriber, who sees ``seq`` gaps); records arriving while a
buffer is full are dropped and counted. Memory is bounded by ``MAX_PENDING`` records.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import zmq

from hbtui.engine.model import HP, Launch, Request
from hbtui.engine.protocol import (
    MAX_REQUEST_BATCH,
    MAX_SLICE_BATCH,
    REQUEST_FIELDS,
    SLICE_FIELDS,
    EventBody,
    encode,
    envelope,
)
from hbtui.engine.window import Window

log = logging.getLogger("hbtui.engine")

MAX_PENDING = 65_536  # records buffered between flushes, per stream (slice, request)
MAX_EVENTS = 1_024
SNDHWM = 256  # messages queued per subscriber before ZeroMQ drops


class Publisher:
    """Owns the PUB socket and the gap-free ``seq``; every send is non-blocking."""

    def __init__(self, sock: zmq.Socket, engine_id: str) -> None:
        self.sock = sock
        self.engine_id = engine_id
        self.seq = 0
        self.sent = 0
        self.dropped = 0  # sends ZeroMQ refused (EAGAIN) — subscribers see a seq gap
        self.encode_errors = 0

    def publish(self, kind: str, body: Any) -> None:
        self.seq += 1
        try:
            frame = encode(envelope(kind, self.seq, time.time_ns(), self.engine_id, body))
        except (TypeError, ValueError, OverflowError) as e:  # e.g. an odd NVML value
            self.dropped += 1  # the seq gap tells subscribers; the loop must not die
            if not self.encode_errors:
                log.error("cannot encode a %s message (%s); dropping such messages", kind, e)
            self.encode_errors += 1
            return
        try:
            self.sock.send_multipart([kind.encode(), frame], zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1


MAX_REPORTERS = 64  # subscribers whose drop reports are kept (the oldest report goes)
REPORT_TTL_NS = 60_000_000_000  # a subscriber silent this long no longer counts


class SubscriberReports:
    """What subscribers say they missed. A PUB socket drops per slow subscriber without
    telling the sender (and XPUB_NODROP would let one stalled subscriber hold back all),
    so each subscriber counts its own ``seq`` gaps and reports them with its ``ping``
    (``subscriber``, ``received``, ``gaps``); ``stats.telemetry`` sums the live reports.
    Bounded: ``MAX_REPORTERS`` entries, each dropped ``REPORT_TTL_NS`` after its last."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[int, int, int]] = {}  # id -> (received, gaps, at_ns)

    def report(self, sub_id: str, received: int, gaps: int, now_ns: int) -> None:
        self._by_id.pop(sub_id, None)
        if len(self._by_id) >= MAX_REPORTERS:
            del self._by_id[next(iter(self._by_id))]  # insertion order = report order
        self._by_id[sub_id] = (received, gaps, now_ns)

    def totals(self, now_ns: int) -> tuple[int, int, int]:
        """(live reporters, their received, their gaps)."""
        live = [v for v in self._by_id.values() if now_ns - v[2] < REPORT_TTL_NS]
        return len(live), sum(v[0] for v in live), sum(v[1] for v in live)


class TelemetryListener:
    """A scheduler ``Listener``: O(1) appends only; ``flush`` publishes the batches."""

    def __init__(self, pub: Publisher, window: Window) -> None:
        self.pub = pub
        self.window = window
        self.baseline_ns: dict[str, int] = {}  # kernel -> exclusive median wait
        self.request_id: str | None = None  # set while a control op runs (echoed in events)
        self._slices: list[tuple[Any, ...]] = []
        self._requests: list[tuple[Any, ...]] = []
        self._events: list[EventBody] = []
        self.dropped_records = 0
        self.state_dirty = False

    # -- Listener protocol (called from the scheduling loop) ------------------------
    def on_launch(self, launch: Launch) -> None:
        k = launch.kernel
        if len(self._slices) < MAX_PENDING:
            self._slices.append((launch.task, k.name, launch.cls, launch.start_block,
                                 launch.end_block, launch.issue_ns, launch.start_ns,
                                 launch.end_ns))  # fmt: skip
        else:
            self.dropped_records += 1
        if launch.cls == HP:  # LP window figures come from cumulative marks (cheaper)
            wait = launch.start_ns - launch.issue_ns - self.baseline_ns.get(k.name, 0)
            self.window.on_wait(launch.task, wait)

    def on_request(self, task: str, req: Request, latency_ns: int, slo_ok: bool | None) -> None:
        if len(self._requests) < MAX_PENDING:
            self._requests.append((task, req.id, req.arrival_ns, latency_ns, slo_ok))
        else:
            self.dropped_records += 1
        self.window.on_request(task, latency_ns, slo_ok)

    def on_event(self, kind: str, body: dict[str, Any]) -> None:
        self.event(kind, "warning" if kind == "warning" else "info", **body)
        self.state_dirty = True

    # -- engine-side helpers -------------------------------------------------------
    def event(self, kind: str, level: str = "info", **body: Any) -> None:
        if len(self._events) >= MAX_EVENTS:
            self.dropped_records += 1
            return
        ev = cast(EventBody, {"kind": kind, "level": level, **body})  # + the kind's fields
        if self.request_id is not None:
            ev["request_id"] = self.request_id
        self._events.append(ev)

    def flush(self) -> None:
        """Publish pending events, slices and requests (events first: they explain data).
        Slice and request bodies are columnar: protocol.SliceBody / RequestBody."""
        pub = self.pub
        if self._events:
            evs, self._events = self._events, []
            for ev in evs:
                pub.publish("event", ev)
        if self._slices:
            rows, self._slices = self._slices, []
            for i in range(0, len(rows), MAX_SLICE_BATCH):
                cols = zip(*rows[i : i + MAX_SLICE_BATCH], strict=True)
                pub.publish("slice", dict(zip(SLICE_FIELDS, map(list, cols), strict=True)))
        if self._requests:
            rows, self._requests = self._requests, []
            for i in range(0, len(rows), MAX_REQUEST_BATCH):
                cols = zip(*rows[i : i + MAX_REQUEST_BATCH], strict=True)
                pub.publish("request", dict(zip(REQUEST_FIELDS, map(list, cols), strict=True)))
