"""Policy invariants, checked on every launch of a simulated run of the default profile."""

from dataclasses import replace

import pytest
from sim_recorder import Recorder, run_default

from hbtui.engine.model import HP, LP, Launch
from hbtui.engine.profile import load, shipped_dir
from hbtui.engine.scheduler import ControlError, Scheduler

PROFILE = load(shipped_dir() / "default.toml")
MS = 1_000_000


def run(policy: str, check=lambda s, x: None, ms: int = 300):  # noqa: ANN001, ANN202
    return run_default(Recorder(PROFILE.sim, check), policy, ms)


def test_exclusive_never_launches_lp() -> None:
    def check(s: Scheduler, x: Launch) -> None:
        assert x.cls == HP

    s, be = run("exclusive", check)
    assert s.metrics.tasks["llm"].requests > 100
    assert s.metrics.tasks["train"].blocks == 0


def test_temporal_never_launches_lp_while_a_request_is_in_flight() -> None:
    def check(s: Scheduler, x: Launch) -> None:
        if x.cls == LP:
            assert s.hp_requests_in_flight == 0

    s, be = run("temporal", check)
    assert sum(x.cls == LP for x in be.launches) > 10
    # LP kernels are whole: every LP launch covers its kernel's full grid.
    assert all(x.blocks == x.kernel.total_blocks for x in be.launches if x.cls == LP)


def test_hummingbird_never_issues_lp_while_hp_is_queued_or_running() -> None:
    def check(s: Scheduler, x: Launch) -> None:
        if x.cls == LP:
            assert s.hp_kernels_active == 0
            assert len(s.lp_inflight) <= 1  # at most one running + this pre-issued one

    s, be = run("hummingbird", check)
    lp = [x for x in be.launches if x.cls == LP]
    assert len(lp) > 1000
    assert s.metrics.tasks["llm"].requests > 100


def test_hp_waits_at_most_for_the_slice_in_flight_plus_one_pre_issued() -> None:
    inflight_at_hp: dict[int, list[Launch]] = {}

    def check(s: Scheduler, x: Launch) -> None:
        if x.cls == HP:
            assert len(s.lp_inflight) <= 2
            inflight_at_hp[x.id] = list(s.lp_inflight)

    s, be = run("hummingbird", check)
    lat = be.launch_latency_ns()
    checked = 0
    for x in be.launches:
        if x.cls != HP or x.end_ns < 0:
            continue
        ahead = inflight_at_hp[x.id]
        bound = lat + sum(max(0, lp.end_ns - lp.start_ns) for lp in ahead)
        assert x.start_ns - x.issue_ns <= bound
        checked += 1
    assert checked > 1000


def test_hummingbird_slices_are_whole_waves_and_respect_the_cap() -> None:
    s, be = run("hummingbird")
    for x in be.launches:
        if x.cls != LP:
            continue
        wave, wave_ns = s.waves.model(x.kernel)
        # A slice is whole waves, except the tail of a kernel.
        assert x.blocks % wave == 0 or x.end_block == x.kernel.total_blocks


def test_live_slice_change_applies_at_the_next_decision() -> None:
    be = Recorder(PROFILE.sim, lambda s, x: None)
    s = Scheduler(PROFILE.kernels, [replace(t) for t in PROFILE.tasks], be, "hummingbird", 3,
                  {"llm": 5.0})  # fmt: skip
    be.sched = s
    s.run_until(100 * MS)
    s.set_slice("train", blocks=7)
    n = len(be.launches)
    s.run_until(200 * MS)
    after = [x for x in be.launches[n:] if x.cls == LP]
    assert after and all(x.blocks <= 7 for x in after)
    assert any(x.blocks == 7 for x in after)


def test_pause_stops_lp_and_priority_picks_the_task() -> None:
    be = Recorder(PROFILE.sim, lambda s, x: None)
    tasks = [replace(t) for t in PROFILE.tasks]
    tasks.append(replace(tasks[1], name="train2", priority=5))
    s = Scheduler(PROFILE.kernels, tasks, be, "hummingbird", 3, {"llm": 5.0})
    be.sched = s
    s.run_until(50 * MS)
    lp = [x.task for x in be.launches if x.cls == LP]
    assert set(lp) == {"train2"}  # strict priority among LP tasks
    s.set_paused("train2", True)
    n = len(be.launches)
    s.run_until(100 * MS)
    assert {x.task for x in be.launches[n:] if x.cls == LP} == {"train"}


@pytest.mark.parametrize(
    "op,args,code",
    [
        ("set_slice", {"name": "train", "us": -1.0}, "bad_value"),
        ("set_slice", {"name": "train", "us": float("nan")}, "bad_value"),
        ("set_slice", {"name": "train"}, "bad_args"),
        ("set_slice", {"name": "nope", "us": 5.0}, "unknown_task"),
        ("set_slo", {"name": "llm", "ms": float("inf")}, "bad_value"),
        ("set_slo", {"name": "train", "ms": 3.0}, "bad_task"),
        ("set_policy", {"name": "fastest"}, "bad_value"),
    ],
)
def test_control_errors_name_the_field(op: str, args: dict, code: str) -> None:
    s, _ = run("hummingbird", ms=1)
    with pytest.raises(ControlError) as e:
        getattr(s, op)(**args)
    assert e.value.code == code
    assert op in str(e.value) or "task" in str(e.value)


def test_a_cap_below_one_wave_stalls_lp_with_one_warning() -> None:
    events: list[tuple[str, dict]] = []

    class Events:
        def on_launch(self, launch: Launch) -> None: ...
        def on_request(self, *a: object) -> None: ...
        def on_event(self, kind: str, body: dict) -> None:
            events.append((kind, body))

    be = Recorder(PROFILE.sim, lambda s, x: None)
    s = Scheduler(PROFILE.kernels, [replace(t) for t in PROFILE.tasks], be, "hummingbird", 3,
                  {"llm": 5.0})  # fmt: skip
    be.sched = s
    s.listeners.append(Events())
    s.set_slice("train", us=1.0)  # far below any LP kernel's wave
    events.clear()
    s.run_until(50 * MS)
    assert not [x for x in be.launches if x.cls == LP and x.issue_ns > 0]
    warnings = [b["message"] for k, b in events if k == "warning"]
    assert len(warnings) == 1 and "below one wave" in warnings[0]


def test_remove_then_re_add_under_the_same_name_while_kernels_run() -> None:
    for policy in ("hummingbird", "spatial"):
        s, be = run(policy, ms=30)
        t = 30 * MS
        while not any(x.task == "train" for x in s.inflight.values()) and t < 60 * MS:
            t += MS // 10  # step to a moment with LP on the GPU
            s.run_until(t)
        for name in ("llm", "train"):
            assert any(x.task == name for x in s.inflight.values()) or name == "llm"
            old = s.tasks[name]
            s.remove_task(name)
            s.add_task(replace(old))
        s.run_until(80 * MS)  # old timers and completions must not touch the new tasks
        assert s.metrics.tasks["llm"].requests > 10
        assert 0 <= s.lp_inflight_of("train") <= 2
        assert s.lp_inflight_of("train") == sum(x.task == "train" for x in s.lp_inflight)


def test_slice_blocks_is_an_exact_count_not_capped_by_slice_us() -> None:
    be = Recorder(PROFILE.sim, lambda s, x: None)
    tasks = [replace(t) for t in PROFILE.tasks if t.cls == LP]  # LP alone: no bubble bound
    s = Scheduler(PROFILE.kernels, tasks, be, "hummingbird", 3)
    be.sched = s
    s.set_slice("train", us=20.0)
    s.set_slice("train", blocks=2112)
    assert s.tasks["train"].slice_us is None
    s.run_until(5 * MS)
    sizes = {x.blocks for x in be.launches if x.end_block != x.kernel.total_blocks}
    assert sizes == {2112}


def test_remove_task_from_inside_the_loop_keeps_hp_timers() -> None:
    """A control op runs in the loop's tick. remove_task used to rebind the timer heap the
    loop holds: HP timers pushed after it were lost and stale ones fired twice
    (IndexError on an empty request queue)."""
    be = Recorder(PROFILE.sim, lambda s, x: None)
    s = Scheduler(PROFILE.kernels, [replace(t) for t in PROFILE.tasks], be, "hummingbird",
                  seed=3, baseline_p99_ms={"llm": 5.0})  # fmt: skip
    be.sched = s
    extra = replace(s.tasks["train"], name="train2")
    s.add_task(extra)
    done: list[int] = []

    def tick() -> None:
        if not done and be.now_ns() >= 50 * MS:
            done.append(s.metrics.tasks["llm"].requests)
            s.remove_task("train2")

    s.run_until(300 * MS, max_wait_ns=MS, tick=tick)
    assert done and "train2" not in s.tasks
    assert s.metrics.tasks["llm"].requests > done[0] + 100  # HP kept being served
