"""The scheduler with a backend that issues HP requests itself (the HP chain), on the
simulated GPU's model of the cuda backend's native HP thread (SimParams.hp_chain)."""

from __future__ import annotations

import bisect
from dataclasses import replace

import pytest
from sim_recorder import Recorder, run_default

from hbtui.engine.backends.sim import SimBackend
from hbtui.engine.model import HP, LP, Launch
from hbtui.engine.policies import HummingbirdConfig
from hbtui.engine.profile import ProfileError, load, shipped_dir
from hbtui.engine.scheduler import Scheduler
from hbtui.engine.timing import MAX_DEP_NS as _MAX_DEP_NS
from hbtui.engine.workload import request_gaps

PROFILE = load(shipped_dir() / "default.toml")
SIM = replace(PROFILE.sim, hp_chain=True)
MS = 1_000_000


class ChainRecorder(Recorder):
    """Also records chained HP launches as the sim issues them."""

    def __init__(self, *a, **kw) -> None:  # noqa: ANN002, ANN003
        super().__init__(*a, **kw)
        self.chained: list[Launch] = []
        self.done: list[Launch] = []

    def submit_chain(self, launches, gaps_ns, not_before_ns: int) -> None:  # noqa: ANN001
        self.chained += launches
        super().submit_chain(launches, gaps_ns, not_before_ns)

    def wait(self, until_ns: int) -> list[Launch]:
        out = super().wait(until_ns)
        self.done += out
        return out


def run(policy: str, check=lambda s, x: None, ms: int = 300, sim=SIM, hb=None):  # noqa: ANN001, ANN202
    return run_default(ChainRecorder(sim, check), policy, ms, hb)


def test_chained_hp_kernels_follow_the_workload_gaps_exactly() -> None:
    s, be = run("exclusive")
    assert s._hp["llm"].chain
    assert not [x for x in be.launches if x.cls == HP]  # nothing through submit()
    done = [x for x in be.done if x.cls == HP]
    assert len(done) > 8 * 100
    by_req: dict[int, list[Launch]] = {}
    for x in done:
        by_req.setdefault(x.request, []).append(x)
    task = s.tasks["llm"]
    for rid, ls in list(by_req.items())[1:50]:
        gaps = request_gaps(task, 3, rid)  # one HP task: request id = its arrival count
        for prev, cur, gap in zip(ls, ls[1:], gaps[1:], strict=False):
            assert cur.issue_ns == prev.seen_ns + gap  # no scheduling-thread delay at all
            assert prev.seen_ns == prev.end_ns
    assert s.hp_kernels_active == 0 or s.hp_requests_in_flight > 0
    m = s.metrics.tasks["llm"]
    assert m.requests > 100


def test_chain_is_faster_than_python_issue_in_the_sim() -> None:
    """The sim charges the scheduling thread launch_cost_us per submit; the chain does
    not, so exclusive request latency drops by about that per kernel."""
    s_py, _ = run("exclusive", sim=PROFILE.sim)
    s_ch, _ = run("exclusive")
    py = s_py.metrics.tasks["llm"].latency.percentile(50)
    ch = s_ch.metrics.tasks["llm"].latency.percentile(50)
    assert ch < py


def test_hummingbird_issues_no_lp_while_a_chained_hp_kernel_is_due_or_running() -> None:
    """...except a slice queued behind that kernel (``after``): next test."""
    s, be = run("hummingbird")
    lp = [x for x in be.launches if x.cls == LP and x.after is None]
    hp = [x for x in be.done if x.cls == HP]
    assert len(lp) > 500 and len(hp) > 800
    # no LP slice issued while an HP kernel was on the GPU (issue .. seen)
    spans = sorted((x.issue_ns, x.seen_ns) for x in hp)
    starts = [a for a, _ in spans]
    for x in lp:
        i = bisect.bisect_right(starts, x.issue_ns) - 1
        if i >= 0:
            a, b = spans[i]
            assert not (a <= x.issue_ns < b), f"LP {x.id} issued at {x.issue_ns} in HP [{a},{b})"
    assert s.metrics.tasks["train"].blocks > 0


def test_hp_active_count_returns_to_zero_and_no_launch_is_lost() -> None:
    s, be = run("hummingbird", ms=200)
    s.set_paused("llm", True)
    s.run_until(400 * MS)  # drain every handed-over request
    assert s.hp_requests_in_flight == 0
    assert s.hp_kernels_active == 0
    assert not s._chained and not s._hp_active
    assert {x.id for x in be.chained} == {x.id for x in be.done if x.cls == HP}


def test_removing_a_task_with_chained_launches_pending() -> None:
    s, be = run("hummingbird", ms=50)
    assert s._chained  # requests handed over, not all done
    s.remove_task("llm")
    s.run_until(150 * MS)  # its launches complete as orphans
    assert not s._chained and s.hp_kernels_active == 0
    assert s.metrics.tasks["train"].blocks > 0


def test_profile_hp_chain_key(tmp_path) -> None:  # noqa: ANN001
    base = (shipped_dir() / "default.toml").read_text()
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(base.replace("interference = 0.3", "interference = 0.3\nhp_chain = true"))
    assert load(good).sim.hp_chain is True
    bad.write_text(base.replace("interference = 0.3", "interference = 0.3\nhp_chain = 1"))
    with pytest.raises(ProfileError, match=r"engine\.sim\.hp_chain"):
        load(bad)
    bad.write_text(base.replace("interference = 0.3", "interference = 0.3\nloop_delay_us = -1"))
    with pytest.raises(ProfileError, match=r"engine\.sim\.loop_delay_us"):
        load(bad)


def test_first_slice_of_a_gap_waits_on_the_gpu_for_the_hp_kernel_before_it() -> None:
    s, be = run("hummingbird")
    behind = [x for x in be.launches if x.cls == LP and x.after is not None]
    why = s.policy.why
    decided = why["behind_hp"] + why["armed"]  # each queues 1 to BEHIND_SLICES slices
    assert (
        len(behind) > 100 and decided <= len(behind) <= HummingbirdConfig().behind_slices * decided
    )
    assert len({x.after.id for x in behind}) == decided
    first: dict[int, Launch] = {}
    for x in behind:
        if x.end_ns < 0:
            continue  # still queued when the run stopped
        assert x.after.cls == HP and x.after.end_ns >= 0
        assert x.start_ns >= x.after.end_ns  # started only after it ended
        first.setdefault(x.after.id, x)
    for x in first.values():  # (a launch call costs 10 µs here: a second may come later)
        assert x.issue_ns < x.after.end_ns  # queued while the HP kernel still ran
    assert not [x for x in be.launches if x.cls == LP and x.after is not None and x.id in s._cold]


def test_a_slow_host_arms_the_next_gaps_first_slice_before_the_hp_kernel_is_issued() -> None:
    """Short HP kernels (2-5 µs) end before a slow loop can queue LP behind them: the
    slice is queued during the gap before, to go out right after the HP launch."""
    s, be = run("hummingbird", sim=SLOW_HOST, ms=300)
    armed = [x for x in be.launches if x.cls == LP and x.after is not None and x.end_ns >= 0]
    early = [x for x in armed if x.issue_ns < x.after.issue_ns]
    assert s.policy.why["armed"] > 100 and len(early) > 100
    short = [x for x in early if x.after.kernel.name in ("norm", "act")]
    assert short  # the kernels a 25-µs loop could never queue behind
    first: dict[int, Launch] = {}
    for x in early:
        assert x.start_ns >= x.after.end_ns  # it still waited on the GPU for the kernel
        if x.after.id not in first or x.start_ns < first[x.after.id].start_ns:
            first[x.after.id] = x
    for x in first.values():
        assert x.start_ns - x.after.end_ns <= 5_000  # the first then started at once


def test_behind_hp_raises_lp_throughput_in_the_sim() -> None:
    s_on, _ = run("hummingbird")
    s_off, _ = run("hummingbird", hb=HummingbirdConfig(behind_hp=False))
    assert s_on.metrics.tasks["train"].blocks > s_off.metrics.tasks["train"].blocks


def test_drain_waits_for_chained_launches_before_the_backend_is_reused() -> None:
    """The headless engine calibrates phase after phase on one backend (engine.calibrate)."""
    from hbtui.engine.calibrate import drain

    be = SimBackend(SIM)
    hp = [replace(t) for t in PROFILE.tasks if t.cls == HP]
    s1 = Scheduler(PROFILE.kernels, hp, be, "exclusive", seed=3)
    s1.run_until(50 * MS)
    assert s1._chained  # requests handed over
    assert drain(s1, None)
    assert not s1.busy and s1.hp_kernels_active == 0
    lp = [replace(t) for t in PROFILE.tasks if t.cls == LP]
    s2 = Scheduler(PROFILE.kernels, lp, be, "spatial", seed=3)
    s2.run_until(be.now_ns() + 20 * MS)
    assert s2.stray_completions == 0 and s2.metrics.tasks["train"].blocks > 0


def test_a_completion_the_scheduler_never_issued_is_counted_not_fatal() -> None:
    be = SimBackend(SIM)
    hp = [replace(t) for t in PROFILE.tasks if t.cls == HP]
    s1 = Scheduler(PROFILE.kernels, hp, be, "exclusive", seed=3)
    s1.run_until(10 * MS)
    assert s1.busy
    s2 = Scheduler(PROFILE.kernels, hp, be, "exclusive", seed=3)  # s1 not drained
    s2.run_until(be.now_ns() + 20 * MS)
    assert s2.stray_completions > 0
    assert s2.metrics.tasks["llm"].requests > 0


def test_only_one_hp_task_is_chained_and_a_second_is_not_serialised_behind_it() -> None:
    llm = next(t for t in PROFILE.tasks if t.cls == HP)
    arr = replace(llm.arrival, rate_hz=200.0)
    tasks = [replace(llm, arrival=arr), replace(llm, name="llm2", arrival=arr)]

    def p99s(sim) -> tuple[float, float]:  # noqa: ANN001
        s = Scheduler(PROFILE.kernels, [replace(t) for t in tasks], SimBackend(sim), "exclusive", 3)
        s.run_until(400 * MS)
        m = s.metrics.tasks
        return s, (m["llm"].latency.percentile(99), m["llm2"].latency.percentile(99))

    s, (a, b) = p99s(SIM)
    assert s._hp["llm"].chain and not s._hp["llm2"].chain
    _, (a0, b0) = p99s(PROFILE.sim)  # everything issued from the scheduling loop
    assert a < 1.5 * a0 and b < 1.5 * b0
    assert s.metrics.tasks["llm2"].requests > 50


def test_remove_and_re_add_under_the_chain_while_its_kernels_run() -> None:
    s, be = run("hummingbird", ms=30)
    assert s._chained
    for name in ("llm", "train"):
        old = s.tasks[name]
        s.remove_task(name)
        s.add_task(replace(old))
    s.run_until(120 * MS)  # orphans complete; the new llm is chained again
    assert s._hp["llm"].chain and s.metrics.tasks["llm"].requests > 10
    assert not s._orphans and s.hp_kernels_active in (0, 1)


def test_set_policy_forgets_the_slice_lateness_of_the_previous_policy() -> None:
    s, _ = run("spatial", ms=50)
    for _ in range(20):
        s.paths.late["cold"].add(150_000.0)
    assert s.slice_margin_ns["cold"] == 150_000
    s.set_policy("hummingbird")
    assert s.slice_margin_ns == {"cold": 0, "queued": 0, "after": 0, "armed": 0}
    assert all(e.value == 0.0 and len(e) == 0 for e in s.paths.late.values())


def test_a_bad_early_estimate_that_stops_its_own_samples_expires() -> None:
    """A large learned HP-end -> queued-slice delay makes every bubble behind HP too short,
    so no such slice is issued to measure it again: the model must go back to its prior."""
    s, be = run("hummingbird", ms=100)
    for _ in range(200):
        s.paths.dep.add(_MAX_DEP_NS, be.now_ns())  # as if the first slices behind HP started late
    assert s.dep_ns == _MAX_DEP_NS  # longer than any host gap: nothing fits behind HP
    t = be.now_ns()
    s.run_until(t + 40 * MS)
    behind = [x for x in be.launches if x.cls == LP and x.after is not None and x.issue_ns > t]
    assert s.dep_ns < 10_000 and behind  # expired, tried again, relearned (2 µs in the sim)


def test_each_issue_path_keeps_its_own_lateness_margin() -> None:
    """Slow cold launches must not shrink the bubbles of slices armed behind HP."""
    s, _ = run("hummingbird", sim=SLOW_HOST, ms=1000)
    assert set(s.slice_margin_ns) == {"cold", "queued", "after", "armed"}
    assert all(len(e) > 50 for e in s.paths.late.values())  # every path was taken and learned


SLOW_HOST = replace(SIM, loop_delay_us=25.0)  # the lent H100's VM: 20-45 µs per wake-up


def test_late_slices_queued_behind_issued_hp_do_not_shrink_armed_ones() -> None:
    """Armed slices (issued before their HP kernel) keep their own margin: a 200-µs
    lateness of slices queued behind an issued HP kernel does not stop them."""

    def armed_after_forcing(paths: tuple[str, ...]) -> int:
        s, be = run("hummingbird", sim=SLOW_HOST, ms=200)
        t = be.now_ns()
        for p in paths:
            for _ in range(64):
                s.paths.late[p].add(200_000.0, t)  # longer than any host gap
        s.run_until(t + 10 * MS)  # (a margin expires only 20 ms after its last sample)
        return sum(
            1
            for x in be.launches
            if x.cls == LP and x.after is not None and t < x.issue_ns < x.after.issue_ns
        )

    assert armed_after_forcing(("after",)) > 20
    assert armed_after_forcing(("after", "armed")) == 0


def test_a_slice_counts_as_armed_only_if_its_hp_kernel_was_not_issued_yet() -> None:
    s, be = run("hummingbird", sim=SLOW_HOST, ms=300)
    done = [x for x in be.launches if x.cls == LP and x.after is not None and x.end_ns >= 0]
    armed = [x for x in done if x.armed]
    assert armed and len(armed) < len(done)  # both paths taken
    assert all(x.issue_ns < x.after.issue_ns for x in armed)
    assert all(x.issue_ns >= x.after.issue_ns for x in done if not x.armed)


def test_pre_issue_lead_converges_to_the_host_loop_delay() -> None:
    s, _ = run("hummingbird", sim=SLOW_HOST, ms=1000)
    assert 20_000 <= s.policy.lead_ns <= 30_000, s.policy.lead_ns
    s0, _ = run("hummingbird")
    assert s0.policy.lead_ns < 2_000  # an instant host needs none


def test_queueing_behind_hp_pays_off_most_on_a_slow_host() -> None:
    s_on, _ = run("hummingbird", sim=SLOW_HOST, ms=1000)
    s_off, _ = run("hummingbird", sim=SLOW_HOST, ms=1000, hb=HummingbirdConfig(behind_hp=False))
    on, off = s_on.metrics.tasks["train"].blocks, s_off.metrics.tasks["train"].blocks
    assert on > 1.1 * off, (on, off)  # 1.19x here
    assert s_on.metrics.tasks["llm"].requests == s_off.metrics.tasks["llm"].requests


def test_the_slo_reserve_is_the_backends_unless_overridden() -> None:
    """A GPU keeps 35 % of each SLO from LP (HP slowdown after LP the model cannot see);
    the simulator none; HummingbirdConfig.slack_reserve overrides both."""
    from hbtui.engine.backends.base import Backend

    assert Backend.slo_reserve == 0.35 and SimBackend.slo_reserve == 0.0
    s0, _ = run("hummingbird", ms=300)
    s9, _ = run("hummingbird", ms=300, hb=HummingbirdConfig(slack_reserve=0.9))  # little slack
    assert s9.metrics.tasks["train"].blocks < 0.8 * s0.metrics.tasks["train"].blocks
