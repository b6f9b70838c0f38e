"""Where does the engine spend time per HP kernel? (cuda backend diagnostic)

Runs a profile for a few seconds under one policy and prints medians of: GPU end of a
kernel -> launch call of the next kernel of the same request (turnaround), GPU end ->
wait() returning it (detection), launch call -> first block (issue->start), and each
HP kernel's run time, split by whether an LP launch was on the GPU at the same time
(co-run) — the interference the simulator models as a flat factor.

With native HP issue (the default where it builds) the HP launches come back through
``submit_chain``; they are recorded too, and "detection" is then the native thread's.
It also prints how often an LP launch overlapped an HP kernel and by how much, and (with
``--json``) writes every figure.

    PYTHONPATH=. python3 benchmarks/engine_hp_path.py PROFILE [--policy P] [--seconds S]
        [--hp-issue auto|native|python] [--json OUT]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import time
from dataclasses import replace

from hbtui.engine.backends import make_backend
from hbtui.engine.model import HP, LP
from hbtui.engine.profile import load, resolve
from hbtui.engine.scheduler import Scheduler


def med(v: list[float]) -> float:
    return round(statistics.median(v), 2) if v else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--policy", default="exclusive")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--hp-issue", choices=("auto", "native", "python"), default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--backend", default="cuda", choices=("cuda", "sim"))
    a = ap.parse_args()
    if a.hp_issue:
        os.environ["HBTUI_HP_ISSUE"] = a.hp_issue
    prof = load(resolve(a.profile))
    be = make_backend(a.backend, prof.sim, prof.device)
    launches, seen = [], {}
    submit, wait, chain = be.submit, be.wait, be.submit_chain

    def rec_submit(x):  # noqa: ANN001, ANN202
        submit(x)
        launches.append(x)

    def rec_chain(xs, gaps, t):  # noqa: ANN001, ANN202
        chain(xs, gaps, t)
        launches.extend(xs)

    def rec_wait(u: int):  # noqa: ANN202
        r = wait(u)
        t = time.perf_counter_ns()
        for x in r:
            seen[x.id] = t
        return r

    be.submit, be.wait, be.submit_chain = rec_submit, rec_wait, rec_chain
    tasks = [replace(t) for t in prof.tasks if a.policy != "exclusive" or t.cls == HP]
    s = Scheduler(prof.kernels, tasks, be, a.policy, prof.seed, {})
    # every decision: (time, outcome, predicted bubble left, slack bound) — the wrapper's own
    # cost (~2 µs) shifts timing slightly; this is a diagnostic
    decisions: list[tuple[int, str, int, int]] = []
    margins: list[int] = []  # the lateness margin at every decision
    why = getattr(s.policy, "why", None)
    if why is not None:
        decide = s.policy.decide

        def rec_decide(sched, now):  # noqa: ANN001, ANN202
            before = dict(why)
            left, slack = sched.predicted_bubble_left(now), sched.slack_bound(now)
            r = decide(sched, now)
            k = next((k for k in why if why[k] != before[k]), "none")
            decisions.append((now, k, left, slack))
            margins.append(max(sched.slice_margin_ns.values()))
            return r

        s.policy.decide = rec_decide
    end = be.now_ns() + int(a.seconds * 1e9)
    clocks = []
    while be.now_ns() < end:  # NVML between 100-ms chunks: do the clocks move with load?
        s.run_until(min(end, be.now_ns() + 100_000_000))
        g = be.gpu_sample()
        if g:
            clocks.append(g)
    done = [x for x in launches if x.end_ns > 0]
    out: dict = {"policy": a.policy, "device": be.device, "hp_issue": be.hp_issue}
    if clocks:
        out["nvml_median"] = {
            k: med([c[k] for c in clocks if isinstance(c.get(k), int | float)])
            for k in clocks[0]
            if isinstance(clocks[0][k], int | float)
        }
        print("NVML medians:", out["nvml_median"])
    out.update(
        launch_latency_us=s.launch_latency_ns / 1e3,
        hp_latency_us=s.hp_latency_ns / 1e3,
        slice_margin_us={k: v / 1e3 for k, v in s.slice_margin_ns.items()},
        dep_us=s.dep_ns / 1e3,
        pre_issue_lead_us=getattr(s.policy, "lead_ns", 0.0) / 1e3,
        decisions=why,
    )
    print(
        f"learned launch latency {s.launch_latency_ns / 1e3:.1f} µs (HP "
        f"{s.hp_latency_ns / 1e3:.1f} µs), slice margin "
        f"{ {k: round(v / 1e3, 1) for k, v in s.slice_margin_ns.items()} } µs, "
        f"HP end -> queued slice start {s.dep_ns / 1e3:.1f} µs, "
        f"pre-issue lead {getattr(s.policy, 'lead_ns', 0.0) / 1e3:.1f} µs, "
        f"decisions {why}"
    )
    hp = [x for x in done if x.cls == HP]
    lp = sorted((x.start_ns, x.end_ns) for x in done if x.cls == LP)
    lp_starts = [x[0] for x in lp]
    turn, detect = [], []
    for x, y in zip(hp, hp[1:], strict=False):
        if y.request == x.request:
            turn.append((y.issue_ns - x.end_ns) / 1e3)
    for x in hp:
        t_seen = x.seen_ns if x.seen_ns >= 0 else seen[x.id]
        detect.append((t_seen - x.end_ns) / 1e3)
    alone: dict[str, list[float]] = {}
    corun: dict[str, list[float]] = {}
    overlaps = []  # µs of LP overlapping each co-run HP kernel
    for x in hp:
        i = bisect.bisect_left(lp_starts, x.end_ns)
        ov = sum(
            max(0, min(e0, x.end_ns) - max(s0, x.start_ns)) for s0, e0 in lp[max(0, i - 4) : i]
        )
        if ov:
            overlaps.append(ov / 1e3)
        (corun if ov else alone).setdefault(x.kernel.name, []).append((x.end_ns - x.start_ns) / 1e3)
    issue_start = [(x.start_ns - x.issue_ns) / 1e3 for x in hp]
    print(f"policy {a.policy}: {len(hp)} HP kernels, {len(lp)} LP launches on {be.device}")
    print(
        f"median µs: turnaround {med(turn)}, detection {med(detect)}, "
        f"issue->start {med(issue_start)} (HP issued by {be.hp_issue})"
    )
    print(
        f"HP kernels overlapped by LP: {len(overlaps)} of {len(hp)}, "
        f"overlap median {med(overlaps)} µs"
    )
    out.update(
        hp_kernels=len(hp), lp_launches=len(lp), turnaround_us=med(turn),
        detection_us=med(detect), issue_start_us=med(issue_start),
        overlapped=len(overlaps), overlap_us=med(overlaps), kernels={},
    )  # fmt: skip
    for k in dict.fromkeys(x.kernel.name for x in hp):
        print(
            f"  {k:<8} run alone {med(alone.get(k, []))} µs (n={len(alone.get(k, []))}), "
            f"co-run with LP {med(corun.get(k, []))} µs (n={len(corun.get(k, []))})"
        )
        out["kernels"][k] = {
            "alone_us": med(alone.get(k, [])), "alone_n": len(alone.get(k, [])),
            "corun_us": med(corun.get(k, [])), "corun_n": len(corun.get(k, [])),
        }  # fmt: skip
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
        # reaction: HP end -> first LP issue in that gap, and that slice's issue -> start
        lp_by_issue = sorted((x.issue_ns, x.start_ns) for x in done if x.cls == LP)
        issues = [t for t, _ in lp_by_issue]
        react, first_lat = [], []
        for x, y in zip(hp, hp[1:], strict=False):
            if y.request != x.request:
                continue
            i = bisect.bisect_left(issues, x.end_ns)
            if i < len(issues) and issues[i] < y.start_ns:
                react.append((issues[i] - x.end_ns) / 1e3)
                first_lat.append((lp_by_issue[i][1] - issues[i]) / 1e3)
        lp_lat = [(x.start_ns - x.issue_ns) / 1e3 for x in done if x.cls == LP]
        print(
            f"gaps with LP: {len(react)}; HP end -> first LP issue median {med(react)} µs, "
            f"its issue -> start {med(first_lat)} µs; all LP issue -> start {med(lp_lat)} µs"
        )
        # the decisions inside each intra-request gap: how soon after the HP end, and what
        dec_t = [d[0] for d in decisions]
        first_delay, first_kind, n_in_gap, lefts, slacks = [], {}, [], [], []
        for x, y in zip(hp, hp[1:], strict=False):
            if y.request != x.request:
                continue
            i = bisect.bisect_left(dec_t, x.end_ns)
            j = bisect.bisect_left(dec_t, y.issue_ns)
            n_in_gap.append(j - i)
            if i < j:
                t, k, left, slack = decisions[i]
                first_delay.append((t - x.end_ns) / 1e3)
                first_kind[k] = first_kind.get(k, 0) + 1
                lefts.append(left / 1e3)
                slacks.append(min(slack, 10**9) / 1e3)
        print(
            f"decisions per gap median {med(n_in_gap)}; first one {med(first_delay)} µs after "
            f"the HP end, outcome {first_kind}; predicted bubble left then {med(lefts)} µs, "
            f"slack bound {med(slacks)} µs"
        )
        out.update(
            decisions_per_gap=med(n_in_gap), first_decision_us=med(first_delay),
            first_outcome=first_kind, first_left_us=med(lefts), first_slack_us=med(slacks),
        )  # fmt: skip
        # slices queued behind a chained HP kernel: when did they start?
        hp_by_id = {x.id: x for x in hp}
        nxt_issue = {x.id: y.issue_ns for x, y in zip(hp, hp[1:], strict=False)}
        beh = [x for x in done if x.cls == LP and x.after is not None and x.after.id in hp_by_id]
        d_end = [(x.start_ns - x.after.end_ns) / 1e3 for x in beh]
        d_next = [
            (x.start_ns - nxt_issue[x.after.id]) / 1e3 for x in beh if x.after.id in nxt_issue
        ]
        d_iss = [(x.issue_ns - x.after.issue_ns) / 1e3 for x in beh]
        print(
            f"slices behind HP: {len(beh)}; start - HP end median {med(d_end)} µs, "
            f"start - next HP issue {med(d_next)} µs, issue - HP issue {med(d_iss)} µs"
        )
        out.update(
            behind=len(beh), behind_start_after_hp_end_us=med(d_end),
            behind_start_after_next_hp_issue_us=med(d_next),
            behind_issue_after_hp_issue_us=med(d_iss),
        )  # fmt: skip
        out.update(
            gaps_with_lp=len(react), react_us=med(react), first_issue_start_us=med(first_lat),
            lp_issue_start_us=med(lp_lat),
        )  # fmt: skip
        # slice lateness (end - predicted end) by how the slice was issued: armed behind an
        # HP kernel before it went out, queued behind a running one, pre-issued behind LP,
        # or cold (nothing of ours ahead of it)
        by_issue = sorted((x for x in done if x.cls == LP), key=lambda x: x.issue_ns)
        cats: dict[str, list[float]] = {}
        prev_end = 0
        for x in by_issue:
            if x.after is not None:
                c = "armed" if x.issue_ns < x.after.issue_ns else "behind"
            else:
                c = "pre-issued" if prev_end > x.issue_ns else "cold"
            prev_end = max(prev_end, x.end_ns)
            cats.setdefault(c, []).append((x.end_ns - x.predicted_ns) / 1e3)

        def q(v: list[float], f: float) -> float:
            return round(sorted(v)[int(f * (len(v) - 1))], 2) if v else float("nan")

        late = {c: {"n": len(v), "p50": q(v, 0.5), "p90": q(v, 0.9)} for c, v in cats.items()}
        mq = {f"p{int(f * 100)}": q([m / 1e3 for m in margins], f) for f in (0.1, 0.5, 0.9)}
        print(f"slice lateness by issue path (µs): {late}; margin at decisions {mq}")
        out.update(late_by_path=late, margin_us=mq, arm_stats=getattr(be, "arm_stats", None))
        errs = [(x.end_ns - x.predicted_ns) / 1e3 for x in done if x.cls == LP]
        p90 = round(sorted(errs)[int(0.9 * (len(errs) - 1))], 2) if errs else None
        print(f"LP slice end minus predicted end, median {med(errs)}, p90 {p90} µs (n={len(errs)})")
        waves = {k: round(v["wave_us"], 1) for k, v in s.waves.snapshot().items()}
        print("wave model:", waves)
        out.update(
            gap_busy=busy / max(1, gap_tot),
            slice_late_us=med(errs),
            slice_late_p90_us=p90,
            waves=waves,
        )
    be.close()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
