"""The engine's attached set with slicer results: an LP program's modules are handed to
the variants worker, and ``sliceable_share`` counts GPU time in kernels the slicer
sliced (not in every kernel of a PTX module). Fakes for the segment and the worker."""

from __future__ import annotations

import os
import subprocess
from types import SimpleNamespace

import pytest

from hbtui.attach import layout as L
from hbtui.engine.attached import AttachedSet, AttachedTask
from hbtui.engine.attached import variants as V
from hbtui.engine.attached.hp import HpTracker
from hbtui.engine.attached.lp import LpGate
from hbtui.engine.attached.variants import program_dirs
from hbtui.engine.metrics import TaskStats
from hbtui.engine.model import Task
from hbtui.engine.scheduler import ControlError

US = 1_000
PTX_MOD, CUBIN_MOD = 0xA1, 0xB2


class FakeAtt:
    """The parts of ``Attachment`` the poll uses; tests append records to the lists."""

    def __init__(self) -> None:
        self.next_seq = self.granted = 0
        self.mods: list[SimpleNamespace] = []
        self.funcs: list[SimpleNamespace] = []
        self.recs: list[SimpleNamespace] = []
        self._done = [0] * L.COMP_SLOTS
        self.counters = self._done  # Attachment.counters: read in place
        self.h = SimpleNamespace(
            intercept_pid=0, ungated=0, device_cc=0, held_launches=4, held_ns=3_000_000
        )
        self.syncing = False
        self.grace_ns = 2_000_000_000

    def _take(self, name: str) -> list[SimpleNamespace]:
        out, self.__dict__[name] = self.__dict__[name], []
        return out

    def modules(self) -> list[SimpleNamespace]:
        return self._take("mods")

    def functions(self) -> list[SimpleNamespace]:
        return self._take("funcs")

    def launches(self) -> list[SimpleNamespace]:
        return self._take("recs")

    def heartbeat(self, now: int | None = None) -> None:
        pass

    def completed(self, slot: int) -> int:
        return self._done[slot]

    def pending(self) -> list[SimpleNamespace]:
        return []

    def grant(self, seq: int) -> int:
        self.granted = max(self.granted, seq)
        return self.granted

    def set_gated(self, gated: bool) -> None:
        pass

    # the variant table (Attachment.publish_variant and friends), as a dict
    variants: dict[int, SimpleNamespace]
    slicing = False

    def set_slicing(self, on: bool) -> None:
        self.slicing = on

    def set_hp_comp_us(self, us: int, burst_us: int = 0) -> None:
        self.hp_comp_us = us

    def publish_variant(self, func: int, module_hash: int, name: str, nparams: int,
                        param_bytes: int | None, slice_blocks: int = 0) -> int:  # fmt: skip
        self.__dict__.setdefault("variants", {})
        self.variants[func] = SimpleNamespace(func=func, module_hash=module_hash, name=name,
                                              nparams=nparams, param_bytes=param_bytes,
                                              slice_blocks=slice_blocks, state=1,
                                              wave_blocks=264)  # fmt: skip
        return func  # the "slot"

    def variant(self, func: int) -> SimpleNamespace | None:
        return self.__dict__.get("variants", {}).get(func)

    def set_slice_blocks(self, slot: int, blocks: int, forced: bool = False) -> None:
        self.variants[slot].slice_blocks = blocks | (L.SLICE_FORCED if forced else 0)


class FakeWorker:
    def __init__(self) -> None:
        self.jobs: list[V.Job] = []
        self.ready: list[V.ModuleVariant] = []

    def request(self, job: V.Job) -> bool:
        self.jobs.append(job)
        return True

    def take(self) -> list[V.ModuleVariant]:
        out, self.ready = self.ready, []
        return out

    def close(self) -> None:
        pass


def mod(h: int, kind: int) -> SimpleNamespace:
    return SimpleNamespace(hash=h, image_kind=kind, size=100, result=0)


def fn(func: int, name: str, module_hash: int) -> SimpleNamespace:
    return SimpleNamespace(func=func, name=name, module_hash=module_hash, result=0,
                           name_hash=L.hash64(name.encode()))  # fmt: skip


def launch(seq: int, func: int, t: int) -> SimpleNamespace:
    return SimpleNamespace(seq=seq, kind=L.KIND_KERNEL, flags=0, comp_slot=1, func=func,
                           enqueue_ns=t, issue_ns=t, return_ns=t + US)  # fmt: skip


def _attach(s: AttachedSet, cls: str) -> tuple[AttachedTask, FakeAtt]:
    att = FakeAtt()
    at = AttachedTask(Task(f"t-{cls}", cls), att, f"/{cls}", os.getpid(), ["x"], 1.0,  # type: ignore[arg-type]
                      stats=TaskStats(f"t-{cls}", cls), dirs=("/cache", ("/triton",)))  # fmt: skip
    if cls == "lp":
        at.lp = LpGate(att)  # type: ignore[arg-type]
    else:
        at.hp = HpTracker(idle_ns=1000 * US)
    s.tasks[at.name] = at
    s.by_shm[at.shm] = at
    return at, att


def test_sliceable_share_counts_only_kernels_the_slicer_sliced() -> None:
    w = FakeWorker()
    s = AttachedSet(lambda: "temporal", variants=w)  # type: ignore[arg-type]
    at, att = _attach(s, "lp")
    att.mods = [mod(PTX_MOD, L.IMG_PTX), mod(CUBIN_MOD, L.IMG_CUBIN)]
    att.funcs = [fn(0xF1, "k_sliced", PTX_MOD), fn(0xF2, "k_refused", PTX_MOD),
                 fn(0xF3, "k_triton", CUBIN_MOD)]  # fmt: skip
    s.poll(0)
    assert [(j.hash, j.kind, j.module_dir, j.triton_roots) for j in w.jobs] == [
        (PTX_MOD, L.IMG_PTX, "/cache", ("/triton",)),
        (CUBIN_MOD, L.IMG_CUBIN, "/cache", ("/triton",)),
    ]
    assert at.sliceable == set() and at.modules == {PTX_MOD: "pending", CUBIN_MOD: "pending"}
    w.ready = [
        V.ModuleVariant(PTX_MOD, V.OK, kind="ptx", entries=(
            V.EntryInfo("k_sliced", "sliced", None, 3),
            V.EntryInfo("k_refused", "refused", "grid-wide sync", 2))),
        V.ModuleVariant(CUBIN_MOD, V.MISSING, "no .ptx", "cubin"),
    ]  # fmt: skip
    s.poll(1 * US)
    assert at.sliceable == {0xF1}  # a PTX module's refused kernel is not sliceable
    # a handle looked up after the result came (e.g. cuKernelGetFunction) is matched too
    att.funcs = [fn(0xF4, "k_sliced", PTX_MOD)]
    s.poll(2 * US)
    assert at.sliceable == {0xF1, 0xF4}
    # 100 us in the sliced kernel, then 300 us in the refused one
    att.recs = [launch(1, 0xF1, 10 * US)]
    s.poll(10 * US)
    att._done[1] = 1
    s.poll(110 * US)
    att.recs = [launch(2, 0xF2, 110 * US)]
    s.poll(110 * US)
    att._done[1] = 2
    s.poll(410 * US)
    a = s.task_state(at)["attached"]
    assert a["sliceable_share"] == 100 / 400
    assert a["sliceable_kernels"] == 2 and a["modules"] == {"ok": 1, "missing": 1}
    assert len(w.jobs) == 2  # nothing asked twice


def test_hummingbird_publishes_sliced_kernels_and_sizes_their_slices() -> None:
    """Published for the interceptor with the entry's name and params; slicing on only
    under hummingbird; block time learned from slice records; slice_blocks written for
    half the in-flight budget (100 us once the program's kernels are sliced)."""
    w = FakeWorker()
    policy = ["temporal"]
    s = AttachedSet(lambda: policy[0], variants=w)  # type: ignore[arg-type]
    s.other_hp = lambda: True  # an HP to protect (with none, LP runs ungated and whole)
    at, att = _attach(s, "lp")
    att.mods = [mod(PTX_MOD, L.IMG_PTX)]
    att.funcs = [fn(0xF1, "k_sliced", PTX_MOD), fn(0xF2, "k_refused", PTX_MOD)]
    s.poll(0)
    w.ready = [V.ModuleVariant(PTX_MOD, V.OK, kind="ptx", entries=(
        V.EntryInfo("k_sliced", "sliced", None, 3, 24),
        V.EntryInfo("k_refused", "refused", "grid-wide sync", 2, 16)))]  # fmt: skip
    s.poll(1 * US)
    v = att.variant(0xF1)
    assert (v.name, v.nparams, v.param_bytes, v.module_hash) == ("k_sliced", 3, 24, PTX_MOD)
    assert att.variant(0xF2) is None  # refused: runs whole
    assert not att.slicing and s.default_budget_us(at) == 500.0  # temporal: whole kernels
    policy[0] = "hummingbird"
    s.poll(2 * US)
    assert att.slicing and s.default_budget_us(at) == 500.0  # nothing ran yet
    # two slices of 528 blocks (two waves), 40 us each: 40/528 us per block
    for seq, t in ((1, 10), (2, 50)):
        att.recs = [SimpleNamespace(seq=seq, kind=L.KIND_KERNEL, flags=L.LF_SLICE, comp_slot=1,
                                    func=0xF1, enqueue_ns=t * US, issue_ns=t * US,
                                    return_ns=t * US + 1, slice_start=0,
                                    slice_blocks=528)]  # fmt: skip
        s.poll(t * US)
        att._done[1] = seq
        s.poll((t + 40) * US)
    assert at.lp is not None
    assert abs(at.lp.slices.ns_per_block[0xF1] - 40_000 / 528) < 1
    s.poll(30_000 * US)  # the plan runs every 20 ms: 50-us slices = 660 blocks
    assert att.variants[0xF1].slice_blocks == 660
    # the gate's estimate for the next slice: whole waves of 264 (the interceptor rounds)
    assert abs(at.lp.duration_ns(0xF1) - 528 * 40_000 / 528) < 1
    a = s.task_state(at)["attached"]
    assert a["slicing"] and a["sliced_share"] == 1.0
    assert a["waited"] == [4, 0.003]  # launches that waited for a grant, their seconds
    assert s.default_budget_us(at) == 100.0  # most of its GPU time is sliceable
    policy[0] = "temporal"
    s.poll(31_000 * US)
    assert not att.slicing
    policy[0] = "hummingbird"
    s.poll(32_000 * US)
    assert att.slicing
    policy[0] = "spatial"  # ungated: nothing to slice for (docs: hummingbird only)
    s.poll(33_000 * US)
    assert not att.slicing and not s.task_state(at)["attached"]["slicing"]


def test_hp_programs_are_never_sliced() -> None:
    w = FakeWorker()
    s = AttachedSet(lambda: "temporal", variants=w)  # type: ignore[arg-type]
    at, att = _attach(s, "hp")
    att.mods = [mod(PTX_MOD, L.IMG_PTX)]
    att.funcs = [fn(0xF1, "k", PTX_MOD)]
    s.poll(0)
    assert w.jobs == [] and at.modules == {} and at.sliceable == set()


def test_a_programs_directories_come_from_its_environment(tmp_path) -> None:  # noqa: ANN001
    env = {"PATH": os.environ.get("PATH", ""), "HBTUI_MODULE_DIR": str(tmp_path / "m"),
           "TRITON_CACHE_DIR": str(tmp_path / "t")}  # fmt: skip
    # no exec after "up": /proc/PID/environ reads empty while a process is mid-exec (a CI
    # run read it then and fell back to the engine's own directories)
    p = subprocess.Popen(["sh", "-c", "echo up; sleep 10; :"], env=env, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"up\n"
        assert program_dirs(p.pid) == (str(tmp_path / "m"), (str(tmp_path / "t"),))
    finally:
        p.kill()
        p.wait()
    mdir, roots = program_dirs(0)  # unknown: the engine's own environment
    assert mdir and len(roots) == 1


def test_slices_inside_a_request_are_sized_to_the_bubble() -> None:
    """The largest whole number of waves whose predicted time fits the bubble (within the
    cap) is written for the next slice; none fits: nothing (0); the budget's size is
    restored outside requests."""
    from hbtui.engine.attached.slices import Slices

    att = FakeAtt()
    sl = Slices(att)  # type: ignore[arg-type]
    sl.publish(0xF1, PTX_MOD, V.EntryInfo("k", "sliced", None, 2, 12))
    sl.set_on(True)
    assert sl.fit_blocks(0xF1, lambda d: True, 50_000) is None  # nothing learned yet
    sl.learn(0xF1, 264, 20_000.0)  # one wave of 264 blocks: 20 us
    sl.plan(0, 100_000)
    assert att.variants[0xF1].slice_blocks == 1320  # 100 us / (20/264 us)
    assert sl.fit_blocks(0xF1, lambda d: d <= 45_000, 100_000) == 528  # 2 waves: 40 us
    assert att.variants[0xF1].slice_blocks == 528
    assert sl.fit_blocks(0xF1, lambda d: d <= 45_000, 30_000) == 264  # the cap: one wave
    assert sl.fit_blocks(0xF1, lambda d: False, 100_000) == 0
    assert sl.fit_blocks(0xF2, lambda d: True, 100_000) is None  # not a sliced function
    sl.restore()
    assert att.variants[0xF1].slice_blocks == 1320
    # the gate: a held sliced launch goes only when a slice fits
    gate = LpGate(att)  # type: ignore[arg-type]
    gate.slices = sl
    held = SimpleNamespace(seq=5, func=0xF1)
    att.pending = lambda: [held]  # type: ignore[method-assign]
    assert gate.grant_slice_if(lambda d: False, 100_000) and att.granted == 0
    assert gate.grant_slice_if(lambda d: d <= 25_000, 100_000) and att.granted == 5
    assert att.variants[0xF1].slice_blocks == 264


def test_an_operator_block_count_is_every_slice_exactly_inside_requests_too() -> None:
    """``set_slice(blocks=N)`` on an attached LP program: every sliced function's slices
    are N blocks with the interceptor's no-rounding bit (below a wave too), published so
    from the start for functions that come later; the plan leaves them alone; the gate
    predicts a forced slice from those seen at that size (not the block model, which it
    leaves untouched; slices issued before a change teach nothing) and, until one was
    seen, leaves a bubble to the whole-kernel rule; within the cap; ``us`` again: the
    planned sizes come back. An HP program has no slices; sizes above what a slice can
    hold are refused (2^30 itself is taken)."""
    w = FakeWorker()
    s = AttachedSet(lambda: "hummingbird", variants=w)  # type: ignore[arg-type]
    s.other_hp = lambda: True
    at, att = _attach(s, "lp")
    att.mods = [mod(PTX_MOD, L.IMG_PTX)]
    att.funcs = [fn(0xF1, "k_sliced", PTX_MOD)]
    s.poll(0)
    entry = V.EntryInfo("k_sliced", "sliced", None, 3, 24)
    w.ready = [V.ModuleVariant(PTX_MOD, V.OK, kind="ptx", entries=(entry,))]
    s.poll(1 * US)
    assert at.lp is not None
    sl = at.lp.slices
    sl.learn(0xF1, 264, 20_000.0)  # one wave (264 blocks): 20 us
    sl.plan(10**12, 100_000)
    assert att.variants[0xF1].slice_blocks == 1320  # planned: 100 us of whole waves
    s.set_slice(at.task.name, blocks=40)  # below a wave
    assert att.variants[0xF1].slice_blocks == 40 | L.SLICE_FORCED
    assert s.task_state(at)["slice_blocks"] == 40
    sl.plan(2 * 10**12, 100_000)  # the plan leaves the operator's size alone
    assert att.variants[0xF1].slice_blocks == 40 | L.SLICE_FORCED
    assert sl.duration_ns(0xF1) == 20_000  # none seen yet: one wave's time, not 40 blocks'
    assert sl.fit_blocks(0xF1, lambda d: True, 100_000) is None  # unseen: the whole-kernel rule
    sl.learn(0xF1, 1320, 99_000.0, issued_ns=1)  # issued before the change: teaches nothing
    assert 0xF1 not in sl.forced_ns and sl.ns_per_block[0xF1] == 20_000 / 264
    sl.learn(0xF1, 40, 18_000.0)  # a 40-block slice took 18 us (a block's lifetime)
    assert sl.duration_ns(0xF1) == 18_000 and sl.ns_per_block[0xF1] == 20_000 / 264
    assert sl.fit_blocks(0xF1, lambda d: d <= 20_000, 100_000) == 40
    assert sl.fit_blocks(0xF1, lambda d: d <= 10_000, 100_000) == 0  # the bubble: never resized
    assert sl.fit_blocks(0xF1, lambda d: True, 15_000) == 0  # the cap (budget, SLO slack)
    assert att.variants[0xF1].slice_blocks == 40 | L.SLICE_FORCED
    # a function published while forced starts at the operator's size
    sl.publish(0xF3, PTX_MOD, V.EntryInfo("k3", "sliced", None, 2, 12))
    assert att.variants[0xF3].slice_blocks == 40 | L.SLICE_FORCED
    s.set_slice(at.task.name, blocks=80)  # a new size: what was seen at 40 no longer counts
    assert sl.fit_blocks(0xF1, lambda d: True, 100_000) is None
    assert att.variants[0xF3].slice_blocks == 80 | L.SLICE_FORCED
    sl.learn(0xF1, 40, 18_000.0, issued_ns=1)  # a 40-block slice still in flight: ignored
    assert 0xF1 not in sl.forced_ns
    s.set_slice(at.task.name, us=200.0)
    assert att.variants[0xF1].slice_blocks == 1320 and att.variants[0xF3].slice_blocks == 0
    assert sl.forced is None and s.task_state(at)["slice_blocks"] is None
    assert at.task.slice_us == 200.0
    with pytest.raises(ControlError, match=r"at most 2\^30 blocks a slice"):
        s.set_slice(at.task.name, blocks=2**30 + 1)
    s.set_slice(at.task.name, blocks=2**30)
    assert att.variants[0xF1].slice_blocks == 2**30 | L.SLICE_FORCED
    hp, _ = _attach(s, "hp")
    with pytest.raises(ControlError, match="not an LP program"):
        s.set_slice(hp.task.name, blocks=8)


def test_a_variant_the_interceptor_failed_is_planned_as_whole_kernels() -> None:
    """Once the interceptor marks a variant failed (module did not load, first sub-grid
    launch refused), the function's launches run whole: the gate must stop predicting
    them as one slice (it would let several whole kernels in flight for one slice's
    room) and a bubble must not be sized for a slice of it."""
    from hbtui.engine.attached.slices import Slices

    att = FakeAtt()
    sl = Slices(att)  # type: ignore[arg-type]
    sl.publish(0xF1, PTX_MOD, V.EntryInfo("k", "sliced", None, 2, 12))
    sl.set_on(True)
    sl.learn(0xF1, 264, 20_000.0)
    sl.plan(0, 100_000)
    assert abs(sl.duration_ns(0xF1) - 20_000.0 * 5) < 1  # 1320 blocks
    att.variants[0xF1].state = L.VAR_FAILED
    sl.plan(30_000_000, 100_000)  # the next plan reads the state
    assert sl.duration_ns(0xF1) is None  # the gate's whole-kernel estimate again
    assert sl.fit_blocks(0xF1, lambda d: True, 100_000) is None
    assert sl.states() == {"failed": 1}


def test_bubble_sizing_asks_the_survival_rule_a_logarithmic_number_of_times() -> None:
    """A tiny learned block time against a large cap: the largest fitting slice is found
    by a binary search (survival is monotone: a longer slice never fits better)."""
    from hbtui.engine.attached.slices import Slices

    att = FakeAtt()
    sl = Slices(att)  # type: ignore[arg-type]
    sl.publish(0xF1, PTX_MOD, V.EntryInfo("k", "sliced", None, 2, 12))
    sl.set_on(True)
    sl.learn(0xF1, 264, 264.0)  # 1 ns a block: a wave is 264 ns
    sl.plan(0, 100_000)
    asked: list[float] = []

    def fits(d: float) -> bool:
        asked.append(d)
        return d <= 1_000_000  # a 1-ms bubble

    assert sl.fit_blocks(0xF1, fits, 10_000_000) == 3787 * 264  # floor(1 ms / 264 ns) waves
    assert len(asked) <= 20


def test_a_plan_visits_a_bounded_batch_of_functions_round_robin() -> None:
    """The plan runs on the scheduling thread: with 100 sliced functions one call reads
    at most PLAN_BATCH variant entries, and four calls cover them all."""
    from hbtui.engine.attached.slices import PLAN_BATCH, PLAN_EVERY_NS, Slices

    att = FakeAtt()
    sl = Slices(att)  # type: ignore[arg-type]
    for f in range(1, 101):
        sl.publish(f, PTX_MOD, V.EntryInfo(f"k{f}", "sliced", None, 2, 12))
        sl.learn(f, 264, 20_000.0)
    sl.set_on(True)
    read: list[int] = []
    real = att.variant
    att.variant = lambda func: (read.append(func), real(func))[1]  # type: ignore[method-assign]
    sl.plan(0, 100_000)
    assert len(read) == PLAN_BATCH
    for k in range(1, 4):
        sl.plan(k * PLAN_EVERY_NS, 100_000)
    assert set(read) == set(range(1, 101))
    assert all(att.variants[f].slice_blocks == 1320 for f in range(1, 101))
