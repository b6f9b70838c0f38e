"""The interceptor on CPU with the fake driver: every way in (linked, dlopen + dlsym,
cuGetProcAddress v1/v2, per-thread default stream), arguments passed through
unchanged, launch/module/function records, GPU completions (stream writes to the
device-mapped page, host-function fallback)."""

from __future__ import annotations

import os
import re
import struct
import sys

import pytest
from conftest import Native, Prog, prog_env, run_prog

from hbtui.attach import layout as L

STEPS = ["where", "mod", "launch:3", "ex:2", "coop:1", "graph:2", "capture", "sync", "check"]
MODES = ["link", "dlsym", "gpa", "gpa2", "ptsz"]


def _argv(native: Native, mode: str, *steps: str) -> list[str]:
    return [str(native.prog_link if mode == "link" else native.prog), mode, *steps]


def _counts(out: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^count (\S+) (-?\d+)$", out, re.M)}


def _plain_env(native: Native) -> dict:
    env = prog_env(native)
    del env["LD_PRELOAD"]
    return env


@pytest.mark.parametrize("mode", MODES)
def test_every_call_passes_through_and_is_recorded(native: Native, make_segment, mode) -> None:
    att = make_segment(L.CLASS_HP)
    bare = run_prog(_argv(native, mode, *STEPS[1:]), _plain_env(native))
    r = run_prog(_argv(native, mode, *STEPS), prog_env(native, att.name))
    assert bare.returncode == 0 and r.returncode == 0, r.stderr + bare.stderr
    assert r.stderr == ""
    # the wrappers were handed out however the program asked
    for what in ("launch", "ex", "graph", "load", "sync"):  # sync: for coalesced completions
        assert re.search(rf"^where {what} .*libhbtui-intercept-.*\.so$", r.stdout, re.M), what
    if mode in ("gpa", "gpa2"):
        assert re.search(r"^where gpa2? .*libhbtui-intercept", r.stdout, re.M)
    # the driver saw exactly the calls and arguments it sees without the interceptor
    got, want = _counts(r.stdout), _counts(bare.stdout)
    for name in ("cuStreamWriteValue64_v2", "cuMemHostRegister_v2"):
        want.pop(name), got.pop(name)
    assert got == want
    sfx = "_ptsz" if mode == "ptsz" else ""
    assert got[f"cuLaunchKernel{sfx}"] == 4  # 3 + the captured one
    assert got[f"cuLaunchKernelEx{sfx}"] == 2 and got[f"cuGraphLaunch{sfx}"] == 3
    assert re.findall(r"^last .*$", r.stdout, re.M) == re.findall(r"^last .*$", bare.stdout, re.M)
    # one record per launch, in order, with the launch's arguments
    recs = att.launches()
    kinds = [L.KIND_NAMES[x.kind] for x in recs]
    assert kinds == ["kernel"] * 3 + ["kernel_ex"] * 2 + ["coop"] + ["graph"] * 2 + [
        "kernel", "graph"]  # fmt: skip
    assert [x.seq for x in recs] == list(range(1, 11))
    func = int(re.search(r" func=(0x[0-9a-f]+)", r.stdout)[1], 16)
    assert [x.func for x in recs[:6]] == [func] * 6
    assert [tuple(x.grid) for x in recs[:3]] == [(4, 2, 1), (5, 2, 1), (6, 2, 1)]
    assert tuple(recs[3].block) == (128, 1, 1) and recs[3].smem == 256
    assert [x.func for x in recs[6:8]] == [0xA000, 0xA001]
    assert all(x.stream == 0x100 and x.result == 0 for x in recs[:8])
    assert all(bool(x.flags & L.LF_PTSZ) == (mode == "ptsz") for x in recs)
    assert recs[8].flags & L.LF_CAPTURED and recs[8].comp_slot == L.COMP_NONE
    assert recs[9].func == int(re.search(r"graph=(0x[0-9a-f]+)", r.stdout)[1], 16)
    assert all(x.enqueue_ns <= x.issue_ns <= x.return_ns for x in recs)
    assert att.lost() == {"launch": 0, "module": 0, "func": 0}


def test_module_and_function_records(native: Native, make_segment) -> None:
    att = make_segment(L.CLASS_HP)
    r = run_prog(_argv(native, "dlsym", "mod"), prog_env(native, att.name))
    assert r.returncode == 0, r.stderr
    h = dict(re.findall(r"(\w+)=(0x[0-9a-f]+)", r.stdout))
    h = {k: int(v, 16) for k, v in h.items()}
    mods = att.modules()
    ptx = b".version 8.0\n.target sm_80\n.entry k_add() { ret; }\n\0"
    assert [(m.api, m.image_kind, m.size) for m in mods] == [
        (L.API_MODULE_LOAD_DATA, L.IMG_PTX, len(ptx)),
        (L.API_MODULE_LOAD_DATA_EX, L.IMG_CUBIN, 256),
        (L.API_MODULE_LOAD_FATBIN, L.IMG_FATBIN, 64),
        (L.API_LIBRARY_LOAD_DATA, L.IMG_PTX, len(ptx)),
    ]
    assert [m.module for m in mods] == [h["m1"], h["m2"], h["m3"], h["lib"]]
    assert mods[0].hash == mods[3].hash == L.hash64(ptx)
    elf = bytearray(256)
    elf[:7] = b"\x7fELF\x02\x01\x01"
    elf[0x28], elf[0x3A], elf[0x3C] = 0x40, 64, 3
    elf[0x40:] = bytes(range(0x40, 256))
    assert mods[1].hash == L.hash64(bytes(elf))
    fns = att.functions()
    assert [(f.name, f.api) for f in fns] == [
        ("k_add", L.API_MODULE_GET_FUNCTION), ("k_elf", L.API_MODULE_GET_FUNCTION),
        ("k_lib", L.API_LIBRARY_GET_KERNEL), ("k_lib", L.API_KERNEL_GET_FUNCTION),
    ]  # fmt: skip
    assert [f.func for f in fns] == [h["func"], h["f2"], h["kernel"], h["f3"]]
    assert fns[0].module_hash == mods[0].hash and fns[1].module_hash == mods[1].hash
    assert fns[2].module == h["lib"] and fns[2].module_hash == mods[3].hash
    assert fns[3].module == h["kernel"] and fns[3].module_hash == mods[3].hash
    assert fns[0].name_hash == L.hash64(b"k_add") and fns[0].name_len == 5


def test_no_segment_means_pure_pass_through(native: Native) -> None:
    r = run_prog(_argv(native, "gpa", "mod", "launch:2", "check"), prog_env(native))
    assert r.returncode == 0 and r.stderr == ""
    c = _counts(r.stdout)
    assert c["cuLaunchKernel"] == 2
    assert c["cuStreamWriteValue64_v2"] == 0 and c["cuMemHostRegister_v2"] == 0


def test_per_thread_default_stream_is_recorded_as_such(native: Native, make_segment) -> None:
    att = make_segment(L.CLASS_HP)
    r = run_prog(_argv(native, "ptsz", "null:2", "sync", "check"), prog_env(native, att.name))
    assert r.returncode == 0, r.stderr
    assert _counts(r.stdout)["cuLaunchKernel_ptsz"] == 2
    recs = att.launches()
    assert [(x.stream, x.flags & L.LF_PTSZ) for x in recs] == [(2, L.LF_PTSZ)] * 2
    r = run_prog(_argv(native, "dlsym", "null:1"), prog_env(native, att.name))
    (rec,) = att.launches()
    assert rec.stream == 0 and not rec.flags & L.LF_PTSZ


def test_each_threads_default_stream_has_its_own_counter(native: Native, make_segment) -> None:
    """Per-thread default streams (the _ptsz entry points with stream 0) are one stream
    per thread: each thread's launches get their own completion counter, so a thread's
    sync on its stream never confirms another thread's work."""
    att = make_segment(L.CLASS_HP)
    r = run_prog(_argv(native, "ptsz", "tnull:3:4", "sync"), prog_env(native, att.name))
    assert r.returncode == 0, r.stderr
    recs = att.launches()
    assert len(recs) == 12 and {x.stream for x in recs} == {2}
    by_thread: dict[int, set[int]] = {}
    for x in recs:
        by_thread.setdefault(x.tid, set()).add(x.comp_slot)
    assert len(by_thread) == 3 and all(len(v) == 1 for v in by_thread.values())
    assert len({next(iter(v)) for v in by_thread.values()}) == 3  # three counters
    assert all(att.done(x) for x in recs)


def test_threads_started_one_after_another_do_not_fill_the_counters(
    native: Native, make_segment
) -> None:
    """A program that keeps starting threads: the first 32 per-thread streams get their own
    counters, the rest share one (the table of 256 is never freed); nothing overflows onto
    the shared slot 0 and every launch completes."""
    att = make_segment(L.CLASS_HP)
    r = run_prog(_argv(native, "ptsz", "tchurn:40:2", "sync"), prog_env(native, att.name))
    assert r.returncode == 0, r.stderr
    recs = att.launches()
    assert len(recs) == 80
    slots = [x.comp_slot for x in recs]
    assert len(set(slots[:64])) == 32 and len(set(slots[64:])) == 1
    assert set(slots[64:]).isdisjoint(slots[:64]) and 0 not in slots
    assert att.h.comp_overflow == 0 and all(att.done(x) for x in recs)


def test_hp_completions_per_stream(native: Native, make_segment) -> None:
    att = make_segment(L.CLASS_HP)
    env = prog_env(native, att.name, FAKE_KERNEL_US="200")
    r = run_prog(_argv(native, "dlsym", "launch:5", "threads:4:10", "sync", "check"), env)
    assert r.returncode == 0, r.stderr
    recs = att.launches()
    assert len(recs) == 45 and sorted(x.seq for x in recs) == list(range(1, 46))
    assert att.h.comp_state == L.COMP_WRITEVAL and att.h.comp_dev != 0
    slots = {x.stream: x.comp_slot for x in recs}
    assert len(slots) == 5 and len(set(slots.values())) == 5 and 0 not in slots.values()
    assert all(att.done(x) for x in recs)  # after cuCtxSynchronize: all finished
    for stream, slot in slots.items():
        assert att.completed(slot) == max(x.seq for x in recs if x.stream == stream)
    assert _counts(r.stdout)["cuStreamWriteValue64_v2"] == 45


def test_a_blocked_completion_write_hides_no_record(native: Native, make_segment) -> None:
    """A completion write that blocks (a full queue: 250 ms here) comes after the launch's
    record is published: the engine, reading the ring meanwhile, loses no record and sees
    the other thread's launches at once (it gives a record claimed but unpublished for
    100 ms up as its writer's death)."""
    import threading
    import time

    att = make_segment(L.CLASS_HP)
    env = prog_env(native, att.name, FAKE_SLOW_STREAM="0x200", FAKE_SLOW_MS="250")
    seen: list = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.extend(att.launches())
            time.sleep(0.001)

    t = threading.Thread(target=read)
    t.start()
    try:
        r = run_prog(_argv(native, "dlsym", "threads:2:4"), env)
    finally:
        stop.set()
        t.join()
    seen.extend(att.launches())
    assert r.returncode == 0, r.stderr
    assert sorted(x.seq for x in seen) == list(range(1, 9))
    assert att.lost() == {"launch": 0, "module": 0, "func": 0}


def test_coalesced_hp_completions_and_sync_advance(native: Native, make_segment) -> None:
    """HBTUI_COMP_EVERY_US: a burst gets one GPU write (its first launch); the others are
    COALESCED and become done when the program's own cuCtxSynchronize returns."""
    att = make_segment(L.CLASS_HP)
    env = prog_env(native, att.name, FAKE_KERNEL_US="200", HBTUI_COMP_EVERY_US="1000000")
    r = run_prog(_argv(native, "dlsym", "launch:6", "sync", "launch:2", "check"), env)
    assert r.returncode == 0, r.stderr
    recs = att.launches()
    assert len(recs) == 8
    coalesced = [bool(x.flags & L.LF_COALESCED) for x in recs]
    assert coalesced == [False] + [True] * 7  # one write per second per stream at most
    assert all(x.comp_slot == recs[0].comp_slot for x in recs)
    assert _counts(r.stdout)["cuStreamWriteValue64_v2"] == 1
    # the first six are covered by the sync (host-side advance), the last two by nothing
    assert all(att.done(x) for x in recs[:6]) and att.completed(recs[0].comp_slot) == 6
    assert recs[5].enqueue_ns < att.synced_ns < recs[6].enqueue_ns  # when the sync returned


def test_coalescing_is_the_default_for_hp(native: Native, make_segment) -> None:
    """Without HBTUI_COMP_EVERY_US an HP burst is coalesced to 100 us (launches of a
    back-to-back burst after the first carry no write of their own); LP is never."""
    for cls in (L.CLASS_HP, L.CLASS_LP):
        att = make_segment(cls)
        if cls == L.CLASS_LP:
            att.set_gated(True)
            att.grant(2**40)
        env = prog_env(native, att.name, "lp" if cls == L.CLASS_LP else "hp")
        del env["HBTUI_COMP_EVERY_US"]
        r = run_prog(_argv(native, "dlsym", "launch:50", "sync", "check"), env)
        assert r.returncode == 0, r.stderr
        writes = _counts(r.stdout)["cuStreamWriteValue64_v2"]
        recs = att.launches()
        coalesced = sum(bool(x.flags & L.LF_COALESCED) for x in recs)
        if cls == L.CLASS_HP:  # (launches a few us apart: all but a few share a write)
            assert writes + coalesced == 50 and writes < 25, (writes, coalesced)
        else:
            assert (writes, coalesced) == (50, 0)
        assert all(att.done(x) for x in recs)  # the sync covers the tail
        assert att.h.syncing == 0  # the sync left the count


@pytest.mark.parametrize("mode", ["dlsym", "gpa", "gpa2", "gpa-hidden"])
def test_a_cuda13_context_sync_covers_the_tail_on_the_current_context_only(
    native: Native, make_segment, mode: str
) -> None:
    """The CUDA 13 runtime's cudaDeviceSynchronize calls cuCtxSynchronize_v2(ctx), got for
    "cuCtxSynchronize" at version 13000 (gpa-hidden: as an entry point no symbol names): on
    the current context it covers a coalesced HP tail like cuCtxSynchronize; on another
    context it confirms nothing."""
    hidden = mode == "gpa-hidden"
    lookup = "gpa" if hidden else mode
    for step, covered in (("sync13", True), ("sync13x", False)):
        att = make_segment(L.CLASS_HP)
        # writes 1 s apart: only the first launch has one, the sync must cover the rest
        env = prog_env(native, att.name, "hp", HBTUI_COMP_EVERY_US="1000000")
        if hidden:
            env["FAKE_GPA_HIDDEN"] = "1"
        r = run_prog(_argv(native, lookup, "launch:50", step, "check"), env)
        assert r.returncode == 0, r.stderr
        assert _counts(r.stdout)["cuCtxSynchronize_v2"] == 1
        recs = att.launches()
        assert len(recs) == 50 and not recs[0].flags & L.LF_COALESCED
        assert all(x.flags & L.LF_COALESCED for x in recs[1:])
        assert att.done(recs[0]) and att.done(recs[-1]) == covered, step
        assert all(att.done(x) for x in recs) == covered, step
        assert att.h.syncing == 0


def test_the_engine_sets_the_hp_coalescing_unless_the_environment_fixes_it(
    native: Native, make_segment
) -> None:
    """header.hp_comp_us (the engine's) governs an HP program's completion writes; a valid
    HBTUI_COMP_EVERY_US wins over it, an invalid one is named in a warning and ignored.
    header.hp_burst_us (the engine's burst rule): a launch after that long quiet gets a
    write however coarse the coalescing, from the engine or the environment. Margins are
    ~100 ms either side of every threshold (a loaded 2-core CI box stalls a launch for ms;
    the first launch, which also sets the completions up, is outside the bursts)."""
    steps = ["launch:1", "sleep:300", "launch:6", "sleep:300", "launch:6", "sync", "check"]
    s, ms = 1_000_000, 1000  # (1 s: no write within one run of the program)
    for engine_us, burst_us, env_us, want_writes in (
        (s, 0, None, 1),  # only the first launch
        (s, 100 * ms, None, 3),  # and each burst's first
        (100 * ms, 0, None, 3),  # a period shorter than the gaps: the same launches
        (s, 900 * ms, None, 1),  # a burst rule longer than the gaps: none
        (s, 0, "0", 13),  # the environment: a write per launch
        (s, 100 * ms, str(s), 3),  # the environment's period, the engine's burst rule
        (100 * ms, 0, "x9", 3),  # an invalid environment value is ignored
    ):  # fmt: skip
        att = make_segment(L.CLASS_HP)
        att.set_hp_comp_us(engine_us, burst_us)
        env = prog_env(native, att.name, FAKE_KERNEL_US="20")
        del env["HBTUI_COMP_EVERY_US"]
        if env_us is not None:
            env["HBTUI_COMP_EVERY_US"] = env_us
        r = run_prog(_argv(native, "dlsym", *steps), env)
        assert r.returncode == 0, r.stderr
        got = _counts(r.stdout)["cuStreamWriteValue64_v2"]
        assert got == want_writes, (engine_us, burst_us, env_us)
        assert ("HBTUI_COMP_EVERY_US=x9 is not 0..1000000" in r.stderr) == (env_us == "x9")
        assert all(att.done(x) for x in att.launches())  # the sync covers the tail


def test_the_engines_coalescing_is_read_live(native: Native, make_segment) -> None:
    """A change of header.hp_comp_us applies to the program's next launches: two bursts of
    two halves 200 ms apart get one write each at 1 s, two each once the engine asks
    100 ms (margins of ~100 ms: a loaded CI box stalls a launch for ms)."""
    att = make_segment(L.CLASS_HP)
    att.set_hp_comp_us(1000000)
    env = prog_env(native, att.name)
    del env["HBTUI_COMP_EVERY_US"]
    half = ["launch:3", "sleep:200", "launch:3"]
    p = Prog([str(native.prog), "dlsym", *half, "sleep:1500", *half, "check"], env)
    p.expect("launch 2")
    p.expect("launch 2")  # the first burst is over, the second 1.5 s away
    att.set_hp_comp_us(100_000)
    assert p.finish() == 0
    assert _counts("\n".join(p.lines))["cuStreamWriteValue64_v2"] == 3


def test_a_sync_dates_the_end_only_when_it_ended_all_the_work(native: Native, make_segment) -> None:
    """header.synced_ns: written when a wrapped sync returns with everything this process
    launched done; a stream sync while another stream's coalesced launch is unconfirmed
    leaves it alone (the engine then dates the end to its own poll)."""
    cases = [(["launch:2", "ssync"], True, False),
             (["null:2", "launch:2", "ssync"], False, False),  # null's 2nd launch unconfirmed
             (["null:1", "sleep:5", "launch:2", "ssync"], True, False),  # null's seen done
             (["null:2", "launch:2", "sync"], True, False),
             (["threads:1:2", "launch:2", "ssync"], False, True)]  # fmt: skip
    for steps, dated, overflow in cases:
        att = make_segment(L.CLASS_HP)
        if overflow:  # every slot taken by other streams: this process's share slot 0
            for s in range(1, L.COMP_SLOTS):
                struct.pack_into("<Q", att._mm, L.OFF_COMP_KEY + 8 * s, 0xDEAD0000 + s)
        env = prog_env(native, att.name, FAKE_KERNEL_US="100", HBTUI_COMP_EVERY_US="1000000")
        r = run_prog(_argv(native, "dlsym", *steps), env)
        assert r.returncode == 0, r.stderr
        last = max(x.enqueue_ns for x in att.launches())
        assert (att.synced_ns > last) == dated and (att.synced_ns == 0) != dated, steps


def test_graph_launches_always_get_a_write(native: Native, make_segment) -> None:
    """Coalescing (the default) leaves graph launches alone: each is long GPU work, and
    a burst of replays must not look done after its first."""
    att = make_segment(L.CLASS_HP)
    env = prog_env(native, att.name, FAKE_KERNEL_US="200")
    del env["HBTUI_COMP_EVERY_US"]
    r = run_prog(_argv(native, "dlsym", "graph:4", "launch:3", "sync", "check"), env)
    assert r.returncode == 0, r.stderr
    recs = att.launches()
    flags = [(x.kind, bool(x.flags & L.LF_COALESCED)) for x in recs]
    assert flags[:4] == [(L.KIND_GRAPH, False)] * 4, flags
    assert _counts(r.stdout)["cuStreamWriteValue64_v2"] >= 4
    assert all(att.done(x) for x in recs)


def test_completion_is_written_by_the_gpu_in_order(native: Native, make_segment) -> None:
    """With slow kernels the counter trails the launches and reaches each seq in turn."""
    att = make_segment(L.CLASS_HP)
    from conftest import Prog

    p = Prog(_argv(native, "dlsym", "launch:4", "sleep:2000"),
             prog_env(native, att.name, FAKE_KERNEL_US="100000"))  # fmt: skip
    p.expect("launch 3")
    recs = att.launches()
    assert len(recs) == 4 and not att.done(recs[-1])  # 4 launched, 400 ms of "GPU" work
    seen = set()
    import time

    deadline = time.monotonic() + 5
    while not att.done(recs[-1]) and time.monotonic() < deadline:
        seen.add(att.completed(recs[0].comp_slot))
        time.sleep(0.005)
    assert att.done(recs[-1]) and {1, 2, 3} <= seen | {4}
    p.p.kill()
    p.finish()


@pytest.mark.parametrize("knob", ["FAKE_NO_WRITEVALUE", "FAKE_NO_REGISTER"])
def test_host_function_fallback(native: Native, make_segment, knob: str) -> None:
    att = make_segment(L.CLASS_HP)
    r = run_prog(_argv(native, "dlsym", "launch:6", "sync", "check"),
                 prog_env(native, att.name, **{knob: "1"}))  # fmt: skip
    assert r.returncode == 0, r.stderr
    recs = att.launches()
    assert att.h.comp_state == L.COMP_HOSTFN
    assert all(att.done(x) for x in recs) and len(recs) == 6
    assert _counts(r.stdout)["cuLaunchHostFunc"] == 6
    assert att.h.comp_errors == (1 if knob == "FAKE_NO_WRITEVALUE" else 0)


def test_no_completion_flag(native: Native, make_segment) -> None:
    att = make_segment(L.CLASS_HP, flags=L.FLAG_NO_COMPLETION)
    r = run_prog(_argv(native, "dlsym", "launch:2", "check"), prog_env(native, att.name))
    assert r.returncode == 0
    assert all(x.comp_slot == L.COMP_NONE and att.done(x) is None for x in att.launches())
    assert _counts(r.stdout)["cuMemHostRegister_v2"] == 0


def test_python_program_through_ctypes(native: Native, make_segment) -> None:
    att = make_segment(L.CLASS_HP)
    code = (
        "import ctypes\n"
        "cu = ctypes.CDLL('libcuda.so.1')\n"
        "V = ctypes.c_void_p; U = ctypes.c_uint\n"
        "cu.cuLaunchKernel.argtypes = [V] + [U] * 7 + [V, V, V]\n"
        "for i in range(3):\n"
        "    assert cu.cuLaunchKernel(V(0xBEE), 7, 1, 1, 64, 1, 1, 0, V(0x55), None, None) == 0\n"
        "assert cu.cuCtxSynchronize() == 0\n"
        "print(cu.fake_count(b'cuLaunchKernel'))\n"
    )
    r = run_prog([sys.executable, "-c", code], prog_env(native, att.name))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"
    recs = att.launches()
    assert [(x.func, x.grid[0], x.stream) for x in recs] == [(0xBEE, 7, 0x55)] * 3
    assert all(att.done(x) for x in recs)


QUIET = (
    "import ctypes\n"
    "cu = ctypes.CDLL('libcuda.so.1')\n"
    "quiet = ctypes.CDLL(None).hbtui_set_quiet\n"  # (found as the preloaded library's)
    "V = ctypes.c_void_p; U = ctypes.c_uint\n"
    "cu.cuLaunchKernel.argtypes = [V] + [U] * 7 + [V, V, V]\n"
    "def launch(n):\n"
    "    for _ in range(n):\n"
    "        assert cu.cuLaunchKernel(V(0xBEE), 7, 1, 1, 64, 1, 1, 0, V(0x55), None, None) == 0\n"
    "launch(2)\n"
    "a = quiet(1)\n"
    "launch(3)\n"
    "assert cu.cuCtxSynchronize() == 0\n"
    "b = quiet(0)\n"
    "launch(1)\n"
    "print(a, b, cu.fake_count(b'cuLaunchKernel'))\n"
)


def test_a_quiet_hp_program_passes_launches_straight_through(native: Native,
                                                             make_segment) -> None:  # fmt: skip
    """hbtui_set_quiet (the in-process comparison of hp_overhead_ab.py): while quiet an HP
    program's launches reach the driver unrecorded, as outside hbtui run; then recorded
    again. An LP program (gated, never let go) and a program outside hbtui refuse it."""
    att = make_segment(L.CLASS_HP)
    r = run_prog([sys.executable, "-c", QUIET], prog_env(native, att.name))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "1", "6"]  # previous states; all 6 reached the driver
    assert len(att.launches()) == 3  # the 2 before and the 1 after quiet
    assert att.h.syncing == 0
    ask = "import ctypes; print(ctypes.CDLL(None).hbtui_set_quiet(1))"
    lp = make_segment(L.CLASS_LP)
    for env in (prog_env(native, lp.name, cls="lp"), prog_env(native)):
        r = run_prog([sys.executable, "-c", ask], env)
        assert r.returncode == 0 and r.stdout.strip() == "-1", (r.stdout, r.stderr)


def test_dlsym_rtld_next_is_relative_to_its_real_caller(native: Native) -> None:
    from hbtui.attach import build

    here = build.Path(__file__).resolve().parent
    lib, exe = native.dir / "libnext.so", native.dir / "next"
    build.compile_c([here / "next.c"], lib, ("-O2", "-shared", "-fPIC", "-DLIB"), ("-ldl",))
    build.compile_c([here / "next.c"], exe, ("-O2",),
                    (f"-L{native.dir}", "-lnext", f"-Wl,-rpath,{native.dir}", "-ldl"))  # fmt: skip
    bare = run_prog([str(exe)], _plain_env(native), timeout=10)
    r = run_prog([str(exe)], prog_env(native), timeout=10)
    assert (bare.returncode, bare.stdout) == (0, "ok same\n")
    assert (r.returncode, r.stdout, r.stderr) == (bare.returncode, bare.stdout, bare.stderr)


def test_the_segment_decides_the_class(native: Native, make_segment) -> None:
    """HBTUI_CLASS that disagrees with the segment (a program that rewrote its own
    environment): one warning, and the segment's class holds (HP and LP take seqs
    differently, so two classes in one segment would reuse seqs)."""
    att = make_segment(L.CLASS_HP)
    r = run_prog(_argv(native, "dlsym", "launch:2"), prog_env(native, att.name, cls="lp"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("running as HP") == 1
    assert [x.seq for x in att.launches()] == [1, 2]  # never held: HP


@pytest.mark.parametrize("diag", [1, 2, 3])
def test_diagnostic_builds_take_out_one_part_each(native: Native, make_segment, tmp_path,
                                                  monkeypatch, diag) -> None:  # fmt: skip
    """hp_overhead_ab.py --diag N builds the interceptor with -DHB_DIAG=N: 1 and 2 leave
    the segment without launch records (none claimed, or written to a private ring), 3
    without completion writes; the driver sees every launch either way."""
    from hbtui.attach import build

    monkeypatch.setenv("CC", f"{os.environ.get('CC') or 'cc'} -DHB_DIAG={diag}")
    so = build.build(cache=tmp_path)
    assert so.name != native.so.name  # the define is in the cache key
    att = make_segment(L.CLASS_HP)
    env = prog_env(native, att.name, LD_PRELOAD=str(so))
    r = run_prog(_argv(native, "dlsym", "launch:3", "check"), env)
    assert r.returncode == 0, r.stderr
    got = _counts(r.stdout)
    assert got["cuLaunchKernel"] == 3
    assert len(att.launches()) == (3 if diag == 3 else 0)
    assert att.h.launch_head == (3 if diag == 3 else 0)
    assert got.get("cuStreamWriteValue64_v2", 0) == (0 if diag == 3 else 3)
