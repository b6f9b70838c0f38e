"""Where does the engine spend time per HP kernel? (cuda backend diagnostic)

Runs a profile for a few seconds under one policy and prints medians of: GPU end of a
kernel -> launch call of the next kernel of the same request (turnaround), GPU end ->
wait() returning it (detection), launch call -> first block (issue->start), and each
HP kernel's run time, split by whether an LP launch was on the GPU at the same time
(co-run) — the interference the simulator models as a flat factor.

    PYTHONPATH=. python3 benchmarks/engine_hp_path.py PROFILE [--policy P] [--seconds S]
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import time
from dataclasses import replace

from engine.backends import make_backend
from engine.model import HP, LP
from engine.profile import load, resolve
from engine.scheduler import Scheduler


def med(v: list[float]) -> float:
    return round(statistics.median(v), 2) if v else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--policy", default="exclusive")
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    prof = load(resolve(a.profile))
    be = make_backend("cuda", prof.sim, prof.device)
    launches, seen = [], {}
    submit, wait = be.submit, be.wait

    def rec_submit(x):  # noqa: ANN001, ANN202
        submit(x)
        launches.append(x)

    def rec_wait(u: int):  # noqa: ANN202
        r = wait(u)
        t = time.perf_counter_ns()
        for x in r:
            seen[x.id] = t
        return r

    be.submit, be.wait = rec_submit, rec_wait
    tasks = [replace(t) for t in prof.tasks if a.policy != "exclusive" or t.cls == HP]
    s = Scheduler(prof.kernels, tasks, be, a.policy, prof.seed, {})
    s.run_until(be.now_ns() + int(a.seconds * 1e9))
    done = [x for x in launches if x.end_ns > 0]
    hp = [x for x in done if x.cls == HP]
    lp = sorted((x.start_ns, x.end_ns) for x in done if x.cls == LP)
    lp_starts = [x[0] for x in lp]
    turn, detect = [], []
    for x, y in zip(hp, hp[1:], strict=False):
        if y.request == x.request:
            turn.append((y.issue_ns - x.end_ns) / 1e3)
    for x in hp:
        detect.append((seen[x.id] - x.end_ns) / 1e3)
    alone: dict[str, list[float]] = {}
    corun: dict[str, list[float]] = {}
    for x in hp:
        i = bisect.bisect_left(lp_starts, x.end_ns)
        overlap = any(s0 < x.end_ns and e0 > x.start_ns for s0, e0 in lp[max(0, i - 4) : i])
        (corun if overlap else alone).setdefault(x.kernel.name, []).append(
            (x.end_ns - x.start_ns) / 1e3
        )
    print(f"policy {a.policy}: {len(hp)} HP kernels, {len(lp)} LP launches on {be.device}")
    print(
        f"median µs: turnaround {med(turn)}, detection {med(detect)}, "
        f"issue->start {med([(x.start_ns - x.issue_ns) / 1e3 for x in hp])}"
    )
    for k in dict.fromkeys(x.kernel.name for x in hp):
        print(
            f"  {k:<8} run alone {med(alone.get(k, []))} µs (n={len(alone.get(k, []))}), "
            f"co-run with LP {med(corun.get(k, []))} µs (n={len(corun.get(k, []))})"
        )
    if lp:
        # Harvest inside intra-request host gaps: LP busy time within [end of an HP kernel,
        # start of the next kernel of the same request], and how well slices were predicted.
        gap_tot = busy = 0
        for x, y in zip(hp, hp[1:], strict=False):
            if y.request != x.request:
                continue
            g0, g1 = x.end_ns, y.start_ns
            gap_tot += g1 - g0
            i = bisect.bisect_left(lp_starts, g1)
            for s0, e0 in lp[max(0, i - 8) : i]:
                busy += max(0, min(e0, g1) - max(s0, g0))
        print(f"intra-request gaps: LP busy {busy / max(1, gap_tot):.3f} of {gap_tot / 1e9:.3f} s")
        errs = [(x.end_ns - x.predicted_ns) / 1e3 for x in done if x.cls == LP]
        print(f"LP slice end minus predicted end, median {med(errs)} µs (n={len(errs)})")
        print("wave model:", {k: round(v["wave_us"], 1) for k, v in s.waves.snapshot().items()})
    be.close()


if __name__ == "__main__":
    main()
