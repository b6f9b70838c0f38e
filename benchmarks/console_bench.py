"""Console benchmark: does the console keep up with a busy engine, cheaply and responsively?

Starts a real engine process (sim backend, ipc sockets, slices made small so it
publishes tens of thousands of slice records per second), runs the real console
headless in this process (Textual Pilot, 120x40) and measures:

- keeping up: records/messages received vs published (``seq``), seq gaps, and the
  receive lag (now − the envelope's publish ``ts_ns``) sampled over the run; a growing
  backlog shows as a growing lag;
- CPU: ``time.process_time()`` of this (console) process over the steady window, in
  cores (1.0 = one core busy);
- key → screen: press ``]``/``[`` (double/halve the LP slice) and time until the task
  table's slice cell shows the new value (engine round trip included).

    python benchmarks/console_bench.py [--duration 10] [--presses 40] [--slice-us 8] --out OUT

``--no-synthetic`` skips the synthetic-publisher phase (50k records/s by default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from harness import write_result
from textual import events

from hbtui.console.app import ConsoleApp
from hbtui.console.model import LIVE
from hbtui.console.spawn import EmbeddedEngine


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


async def until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def synthetic_publisher(pub: str, rate: float, seconds: float, hz: float = 50.0) -> None:
    """Publish protocol-v1 telemetry at ``rate`` slice records/s (the real sim engine tops
    out near 20k/s on a CPU core, so the 50k/s load comes from here)."""
    import zmq

    from hbtui.engine.protocol import encode, envelope
    from tests.console_fixtures import state_body, stats_body

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.sndhwm = 256
    sock.bind(pub)
    time.sleep(0.5)  # let the console's SUB connect
    n = int(rate / hz)
    seq, t_sim, k = 0, 0, 0
    cols = {
        "task": ["train"] * n,
        "kernel": ["fwd_gemm"] * n,
        "cls": ["lp"] * n,
        "start_block": [0] * n,
        "end_block": [264] * n,
    }
    t_next = time.perf_counter()
    end = t_next + seconds
    while time.perf_counter() < end:
        step = int(1e9 / hz / n)
        starts = [t_sim + i * step for i in range(n)]
        body = dict(cols, issue_ns=starts, start_ns=starts, end_ns=[x + step - 500 for x in starts])
        t_sim += n * step
        msgs = [("slice", body)]
        if k % int(hz) == 0:
            msgs += [("state", state_body()), ("stats", stats_body(k))]
        for kind, b in msgs:
            seq += 1
            frame = encode(envelope(kind, seq, time.time_ns(), "synthetic", b))
            try:
                sock.send_multipart([kind.encode(), frame], zmq.NOBLOCK)
            except zmq.Again:
                pass  # counted by the console as a seq gap
        k += 1
        t_next += 1 / hz
        time.sleep(max(0.0, t_next - time.perf_counter()))
    sock.close(0)


async def steady(app: ConsoleApp, duration: float) -> dict[str, Any]:
    """Sample keep-up figures and this process's CPU over ``duration`` s."""
    m = app.models[0]
    rec0, recv0, gaps0, seq0 = m.slice_records, m.received, m.gaps, m.last_seq or 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    samples = []
    while time.perf_counter() - wall0 < duration:
        await asyncio.sleep(0.5)
        lag_ms = (time.time_ns() - m.last_ts_ns) / 1e6 if m.last_ts_ns else None
        samples.append(
            {
                "t_s": round(time.perf_counter() - wall0, 2),
                "lag_ms": None if lag_ms is None else round(lag_ms, 1),
                "records": m.slice_records - rec0,
                "received": m.received - recv0,
                "gaps": m.gaps - gaps0,
            }
        )
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    lags = [s["lag_ms"] for s in samples if s["lag_ms"] is not None]
    half = len(lags) // 2
    return {
        "duration_s": round(wall, 2),
        "slice_records_per_s": round(samples[-1]["records"] / wall, 1),
        "messages_published": (m.last_seq or 0) - seq0,
        "messages_received": samples[-1]["received"],
        "seq_gaps": samples[-1]["gaps"],
        "lag_ms": {
            "first_half_median": statistics.median(lags[:half]) if half else None,
            "second_half_median": statistics.median(lags[half:]) if lags else None,
            "max": max(lags) if lags else None,
        },
        "cpu_cores": round(cpu / wall, 3),
        "samples": samples,
    }


async def bench_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing as mp

    from hbtui.console.link import Target
    from hbtui.console.spawn import private_runtime_dir

    d = private_runtime_dir()
    target = Target(f"ipc://{d}/ctl", f"ipc://{d}/pub")  # no engine on ctl: telemetry only
    proc = mp.get_context("spawn").Process(
        target=synthetic_publisher, args=(target.pub, args.records, args.duration + 3.0)
    )
    proc.start()
    try:
        app = ConsoleApp([target], rate_hz=args.rate)
        async with app.run_test(size=(120, 40)):
            await until(lambda: app.models[0].connection == LIVE, 10, "synthetic telemetry")
            await asyncio.sleep(1.0)
            return await steady(app, args.duration)
    finally:
        proc.join(args.duration + 10)
        if proc.is_alive():
            proc.kill()
        import shutil

        shutil.rmtree(d, ignore_errors=True)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    lp = args.lp_task
    eng = EmbeddedEngine(args.profile, "sim")
    eng.start()
    try:
        app = ConsoleApp([eng.target], rate_hz=args.rate)
        async with app.run_test(size=(120, 40)):
            m, link = app.models[0], app.links[0]
            await until(
                lambda: m.connection == LIVE and lp in m.tasks and m.phase == "running",
                30,
                "engine running",
            )
            await link.call("set_slice", {"task": lp, "us": args.slice_us})
            await asyncio.sleep(args.warmup)  # warm-up at the new rate

            engine_steady = await steady(app, args.duration)
            cpu0, wall0 = time.process_time(), time.perf_counter()

            # -- key press → screen ---------------------------------------------------------
            table = app.query_one("TaskTable")
            lat_ms: list[float] = []
            for i in range(args.presses):
                key = "right_square_bracket" if i % 2 == 0 else "left_square_bracket"
                cur = m.tasks[lp].slice_us or args.slice_us
                want = f"{round(cur * (2.0 if i % 2 == 0 else 0.5), 3):g} µs"
                char = "]" if i % 2 == 0 else "["
                t0 = time.perf_counter()
                # Post the key as the terminal driver does. (Pilot.press also waits for the
                # process to go idle, which never happens under live telemetry: it would add
                # ~100 ms of its own to every measurement.)
                app.post_message(events.Key(key, char))
                await until(
                    lambda w=want: table.get_cell(lp, "slice").plain == w,
                    3.0,
                    f"slice cell {want}",
                )
                lat_ms.append((time.perf_counter() - t0) * 1e3)
                await asyncio.sleep(0.05)
            cpu_total = time.process_time() - cpu0
            wall_total = time.perf_counter() - wall0
    finally:
        eng.stop()

    return {
        "schema": 2,
        "engine": {"backend": "sim", "profile": args.profile, "slice_us": args.slice_us},
        "console": {"size": [120, 40], "refresh_hz": args.rate, "headless": True},
        "engine_steady": engine_steady,
        "key_to_screen_ms": {
            "n": len(lat_ms),
            "p50": round(pct(lat_ms, 50), 2),
            "p99": round(pct(lat_ms, 99), 2),
            "max": round(max(lat_ms), 2),
        },
        "cpu_cores_key_phase": round(cpu_total / wall_total, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="steady window, s")
    ap.add_argument("--presses", type=int, default=40)
    ap.add_argument("--slice-us", type=float, default=8.0, help="LP slice cap (sets the rate)")
    ap.add_argument("--records", type=float, default=50_000, help="synthetic records/s")
    ap.add_argument("--rate", type=float, default=10.0, help="console refresh, Hz")
    ap.add_argument("--profile", default="default", help="engine profile (name or path)")
    ap.add_argument("--lp-task", default="train", help="the LP task whose slice keys edit")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic publisher")
    ap.add_argument("--warmup", type=float, default=2.0, help="s at the new slice cap first")
    ap.add_argument("--out", required=True, help="result JSON")
    args = ap.parse_args(argv)
    res = asyncio.run(bench(args))
    if not args.no_synthetic:
        res["synthetic_steady"] = asyncio.run(bench_synthetic(args))
        res["synthetic_steady"]["published_records_per_s"] = args.records
    import textual

    write_result(args.out, res, textual=textual.__version__)
    for name in ("engine_steady", "synthetic_steady"):
        if name not in res:
            continue
        s = res[name]
        print(
            f"{name}: slice records/s {s['slice_records_per_s']:.0f}  published"
            f" {s['messages_published']} received {s['messages_received']} gaps"
            f" {s['seq_gaps']}  lag ms {s['lag_ms']}  cpu {s['cpu_cores']:.2f} cores"
        )
    print(f"key→screen ms {res['key_to_screen_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
