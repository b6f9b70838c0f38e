"""GPU tests of native HP issue (the cuda backend's HP chain, native/hpchain.c)."""

from __future__ import annotations

import itertools

import pytest
from gpu_fault import assert_fault_is_backend_error

from hbtui.engine.backends import cuda_testing as ct
from hbtui.engine.backends.cuda import cuda_available
from hbtui.engine.backends.native import builtin_launch_shape
from hbtui.engine.model import KernelSpec, Launch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="no usable CUDA GPU"),
]

_ids = itertools.count(1)


def spec(name: str, builtin: str, **params) -> KernelSpec:
    grid, block = builtin_launch_shape(builtin, params)
    return KernelSpec(name=name, grid=grid, block=block, builtin=builtin, params=params)


@pytest.fixture(scope="module")
def be():
    from hbtui.engine.backends.cuda import CudaBackend

    b = CudaBackend(device=0, hp_issue="native")
    yield b
    b.close()


def drain(be, n: int, timeout_s: float = 20.0) -> list[Launch]:
    done: list[Launch] = []
    deadline = be.now_ns() + int(timeout_s * 1e9)
    while len(done) < n:
        done += be.wait(min(deadline, be.now_ns() + 10_000_000))
        assert be.now_ns() < deadline, f"{len(done)} of {n} launches completed"
    return done


def wait_issued(be, la: Launch, timeout_s: float = 5.0) -> None:
    deadline = be.now_ns() + int(timeout_s * 1e9)
    while not be.chain_issued(la):
        assert be.now_ns() < deadline, f"chained launch {la.id} not issued"


def hp(k: KernelSpec, stream: int = 0) -> Launch:
    return Launch(next(_ids), "hp", "hp", k, 0, k.total_blocks, stream)


def test_chain_issues_a_request_with_its_gaps(be):
    assert be.hp_chain and be.hp_issue == "native", be.hp_issue_note
    ks = [
        spec("c-norm", "reduce", rows=64, cols=4096),
        spec("c-gemm", "gemm", m=64, n=4096, k=2048),
        spec("c-spin", "spin", us=20, blocks=132, threads=128),
    ]
    for k in ks:
        be.prepare(k)
        assert be.can_chain(k)
    gaps = [30_000, 150_000, 0]
    for _ in range(3):  # warm, then check every round
        launches = [hp(k) for k in ks]
        t0 = be.now_ns()
        be.submit_chain(launches, gaps, t0)
        done = drain(be, 3)
        assert [la.id for la in done] == [la.id for la in launches]
        assert done[0].issue_ns >= t0 + gaps[0]
        for prev, cur, gap in zip(done, done[1:], gaps[1:], strict=False):
            assert cur.issue_ns >= prev.seen_ns + gap
            assert cur.start_ns >= prev.end_ns
        for la in done:
            assert la.issue_ns <= la.start_ns <= la.end_ns <= la.seen_ns
        spin = done[2]
        assert 18_000 <= spin.end_ns - spin.start_ns <= 200_000
    assert be.clock_info()["no_stamp"] == 0


def test_chain_output_is_bit_identical_to_python_issue(be):
    k = spec("c-gelu", "gelu", n=1024 * 257)
    be.prepare(k)
    out = next(n for n, (_, _, o) in ct.buffers(be, k.name).items() if o)
    ct.refill(be, k.name, 11)
    be.submit(Launch(next(_ids), "lp", "lp", k, 0, k.total_blocks, 1))
    drain(be, 1)
    ref = ct.read_buffer(be, k.name, out)
    ct.poison_outputs(be, k.name)
    be.submit_chain([hp(k)], [0], be.now_ns())
    drain(be, 1)
    assert ct.read_buffer(be, k.name, out) == ref


def test_chained_hp_overtakes_queued_lp(be):
    lp = spec("c-lp", "spin", us=50, blocks=1 << 15, threads=128)
    wave = be.sms * be.prepare(lp)
    k = spec("c-hp", "spin", us=5, blocks=1, threads=32)
    be.prepare(k)
    for i in range(8):
        be.submit(Launch(next(_ids), "lp", "lp", lp, i * wave, (i + 1) * wave, 1))
    h = hp(k)
    be.submit_chain([h], [0], be.now_ns())
    done = drain(be, 9)
    lp_ends = sorted(la.end_ns for la in done if la.cls == "lp")
    assert h.end_ns < lp_ends[-1]  # it did not wait for the whole LP queue


def test_scheduler_runs_the_default_profile_through_the_chain():
    from dataclasses import replace

    from hbtui.engine.backends.cuda import CudaBackend
    from hbtui.engine.profile import load, shipped_dir
    from hbtui.engine.scheduler import Scheduler

    prof = load(shipped_dir() / "default.toml")
    b = CudaBackend(device=0, hp_issue="native")
    try:
        s = Scheduler(prof.kernels, [replace(t) for t in prof.tasks], b, "hummingbird", seed=1)
        assert s._hp["llm"].chain
        s.run_until(b.now_ns() + 1_000_000_000)
        m = s.metrics.tasks
        assert m["llm"].requests > 200 and m["train"].blocks > 0
    finally:
        b.close()


def test_illegal_address_in_a_chained_kernel_is_a_backend_error():
    assert_fault_is_backend_error(
        """
        be = CudaBackend(hp_issue="native")
        be.prepare(k)
        cuda_testing.point_buffer_at(be, "bad", "x", 0x10)  # → unmapped, in the chain's copy
        be.submit_chain([Launch(1, "t", "hp", k, 0, g[0], 0)], [0], be.now_ns())
        """
    )


def test_lp_queued_behind_a_chained_hp_kernel_starts_after_it(be):
    k = spec("c-hp-long", "spin", us=200, blocks=132, threads=128)
    lp = spec("c-lp-after", "spin", us=10, blocks=1 << 12, threads=128)
    be.prepare(k)
    wave = be.sms * be.prepare(lp)
    for _ in range(5):
        h = hp(k)
        be.submit_chain([h], [0], be.now_ns())
        wait_issued(be, h)
        x = Launch(next(_ids), "lp", "lp", lp, 0, wave, 1)
        x.after = h
        be.submit(x)
        drain(be, 2)
        assert x.issue_ns < h.end_ns  # queued while the HP kernel ran
        assert x.start_ns >= h.end_ns - 2_000, x.start_ns - h.end_ns  # two clocks: 2 µs
        assert x.start_ns - h.end_ns < 50_000


def test_lp_armed_before_its_hp_kernel_is_issued_goes_out_right_behind_it(be):
    """The slice for the gap after a short HP kernel is armed during the gap before it."""
    short = spec("c-hp-short", "reduce", rows=64, cols=4096)  # a few µs
    lp = spec("c-lp-armed", "spin", us=10, blocks=1 << 13, threads=128)
    be.prepare(short)
    wave = be.sms * be.prepare(lp)
    assert be.can_arm(lp)
    for _ in range(6):
        first, second = hp(short), hp(short)
        be.submit_chain([first, second], [0, 20_000_000], be.now_ns())  # 20 ms gap
        drain(be, 1)  # `first` done: `second` is 20 ms away
        assert not be.chain_issued(second)
        x = Launch(next(_ids), "lp", "lp", lp, 0, wave, 1)
        x2 = Launch(next(_ids), "lp", "lp", lp, wave, 2 * wave, 1)  # a second arm slot
        x.after = x2.after = second
        be.submit(x)
        be.submit(x2)
        got = drain(be, 3)  # (the thread may report `second` after the slices: it launched
        # them before it polled that kernel's end; what counts is when each ran)
        assert {la.id for la in got} == {second.id, x.id, x2.id}
        assert x2.issue_ns < second.issue_ns  # handed over before the HP kernel went out
        assert x.start_ns >= second.end_ns - 2_000, x.start_ns - second.end_ns
        assert x.start_ns - second.end_ns < 50_000, x.start_ns - second.end_ns
        assert x2.start_ns >= x.end_ns - 2_000  # in order on the LP stream
    # behind a step already issued: an ordinary stream wait on its event, from Python
    a, b = hp(short), hp(short)
    be.submit_chain([a, b], [0, 0], be.now_ns())
    wait_issued(be, b)
    y = Launch(next(_ids), "lp", "lp", lp, 0, wave, 1)
    y.after = b
    be.submit(y)
    got = drain(be, 3)
    assert got[-1] is y and y.start_ns >= b.end_ns - 2_000


def test_a_slice_armed_and_launched_is_not_lost_when_its_slot_is_armed_again(be, monkeypatch):
    """The race of H100 call 21: a second slice for the same HP kernel finds it not issued,
    but by the time it arms, the thread has issued it and launched the first slice (so its
    slot looks free again). The second arm is too late and disarmed; the first slice must
    still complete (it did run) instead of blocking the LP stream's completions for good."""
    short = spec("c-hp-short", "reduce", rows=64, cols=4096)
    lp = spec("c-lp-armed", "spin", us=10, blocks=1 << 13, threads=128)
    be.prepare(short)
    wave = be.sms * be.prepare(lp)
    first, second = hp(short), hp(short)
    be.submit_chain([first, second], [0, 5_000_000], be.now_ns())  # 5 ms gap
    drain(be, 1)
    x = Launch(next(_ids), "lp", "lp", lp, 0, wave, 1)
    x2 = Launch(next(_ids), "lp", "lp", lp, wave, 2 * wave, 1)
    x.after = x2.after = second
    be.submit(x)  # armed in slot 0
    settle, calls = be._armed_settle, []

    def settle_once_x_is_out(stream: int, keep_hp: int) -> None:
        deadline = be.now_ns() + 5_000_000_000
        while not calls and not be._chain.arm_launched(0, second.id):  # `second`, x go out
            assert be.now_ns() < deadline, "the armed slice was not launched"
        calls.append(keep_hp)
        settle(stream, keep_hp)

    monkeypatch.setattr(be, "_armed_settle", settle_once_x_is_out)
    too_late = be.arm_stats["too_late"]
    be.submit(x2)  # decided "armed" before `second` went out; arms too late
    assert be.arm_stats["too_late"] == too_late + 1 and calls[0] == second.id
    got = drain(be, 3, timeout_s=5.0)
    assert {la.id for la in got} == {second.id, x.id, x2.id}
    assert x.start_ns >= second.end_ns - 2_000 and x2.start_ns >= x.end_ns - 2_000
