"""``hbtui bench``: LP alone, then each policy on identical arrivals; JSON per design.md.

Exclusive runs first (even when not asked for) whenever an HP task uses ``slo_factor``
or to give the preemption baseline: SLO = factor × exclusive p99 of request latency,
preemption latency = enqueue→start minus exclusive's median for the same kernel.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from typing import Any

from hbtui.engine.backends import make_backend, resolve_backend
from hbtui.engine.metrics import Histogram
from hbtui.engine.model import HP, LP
from hbtui.engine.profile import Profile
from hbtui.engine.scheduler import Scheduler

SCHEMA = 1
Progress = Callable[[str, float], None]


def stderr_progress(label: str, frac: float) -> None:
    """Live percentage on a terminal; one line per finished run otherwise (logs, CI)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r  {label:<12} {frac * 100:5.1f}%" + ("\n" if frac >= 1 else ""))
    elif frac >= 1.0:
        sys.stderr.write(f"  {label} done\n")
    sys.stderr.flush()


def _run(prof: Profile, policy: str, duration_s: float, warmup_s: float, backend: str,
         seed: int, baseline_p99: dict[str, float], waits: dict[str, int],
         lp_only: bool, progress: Progress | None,
         watch: Callable[[Scheduler], None] | None = None) -> Scheduler:  # fmt: skip
    """``watch`` (diagnostics): called with the scheduler before the warm-up and after each
    20th of the run."""
    tasks = [replace(t) for t in prof.tasks if (t.cls == LP or not lp_only)]
    be = make_backend(backend, prof.sim, prof.device)
    sched = Scheduler(prof.kernels, tasks, be, policy, seed, baseline_p99)
    sched.metrics.preempt_baseline_ns = dict(waits)
    if watch:
        watch(sched)
    t0 = be.now_ns()
    sched.run_until(t0 + int(warmup_s * 1e9))
    sched.reset_stats()
    start = be.now_ns()
    end = start + int(duration_s * 1e9)
    step = max(1, (end - start) // 20)
    label = "lp-alone" if lp_only else policy
    t = start
    while t < end:
        t = min(end, t + step)
        sched.run_until(t)
        if watch:
            watch(sched)
        if progress:
            progress(label, (t - start) / (end - start))
    be.close()
    return sched


def _aggregate(sched: Scheduler, lp_alone: dict[str, float]) -> dict[str, Any]:
    s = sched.summary(lp_alone)
    lp_alone_rate = sum(lp_alone.values()) if lp_alone else None
    wall = s["wall_s"]
    m = sched.metrics
    hp_lat, pre = Histogram(), Histogram()
    requests = hits = 0
    slos: set[float | None] = set()
    lp_blocks = lp_slices = 0
    for name, ts in m.tasks.items():
        if ts.cls == HP:
            hp_lat.merge(ts.latency)
            pre.merge(ts.preemption(m.preempt_baseline_ns))
            requests += ts.requests
            hits += ts.slo_hits
            task = sched.tasks.get(name)
            slo = sched.slo_ns(task) if task else None
            slos.add(slo / 1e6 if slo else None)
        else:
            lp_blocks += ts.blocks
            lp_slices += ts.slices
    lp_rate = lp_blocks / wall if wall else 0.0
    slo_ms = slos.pop() if len(slos) == 1 else None  # several HP SLOs: see "tasks"
    return {
        "hp": {
            "requests": requests,
            "slo_ms": slo_ms,
            "slo_attainment": hits / requests if requests else None,
            "p50_ms": hp_lat.percentile(50) / 1e6,
            "p99_ms": hp_lat.percentile(99) / 1e6,
        },
        "lp": {
            "work_per_s": lp_rate,
            "throughput_norm": lp_rate / lp_alone_rate if lp_alone_rate else None,
        },
        "preemption_us": {
            "p50": pre.percentile(50) / 1e3,
            "p99": pre.percentile(99) / 1e3,
            "max": pre.max / 1e3,
        },
        "harvest_ratio": s["harvest_ratio"],
        "gpu_busy": s["gpu_busy"],
        "slices": lp_slices,
        "tasks": s["tasks"],
    }


def _job(prof: Profile, policy: str, lp_only: bool, duration_s: float, warmup_s: float,
         kind: str, seed: int, baseline: dict[str, float], waits: dict[str, int],
         lp_alone: dict[str, float], progress: Progress | None) -> dict[str, Any]:  # fmt: skip
    """One run (a policy, or LP alone); returns plain data so it can run in a worker."""
    s = _run(prof, policy, duration_s, warmup_s, kind, seed, baseline, waits, lp_only, progress)
    be = s.backend
    out: dict[str, Any] = {
        "device": be.device, "pci_bus_id": be.pci_bus_id, "hp_issue": be.hp_issue
    }  # fmt: skip
    if lp_only:
        wall = s.summary()["wall_s"]
        out["lp_rates"] = {n: ts.blocks / wall for n, ts in s.metrics.tasks.items()}
        return out
    if policy == "exclusive":
        out["baseline"] = {
            n: ts.latency.percentile(99) / 1e6 for n, ts in s.metrics.tasks.items() if ts.cls == HP
        }
        out["waits"] = s.metrics.wait_medians()
        s.baseline_p99_ms = dict(out["baseline"])
        s.metrics.preempt_baseline_ns = dict(out["waits"])
        # Its SLO was only known after the run: count hits from the histogram.
        for name, ts in s.metrics.tasks.items():
            if ts.cls == HP and (slo := s.slo_ns(s.tasks[name])) is not None:
                ts.slo_hits = round(ts.latency.fraction_le(slo) * ts.requests)
    out["result"] = _aggregate(s, lp_alone)
    return out


def bench(
    prof: Profile,
    policies: list[str],
    duration_s: float,
    seed: int | None = None,
    backend: str = "sim",
    progress: Progress | None = stderr_progress,
    warmup_s: float | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """LP alone and exclusive first (they give the baselines), then the other policies.

    With ``jobs`` > 1 (sim only: one GPU cannot be shared between runs) independent runs
    go to worker processes; results are identical to a serial run (same seeds).
    """
    seed = prof.seed if seed is None else seed
    kind = resolve_backend(backend)
    jobs = 1 if kind != "sim" else max(1, jobs)
    warm = min(1.0, duration_s * 0.1) if warmup_s is None else warmup_s
    has_hp = any(t.cls == HP for t in prof.tasks)
    has_lp = any(t.cls == LP for t in prof.tasks)
    wall0 = time.perf_counter()
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "backend": kind,
        "device": "",
        "device_index": None if kind == "sim" else prof.device,
        "pci_bus_id": None,
        "hp_issue": "",
        "profile": prof.name,
        "seed": seed,
        "duration_s": duration_s,
        "warmup_s": warm,
        "simulated": kind == "sim",
        "lp_alone": {"work_per_s": None},
        "results": {},
    }
    common = (duration_s, warm, kind, seed)
    first: list[tuple[str, bool]] = []
    if has_lp:
        first.append(("lp-alone", True))
    if has_hp or "exclusive" in policies:
        first.append(("exclusive", False))
    rest = [p for p in dict.fromkeys(policies) if p != "exclusive"]

    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    try:

        def run_all(batch: list[tuple[str, bool]], *extra: Any) -> dict[str, dict[str, Any]]:
            if pool is None:
                return {
                    label: _job(
                        prof, label if not lp else "spatial", lp, *common, *extra, progress
                    )  # fmt: skip
                    for label, lp in batch
                }
            futs = {
                pool.submit(
                    _job, prof, label if not lp else "spatial", lp, *common, *extra, None
                ): label  # fmt: skip
                for label, lp in batch
            }
            done = {}
            for f in as_completed(futs):
                done[futs[f]] = f.result()
                if progress:
                    progress(futs[f], 1.0)
            return done

        got = run_all(first, {}, {}, {})
        lp_alone: dict[str, float] = got.get("lp-alone", {}).get("lp_rates", {})
        if lp_alone:
            out["lp_alone"]["work_per_s"] = sum(lp_alone.values())
        excl = got.get("exclusive", {})
        baseline, waits = excl.get("baseline", {}), excl.get("waits", {})
        got.update(run_all([(p, False) for p in rest], baseline, waits, lp_alone))
    finally:
        if pool is not None:
            pool.shutdown()
    for label, r in got.items():
        out["device"] = r["device"]
        out["pci_bus_id"] = r["pci_bus_id"]
        out["hp_issue"] = r["hp_issue"]
        if label == "lp-alone":
            continue
        if label in policies:
            out["results"][label] = r["result"]
        else:
            out["baseline_exclusive"] = r["result"]
    out["results"] = {p: out["results"][p] for p in policies if p in out["results"]}
    out["wall_s"] = time.perf_counter() - wall0
    out["jobs"] = jobs
    return out


def format_table(result: dict[str, Any]) -> str:
    head = (
        f"{'policy':<12} {'SLO ms':>7} {'attain':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'pre p50':>8} {'pre p99':>8} {'pre max':>8} {'LP norm':>8} {'harvest':>8} "
        f"{'busy':>6} {'slices':>8}"
    )
    sim = " (SIMULATED GPU)" if result.get("simulated") else ""
    lines = [
        f"hbtui bench: profile {result['profile']} on {result['device']}{sim}, "
        f"seed {result['seed']}, {result['duration_s']:g} s per policy, "
        f"HP issued by {result.get('hp_issue') or 'python'}",
        head,
        "-" * len(head),
    ]

    def f(v: Any, fmt: str) -> str:
        if isinstance(v, int | float):
            return format(v, fmt)
        width = "".join(ch for ch in fmt.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 1))

    for pol, r in result["results"].items():
        hp, lp, pre = r["hp"], r["lp"], r["preemption_us"]
        att = hp["slo_attainment"]
        lines.append(
            f"{pol:<12} {f(hp['slo_ms'], '7.3f')} "
            f"{(f(att * 100, '6.2f') + '%') if att is not None else '      -'} "
            f"{f(hp['p50_ms'], '7.3f')} {f(hp['p99_ms'], '7.3f')} "
            f"{f(pre['p50'], '8.1f')} {f(pre['p99'], '8.1f')} {f(pre['max'], '8.1f')} "
            f"{f(lp['throughput_norm'], '8.3f')} {f(r['harvest_ratio'], '8.3f')} "
            f"{f(r['gpu_busy'], '6.3f')} {r['slices']:>8}"
        )
    alone = result["lp_alone"]["work_per_s"]
    lines.append(f"LP alone: {f(alone, ',.0f')} blocks/s; preemption in µs beyond exclusive")
    return "\n".join(lines)
