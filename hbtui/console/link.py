"""The console's connection to one engine: telemetry in, control out, both over ZeroMQ.

``EngineLink.run`` is a long-lived coroutine (run as a Textual worker on the app's
event loop, through ``zmq.asyncio``). It folds every telemetry message into the
engine's ``EngineModel`` and nothing else: widgets read the model on the UI tick.

Liveness: the engine publishes `stats`/`state` at least every second, so silence means
trouble. After ``stale_after`` s the model says "stale"; after ``dead_after`` s the link
pings the control socket, and if that fails too it says "disconnected", drops both
sockets and reconnects with fresh ones under exponential back-off, until telemetry
flows again. It never blocks the UI: every wait is an ``await`` with a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from hbtui.console.model import CONNECTING, DISCONNECTED, LIVE, STALE, EngineModel
from hbtui.engine.client import AsyncEngineClient, AsyncSubscriber, ClientError, CurveKeys
from hbtui.engine.protocol import MUTATING_OPS

DRAIN_MAX = 256  # messages folded per wake-up before yielding to the UI
REPORT_EVERY_S = 5.0  # how often the console tells the engine its seq gaps (ping args)


@dataclass(frozen=True)
class Target:
    """How to reach one engine: its control (ROUTER) and telemetry (PUB) endpoints."""

    ctl: str
    pub: str
    curve: CurveKeys | None = None
    name: str = ""  # a fleet file's HOST/gpuN; tabs show the endpoint without one

    @property
    def tab_name(self) -> str:
        return self.name or self.ctl

    @property
    def label(self) -> str:
        return f"ctl {self.ctl}  pub {self.pub}"


class EngineLink:
    def __init__(
        self,
        target: Target,
        model: EngineModel,
        clock: Callable[[], float] = time.monotonic,
        *,
        stale_after: float = 1.5,
        dead_after: float = 3.0,
        backoff_max: float = 2.0,
    ) -> None:
        self.target = target
        self.model = model
        self.clock = clock
        self.stale_after = stale_after
        self.dead_after = dead_after
        self.backoff_max = backoff_max
        self.client: AsyncEngineClient | None = None
        self.sub: AsyncSubscriber | None = None
        self.reconnects = 0
        self.closing = False
        self.next_retry_at: float | None = None
        self._bad_closed = 0  # undecodable frames counted by subscribers since closed
        self._reported_at = float("-inf")
        self._report: asyncio.Future[None] | None = None

    # -- sockets -----------------------------------------------------------------------------
    def _open(self) -> None:
        self._close()
        t = self.target
        self.sub = AsyncSubscriber(t.pub, curve=t.curve)
        self.client = AsyncEngineClient(t.ctl, timeout=2.0, curve=t.curve)

    def _close(self) -> None:
        if self.sub is not None:
            self._bad_closed += self.sub.bad
        for s in (self.sub, self.client):
            if s is not None:
                s.close()
        self.sub = self.client = None

    def close(self) -> None:
        self.closing = True  # the worker may be awaiting a recv on the socket we close
        self._close()

    # -- control -----------------------------------------------------------------------------
    async def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """One control op. Raises ClientError (engine refusal, timeout or no connection)."""
        if self.client is None:
            raise ClientError("disconnected", f"not connected to {self.target.ctl}", op)
        result = await self.client.call(op, args, timeout)
        if op in MUTATING_OPS or op == "get_state":
            # Show the engine's view at once rather than at its next `state` message.
            state = result if op == "get_state" else await self.client.call("get_state")
            if isinstance(state, dict):
                self.model.apply_state(state)
        return result

    # -- telemetry ---------------------------------------------------------------------------
    async def run(self) -> None:
        backoff = 0.2
        self._open()
        asyncio.get_running_loop().create_task(self._initial_state())
        while True:
            try:
                got = await self._pump()
            except asyncio.CancelledError:
                self._close()
                raise
            except zmq.ZMQError:
                if self.closing:
                    return  # the console is shutting down and closed our sockets
                self._open()  # a broken socket: start over with fresh ones
                continue
            if self.closing:
                return  # closed while we waited: never reopen
            if got:
                backoff = 0.2
                self._report_drops()
                continue
            # Silence: stale, then ask the control socket whether the engine is alive.
            age = self.model.age(self.clock())
            silent = age is None or age >= self.stale_after
            if silent and self.model.connection == LIVE:
                self.model.set_connection(STALE)
            if age is not None and age < self.dead_after:
                continue
            if await self._alive():
                if self.model.connection == CONNECTING:
                    continue  # answering but not yet publishing (calibrating)
                self.model.set_connection(STALE)
            else:
                self.model.set_connection(DISCONNECTED)
            # Fresh sockets: a restarted engine may have new identities or ipc files.
            self.next_retry_at = self.clock() + backoff
            await asyncio.sleep(backoff)
            backoff = min(self.backoff_max, backoff * 2)
            self.reconnects += 1
            self._open()

    async def _pump(self) -> bool:
        """Wait up to ~0.25 s for telemetry; fold in everything queued. True if any came."""
        sub = self.sub
        assert sub is not None
        try:
            first = await asyncio.wait_for(sub.recv(), 0.25)
        except TimeoutError:
            self.model.set_bad_frames(self._bad_closed + sub.bad)
            return False
        if self.sub is not sub:  # closed (console quitting) or reopened while we waited
            return False
        now = self.clock()
        apply = self.model.apply
        apply(_env(first), now)
        msgs = sub.recv_nowait()
        for i, m in enumerate(msgs):
            apply(_env(m), now)
            if i % DRAIN_MAX == DRAIN_MAX - 1:
                await asyncio.sleep(0)  # let keys and the UI tick in
        if self.sub is sub:
            self.model.set_bad_frames(self._bad_closed + sub.bad)
        return True

    def _report_drops(self) -> None:
        """Every ``REPORT_EVERY_S``, tell the engine what this subscriber missed: a PUB
        socket cannot count per-subscriber drops (``stats.telemetry.subscriber_gaps``).
        In the background: the pump never waits for the reply."""
        now = self.clock()
        if self.sub is None or self.client is None or now - self._reported_at < REPORT_EVERY_S:
            return
        if self._report is not None and not self._report.done():
            return
        self._reported_at = now
        self._report = asyncio.ensure_future(self._send_report(self.client, self.sub.report()))

    @staticmethod
    async def _send_report(client: AsyncEngineClient, args: dict[str, Any]) -> None:
        try:
            await client.call("ping", args, timeout=0.5)
        except (ClientError, zmq.ZMQError):
            pass  # only a report: the next one comes in REPORT_EVERY_S

    async def _alive(self) -> bool:
        if self.client is None:
            return False
        try:
            await self.client.call("ping", timeout=0.5)
            return True
        except ClientError:
            return False

    async def _initial_state(self) -> None:
        """Fill the table before the first periodic `state` message arrives."""
        try:
            await self.call("get_state", timeout=1.0)
        except ClientError:
            pass


def _env(m: Any) -> dict[str, Any]:
    return {
        "type": m.type,
        "seq": m.seq,
        "ts_ns": m.ts_ns,
        "engine_id": m.engine_id,
        "body": m.body,
    }
