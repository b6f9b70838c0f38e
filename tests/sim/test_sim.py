"""The simulated GPU on small hand-checked timelines."""

from hbtui.engine.backends.sim import SimBackend, SimParams
from hbtui.engine.model import HP, LP, KernelSpec, Launch

P = SimParams(sms=4, launch_latency_us=2.0, launch_cost_us=0.0, interference=0.5)
LONG = KernelSpec("long", (16, 1, 1), blocks_per_sm=1, block_us=100.0)  # 4 waves of 100 µs
SHORT = KernelSpec("short", (4, 1, 1), blocks_per_sm=1, block_us=10.0)  # 1 wave of 10 µs


def run_all(be: SimBackend, until: int = 10**9) -> list[Launch]:
    done = []
    while True:
        got = be.wait(until)
        if not got:
            return done
        done += got


def launch(i: int, k: KernelSpec, cls: str, stream: int, a: int = 0, b: int | None = None):
    return Launch(i, "t", cls, k, a, k.total_blocks if b is None else b, stream)


def test_lone_kernel_runs_in_waves_after_launch_latency() -> None:
    be = SimBackend(P)
    lp = launch(1, LONG, LP, 1)
    be.submit(lp)
    (done,) = run_all(be)
    assert done is lp
    assert lp.start_ns == 2_000  # launch latency
    assert lp.end_ns == 2_000 + 4 * 100_000  # 16 blocks / 4 SMs = 4 waves


def test_hp_waits_only_for_resident_blocks_not_queued_waves() -> None:
    be = SimBackend(P)
    lp = launch(1, LONG, LP, 1)
    be.submit(lp)
    be.wait(150_000)  # LP is in its second wave (102..202 µs)
    hp = launch(2, SHORT, HP, 0)
    be.submit(hp)
    done = run_all(be)
    assert [x.id for x in done] == [2, 1]
    assert hp.start_ns == 202_000  # the next wave boundary: resident blocks are not preempted
    # The LP train was cut at the boundary, so nothing co-runs with HP: no interference.
    assert hp.end_ns == 212_000
    assert lp.end_ns == 212_000 + 2 * 100_000  # the two remaining waves follow HP


def test_co_running_blocks_are_slowed_by_interference() -> None:
    be = SimBackend(P)
    lp = launch(1, LONG, LP, 1, 0, 2)  # 2 blocks: half the GPU
    be.submit(lp)
    be.wait(10_000)
    hp = launch(2, SHORT, HP, 0, 0, 2)  # fits beside it
    be.submit(hp)
    run_all(be)
    assert hp.start_ns == 10_000 + 2_000
    assert hp.end_ns - hp.start_ns == 15_000  # 10 µs × (1 + 0.5)


def test_same_stream_is_in_order_and_shared_stream_waits_for_the_whole_kernel() -> None:
    be = SimBackend(P)
    lp = launch(1, LONG, LP, 1)
    hp = launch(2, SHORT, HP, 1)  # temporal: HP on the LP stream
    be.submit(lp)
    be.submit(hp)
    run_all(be)
    assert hp.start_ns == lp.end_ns  # waits for the whole LP kernel


def test_host_cost_advances_the_clock_and_is_deterministic() -> None:
    def go() -> list[tuple[int, int]]:
        be = SimBackend(SimParams(sms=4, launch_cost_us=3.0))
        ls = [launch(i, SHORT, LP, 1) for i in range(5)]
        for x in ls:
            be.submit(x)
        assert be.now_ns() == 15_000
        run_all(be)
        return [(x.start_ns, x.end_ns) for x in ls]

    assert go() == go()
