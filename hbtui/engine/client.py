"""Clients of the headless engine (spec: docs/protocol.md). No Textual, no engine internals.

- ``EngineClient``: blocking control client (DEALER, request ids, per-call timeouts).
- ``AsyncEngineClient``: the same over ``zmq.asyncio``; concurrent calls are fine.
- ``Subscriber`` / ``AsyncSubscriber``: telemetry (SUB); decode envelopes into
  ``Message`` and count ``seq`` gaps as ``dropped``.

Every control method returns the reply's ``result`` or raises ``ClientError`` (with the
engine's ``code`` and ``message``); a call that gets no reply in time raises
``ClientTimeout`` (a ``ClientError`` and a ``TimeoutError``, code ``timeout``). A late
reply to a timed-out call is discarded by id, so the socket never goes out of step.

Example::

    with EngineClient("tcp://127.0.0.1:5556") as c:
        c.set_slice("train", us=40)
    sub = Subscriber("tcp://127.0.0.1:5555")
    msg = sub.recv(timeout=1.0)      # Message(type="stats", seq=..., body={...}) or None
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import zmq
import zmq.asyncio

from hbtui.engine.protocol import (
    DEFAULT_CTL,
    DEFAULT_PUB,
    MAX_TELEMETRY_BYTES,
    PROTOCOL_VERSION,
    TYPES,
    ProtocolError,
    decode,
    encode,
    request,
)

__all__ = [
    "AsyncEngineClient", "AsyncSubscriber", "ClientError", "ClientTimeout", "CurveKeys",
    "EngineClient", "Message", "Subscriber",
]  # fmt: skip


class ClientError(Exception):
    """The engine refused a call (``code``/``message`` from its error reply) or none came."""

    def __init__(self, code: str, message: str, op: str = "") -> None:
        super().__init__(f"{op}: [{code}] {message}" if op else f"[{code}] {message}")
        self.code = code
        self.message = message
        self.op = op


class ClientTimeout(ClientError, TimeoutError):
    """No reply within the call's timeout (engine down, busy or unreachable)."""


class CurveKeys(NamedTuple):
    """CURVE keys for a client: its own keypair and the server's public key (z85 bytes)."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, client_secret_file: str, server_public_file: str) -> CurveKeys:
        """Load ``client.key_secret`` and ``server.key`` as written by ``hbtui keys generate``."""
        from zmq.auth import load_certificate

        pub, sec = load_certificate(client_secret_file)
        spub, _ = load_certificate(server_public_file)
        if sec is None:
            raise ValueError(f"{client_secret_file}: no secret key in this file")
        return cls(pub, sec, spub)

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server_public


@dataclass(slots=True)
class Message:
    """One telemetry message (the decoded envelope)."""

    type: str
    seq: int
    ts_ns: int
    engine_id: str
    body: Any


_ids = itertools.count(1)


def _new_id() -> str:
    return f"{os.getpid():x}-{next(_ids)}"


def _check_reply(rep: Any, op: str) -> Any:
    if not isinstance(rep, dict) or "ok" not in rep:
        raise ClientError("bad_reply", "malformed reply from engine", op)
    if rep.get("v") != PROTOCOL_VERSION and not rep.get("ok"):
        err = rep.get("error") or {}
        raise ClientError(str(err.get("code", "version_mismatch")), str(err.get("message")), op)
    if rep.get("v") != PROTOCOL_VERSION:
        raise ClientError(
            "version_mismatch",
            f"engine speaks protocol v{rep.get('v')}, this client v{PROTOCOL_VERSION}",
            op,
        )
    if rep["ok"]:
        return rep.get("result")
    err = rep.get("error") or {}
    raise ClientError(str(err.get("code", "error")), str(err.get("message", "")), op)


class _Ops:
    """Typed wrappers over ``call``; shared by the blocking and async clients."""

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None):  # noqa: ANN201
        raise NotImplementedError

    def ping(self):  # noqa: ANN201 - Any, or an awaitable of it for the async client
        return self.call("ping")

    def get_state(self):  # noqa: ANN201
        return self.call("get_state")

    def list_profiles(self):  # noqa: ANN201
        return self.call("list_profiles")

    def set_priority(self, task: str, priority: int):  # noqa: ANN201
        return self.call("set_priority", {"task": task, "priority": priority})

    def set_slice(self, task: str, us: float | None = None, blocks: int | None = None):  # noqa: ANN201
        args: dict[str, Any] = {"task": task}
        if us is not None:
            args["us"] = us
        if blocks is not None:
            args["blocks"] = blocks
        return self.call("set_slice", args)

    def set_policy(self, policy: str):  # noqa: ANN201
        return self.call("set_policy", {"policy": policy})

    def set_slo(self, task: str, ms: float | None = None, factor: float | None = None):  # noqa: ANN201
        args: dict[str, Any] = {"task": task}
        if ms is not None:
            args["ms"] = ms
        if factor is not None:
            args["factor"] = factor
        return self.call("set_slo", args)

    def pause_task(self, task: str):  # noqa: ANN201
        return self.call("pause_task", {"task": task})

    def resume_task(self, task: str):  # noqa: ANN201
        return self.call("resume_task", {"task": task})

    def add_task(self, task: dict[str, Any]):  # noqa: ANN201
        return self.call("add_task", {"task": task})

    def remove_task(self, task: str):  # noqa: ANN201
        return self.call("remove_task", {"task": task})

    def load_profile(self, path: str | None = None, name: str | None = None):  # noqa: ANN201
        args = {k: v for k, v in (("path", path), ("name", name)) if v is not None}
        return self.call("load_profile", args, 30.0)  # calibration follows; reply is early

    def save_profile(self, path: str | None = None, name: str | None = None):  # noqa: ANN201
        args = {k: v for k, v in (("path", path), ("name", name)) if v is not None}
        return self.call("save_profile", args)

    def reset_stats(self):  # noqa: ANN201
        return self.call("reset_stats")


def _dealer(ctx: zmq.Context, endpoint: str, curve: CurveKeys | None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if curve is not None:
        curve.apply(sock)
    sock.connect(endpoint)
    return sock


class EngineClient(_Ops):
    """Blocking control client. Not thread-safe (one socket); use one per thread."""

    def __init__(
        self,
        endpoint: str = DEFAULT_CTL,
        timeout: float = 2.0,
        *,
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ctx = context or zmq.Context.instance()
        self._sock = _dealer(self._ctx, endpoint, curve)

    def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Send one request and wait for its reply (``timeout`` s, default the client's)."""
        rid = _new_id()
        self._sock.send(encode(request(rid, op, args)), zmq.NOBLOCK)
        deadline = _now() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - _now()
            if left <= 0 or not self._sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                if _now() >= deadline:
                    raise ClientTimeout("timeout", f"no reply from {self.endpoint}", op)
                continue
            frame = self._sock.recv()
            try:
                rep = decode(frame)
            except ProtocolError:
                continue
            if isinstance(rep, dict) and rep.get("id") == rid:
                return _check_reply(rep, op)
            # else: a late reply to an earlier timed-out call, or an id-less error: skip

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEngineClient(_Ops):
    """``zmq.asyncio`` control client: ``await c.set_slice("train", us=40)``.

    One reader task matches replies to pending calls by id, so calls may overlap.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_CTL,
        timeout: float = 2.0,
        *,
        curve: CurveKeys | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock = _dealer(self._ctx, endpoint, curve)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())
        rid = _new_id()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._sock.send(encode(request(rid, op, args)))
            rep = await asyncio.wait_for(fut, self.timeout if timeout is None else timeout)
        except TimeoutError:
            raise ClientTimeout("timeout", f"no reply from {self.endpoint}", op) from None
        finally:
            self._pending.pop(rid, None)
        return _check_reply(rep, op)

    async def _read(self) -> None:
        while True:
            frame = await self._sock.recv()
            try:
                rep = decode(frame)
            except ProtocolError:
                continue
            fut = self._pending.get(rep.get("id")) if isinstance(rep, dict) else None
            if fut is not None and not fut.done():
                fut.set_result(rep)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._sock.close(0)

    async def __aenter__(self) -> AsyncEngineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


_SUB_IDS = itertools.count(1)


class _SubBase:
    """Envelope decoding and drop counting shared by both subscribers.

    ``dropped`` counts messages missing from ``seq`` (gaps). It is exact only when
    subscribed to every type (the default): with a topic filter, the skipped types
    look like gaps, so ``dropped`` is then left at 0. An engine restart (new
    ``engine_id``) restarts the count from its first message.
    """

    def __init__(self, topics: tuple[str, ...] | list[str] | None) -> None:
        self.topics = tuple(topics) if topics else ()
        self._track = not self.topics or set(self.topics) >= set(TYPES)
        self.received = 0
        self.dropped = 0
        self.bad = 0  # undecodable or foreign-version messages (skipped)
        self.engine_id: str | None = None
        self._last_seq: int | None = None
        self.sub_id = f"{os.uname().nodename[:40]}:{os.getpid()}:{next(_SUB_IDS)}"

    def report(self) -> dict[str, Any]:
        """``ping`` arguments that tell the engine what this subscriber missed (PUB
        cannot count per-subscriber drops itself; ``stats.telemetry.subscriber_gaps``)."""
        return {"subscriber": self.sub_id, "received": self.received,
                "gaps": min(self.dropped, 2**62)}  # fmt: skip

    def _setup(self, sock: zmq.Socket, endpoint: str, curve: CurveKeys | None, rcvhwm: int) -> None:
        sock.linger = 0
        sock.rcvhwm = rcvhwm
        sock.maxmsgsize = MAX_TELEMETRY_BYTES  # a huge frame is dropped before it is read
        if curve is not None:
            curve.apply(sock)
        for t in self.topics or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        sock.connect(endpoint)

    def _decode(self, frames: list[bytes]) -> Message | None:
        try:
            env = decode(frames[-1])
            if env.get("v") != PROTOCOL_VERSION:
                raise ValueError("foreign protocol version")
            msg = Message(env["type"], int(env["seq"]), int(env["ts_ns"]), env["engine_id"],
                          env["body"])  # fmt: skip
        except Exception:
            self.bad += 1
            return None
        self.received += 1
        if msg.engine_id != self.engine_id:
            self.engine_id, self._last_seq = msg.engine_id, None
        if self._track and self._last_seq is not None and msg.seq > self._last_seq + 1:
            self.dropped += msg.seq - self._last_seq - 1
        self._last_seq = msg.seq
        return msg


class Subscriber(_SubBase):
    """Blocking telemetry subscriber. ``topics`` filters types (default: all)."""

    def __init__(
        self,
        endpoint: str = DEFAULT_PUB,
        topics: tuple[str, ...] | list[str] | None = None,
        *,
        rcvhwm: int = 10_000,
        curve: CurveKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        super().__init__(topics)
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._setup(self._sock, endpoint, curve, rcvhwm)

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after ``timeout`` s (None: wait forever)."""
        ms = None if timeout is None else int(timeout * 1000)
        while True:
            if not self._sock.poll(ms, zmq.POLLIN):
                return None
            msg = self._decode(self._sock.recv_multipart())
            if msg is not None:
                return msg

    def wait_for(self, kind: str, timeout: float, pred: Any = None) -> Message | None:
        """The first message of type ``kind`` (matching ``pred(msg)``) within ``timeout`` s."""
        deadline = _now() + timeout
        while (left := deadline - _now()) > 0:
            msg = self.recv(left)
            if msg is not None and msg.type == kind and (pred is None or pred(msg)):
                return msg
        return None

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscriber(_SubBase):
    """``zmq.asyncio`` telemetry subscriber: ``msg = await sub.recv()``."""

    def __init__(
        self,
        endpoint: str = DEFAULT_PUB,
        topics: tuple[str, ...] | list[str] | None = None,
        *,
        rcvhwm: int = 10_000,
        curve: CurveKeys | None = None,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        super().__init__(topics)
        self._sock = (context or zmq.asyncio.Context.instance()).socket(zmq.SUB)
        self._setup(self._sock, endpoint, curve, rcvhwm)

    async def recv(self) -> Message:
        while True:
            msg = self._decode(await self._sock.recv_multipart())
            if msg is not None:
                return msg

    def recv_nowait(self) -> list[Message]:
        """Every message already queued (for a UI tick that coalesces); never waits."""
        out: list[Message] = []
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
                if isinstance(frames, asyncio.Future):  # zmq.asyncio: an already-done future
                    frames = frames.result()
            except zmq.Again:
                return out
            msg = self._decode(frames)
            if msg is not None:
                out.append(msg)

    def close(self) -> None:
        self._sock.close(0)


def _now() -> float:
    return time.monotonic()
