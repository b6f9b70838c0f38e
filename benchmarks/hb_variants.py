"""Hummingbird tuning variants against one LP-alone + exclusive baseline (cuda or sim).

Runs LP alone, exclusive and temporal once, then hummingbird once per variant with the
policy's module constants set as the variant says, all on the same arrivals (seed 1).
Prints one line per run and writes every result (engine.bench's per-policy dict, plus for
each variant a "trace" of the scheduler's state every 5 % of the run) to OUT.
The results in docs/benchmarks/h100_tuning/ came from this script (see
docs/benchmarks/cuda_default_h100.md for which code each call ran).

    PYTHONPATH=. python3 benchmarks/hb_variants.py PROFILE SECONDS OUT [VARIANT,...]
    KIND=sim PYTHONPATH=. python3 benchmarks/hb_variants.py default 3 /tmp/v.json

Variants (VARIANTS below): hb (the defaults), hb_nomargin (no lateness margin), hb_q50 /
hb_q75 / hb_q97 (the margin is that quantile of recent slices' lateness, default 0.9),
hb_mc1 / hb_mc2 (at most 1 / 2 slices merged in inter-request bubbles), hb_r0 / hb_r25 /
hb_r50 (SLO reserve), hb_nobehind (no slice queued behind the running HP kernel), hb_noarm
(queued behind it only once it runs, not armed during the gap before it), hb_b1 / hb_b2 (one /
two slices queued behind the HP kernel instead of three), hb_g0 / hb_g1 / hb_g15 / hb_g2 (plan
for a host gap 0 / 1 / 1.5 / 2 mean absolute deviations below its mean; default 1.5),
hb_g1_r45 (1, with an SLO reserve of 0.45).
"""

from __future__ import annotations

import json
import os
import sys

from hbtui.engine import policies
from hbtui.engine.bench import _aggregate, _job, _run
from hbtui.engine.model import HP, LP
from hbtui.engine.profile import load, resolve
from hbtui.engine.scheduler import Scheduler

VARIANTS: dict[str, dict[str, object]] = {  # name -> policy module constants to set
    "hb": {},
    "hb_nomargin": {"LATE_MARGIN": False},
    "hb_q50": {"LATE_QUANTILE": 0.5},
    "hb_q75": {"LATE_QUANTILE": 0.75},
    "hb_q97": {"LATE_QUANTILE": 0.97},
    "hb_mc1": {"MAX_CONSOLIDATE": 1},
    "hb_mc2": {"MAX_CONSOLIDATE": 2},
    "hb_r0": {"SLACK_RESERVE": 0.0},
    "hb_r25": {"SLACK_RESERVE": 0.25},
    "hb_r35": {"SLACK_RESERVE": 0.35},
    "hb_r50": {"SLACK_RESERVE": 0.5},
    "hb_nobehind": {"BEHIND_HP": False},
    "hb_noarm": {"ARM_AHEAD": False},
    "hb_b1": {"BEHIND_SLICES": 1},
    "hb_b2": {"BEHIND_SLICES": 2},
    "hb_noarm_q75": {"ARM_AHEAD": False, "LATE_QUANTILE": 0.75},
    "hb_g1": {"GAP_DEVS": 1.0},
    "hb_g15": {"GAP_DEVS": 1.5},
    "hb_g2": {"GAP_DEVS": 2.0},
    "hb_g0": {"GAP_DEVS": 0.0},
    "hb_g1_r45": {"GAP_DEVS": 1.0, "SLACK_RESERVE": 0.45},
}


def _traced(prof, dur: float, warm: float, kind: str, seed: int, base, waits, lp) -> dict:  # noqa: ANN001
    """One hummingbird run (engine.bench's) with a snapshot of the scheduler's state every
    5 % of the run: LP blocks done, the policy's decision counters, the LP launches in
    flight and the learned models -- to see *when* and *why* LP stops."""
    trace: list[dict] = []
    calls: list[list[tuple]] = []  # _behind_hp calls, recorded from before the warm-up

    def watch(s: Scheduler) -> None:
        if not calls:
            calls.append(_watch_behind_hp(s))
            return
        be, now = s.backend, s.backend.now_ns()
        trace.append({
            "t_s": round((now - s.metrics.start_ns) / 1e9, 2),
            "lp_blocks": sum(ts.blocks for ts in s.metrics.tasks.values() if ts.cls == LP),
            "hp_requests": sum(ts.requests for ts in s.metrics.tasks.values() if ts.cls == HP),
            "why": dict(s.policy.why),
            "lp_inflight": [
                {"kernel": x.kernel.name, "blocks": x.blocks, "age_us": (now - x.issue_ns) / 1e3,
                 "after": x.after is not None,
                 "after_issued": x.after is not None and be.chain_issued(x.after)}
                for x in s.lp_inflight
            ],
            "hp_active": s.hp_kernels_active, "hp_in_flight": s.hp_requests_in_flight,
            "margin_us": {k: v / 1e3 for k, v in s.slice_margin_ns.items()},
            "dep_us": s.dep_ns / 1e3, "lat_us": s.launch_latency_ns / 1e3,
            "issue_delay_us": s.issue_delay_ns / 1e3, "lead_us": s.policy.lead_ns / 1e3,
            "slack_us": s.slack_bound(now, policies._reserve(s)) / 1e3,
            "waves_us": {k: round(v["wave_us"], 1) for k, v in s.waves.snapshot().items()},
            "arm_stats": dict(getattr(be, "arm_stats", None) or {}),
            "stuck": _stuck(be, s, now),
            "behind_hp": _summary(calls[0]),
        })  # fmt: skip

    s = _run(prof, "hummingbird", dur, warm, kind, seed, base, waits, False, None, watch)
    return {**_aggregate(s, lp), "trace": trace}


def _watch_behind_hp(s: Scheduler) -> list[tuple]:
    """Record each call of the policy's ``_behind_hp``: the bubble it plans into (end -
    start, as it computes them), the SLO slack bound, and how many slices it queued."""
    calls: list[tuple] = []
    pol, orig = s.policy, s.policy._behind_hp

    def watched(sched: Scheduler, now: int):  # noqa: ANN202
        got = sched.next_chained_hp()
        n0 = len(sched.lp_inflight)
        last = sched.lp_inflight[-1].predicted_ns if sched.lp_inflight else None
        r = orig(sched, now)
        if got is None:
            calls.append(("none",))
            return r
        st, hp, issued = got
        req = st.queue[0]
        nxt = req.step + 1
        if nxt >= len(req.gaps_ns):
            calls.append(("last",))
            return r
        lat = sched.hp_latency_ns
        hp_end = st.step_gap_start + req.gaps_ns[req.step] + lat + int(st.dur_ema[req.step])
        path = policies.AFTER if issued else policies.ARMED
        calls.append((
            "issued" if issued else "armed", len(sched.lp_inflight) - n0,
            (hp_end + st.gap_low(nxt) + lat - sched.margin_ns(path) - hp_end - sched.dep_ns) / 1e3,
            st.gap_low(nxt) / 1e3, st.gap_dev[nxt] / 1e3,
            sched.slack_bound(now, policies._reserve(sched)) / 1e3,
            (hp_end - now) / 1e3, req.step,
            0.0 if last is None else max(0, last - hp_end - sched.dep_ns) / 1e3,
        ))  # fmt: skip
        return r

    pol._behind_hp = watched
    return calls


def _summary(calls: list[tuple]) -> dict:
    """Per kind of call since the last summary: count, slices queued per call, medians of
    the planned bubble, gap_low, gap_dev, slack bound, time to the HP kernel's end."""

    def med(v: list[float]) -> float:
        v = sorted(v)
        return round(v[len(v) // 2], 1) if v else float("nan")

    out: dict = {}
    for kind in ("armed", "issued"):
        c = [x for x in calls if x[0] == kind]
        if c:
            out[kind] = {
                "n": len(c), "slices": round(sum(x[1] for x in c) / len(c), 2),
                "zero": sum(x[1] == 0 for x in c), "bubble": med([x[2] for x in c]),
                "gap_low": med([x[3] for x in c]), "gap_dev": med([x[4] for x in c]),
                "slack": med([x[5] for x in c]), "slack_lt_60": sum(x[5] < 60 for x in c),
                "to_hp_end": med([x[6] for x in c]), "lp_lag": med([x[8] for x in c]),
                "lp_lag_gt_30": sum(x[8] > 30 for x in c),
                "by_step": {k: sum(1 for x in c if x[7] == k) for k in range(8)},
            }  # fmt: skip
    out["other"] = len(calls) - sum(v["n"] for v in out.values() if isinstance(v, dict))
    calls.clear()
    return out


def _stuck(be, s: Scheduler, now: int) -> list | None:  # noqa: ANN001
    """cuda backend internals of LP launches in flight for over 50 ms (none should be)."""
    if not s.lp_inflight or now - s.lp_inflight[0].issue_ns < 50_000_000:
        return None
    ch = getattr(be, "_chain", None)
    out = []
    for q in getattr(be, "_queues", {}).values():
        for it in q:
            la, slot = it[0], it[2]
            cev = getattr(be, "_chain_ev", {})
            e = cev.get(la.after.id) if la.after is not None else None
            d = {
                "id": la.id, "kernel": la.kernel.name, "blocks": [la.start_block, la.end_block],
                "issue_age_us": (now - la.issue_ns) / 1e3, "slot": slot,
                "stamps": [int(be._ts[2 * slot]), int(be._ts[2 * slot + 1])] if slot >= 0 else None,
                "event": int(be._cu.cuEventQuery(it[1])[0]),
                "after": None if la.after is None else {
                    "id": la.after.id, "seq": None if e is None else e[1],
                    "issue_ns_rel": la.after.issue_ns - la.issue_ns,
                    "end_ns_rel": la.after.end_ns - la.issue_ns if la.after.end_ns >= 0 else None,
                },
                "armed": None if slot < 0 or len(it) < 4 else {
                    "slot": it[3].slot, "hp": it[3].hp, "out": it[3].out,
                    "word": [int(ch._arm_word[i].value) >> 2 for i in range(ch.arm_slots)],
                    "state": [int(ch._arm_word[i].value) & 3 for i in range(ch.arm_slots)],
                },
            }  # fmt: skip
            out.append(d)
    armed = [(a.slot, a.hp, a.out) for a in getattr(be, "_armed", ())]
    seq = getattr(be, "_chain_seq", None)
    return {"items": out, "issued": ch.issued if ch else None, "armed_list": armed,
            "chain_seq": seq, "pending": ch.pending if ch else None}  # fmt: skip


def main() -> None:
    prof = load(resolve(sys.argv[1]))
    dur = float(sys.argv[2])
    out = sys.argv[3]
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else ["hb", "hb_r0"]
    kind = os.environ.get("KIND", "cuda")
    seed, warm = 1, min(1.0, dur * 0.1)
    lp = _job(prof, "spatial", True, dur, warm, kind, seed, {}, {}, {}, None)["lp_rates"]
    ex = _job(prof, "exclusive", False, dur, warm, kind, seed, {}, {}, {}, None)
    base, waits = ex["baseline"], ex["waits"]
    res: dict = {"exclusive": ex["result"], "lp_alone": lp}
    res["temporal"] = _job(prof, "temporal", False, dur, warm, kind, seed, base, waits, lp, None)[
        "result"
    ]
    defaults = {k: getattr(policies, k) for v in VARIANTS.values() for k in v}
    for v in names:
        for k, val in {**defaults, **VARIANTS[v]}.items():
            setattr(policies, k, val)
        key = v if v not in res else f"{v}#{sum(k.split('#')[0] == v for k in res) + 1}"
        res[key] = _traced(prof, dur, warm, kind, seed, base, waits, lp)
    t = res["temporal"]["lp"]["throughput_norm"] or 0.0
    for k, r in res.items():
        if k == "lp_alone":
            continue
        lpn = r["lp"]["throughput_norm"]
        ratio = (lpn or 0.0) / t if t else 0.0
        print(
            f"{k:<16} att {r['hp']['slo_attainment'] * 100:6.2f}% p50 {r['hp']['p50_ms']:.3f} "
            f"p99 {r['hp']['p99_ms']:.3f} pre99 {r['preemption_us']['p99']:.1f} "
            f"LP {lpn if lpn is None else round(lpn, 3)} x{ratio:.2f} "
            f"harvest {r['harvest_ratio']:.3f}"
        )
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
