"""Client behaviour against fake engines on inproc sockets (no engine process)."""

from __future__ import annotations

import asyncio
import threading
import time

import msgpack
import pytest
import zmq
import zmq.asyncio

from hbtui.engine import protocol as P
from hbtui.engine.client import (
    AsyncEngineClient,
    AsyncSubscriber,
    ClientError,
    EngineClient,
    Subscriber,
)


def _fake_router(ctx: zmq.Context, ep: str, reply, stop: threading.Event) -> threading.Thread:  # noqa: ANN001
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(ep)

    def loop() -> None:
        while not stop.is_set():
            if sock.poll(20):
                ident, frame = sock.recv_multipart()
                req = msgpack.unpackb(frame, raw=False)
                for rep in reply(req):
                    sock.send_multipart([ident, msgpack.packb(rep)])
        sock.close(0)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


def test_timeout_then_late_reply_is_discarded(ctx: zmq.Context) -> None:
    calls: list[dict] = []

    def reply(req: dict) -> list[dict]:
        calls.append(req)
        if len(calls) == 1:
            time.sleep(0.3)  # too late for the 0.1 s call
        return [P.reply_ok(req["id"], {"n": len(calls)})]

    stop = threading.Event()
    t = _fake_router(ctx, "inproc://late", reply, stop)
    c = EngineClient("inproc://late", timeout=0.1, context=ctx)
    with pytest.raises(ClientError) as e:
        c.ping()
    assert e.value.code == "timeout" and isinstance(e.value, TimeoutError)
    assert c.call("ping", timeout=2.0) == {"n": 2}  # the stale reply {"n": 1} was skipped
    c.close()
    stop.set()
    t.join(2)


def test_error_reply_and_foreign_major(ctx: zmq.Context) -> None:
    def reply(req: dict) -> list[dict]:
        if req["op"] == "ping":
            return [P.reply_err(req["id"], "bad_value", "ping: nope")]
        return [{"v": 2, "id": req["id"], "ok": True, "result": {"new": "shape"}}]

    stop = threading.Event()
    t = _fake_router(ctx, "inproc://err", reply, stop)
    c = EngineClient("inproc://err", timeout=1.0, context=ctx)
    with pytest.raises(ClientError) as e:
        c.ping()
    assert (e.value.code, e.value.message, e.value.op) == ("bad_value", "ping: nope", "ping")
    with pytest.raises(ClientError) as e:
        c.get_state()
    assert e.value.code == "version_mismatch"
    c.close()
    stop.set()
    t.join(2)


def _pub(ctx: zmq.Context, ep: str) -> zmq.Socket:
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.bind(ep)
    return pub


def _send(pub: zmq.Socket, seq: int, kind: str = "stats") -> None:
    env = P.envelope(kind, seq, 0, "eng", {"seq": seq})
    pub.send_multipart([kind.encode(), P.encode(env)])


def test_subscriber_counts_seq_gaps_and_skips_junk(ctx: zmq.Context) -> None:
    pub = _pub(ctx, "inproc://pub")
    sub = Subscriber("inproc://pub", context=ctx)
    time.sleep(0.05)
    for seq in (1, 2, 5, 6):  # 3 and 4 lost
        _send(pub, seq)
    pub.send_multipart([b"stats", b"\xc1junk"])
    got = [sub.recv(1.0) for _ in range(4)]
    assert [m.seq for m in got if m] == [1, 2, 5, 6]
    assert sub.recv(0.05) is None
    assert (sub.dropped, sub.received, sub.bad) == (2, 4, 1)
    sub.close()
    pub.close()


def test_topic_filtered_subscriber_does_not_count_gaps(ctx: zmq.Context) -> None:
    pub = _pub(ctx, "inproc://pub2")
    sub = Subscriber("inproc://pub2", topics=["stats"], context=ctx)
    time.sleep(0.05)
    _send(pub, 1, "stats")
    _send(pub, 2, "slice")
    _send(pub, 3, "stats")
    assert sub.wait_for("stats", 1.0, lambda m: m.seq == 3) is not None
    assert sub.dropped == 0
    sub.close()
    pub.close()


def test_async_client_and_subscriber() -> None:
    async def main() -> None:
        actx = zmq.asyncio.Context()
        router = actx.socket(zmq.ROUTER)
        router.bind("inproc://actl")
        pub = actx.socket(zmq.PUB)
        pub.bind("inproc://apub")

        async def serve() -> None:
            while True:
                ident, frame = await router.recv_multipart()
                req = msgpack.unpackb(frame, raw=False)
                await asyncio.sleep(0.05 if req["args"].get("slow") else 0)
                await router.send_multipart([ident, P.encode(P.reply_ok(req["id"], req["args"]))])

        server = asyncio.create_task(serve())
        c = AsyncEngineClient("inproc://actl", timeout=1.0, context=actx)
        sub = AsyncSubscriber("inproc://apub", context=actx)
        # overlapping calls resolve to their own replies, out of order
        r = await asyncio.gather(c.call("ping", {"slow": 1}), c.call("ping", {"k": 2}))
        assert r == [{"slow": 1}, {"k": 2}]
        await asyncio.sleep(0.05)
        await pub.send_multipart([b"event", P.encode(P.envelope("event", 1, 0, "e", {"a": 1}))])
        msg = await asyncio.wait_for(sub.recv(), 1.0)
        assert msg.type == "event" and msg.body == {"a": 1}
        await pub.send_multipart([b"event", P.encode(P.envelope("event", 3, 0, "e", {}))])
        await asyncio.sleep(0.05)
        assert [m.seq for m in sub.recv_nowait()] == [3] and sub.dropped == 1
        server.cancel()
        c.close()
        sub.close()
        router.close(0)
        pub.close(0)
        actx.term()

    asyncio.run(asyncio.wait_for(main(), 10))
