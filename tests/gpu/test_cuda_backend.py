"""GPU tests of the CUDA backend: sliced == unsliced bit for bit, timing sanity, errors."""

from __future__ import annotations

import itertools
import struct
import time

import pytest
from gpu_fault import assert_fault_is_backend_error

from hbtui.engine.backends import cuda_testing as ct
from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.cuda import cuda_available
from hbtui.engine.backends.native import builtin_launch_shape
from hbtui.engine.model import KernelSpec, Launch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="no usable CUDA GPU"),
]

_ids = itertools.count()


def spec(name: str, builtin: str, **params) -> KernelSpec:
    grid, block = builtin_launch_shape(builtin, params)
    return KernelSpec(name=name, grid=grid, block=block, builtin=builtin, params=params)


@pytest.fixture(scope="module")
def be():
    from hbtui.engine.backends.cuda import CudaBackend

    b = CudaBackend(device=0)
    yield b
    b.close()


def run(be, k: KernelSpec, ranges, streams=(1,), timeout_s: float = 20.0) -> list[Launch]:
    launches = []
    for i, (s, e) in enumerate(ranges):
        la = Launch(next(_ids), "t", "lp", k, s, e, streams[i % len(streams)])
        be.submit(la)
        launches.append(la)
    done: list[Launch] = []
    deadline = be.now_ns() + int(timeout_s * 1e9)
    while len(done) < len(launches):
        got = be.wait(min(deadline, be.now_ns() + 10_000_000))
        done += got
        assert be.now_ns() < deadline, "launches did not complete"
    return done


def split(total: int, parts: int) -> list[tuple[int, int]]:
    cuts = [total * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def out_name(be, k) -> str:
    return next(n for n, (_, _, o) in ct.buffers(be, k.name).items() if o)


KERNELS = [
    ("gemm", {"m": 256, "n": 512, "k": 256}),
    ("gemm", {"m": 64, "n": 128, "k": 4096}),
    ("stream", {"n": 4096 * 37}),
    ("reduce", {"rows": 37, "cols": 4100}),
    ("gelu", {"n": 1024 * 37}),
    ("spin", {"us": 2, "blocks": 37, "threads": 64}),
]


@pytest.mark.parametrize(
    ("builtin", "params"), KERNELS, ids=[f"{b}{i}" for i, (b, _) in enumerate(KERNELS)]
)
def test_sliced_equals_unsliced(be, builtin, params):
    k = spec(f"eq-{builtin}-{sorted(params.items())}", builtin, **params)
    be.prepare(k)
    out = out_name(be, k)
    total = k.total_blocks
    for seed in (11, 12):  # fresh random inputs each round
        ct.refill(be, k.name, seed)
        run(be, k, [(0, total)], streams=(0,))
        ref = ct.read_buffer(be, k.name, out)
        words = struct.unpack(f"{len(ref) // 4}I", ref)
        assert 0xFFFFFFFF not in words, "output not fully written"
        _check_reference(be, k, builtin, params, ref)
        for parts in (1, 2, 7, total):
            for streams in ((1,), (1, 2)):
                ct.poison_outputs(be, k.name)
                run(be, k, split(total, parts), streams=streams)
                assert ct.read_buffer(be, k.name, out) == ref, (parts, streams)


def _check_reference(be, k, builtin, params, ref: bytes) -> None:
    np = pytest.importorskip("numpy")
    bufs = {n: ct.read_buffer(be, k.name, n) for n in ct.buffers(be, k.name)}
    if builtin == "gemm":
        m, n, kk = params["m"], params["n"], params["k"]
        a = np.frombuffer(bufs["a"], np.float16).astype(np.float64).reshape(m, kk)
        w = np.frombuffer(bufs["w"], np.float16).astype(np.float64).reshape(n, kk)
        want, got = a @ w.T, np.frombuffer(ref, np.float32).reshape(m, n)
    elif builtin == "stream":
        a, b = (np.frombuffer(bufs[x], np.float32) for x in "ab")
        want, got = a + np.float32(0.5) * b, np.frombuffer(ref, np.float32)
        assert np.array_equal(want, got)
        return
    elif builtin == "reduce":
        rows, cols = params["rows"], params["cols"]
        x = np.frombuffer(bufs["x"], np.float32).astype(np.float64).reshape(rows, cols)
        w = np.frombuffer(bufs["w"], np.float32).astype(np.float64)
        want = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-6) * w
        got = np.frombuffer(ref, np.float32).reshape(rows, cols)
    elif builtin == "gelu":
        x = np.frombuffer(bufs["x"], np.float32).astype(np.float64)
        want = 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))
        got = np.frombuffer(ref, np.float32)
    else:  # spin: per-block marker hash(b) | 1
        got = np.frombuffer(ref, np.uint32)
        want = np.array([_hash(i) | 1 for i in range(params["blocks"])], np.uint32)
        assert np.array_equal(want, got)
        return
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < 1e-5, f"{builtin}: relative error {err:.2e}"


def _hash(x: int) -> int:
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    x ^= x >> 16
    return x


def test_spin_timing_and_fifo(be):
    k = spec("t-spin", "spin", us=50, blocks=32768, threads=128)
    bps = be.prepare(k)
    wave = be.sms * bps
    assert bps >= 1 and 10 * wave <= 32768
    ranges = [(i * wave, (i + 1) * wave) for i in range(10)]
    done = run(be, k, ranges, streams=(1,))
    assert [la.id for la in done] == sorted(la.id for la in done)  # FIFO on one stream
    for a, b in zip(done, done[1:], strict=False):
        assert a.end_ns <= b.end_ns
        assert b.start_ns >= a.end_ns - 5_000  # serialised on the stream (two clocks: 5 µs)
    for la in done:
        assert la.issue_ns <= la.start_ns <= la.end_ns
        dur = la.end_ns - la.start_ns
        assert 45_000 <= dur <= 200_000, dur  # one wave of 50 µs blocks
    assert be.clock_info()["no_stamp"] == 0


def test_clock_stays_consistent_over_seconds(be):
    lp = spec("t-long-lp", "spin", us=20, blocks=1 << 16, threads=128)
    wave = be.sms * be.prepare(lp)
    hp = spec("t-long-hp", "spin", us=0, blocks=1, threads=32)
    be.prepare(hp)
    t_end = be.now_ns() + 3_000_000_000
    i = 0
    lp_durs = []
    while be.now_ns() < t_end:  # LP slices back to back, an HP launch now and then
        s0 = (i * wave) % (lp.total_blocks - wave)
        got = run(be, lp, [(s0, s0 + wave)])
        lp_durs.append(got[0].end_ns - got[0].start_ns)
        if i % 10 == 0:
            run(be, hp, [(0, 1)], streams=(0,))
        i += 1
    lat, durs = [], []
    for _ in range(50):
        (la,) = run(be, hp, [(0, 1)], streams=(0,))
        lat.append(la.start_ns - la.issue_ns)
        durs.append(la.end_ns - la.start_ns)
        t = be.now_ns()
        while be.now_ns() - t < 20_000:
            pass
    lat.sort()
    durs.sort()
    lp_durs.sort()
    assert 500 <= lat[25] <= 60_000, lat
    assert durs[25] <= 20_000, durs
    assert 19_000 <= lp_durs[len(lp_durs) // 2] <= 60_000
    assert be.clock_info()["no_stamp"] == 0


def test_two_streams_returned_in_end_order(be):
    k = spec("t-spin2", "spin", us=30, blocks=64, threads=64)
    be.prepare(k)
    got = run(be, k, [(0, 32), (32, 64)] * 10, streams=(1, 0))
    ends = [la.end_ns for la in got]
    assert ends == sorted(ends)
    for s in (0, 1):
        ids = [la.id for la in got if la.stream == s]
        assert ids == sorted(ids)


def test_hp_on_priority_stream_overtakes_queued_lp(be):
    k = spec("t-lp", "spin", us=100, blocks=16384, threads=128)
    bps = be.prepare(k)
    wave = be.sms * bps
    hp = spec("t-hp", "spin", us=0, blocks=1, threads=32)
    be.prepare(hp)
    lps = [Launch(next(_ids), "lp", "lp", k, i * wave, (i + 1) * wave, 1) for i in range(4)]
    for la in lps:
        be.submit(la)
    t = be.now_ns()
    while be.now_ns() - t < 30_000:
        pass
    h = Launch(next(_ids), "hp", "hp", hp, 0, 1, 0)
    be.submit(h)
    done = []
    while len(done) < 5:
        done += be.wait(be.now_ns() + 50_000_000)
    # HP waits for the running wave (≤ ~100 µs), not the 3 queued ones (300 µs more)
    assert h.start_ns - h.issue_ns < 250_000, h.start_ns - h.issue_ns
    assert h.end_ns < lps[2].end_ns


def test_profile_kernel_without_builtin_runs_as_spin_standin(be):
    k = KernelSpec("t-standin", grid=(528, 1, 1), block=(256, 1, 1), blocks_per_sm=2, block_us=30)
    assert be.prepare(k) == 2
    (la,) = run(be, k, [(0, 264)])  # one wave of 30 µs blocks
    assert 28_000 <= la.end_ns - la.start_ns <= 150_000
    (la,) = run(be, k, [(0, 265)])  # one block more: a second wave
    assert 58_000 <= la.end_ns - la.start_ns <= 200_000


def test_wait_times_out_on_time(be):
    t0 = be.now_ns()
    assert be.wait(t0 + 2_000_000) == []
    late = be.now_ns() - (t0 + 2_000_000)
    assert 0 <= late < 300_000


def test_launch_latency_and_clock_bounds(be):
    assert 1_000 <= be.launch_latency_ns() <= 200_000
    info = be.clock_info()
    assert 0 <= info["gt_bound_ns"] < 100_000


def test_gpu_sample(be):
    be.start_gpu_sampling()
    s, deadline = be.gpu_sample(), time.monotonic() + 5.0  # sampled in a background thread
    while s is None and time.monotonic() < deadline:
        time.sleep(0.05)
        s = be.gpu_sample()
    if s is None:
        pytest.skip("NVML unavailable")
    assert s["mem_total_mb"] > 0 and s["sm_clock_mhz"] is not None
    assert s["nvml_ms"] >= 0 and be._nvml.init_ms >= 0


def test_errors_are_backend_errors(be):
    k = spec("t-err", "gelu", n=2048)
    with pytest.raises(BackendError, match="not prepared"):
        be.submit(Launch(1, "t", "lp", k, 0, 1, 1))
    be.prepare(k)
    with pytest.raises(BackendError, match="outside"):
        be.submit(Launch(1, "t", "lp", k, 0, 3, 1))
    with pytest.raises(BackendError, match="needs grid"):
        be.prepare(KernelSpec("t-bad", grid=(3, 1, 1), builtin="gelu", params={"n": 2048}))


def test_illegal_address_surfaces_as_backend_error():
    assert_fault_is_backend_error(
        """
        be = CudaBackend()
        be.prepare(k)
        cuda_testing.point_buffer_at(be, "bad", "x", 0x10)  # → an unmapped address
        be.submit(Launch(1, "t", "lp", k, 0, g[0], 1))
        """
    )
