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

    python benchmarks/console_bench.py [--duration 10] [--presses 40] [--slice-us 8]

Writes docs/benchmarks/console_cpu.json (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hbtui.app import ConsoleApp  # noqa: E402
from hbtui.model import LIVE  # noqa: E402
from hbtui.spawn import EmbeddedEngine  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import textual

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "textual": textual.__version__,
        "platform": platform.platform(),
    }


async def until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    eng = EmbeddedEngine("default", "sim")
    eng.start()
    try:
        app = ConsoleApp([eng.target], rate_hz=args.rate)
        async with app.run_test(size=(120, 40)) as pilot:
            m, link = app.models[0], app.links[0]
            await until(
                lambda: m.connection == LIVE and "train" in m.tasks and m.phase == "running",
                30,
                "engine running",
            )
            await link.call("set_slice", {"task": "train", "us": args.slice_us})
            await asyncio.sleep(2.0)  # warm-up at the new rate

            # -- steady window: keep-up and CPU ------------------------------------------------
            rec0, recv0, gaps0, seq0 = m.slice_records, m.received, m.gaps, m.last_seq or 0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            samples = []
            while time.perf_counter() - wall0 < args.duration:
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
            published = (m.last_seq or 0) - seq0
            lags = [s["lag_ms"] for s in samples if s["lag_ms"] is not None]
            half = len(lags) // 2

            # -- key press → screen ---------------------------------------------------------
            table = app.query_one("TaskTable")
            lat_ms: list[float] = []
            for i in range(args.presses):
                key = "right_square_bracket" if i % 2 == 0 else "left_square_bracket"
                cur = m.tasks["train"].slice_us or args.slice_us
                want = f"{round(cur * (2.0 if i % 2 == 0 else 0.5), 3):g} µs"
                t0 = time.perf_counter()
                await pilot.press(key)
                await until(
                    lambda w=want: table.get_cell("train", "slice").plain == w,
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
        "schema": 1,
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "machine": machine(),
        "engine": {"backend": "sim", "profile": "default", "slice_us": args.slice_us},
        "console": {"size": [120, 40], "refresh_hz": args.rate, "headless": True},
        "steady": {
            "duration_s": round(wall, 2),
            "slice_records_per_s": round((samples[-1]["records"]) / wall, 1),
            "messages_published": published,
            "messages_received": samples[-1]["received"],
            "seq_gaps": samples[-1]["gaps"],
            "lag_ms": {
                "first_half_median": statistics.median(lags[:half]) if half else None,
                "second_half_median": statistics.median(lags[half:]) if lags else None,
                "max": max(lags) if lags else None,
            },
            "cpu_cores": round(cpu / wall, 3),
            "samples": samples,
        },
        "key_to_screen_ms": {
            "n": len(lat_ms),
            "p50": round(pct(lat_ms, 50), 2),
            "p99": round(pct(lat_ms, 99), 2),
            "max": round(max(lat_ms), 2),
        },
        "cpu_cores_whole_run": round(cpu_total / wall_total, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="steady window, s")
    ap.add_argument("--presses", type=int, default=40)
    ap.add_argument("--slice-us", type=float, default=8.0, help="LP slice cap (sets the rate)")
    ap.add_argument("--rate", type=float, default=10.0, help="console refresh, Hz")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks/console_cpu.json"))
    args = ap.parse_args(argv)
    res = asyncio.run(bench(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    s = res["steady"]
    print(
        f"slice records/s {s['slice_records_per_s']:.0f}  published {s['messages_published']}"
        f" received {s['messages_received']} gaps {s['seq_gaps']}  lag ms {s['lag_ms']}"
        f"  cpu {s['cpu_cores']:.2f} cores  key→screen {res['key_to_screen_ms']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
