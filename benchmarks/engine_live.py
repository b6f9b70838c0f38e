"""The live engine against the bench: what the console shows, and what telemetry costs.

`hbtui bench` drives the scheduler in-process with no ZeroMQ. The headless engine also
publishes every slice, serves control, samples NVML and keeps the console's windows, all
on the same thread as the scheduler. This starts `hbtui engine` (profile, backend and
device as given), waits for calibration, optionally sets the HP SLO to a given value (the
bench's exclusive p99, so attainment compares), resets the statistics after a warm-up,
runs SECONDS, stops the engine with SIGTERM and reads its final summary. With
``--subscribe`` a subscriber drains every telemetry message meanwhile (what a console
does); without it nobody listens, and the engine's PUB socket drops what it publishes.

    python3 benchmarks/engine_live.py --profile default --seconds 25 \
        --slo-ms 20.6 --subscribe --out live.json
    python3 benchmarks/engine_live.py --backend sim --calibrate 0.5 --seconds 2 --out x.json
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from harness import HeadlessEngine, write_result

from hbtui.engine.client import EngineClient, Subscriber


def _drain(pub: str, stop: threading.Event, out: dict) -> None:
    """Receive everything: messages by type, slice records, sequence gaps, lag."""
    sub = Subscriber(pub, rcvhwm=100_000)
    last_seq, lags = None, []
    try:
        while not stop.is_set():
            m = sub.recv(0.2)
            if m is None:
                continue
            out["messages"][m.type] = out["messages"].get(m.type, 0) + 1
            if m.type == "slice":
                out["slice_records"] += len(m.body.get("start_block", ()))
            if last_seq is not None and m.seq > last_seq + 1:
                out["seq_gaps"] += m.seq - last_seq - 1
            last_seq = m.seq
            lags.append((time.time_ns() - m.ts_ns) / 1e6)
    finally:
        sub.close()
    lags.sort()
    if lags:
        out["lag_ms"] = {"p50": lags[len(lags) // 2], "p99": lags[int(0.99 * (len(lags) - 1))]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--backend", default="cuda", choices=("auto", "sim", "cuda"))
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--calibrate", type=float, default=5.0)
    ap.add_argument("--slo-ms", type=float, default=None, help="set the HP task's SLO to this")
    ap.add_argument("--subscribe", action="store_true", help="drain all telemetry meanwhile")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    eng = HeadlessEngine(a.profile, a.backend, calibrate=a.calibrate,
                         extra=["--device", str(a.device)])  # fmt: skip
    tel = {"messages": {}, "slice_records": 0, "seq_gaps": 0}
    stop = threading.Event()
    drain = threading.Thread(target=_drain, args=(eng.pub, stop, tel), daemon=True)
    try:
        eng.start()
        eng.wait_running()
        c = EngineClient(eng.ctl, timeout=1.0)
        try:
            st = c.get_state()
            hp = next(t["name"] for t in st["tasks"] if t["class"] == "hp")
            if a.slo_ms is not None:
                c.set_slo(hp, ms=a.slo_ms)
            if a.subscribe:
                drain.start()
            time.sleep(a.warmup)
            c.reset_stats()
            t0 = time.monotonic()
            time.sleep(a.seconds)
            measured = time.monotonic() - t0
        finally:
            c.close()
        rc = eng.stop()
        stop.set()
        if drain.is_alive():
            drain.join(5)
        s = eng.summary()
        if rc != 0 or s is None:
            sys.stderr.write(eng.stderr)
            return 1
    finally:
        stop.set()
        eng.close()
    # the summary counts from reset_stats to SIGTERM (a little past `measured`)
    res = {
        "engine_command": eng.cmd[1:], "device": s["device"], "policy": s["policy"],
        "slo_ms_set": a.slo_ms, "subscribed": a.subscribe, "seconds": measured,
        "calibration": s["calibration"], "stats": s["stats"],
        "telemetry": tel if a.subscribe else None,
        "calibration_log": [ln for ln in eng.stderr.splitlines() if "calibrated in" in ln],
    }  # fmt: skip
    write_result(a.out, res)
    t = s["stats"]["tasks"]
    lp = [v for v in t.values() if v["class"] == "lp"]
    print(
        f"live engine ({'subscribed' if a.subscribe else 'no subscriber'}): "
        f"{hp} attainment {t[hp]['slo_attainment'] * 100:.2f}% at SLO {t[hp]['slo_ms']:.2f} ms, "
        f"p50/p99 {t[hp]['p50_ms']:.3f}/{t[hp]['p99_ms']:.3f} ms, "
        f"pre p99 {t[hp]['preemption_us']['p99']:.1f} us, "
        f"LP norm {sum(v['throughput_norm'] or 0 for v in lp):.3f}, "
        f"harvest {s['stats'].get('harvest_ratio', float('nan')):.3f}"
        + (f", {tel['slice_records'] / measured:,.0f} slice records/s, "
           f"seq gaps {tel['seq_gaps']}" if a.subscribe else "")
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
