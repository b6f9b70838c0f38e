"""Many control clients that send and never read (issue 14, item 12): the engine answers
them all, holds at most its per-peer reply queue for each (docs/protocol.md), keeps
answering others promptly, and frees the queues when the clients go."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import zmq
from engines import start_engine, stop, wait_running

from hbtui.engine.protocol import request


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_300_stalled_dealers_cost_bounded_memory(tmp_path: Path) -> None:
    ctl, pub = f"ipc://{tmp_path}/ctl", f"ipc://{tmp_path}/pub"
    proc = start_engine("--profile", "default", "--backend", "sim", "--ctl", ctl, "--pub", pub,
                        "--calibrate", "0")  # fmt: skip
    c = wait_running(ctl)
    ctx = zmq.Context()
    socks = []
    try:
        before = _rss_kib(proc.pid)
        frame = msgpack.packb(request("1", "get_state"))
        for _ in range(300):
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(ctl)
            for _ in range(50):
                s.send(frame)
            socks.append(s)
        deadline = time.monotonic() + 30
        while sum(s.poll(0) for s in socks[-5:]) < 5:  # until the last ones got answers too
            assert time.monotonic() < deadline, "the engine did not answer them all"
            time.sleep(0.1)
        reply = msgpack.unpackb(socks[-1].recv())
        assert reply["ok"] and reply["result"]["tasks"]  # real get_state replies
        t0 = time.monotonic()
        assert c.ping()["phase"] == "running"
        ping_s = time.monotonic() - t0
        grown = _rss_kib(proc.pid) - before
        # 15,000 replies of ~1.8 KB wait in ZeroMQ's queues (27 MB); allocator slack on top
        assert grown < 64 * 1024, f"engine RSS grew {grown} KiB"
        assert ping_s < 0.5
        for s in socks:
            s.close()
        socks.clear()
        time.sleep(0.5)
        assert c.ping()["phase"] == "running"
        print(f"\n300 DEALERs x 50 unread get_state: RSS +{grown / 1024:.1f} MiB, "
              f"ping {ping_s * 1e3:.1f} ms, then {(_rss_kib(proc.pid) - before) / 1024:.1f} "
              f"MiB after they closed")  # fmt: skip
    finally:
        for s in socks:
            s.close()
        ctx.term()
        c.close()
        rc, err = stop(proc)
        assert rc == 0, err
