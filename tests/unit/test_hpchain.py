"""The native HP issue loop (native/hpchain.c) on the CPU, with fake driver calls.

The fake cuLaunchKernel "runs" a kernel by writing its %globaltimer stamps into the
slot the loop chose (read back through the kernel's ts argument cell), so the loop
sees a completion exactly as it does on a GPU. Assertions are orderings and lower
bounds only (gaps are busy-waited, so they are never short), never upper bounds.
"""

from __future__ import annotations

import ctypes
import shutil
import time

import pytest

from hbtui.engine.backends import hpchain

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)

LAUNCH = ctypes.CFUNCTYPE(
    ctypes.c_int,
    *(
        [ctypes.c_void_p]
        + [ctypes.c_uint] * 7
        + [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
    ),
)
QUERY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
RECORD = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
WAIT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
NSLOTS = 8


class FakeGpu:
    """Kernels complete inside the launch call unless ``hang``; ``launch_err`` /
    ``query_rc`` make the calls fail."""

    def __init__(self) -> None:
        self.ts = (ctypes.c_uint64 * (2 * NSLOTS))()
        self.base = ctypes.addressof(self.ts)
        self.calls: list[tuple[int, int, int, int]] = []  # (time, func, stream, grid)
        self.hang = False
        self.launch_err = 0
        self.query_rc = hpchain.NOT_READY
        self._launch = LAUNCH(self.launch)
        self._query = QUERY(lambda s: self.query_rc)
        self.records: list[tuple[int, int, int]] = []  # (event, stream, launches so far)
        self._record = RECORD(lambda e, s: self.records.append((e, s, len(self.calls))) or 0)
        self.waits: list[tuple[int, int, int]] = []  # (stream, event, launches so far)
        self._wait = WAIT(lambda s, e, f: self.waits.append((s, e, len(self.calls))) or 0)

    def launch(self, func, gx, gy, gz, bx, by, bz, smem, stream, params, extra) -> int:
        now = time.perf_counter_ns()
        self.calls.append((now, func or 0, stream or 0, gx))
        if self.launch_err:
            return self.launch_err
        slot_addr = ctypes.c_uint64.from_address(params[0]).value  # the kernel's hb_ts
        stamps = (ctypes.c_uint64 * 2).from_address(slot_addr)
        stamps[0] = now + 1000
        if not self.hang:
            stamps[1] = now + 5000
        return 0

    def chain(self) -> hpchain.Chain:
        addr = ctypes.cast(self._launch, ctypes.c_void_p).value
        q = ctypes.cast(self._query, ctypes.c_void_p).value
        rec = ctypes.cast(self._record, ctypes.c_void_p).value
        wait = ctypes.cast(self._wait, ctypes.c_void_p).value
        return hpchain.Chain(addr, q, self.base, self.base, 0, NSLOTS, record=rec, wait=wait)


class Kernel:
    """A kernel's argument array: hb_ts and hb_cnt cells first, as the built-ins have."""

    def __init__(self) -> None:
        self.ts = ctypes.c_uint64(0)
        self.cnt = ctypes.c_uint64(0)
        self.params = (ctypes.c_void_p * 2)(ctypes.addressof(self.ts), ctypes.addressof(self.cnt))

    def step(
        self, id: int, gap_ns: int, not_before: int = -1, stream: int = 7, event: int = 0
    ) -> hpchain.Step:
        return hpchain.Step(
            id=id, func=100 + id, stream=stream, params=ctypes.addressof(self.params),
            ts_cell=ctypes.addressof(self.ts), cnt_cell=ctypes.addressof(self.cnt),
            gap_ns=gap_ns, not_before=not_before, event=event, grid=32, bx=128, by=1, bz=1,
            smem=0,
        )  # fmt: skip


def collect(chain: hpchain.Chain, n: int, timeout_s: float = 10.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n:
        out += chain.poll()
        assert time.monotonic() < deadline, f"only {len(out)} of {n} completions"
    return out


@pytest.fixture
def gpu():
    g = FakeGpu()
    yield g


def test_request_runs_in_order_with_gaps_from_seen_completion(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k = Kernel()
        arrival = time.perf_counter_ns() + 2_000_000
        gaps = [300_000, 150_000, 0, 200_000]
        ch.push([k.step(i + 1, g, arrival if i == 0 else -1) for i, g in enumerate(gaps)])
        done = collect(ch, 4)
        assert [d.id for d in done] == [1, 2, 3, 4]
        assert all(d.err == 0 and d.no_stamp == 0 for d in done)
        # the first kernel: gap after the arrival; later ones: gap after the seen completion
        assert done[0].issue_ns >= arrival + gaps[0]
        for prev, d, g in zip(done, done[1:], gaps[1:], strict=False):
            assert d.issue_ns >= prev.seen_ns + g
            assert d.issue_ns <= d.called_ns <= d.seen_ns
        # stamps come back with the record (slots are reused), start before end
        assert all(0 < d.g0 < d.g1 for d in done)
        assert len({d.slot for d in done}) == 4
        assert ch.issued == 4 and ch.pending == 0
        assert [c[1] for c in gpu.calls] == [101, 102, 103, 104]
        assert all(c[3] == 32 for c in gpu.calls)
    finally:
        ch.close()


def test_next_request_waits_for_previous_completion(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k = Kernel()
        t0 = time.perf_counter_ns()
        ch.push([k.step(1, 0, t0), k.step(2, 3_000_000)])  # request A: long host gap
        ch.push([k.step(3, 100_000, t0)])  # request B arrived at t0 too: FIFO behind A
        a1, a2, b1 = collect(ch, 3)
        assert b1.issue_ns >= a2.seen_ns + 100_000
        assert a2.issue_ns >= a1.seen_ns + 3_000_000
    finally:
        ch.close()


def test_slots_wrap_around(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k = Kernel()
        n = 3 * NSLOTS + 1
        ch.push([k.step(i + 1, 0, 0 if i == 0 else -1) for i in range(n)])
        done = collect(ch, n)
        assert [d.slot for d in done] == [i % NSLOTS for i in range(n)]
        assert all(d.g1 > d.g0 for d in done)
    finally:
        ch.close()


def test_launch_error_is_reported_and_stops_issue(gpu: FakeGpu) -> None:
    gpu.launch_err = 98  # CUDA_ERROR_INVALID_IMAGE, say
    ch = gpu.chain()
    try:
        k = Kernel()
        ch.push([k.step(1, 0, 0), k.step(2, 0)])
        (d,) = collect(ch, 1)
        assert (d.id, d.err) == (1, 98)
        assert ch.failed  # what the backend checks while it waits for an armed slice
        time.sleep(0.05)
        assert ch.poll() == [] and len(gpu.calls) == 1  # nothing issued after a failure
    finally:
        ch.close()


def test_sticky_error_while_waiting_is_reported(gpu: FakeGpu) -> None:
    gpu.hang = True  # no end stamp ever
    gpu.query_rc = 700  # CUDA_ERROR_ILLEGAL_ADDRESS from cuStreamQuery
    ch = gpu.chain()
    try:
        k = Kernel()
        ch.push([k.step(5, 0, 0)])
        (d,) = collect(ch, 1)
        assert (d.id, d.err) == (5, 700)
    finally:
        ch.close()


def test_idle_stream_without_end_stamp_completes_flagged(gpu: FakeGpu) -> None:
    gpu.hang = True
    gpu.query_rc = 0  # the stream is idle: the kernel returned without stamping
    ch = gpu.chain()
    try:
        k = Kernel()
        ch.push([k.step(1, 0, 0), k.step(2, 0)])
        d1, d2 = collect(ch, 2)
        assert d1.err == 0 and d1.no_stamp == 1 and d1.g1 == 0
        assert d2.id == 2
    finally:
        ch.close()


def test_close_stops_a_waiting_thread(gpu: FakeGpu) -> None:
    gpu.hang = True  # the thread spins on the end stamp
    ch = gpu.chain()
    k = Kernel()
    ch.push([k.step(1, 0, 0), k.step(2, 10_000_000_000)])
    while not gpu.calls:
        time.sleep(0.001)
    t = time.monotonic()
    ch.close()
    assert time.monotonic() - t < 2.0
    ch.close()  # idempotent


def test_full_queue_is_refused_whole(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k = Kernel()
        far = time.perf_counter_ns() + 60_000_000_000  # nothing issues during the test
        ch.push([k.step(1, 0, far)])  # taken off the ring at once, waits for `far`
        big = [k.step(i, 0) for i in range(2, 4099)]  # 4097 > the ring (4096)
        with pytest.raises(hpchain.HpChainError, match="queue full"):
            ch.push(big)
        assert ch.pending == 1
    finally:
        ch.close()


def test_build_is_cached_and_reports_a_broken_compiler(tmp_path, monkeypatch) -> None:
    p1 = hpchain.build(tmp_path)
    assert hpchain.build(tmp_path) == p1 and p1.stat().st_size > 0
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(hpchain.HpChainError, match="no C compiler"):
        hpchain.build(tmp_path / "other")


def test_event_recorded_after_each_launch_then_counted_issued(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k = Kernel()
        ch.push([k.step(1, 0, 0, event=501), k.step(2, 0, event=0), k.step(3, 0, event=503)])
        collect(ch, 3)
        # recorded on the launch's stream right after that launch; none for event 0
        assert gpu.records == [(501, 7, 1), (503, 7, 3)]
        assert ch.issued == 3 and ch.pushed == 3
    finally:
        ch.close()


def test_every_native_source_is_installed_as_package_data() -> None:
    """A wheel must carry native/hpchain.c (built at start-up) and the kernel sources."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = tomllib.loads((root / "pyproject.toml").read_text())
    globs = cfg["tool"]["setuptools"]["package-data"]["hbtui.native"]
    files = [
        p.name for p in (root / "hbtui" / "native").iterdir() if p.is_file() and p.suffix != ".py"
    ]
    assert "hpchain.c" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"native/ files not in package-data: {missing}"


def test_a_thread_that_cannot_make_the_context_current_fails_creation(gpu: FakeGpu) -> None:
    setctx = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(lambda ctx: 201)  # INVALID_CONTEXT
    addr = ctypes.cast(gpu._launch, ctypes.c_void_p).value
    q = ctypes.cast(gpu._query, ctypes.c_void_p).value
    sc = ctypes.cast(setctx, ctypes.c_void_p).value
    with pytest.raises(hpchain.HpChainError, match="context current"):
        hpchain.Chain(addr, q, gpu.base, gpu.base, 0, NSLOTS, setctx=sc, ctx=1234)


def test_closed_chain_is_inert(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    ch.expect(time.perf_counter_ns() + 5_000_000)
    ch.close()
    assert ch.poll() == [] and ch.issued == 0
    with pytest.raises(hpchain.HpChainError, match="closed"):
        ch.push([Kernel().step(1, 0, 0)])


def test_expected_request_is_issued_promptly_after_a_long_idle(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k = Kernel()
        ch.push([k.step(1, 0, 0)])
        collect(ch, 1)
        t = time.perf_counter_ns() + 60_000_000  # 60 ms away: the thread may sleep first
        ch.expect(t)
        ch.push([k.step(2, 0, t)])
        (d,) = collect(ch, 1)
        assert d.issue_ns >= t
    finally:
        ch.close()


def arm_for(hp_id: int, lp: Kernel, func: int = 900) -> hpchain.Arm:
    return hpchain.Arm(
        hp_id=hp_id, func=func, stream=55, params=ctypes.addressof(lp.params), event=77,
        grid=924, bx=128, by=1, bz=1, smem=0,
    )  # fmt: skip


def test_an_armed_slice_goes_out_right_after_its_hp_step_behind_its_event(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k, lp = Kernel(), Kernel()
        lp.ts.value = ctypes.addressof(gpu.ts) + 16 * (NSLOTS - 1)  # its own stamp slot
        ch.push([k.step(1, 0, event=11), k.step(2, 50_000_000, event=12)])
        collect(ch, 1)
        assert ch.arm(0, arm_for(2, lp), seq=1)  # step 2 (push order 1) is 50 ms away
        assert not ch.arm_launched(0, 2)
        collect(ch, 1)
        assert ch.arm_launched(0, 2)
        # HP 2, then (its event recorded) the LP stream waits on that event, the slice
        # goes out on the LP stream, and its own event is recorded after it
        assert [c[1:3] for c in gpu.calls] == [(101, 7), (102, 7), (900, 55)]
        assert gpu.waits == [(55, 12, 2)]
        assert gpu.records[-2:] == [(12, 7, 2), (77, 55, 3)]
    finally:
        ch.close()


def test_an_arm_for_a_step_already_issued_is_handed_back(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k, lp = Kernel(), Kernel()
        ch.push([k.step(1, 0, event=11), k.step(2, 0, event=12)])
        collect(ch, 2)
        assert not ch.arm(0, arm_for(1, lp), seq=0)  # too late: the caller launches it
        assert [c[1] for c in gpu.calls] == [101, 102] and not gpu.waits
        ch.push([k.step(3, 0, event=13)])  # a later step does not take an arm for step 1
        collect(ch, 1)
        assert [c[1] for c in gpu.calls] == [101, 102, 103] and not gpu.waits
        assert ch.arm(0, arm_for(4, lp), seq=3)  # the arm is free again
    finally:
        ch.close()


def test_two_slices_armed_behind_one_step_go_out_in_slot_order(gpu: FakeGpu) -> None:
    ch = gpu.chain()
    try:
        k, lp1, lp2 = Kernel(), Kernel(), Kernel()
        for i, x in enumerate((lp1, lp2)):
            x.ts.value = ctypes.addressof(gpu.ts) + 16 * (NSLOTS - 1 - i)
        ch.push([k.step(1, 50_000_000, time.perf_counter_ns(), event=11)])
        assert ch.arm(0, arm_for(1, lp1, func=901), seq=0)
        assert ch.arm(1, arm_for(1, lp2, func=902), seq=0)
        with pytest.raises(hpchain.HpChainError, match="slot 0 is still pending"):
            ch.arm(0, arm_for(1, lp1), seq=0)
        collect(ch, 1)
        assert ch.arm_launched(0, 1) and ch.arm_launched(1, 1)
        assert [c[1] for c in gpu.calls] == [101, 901, 902]
        assert [w[1] for w in gpu.waits] == [11, 11]  # each waits on the HP step's event
    finally:
        ch.close()


def test_a_chain_without_stream_waits_refuses_to_arm(gpu: FakeGpu) -> None:
    addr = ctypes.cast(gpu._launch, ctypes.c_void_p).value
    q = ctypes.cast(gpu._query, ctypes.c_void_p).value
    rec = ctypes.cast(gpu._record, ctypes.c_void_p).value
    ch = hpchain.Chain(addr, q, gpu.base, gpu.base, 0, NSLOTS, record=rec)  # no wait fn
    try:
        assert not ch.failed
        with pytest.raises(hpchain.HpChainError, match="cuStreamWaitEvent"):
            ch.arm(0, arm_for(1, Kernel()), seq=0)  # it would never go out
    finally:
        ch.close()


def test_an_hp_end_seen_while_arms_go_out_starts_the_next_gap_then(gpu: FakeGpu) -> None:
    """The armed launches take driver time; the HP kernel's end must not wait for them."""
    slow = WAIT(lambda st, e, f: time.sleep(0.002) or 0)  # a slow cuStreamWaitEvent
    addr = ctypes.cast(gpu._launch, ctypes.c_void_p).value
    q = ctypes.cast(gpu._query, ctypes.c_void_p).value
    rec = ctypes.cast(gpu._record, ctypes.c_void_p).value
    wait = ctypes.cast(slow, ctypes.c_void_p).value
    ch = hpchain.Chain(addr, q, gpu.base, gpu.base, 0, NSLOTS, record=rec, wait=wait)
    try:
        k, lp1, lp2 = Kernel(), Kernel(), Kernel()
        for i, x in enumerate((lp1, lp2)):
            x.ts.value = ctypes.addressof(gpu.ts) + 16 * (NSLOTS - 1 - i)
        ch.push([k.step(1, 50_000_000, time.perf_counter_ns(), event=11)])
        assert ch.arm(0, arm_for(1, lp1, func=901), seq=0)
        assert ch.arm(1, arm_for(1, lp2, func=902), seq=0)
        (d,) = collect(ch, 1)
        first_arm = next(c[0] for c in gpu.calls if c[1] == 901)
        assert d.seen_ns < first_arm  # seen before the (slow) arm launches, not after
    finally:
        ch.close()


def test_a_launched_arm_stays_launched_when_its_slot_is_armed_again(gpu: FakeGpu) -> None:
    """The cuda backend's latch (H100 call 21): once the slice armed behind step 2 went
    out, a later slice for step 2 may arm the same slot, find the step issued, and hand
    it back, leaving the slot's word at (2, none) -- the first slice still went out."""
    from hbtui.engine.backends.inflight import ArmedSlice

    ch = gpu.chain()
    try:
        k, lp = Kernel(), Kernel()
        lp.ts.value = ctypes.addressof(gpu.ts) + 16 * (NSLOTS - 1)
        ch.push([k.step(1, 0, event=11), k.step(2, 50_000_000, event=12)])
        collect(ch, 1)
        assert ch.arm(0, arm_for(2, lp), seq=1)
        first = ArmedSlice(55, 2, 0)
        collect(ch, 1)  # step 2 and the slice armed behind it go out
        assert first.launched(ch)
        assert not ch.arm(0, arm_for(2, lp), seq=1)  # too late: handed back to the caller
        assert not ch.arm_launched(0, 2)  # the word no longer shows the first slice ...
        assert not ArmedSlice(55, 2, 0).launched(ch)  # (what an unlatched record would read)
        assert first.launched(ch)  # ... the latch does
        assert [c[1] for c in gpu.calls] == [101, 102, 900]  # it went out once
    finally:
        ch.close()
