"""The host figures of the real-programs benchmark (is an HP service's host contended,
and by whom?): real processes, real /proc, no torch."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.unit.test_hp_overhead_ab import BENCH, _load

rp = _load("real_programs_app", BENCH / "real_programs.py")
cs = _load("ctx_switch_app", BENCH / "ctx_switch.py")
svc = _load("hp_service_app", BENCH / "apps" / "hp_service.py")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

SPIN = "import time\nt = time.monotonic() + 1.5\nwhile time.monotonic() < t: pass\n"
SLEEP = "import time\ntime.sleep(1.5)\n"


def test_cpu_sampler_charges_a_process_tree_to_its_role() -> None:
    """A spinning grandchild is charged to its root's role (as `hbtui run`'s program is
    to the launcher's), a sleeping process to its own at about nothing."""
    cpu = rp.CpuBusy(period=0.05, role_period=0.05)
    busy = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys\n"
                             f"subprocess.run([sys.executable, '-c', {SPIN!r}])"])  # fmt: skip
    idle = subprocess.Popen([sys.executable, "-c", SLEEP])
    try:
        cpu.watch("busy", busy.pid)
        cpu.watch("idle", idle.pid)
        time.sleep(0.6)  # the interpreters have started, the grandchild spins
        a = time.monotonic()
        time.sleep(0.6)
        b = time.monotonic()
        busy.wait(10)  # the grandchild, then its parent exit: their time stays counted
        time.sleep(0.3)
        c = time.monotonic()
    finally:
        busy.wait(10)
        idle.wait(10)
        cpu.close()
    assert cpu.roles(a, c)["busy"] > 0.3, cpu.roles(a, c)  # (it spun to ~1.5 s of 2.1)
    used = cpu.roles(a, b)
    assert used["busy"] > 0.5, used  # one CPU all the time, less what the box's load takes
    assert used["idle"] < 0.1, used
    share = cpu.mean(a, b)
    assert share is not None and 0 < share <= 1


def test_host_figures_per_request() -> None:
    assert svc.host_figures([4_000_000, 1_000_000, 6, 2], 2) == {
        "on_cpu_ms": 2.0, "runqueue_ms": 0.5, "voluntary_switches": 3.0,
        "involuntary_switches": 1.0}  # fmt: skip
    assert svc.host_figures(None, 5) is None and svc.host_figures([1, 1, 1, 1], 0) is None
    t = svc.thread_sched()
    assert t is None or (len(t) == 4 and t[0] > 0)  # this thread has run


def test_ctx_switch_shift_is_per_percentile() -> None:
    alone = cs.summary([50.0 + i for i in range(101)])  # 50 .. 150 us
    beside = cs.summary([60.0 + 2 * i for i in range(101)])
    assert alone["p50"] == 100.0 and alone["p99"] == 149.0 and alone["n"] == 101
    d = cs.shift(beside, alone)
    assert d["p50"] == 160.0 - 100.0 and d["p99"] == 258.0 - 149.0
    assert cs.shift(cs.summary([]), alone)["p50"] is None


def test_results_take_the_callers_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copied tree (the lent GPU machines) keeps another commit's git metadata: the
    caller's HBTUI_COMMIT wins, its dirty flag unknown."""
    import harness

    monkeypatch.setenv("HBTUI_COMMIT", "f294e62")
    assert harness.git_commit() == {"commit": "f294e62", "dirty": None}
    monkeypatch.delenv("HBTUI_COMMIT")
    g = harness.git_commit()
    assert g["commit"] is None or len(g["commit"]) == 40


def test_ctx_switch_reads_the_other_process_defensively() -> None:
    import queue

    q: queue.Queue[str] = queue.Queue()
    for line in ("a library's warning\n", "[1, 2]\n", '{"kernels": 5, "seconds": 1.0}\n'):
        q.put(line)
    assert cs.last_json(q, 1.0) == {"kernels": 5, "seconds": 1.0}
    assert cs.next_line(q, 0.05) is None and cs.last_json(q, 0.05) == {}  # nothing more


def test_the_table_says_what_the_engine_measured_for_the_hp() -> None:
    row = {"pair": "eager@0.7", "scenario": "hbtui-hummingbird", "harvest_cost": 1.5,
           "harvest_held_off": True, "cpus_used": {"engine": 0.9, "hp": 1.0}}  # fmt: skip
    text = rp.table([row], None)
    assert "eager@0.7 hbtui-hummingbird: CPUs used in the window: engine 0.90, hp 1.00" in text
    assert "LP in HP requests costing the HP +50.0 %, LP held off its requests" in text


def test_the_table_says_how_long_lp_waited_for_grants() -> None:
    row = {"pair": "eager@0.7", "scenario": "hbtui-temporal", "lp_wait_share": 0.42}
    assert "hbtui-temporal: LP threads waited for grants 42% of the window" in rp.table([row], None)


def test_scenario_names_say_how_the_engine_runs() -> None:
    import argparse

    names = rp.parse_scenarios("hp-alone,hbtui-hummingbird-whole-noguard,hbtui-temporal+mps")
    assert names == ["hp-alone", "hbtui-hummingbird-whole-noguard", "hbtui-temporal+mps"]
    e = rp.env_of("hbtui-hummingbird-whole-noguard")
    assert (e.policy, e.whole, e.noguard, e.mps) == ("hummingbird", True, True, False)
    assert rp.env_of("hbtui-temporal+mps").mps and not rp.env_of("hbtui-temporal+mps").noguard
    for bad in ("hbtui-temporal-noguard", "hbtui-hummingbird-noguard-whole", "hbtui-x"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown scenario"):
            rp.parse_scenarios(bad)


def test_hp_alone_under_hbtui_may_run_under_mps_and_pinning_splits_whole_cores() -> None:
    e = rp.env_of("hp-hbtui+mps")
    assert (e.policy, e.mps, e.lp) == ("hummingbird", True, False)
    assert rp.parse_scenarios("hp-hbtui+mps") == ["hp-hbtui+mps"]
    # 8 cores with two threads each (siblings c and c + 8): the HP gets two whole cores
    sib = {c: f"{c % 8},{c % 8 + 8}" for c in range(16)}
    assert rp.cpu_split(set(range(16)), sib) == (
        [0, 1, 8, 9],
        [2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15],
    )
    with pytest.raises(SystemExit, match="--pin"):
        rp.cpu_split({0, 8}, sib)  # one core: nothing to split
    assert rp.pinned(["x"], None, "py") == ["x"]
    assert rp.pinned(["x", "y"], [2, 3], "py")[-3:] == ["2,3", "x", "y"]


def test_repeats_run_a_scenario_again_under_its_own_name() -> None:
    import argparse

    assert rp.parse_scenarios("hbtui-temporal+mps-r2,plain-r3") == [
        "hbtui-temporal+mps-r2", "plain-r3"]  # fmt: skip
    e = rp.env_of("hbtui-temporal+mps-r2")
    assert (e.name, e.policy, e.mps) == ("hbtui-temporal+mps-r2", "temporal", True)
    assert rp.with_repeats(["hp-alone", "mps", "hbtui-temporal"], 3) == [
        "hp-alone", "mps", "hbtui-temporal", "mps-r2", "hbtui-temporal-r2", "mps-r3",
        "hbtui-temporal-r3"]  # fmt: skip
    for bad in ("hbtui-temporal-r1", "hp-alone-r2", "hbtui-temporal-rx"):
        with pytest.raises(argparse.ArgumentTypeError):
            rp.parse_scenarios(bad)
    assert rp.harness.file_name("lp-x+mps.json") == "lp-x_mps.json"
