"""The pure parts of benchmarks/hp_overhead_ab.py (CPU choice, block orders, paired
ratios, bootstrap, verdict) and hp_service.py's closed-loop arguments: no torch needed."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str, path: Path):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the script imports harness by its path
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ab = _load("hp_overhead_ab", BENCH / "hp_overhead_ab.py")
svc = _load("hp_service_app", BENCH / "apps" / "hp_service.py")


def test_cpu_lists_round_trip() -> None:
    assert ab.parse_cpus("4-7,9, 2") == [2, 4, 5, 6, 7, 9]
    assert ab.cpu_list([9, 2, 4, 5, 6, 7]) == "2,4-7,9"
    for bad in ("", "a", "3-1", "1-x"):
        with pytest.raises(ValueError):
            ab.parse_cpus(bad)
    assert svc.parse_cpus("0-2") == [0, 1, 2]


def test_cpu_cores_and_choice(tmp_path: Path) -> None:
    # 8 CPUs, hyperthread siblings n and n+4 (a common VM layout)
    for c in range(8):
        topo = tmp_path / f"cpu{c}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text("0\n")
        (topo / "core_id").write_text(f"{c % 4}\n")
    cores = ab.cpu_cores(list(range(8)), tmp_path)
    assert cores == [[0, 4], [1, 5], [2, 6], [3, 7]]
    svc_cpus, host = ab.choose_cpus(cores, 4, 4)
    assert svc_cpus == [2, 3, 6, 7] and host == [0, 1, 4, 5]  # whole cores, disjoint
    svc_cpus, host = ab.choose_cpus(cores, 1, 1)
    assert svc_cpus == [3, 7] and host == [0, 4]
    # unreadable topology: one CPU per core; two CPUs: one each; one CPU: shared
    assert ab.cpu_cores([0, 1], tmp_path / "none") == [[0], [1]]
    assert ab.choose_cpus([[0], [1]], 4, 4) == ([1], [0])
    assert ab.choose_cpus([[0]], 4, 4) == ([0], [0])


def test_cycle_orders_run_through_every_permutation() -> None:
    conds = ["alone", "hbtui", "alone2"]
    orders = ab.cycle_orders(conds, 6, 0)
    assert len(set(orders)) == 6
    for c in conds:  # each condition in each position equally often
        assert [sum(1 for o in orders if o[i] == c) for i in range(3)] == [2, 2, 2]
    assert ab.cycle_orders(["alone", "hbtui"], 4, 0) == [("alone", "hbtui"), ("hbtui", "alone")] * 2
    assert ab.cycle_orders(["alone", "hbtui"], 2, 1)[0] == ("hbtui", "alone")


def test_cycle_ratios() -> None:
    ms = {"alone": 10.0, "hbtui": 10.4, "alone2": 10.4}
    blocks = {k: {"median_ms": m, "mean_ms": m * 1.1} for k, m in ms.items()}
    r = ab.cycle_ratios(blocks)
    assert r["median"]["hbtui/alone"] == pytest.approx(1.04)
    assert r["median"]["alone2/alone"] == pytest.approx(1.04)
    assert r["median"]["hbtui/alone2"] == pytest.approx(1.0)
    assert r["median"]["hbtui/alones"] == pytest.approx(1.04 / 1.04**0.5)
    assert r["mean"]["hbtui/alone"] == pytest.approx(1.04)
    r2 = ab.cycle_ratios({k: blocks[k] for k in ("alone", "hbtui")})
    assert "hbtui/alones" not in r2["median"] and "alone2/alone" not in r2["median"]
    assert "hbtui/quiet" not in r["median"]  # no quiet requests in the hbtui block
    blocks["hbtui"] |= {"quiet_median_ms": 10.0, "quiet_mean_ms": 11.0}
    r3 = ab.cycle_ratios(blocks)
    assert r3["median"]["hbtui/quiet"] == pytest.approx(1.04)
    assert r3["mean"]["hbtui/quiet"] == pytest.approx(10.4 * 1.1 / 11.0)


def test_bootstrap_and_verdict() -> None:
    tight = [[1.005, 1.006, 1.004, 1.007], [1.003, 1.006, 1.005, 1.004]]
    lo, hi = ab.bootstrap_ci(tight, 2000, 1)
    assert 1.003 <= lo <= statistics.median(sum(tight, [])) <= hi <= 1.007
    assert ab.bootstrap_ci(tight, 2000, 1) == (lo, hi)  # seeded
    assert ab.verdict((lo, hi), 0.02) == "PASS"
    assert ab.verdict((1.03, 1.05), 0.02) == "FAIL"
    assert ab.verdict((1.0, 1.03), 0.02) == "UNDECIDED"
    assert ab.verdict(None, 0.02) == "NO DATA"
    # one round far off widens the interval: rounds are resampled, not just cycles
    spread = tight + [[1.06, 1.07, 1.06, 1.065]]
    assert ab.bootstrap_ci(spread, 2000, 1)[1] > 1.02
    assert ab.bootstrap_ci([], 100, 1) is None


def _round(mode: str, ratios: list[float], null: list[float]) -> dict:
    cycles = []
    for i, (x, n) in enumerate(zip(ratios, null, strict=True)):
        blocks = {"alone": {"median_ms": 10.0, "mean_ms": 10.0, "service_ms": [10.0]},
                  "alone2": {"median_ms": 10 * n, "mean_ms": 10 * n, "service_ms": [10 * n]},
                  "hbtui": {"median_ms": 10 * x * n**0.5, "mean_ms": 10 * x * n**0.5,
                            "service_ms": [10 * x * n**0.5]}}  # fmt: skip
        cycles.append({"index": i, "blocks": blocks, "ratios": ab.cycle_ratios(blocks)})
    return {"mode": mode, "round": 1, "cycles": cycles}


def test_summarise() -> None:
    rounds = [_round("eager", [1.004, 1.006, 1.005], [1.001, 0.999, 1.0]),
              _round("eager", [1.007, 1.003, 1.005], [1.002, 0.998, 1.0]),
              {"mode": "eager", "round": 3, "cycles": [], "skipped": "budget"},
              _round("graph", [1.05, 1.06, 1.04], [1.0, 1.0, 1.0])]  # fmt: skip
    s = ab.summarise(rounds, "eager", 0.02, 500, 1)
    assert s["rounds"] == 2 and s["cycles"] == 6 and s["primary"] == "hbtui/alones"
    p = s["ratios"]["median"]["hbtui/alones"]
    assert p["median"] == pytest.approx(1.005) and p["n"] == 6
    assert s["verdict"] == "PASS" and s["resolves_limit"] is True
    assert s["service_ms"]["alone"]["p50"] == 10.0
    g = ab.summarise(rounds, "graph", 0.02, 500, 1)
    assert g["verdict"] == "FAIL"
    assert ab.summarise(rounds, "graph", 0.1, 500, 1)["verdict"] == "PASS"
    assert ab.summarise([], "eager", 0.02, 500, 1)["verdict"] == "NO DATA"
    assert "in_process_verdict" not in s  # no quiet requests
    for c in rounds[3]["cycles"]:  # the graph rounds' hbtui process: observed = quiet + 1 %
        c["blocks"]["hbtui"]["quiet_median_ms"] = c["blocks"]["hbtui"]["median_ms"] / 1.01
        c["ratios"] = ab.cycle_ratios(c["blocks"])
    g = ab.summarise(rounds, "graph", 0.02, 500, 1)
    assert g["verdict"] == "FAIL" and g["in_process_verdict"] == "PASS"
    assert g["ratios"]["median"]["hbtui/quiet"]["median"] == pytest.approx(1.01)
    text = ab.table({"rounds": rounds, "summary": {"eager": s, "graph": g}})
    assert "within 2 % of alone: PASS" in text and "within 2 % of alone: FAIL" in text
    assert "in one process (observed / quiet requests, 3 blocks): +1.00 %" in text
    assert "budget" in text


def test_in_process_only_rounds(tmp_path) -> None:
    """--no-alone: only the hbtui process serves, and the table reports the in-process
    figure, per round and overall (not "no complete cycle")."""
    rounds = []
    for r, xs in enumerate(([1.010, 1.012, 1.011], [1.009, 1.011, 1.010])):
        cycles = []
        for i, x in enumerate(xs):
            blocks = {"hbtui": {"median_ms": 10 * x, "mean_ms": 10 * x, "service_ms": [10 * x],
                                "quiet_median_ms": 10.0, "quiet_mean_ms": 10.0}}  # fmt: skip
            cycles.append({"index": i, "blocks": blocks, "ratios": ab.cycle_ratios(blocks)})
        rounds.append({"mode": "eager", "round": r + 1, "cycles": cycles})
    s = ab.summarise(rounds, "eager", 0.02, 500, 1)
    assert s["in_process_verdict"] == "PASS" and s["verdict"] == "NO DATA"
    text = ab.table({"rounds": rounds, "summary": {"eager": s}})
    assert (
        "eager: in one process (observed / quiet requests, 6 blocks over 2 rounds) +1.05 %" in text
    )
    assert "no complete cycle" not in text
    assert "1.0110 [1.0100, 1.0120]" in text  # round 1's in-process ratios
    assert "hbtui/quiet [min, max]" in text
    # the engine's launch count proves which build ran
    for expect, seen, bad in ((True, 0, True), (True, 90, False), (False, 90, True),
                              (False, 0, False), (None, 0, False)):  # fmt: skip
        rec = {"mode": "eager", "round": 1, "procs": {}, "cycles": rounds[0]["cycles"],
               "engine_before": {"launches": 10},
               "engine_after": {"launches": 10 + seen}}  # fmt: skip
        ab.check_round(rec, 40, 3, expect)
        assert bool(rec["checks"]) == bad, (expect, seen)
    a = ab.parse_args(["--no-alone", "--diag", "3", "--modes", "eager"])
    assert a.null is False and a.diag == 3
    with pytest.raises(SystemExit):
        ab.parse_args(["--no-alone", "--no-quiet-ab"])


def test_hp_service_closed_loop_arguments() -> None:
    a = svc.parse_args(["--mode", "eager", "--closed", "40", "--blocks", "6", "--gate",
                        "--cpus", "4-7", "--out", "x.json"])  # fmt: skip
    assert a.closed == 40 and a.blocks == 6 and a.gate and a.cpus == [4, 5, 6, 7]
    assert a.load is None
    a = svc.parse_args(["--mode", "graph", "--load", "0.4", "--out", "x.json"])  # the default
    assert a.closed is None and a.load == 0.4 and a.cpus is None
    for bad in (["--mode", "eager", "--out", "x"],  # neither --load nor --closed
                ["--mode", "eager", "--load", "0.4", "--closed", "5", "--out", "x"],
                ["--mode", "eager", "--closed", "0", "--out", "x"],
                ["--mode", "eager", "--closed", "5", "--cpus", "x", "--out", "x"],
                ["--mode", "eager", "--load", "0.4", "--quiet-ab", "--out", "x"]):  # fmt: skip
        with pytest.raises(SystemExit):
            svc.parse_args(bad)


def test_quiet_ab_outside_hbtui_run_is_a_clear_error() -> None:
    with pytest.raises(SystemExit) as e:
        svc.quiet_switch()  # this process has no interceptor preloaded
    assert "--quiet-ab" in str(e.value) and "hbtui run --hp" in str(e.value)
