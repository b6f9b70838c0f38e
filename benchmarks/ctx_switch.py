"""What an HP program's kernel waits for when another process used the GPU just before it,
on a time-sliced GPU (no MPS): the cost `hbtui engine --bubble-margin-us` would charge to
every LP grant inside an HP request (docs/benchmarks/real-programs.md: a compiled GPT-2
LP slowed the eager service by ~260 us per LP kernel, far more than the kernels' time).

Two processes, one GPU:

- the *probe* (this process, HP-like): at random intervals (``--probe-gap-ms``, uniform
  0.5-1.5 x) launches a 1-thread kernel that writes a number into mapped pinned memory
  and spins on the host until it shows (apps/hp_service.py's ``Probe``): the wait from
  the launch call to the write, in us;
- the *other* (``--role other``, a child): launches a kernel that spins ``--other-us`` us
  on one block, synchronises, sleeps ``--other-gap-ms`` (uniform 0.5-1.5 x), again.

Phases, each ``--probes`` probes: ``alone`` (no other process), ``beside`` (the other
running), ``alone-after`` (it stopped: drift check). The figure is the wait beside minus
the wait alone (p50/p90/p99), and how often a probe lands while the other's kernel runs
(its duty); with a short kernel and a long gap most probes find the GPU idle, so a large
shift says that merely returning to this context costs that much.

    python3 benchmarks/ctx_switch.py --out docs/benchmarks/h100-ctx-switch-DATE.json
    python3 benchmarks/ctx_switch.py --mps --out ...   # both under MPS: one context
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import harness  # puts the repository root on sys.path
from apps.hp_service import Probe, pct  # (stdlib only at import)

HERE = Path(__file__).resolve().parent
SPIN = r"""extern "C" __global__ void hb_spin(long long cycles) {
  long long t0 = clock64();
  while (clock64() - t0 < cycles) { }
}"""


def summary(waits: list[float]) -> dict[str, Any]:
    return {"n": len(waits), "p50": pct(waits, 50), "p90": pct(waits, 90),
            "p99": pct(waits, 99), "max": max(waits) if waits else None,
            "mean": statistics.fmean(waits) if waits else None}  # fmt: skip


def shift(beside: dict[str, Any], alone: dict[str, Any]) -> dict[str, float | None]:
    """Per percentile, what the other process added to the probe's wait (us)."""
    return {k: (beside[k] - alone[k]) if beside.get(k) is not None and alone.get(k)
            is not None else None for k in ("p50", "p90", "p99", "mean")}  # fmt: skip


def spin_cycles_per_us(cp: Any, k: Any) -> float:
    """clock64 cycles per us of the spin kernel, timed with CUDA events (median of 5)."""
    n = 2_000_000
    k((1,), (32,), (cp.int64(n),))  # compile and load
    rates = []
    for _ in range(5):
        e0, e1 = cp.cuda.Event(), cp.cuda.Event()
        e0.record()
        k((1,), (32,), (cp.int64(n),))
        e1.record()
        e1.synchronize()
        rates.append(n / (cp.cuda.get_elapsed_time(e0, e1) * 1e3))
    return statistics.median(rates)


def other(a: argparse.Namespace) -> int:
    """The other process: spin kernels of --other-us with host gaps until stdin closes."""
    import cupy as cp

    k = cp.RawKernel(SPIN, "hb_spin")
    cycles = int(a.other_us * spin_cycles_per_us(cp, k))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    rng = random.Random(a.seed + 1)
    k((1,), (32,), (cp.int64(cycles),))
    cp.cuda.Device().synchronize()
    print("ready", flush=True)
    n = 0
    t0 = time.monotonic()
    while not stop.is_set():
        k((1,), (32,), (cp.int64(cycles),))
        cp.cuda.Device().synchronize()
        n += 1
        time.sleep(a.other_gap_ms / 1e3 * rng.uniform(0.5, 1.5))
    dt = time.monotonic() - t0
    print(json.dumps({"kernels": n, "seconds": dt}), flush=True)
    return 0


def next_line(lines: queue.Queue[str], timeout: float) -> str | None:
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        return None


def last_json(lines: queue.Queue[str], timeout: float) -> dict[str, Any]:
    """The first line that parses as a JSON object (other lines: a library's chatter)."""
    deadline = time.monotonic() + timeout
    while (line := next_line(lines, max(0.0, deadline - time.monotonic()))) is not None:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return {}


def probe_phase(probe: Any, n: int, gap_ms: float, rng: random.Random) -> list[float]:
    waits = []
    for _ in range(n):
        time.sleep(gap_ms / 1e3 * rng.uniform(0.5, 1.5))
        waits.append(probe.fire())
    return waits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ctx_switch.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("probe", "other"), default="probe")
    ap.add_argument("--probes", type=int, default=2000, help="probes per phase (2000)")
    ap.add_argument("--probe-gap-ms", type=float, default=1.0, help="mean gap (1.0)")
    ap.add_argument("--other-us", type=float, default=10.0, help="other's kernel, us (10)")
    ap.add_argument("--other-gap-ms", type=float, default=0.2,
                    help="its mean gap (0.2: several of its kernels between two probes, "
                         "so nearly every probe follows one)")  # fmt: skip
    ap.add_argument("--mps", action="store_true",
                    help="both processes under a private MPS control daemon started (and "
                         "stopped) here: one shared context, no switch")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    for name in ("probes", "probe_gap_ms", "other_us", "other_gap_ms"):
        if not getattr(a, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0")
    if a.role == "other":
        return other(a)
    if a.out is None:
        ap.error("--out is required")
    if not a.mps:
        return measure(a)
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="hbctx-"))
    try:
        mps = harness.Mps(tmp)
        mps.start()
    except harness.StepError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"ctx_switch: error: {e}\n{e.tail}") from None
    os.environ.update(mps.env)  # before CUDA starts here; the other process inherits it
    try:
        return measure(a)
    finally:
        if problem := mps.stop():
            print(f"ctx_switch: warning: {problem}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def measure(a: argparse.Namespace) -> int:
    import cupy as cp
    import torch

    torch.cuda.init()
    probe = Probe(torch)
    rng = random.Random(a.seed)
    probe_phase(probe, 200, a.probe_gap_ms, rng)  # warm-up
    res: dict[str, Any] = {"what": "probe wait alone vs beside another process (us)"
                           + (", both under MPS" if a.mps else ""),
                           "settings": vars(a), "phases": {}}  # fmt: skip
    res["phases"]["alone"] = summary(probe_phase(probe, a.probes, a.probe_gap_ms, rng))
    cmd = [sys.executable, __file__, "--role", "other", "--other-us", f"{a.other_us:g}",
           "--other-gap-ms", f"{a.other_gap_ms:g}", "--seed", str(a.seed)]  # fmt: skip
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdin is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in p.stdout], daemon=True).start()
        if next_line(lines, 120.0) != "ready":
            raise SystemExit("ctx_switch: error: the other process did not start in 120 s")
        res["phases"]["beside"] = summary(probe_phase(probe, a.probes, a.probe_gap_ms, rng))
        if p.poll() is not None:
            raise SystemExit(f"ctx_switch: error: the other process died during the "
                             f"'beside' phase (exit {p.returncode}): no result")  # fmt: skip
        p.stdin.close()
        res["other"] = last_json(lines, 30.0)
        if p.wait(30) != 0 or "kernels" not in res["other"]:
            raise SystemExit(f"ctx_switch: error: the other process ended with "
                             f"{p.returncode} and no count: no result")  # fmt: skip
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
    res["phases"]["alone-after"] = summary(probe_phase(probe, a.probes, a.probe_gap_ms, rng))
    o = res.get("other") or {}
    if o.get("seconds"):
        res["other_duty"] = o["kernels"] * a.other_us / 1e6 / o["seconds"]
    ph = res["phases"]
    res["added_us"] = shift(ph["beside"], ph["alone"])
    res["drift_us"] = shift(ph["alone-after"], ph["alone"])
    res["cupy"] = cp.__version__
    harness.write_result(a.out, res)
    print(json.dumps({k: res[k] for k in ("added_us", "drift_us")}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
