"""Telemetry/control benchmark of the headless engine (sim backend, wall-clock paced).

Starts a real engine process on loopback TCP with benchmarks/telemetry_load.toml (a
profile issuing > 100k launches per simulated second), subscribes to all telemetry in
this process, and probes control round trips from a second thread (alternating ``ping``
and a mutating ``set_priority``) every ``--probe-ms``. Reports:

- slice records/s delivered to the subscriber, and messages lost (``seq`` gaps);
- whether the scheduling loop kept pace: the engine's own ``stats.loop`` figures
  (lag of simulated time behind wall time, max gap between loop iterations) and
  simulated seconds per wall second;
- control round-trip p50/p99/max under that load.

    python benchmarks/telemetry_bench.py --seconds 10 --out telemetry.json  # docs/benchmarks/sim.md
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from harness import HeadlessEngine, provenance, write_result

from hbtui.engine.client import ClientError, EngineClient, Subscriber

HERE = Path(__file__).resolve().parent


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--profile",
        nargs="+",
        default=[str(HERE / "telemetry_load_spatial.toml"), str(HERE / "telemetry_load.toml")],
        help="one run per profile",
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="measured wall seconds")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--probe-ms", type=float, default=10.0, help="control probe period")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    args = ap.parse_args(argv)

    runs = {}
    for prof in args.profile:
        res = _one(args, prof)
        if res is None:
            return 1
        runs[Path(prof).stem] = res
    out = {"schema": 2, "runs": runs}
    print(json.dumps({**provenance(), **out}, indent=2))
    if args.out:
        write_result(args.out, out)
    return 0


def _one(args: argparse.Namespace, prof: str) -> dict | None:
    duration = str(args.seconds + args.warmup + 30)
    with HeadlessEngine(prof, "sim", calibrate=0.5, transport="tcp",
                        extra=["--duration", duration]) as eng:  # fmt: skip
        try:
            eng.wait_running(timeout=20)
        except SystemExit as e:
            print(f"engine did not start: {e}", file=sys.stderr)
            return None
        return _run(args, eng.pub, eng.ctl, eng.cmd)


def _run(args: argparse.Namespace, pub: str, ctl: str, cmd: list) -> dict | None:
    c = EngineClient(ctl, timeout=2.0)
    sub = Subscriber(pub, rcvhwm=100_000)
    sub.recv(2.0)
    time.sleep(args.warmup)

    rtts: list[float] = []
    failures = [0]
    stop = threading.Event()

    def probe() -> None:
        pc = EngineClient(ctl, timeout=2.0)
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            try:
                if i % 2:
                    pc.set_priority("batch", i % 7)
                else:
                    pc.ping()
                rtts.append(time.perf_counter() - t)
            except ClientError:
                failures[0] += 1
            i += 1
            time.sleep(args.probe_ms / 1e3)
        pc.close()

    # Drain what queued during warm-up, then measure.
    while sub.recv(0) is not None:
        pass
    records = msgs = 0
    stats: list[dict] = []
    drops0, recv0 = sub.dropped, sub.received
    th = threading.Thread(target=probe, daemon=True)
    t0 = time.monotonic()
    th.start()
    while (now := time.monotonic()) - t0 < args.seconds:
        m = sub.recv(max(0.0, args.seconds - (now - t0)))
        if m is None:
            continue
        msgs += 1
        if m.type == "slice":
            records += len(m.body["task"])
        elif m.type == "stats":
            stats.append(m.body)
    wall = time.monotonic() - t0
    stop.set()
    th.join(5)
    sub.close()
    c.close()

    loop = [s["loop"] for s in stats[1:]] or [s["loop"] for s in stats]
    sim_s = stats[-1]["wall_s"] - stats[0]["wall_s"] if len(stats) > 1 else float("nan")
    last = stats[-1] if stats else {}
    batch = (last.get("tasks") or {}).get("batch", {})
    svc = (last.get("tasks") or {}).get("svc", {})
    return {
        "engine_command": " ".join(cmd[3:]),
        "measured_s": wall,
        "slice_records": records,
        "slice_records_per_s": records / wall,
        "messages": msgs,
        "messages_lost_seq_gaps": sub.dropped - drops0,
        "messages_received": sub.received - recv0,
        "engine_dropped": last.get("telemetry", {}).get("dropped"),
        "engine_dropped_records": last.get("telemetry", {}).get("dropped_records"),
        "loop": {
            "sim_s_per_wall_s": (sim_s / ((len(stats) - 1) * 1.0)) if len(stats) > 1 else None,
            "stats_messages": len(stats),
            "lag_ms_last": loop[-1]["lag_ms"] if loop else None,
            "lag_max_ms": max(x["lag_max_ms"] for x in loop) if loop else None,
            "tick_gap_max_ms": max(x["tick_gap_max_ms"] for x in loop) if loop else None,
            "decisions_per_s": _pct([x["decisions_per_s"] for x in loop], 50),
        },
        "control_rtt_ms": {
            "n": len(rtts),
            "p50": _pct(rtts, 50) * 1e3,
            "p99": _pct(rtts, 99) * 1e3,
            "max": max(rtts) * 1e3 if rtts else None,
            "failures": failures[0],
        },
        "scheduling": {
            "policy": last.get("policy"),
            "lp_slices_per_s": (batch.get("window") or {}).get("slices_per_s"),
            "hp_p99_ms": svc.get("p99_ms"),
            "hp_slo_attainment": svc.get("slo_attainment"),
            "preemption_p99_us": (svc.get("preemption_us") or {}).get("p99"),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
