"""LP launches run as slices (hbtui/native/intercept_slices.h) with the fake driver: every
block of the program's grid runs exactly once, in order, on the program's stream, with
the program's own params followed by the six slice params (block offset, full grid), in
the ``kernelParams``, packed ``extra`` and ``cuLaunchKernelEx`` forms; each slice is
gated and recorded like a launch of its own; whatever cannot be sliced runs whole."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE, Native, Prog, _cc, prog_env

from hbtui.attach import layout as L

A, B = 0x1111222233334444, 55
PTX = (b".version 8.0\n.target sm_90\n.address_size 64\n"
       b".visible .entry k_slice(.param .u64 a, .param .u32 b) { ret; }\n"
       b".visible .entry k_other(.param .u64 a, .param .u32 b) { ret; }\n")  # fmt: skip
PTX_HASH = L.hash64(PTX + b"\0")
WAVE = 4 * 2  # FAKE_SMS x FAKE_OCC (the fake's defaults)


@dataclass
class Logged:
    func: int
    grid: tuple[int, int, int]
    stream: int
    smem: int
    extra_size: int
    vals: list[int]


@pytest.fixture(scope="module")
def slice_prog(native: Native) -> Path:
    exe = native.dir / "slice_prog"
    if not exe.exists():
        _cc("-O2", "-std=gnu11", "-pthread", "-o", str(exe), str(HERE / "slice_prog.c"), "-ldl")
    return exe


def _run(native: Native, exe: Path, att: Any, tmp: Path, steps: list[str], publish: dict | None,
         slicing: bool = True, sliced: bytes | None = PTX, names: tuple[str, ...] = ("k_slice",),
         forced: int | None = None, **env: str) -> tuple[Prog, dict[str, int]]:  # fmt: skip
    """Start the program (load, wait, ``steps``, sync, log); once it loaded its module,
    write the sliced module file (``sliced``; None: none) and publish the variants of
    ``names`` (``publish``: their keyword arguments; None: none; ``forced``: the operator's
    exact slice size), then let it go."""
    mdir = tmp / "modules"
    mdir.mkdir(parents=True, exist_ok=True)
    go = tmp / "go"
    e = prog_env(native, att.name, cls="lp", HBTUI_MODULE_DIR=str(mdir), FAKE_LOG="1", **env)
    p = Prog([str(exe), "load", f"wait:{go}", *steps, "sync", "log"], e)
    p.expect("done load")
    funcs = {f.name: f for f in att.functions()}
    assert funcs["k_slice"].module_hash == PTX_HASH
    assert att.h.device_cc == 90  # noted at the first module load (the fake says 9.0)
    if sliced is not None:
        (mdir / f"{PTX_HASH:016x}.sliced.ptx").write_bytes(sliced)  # the fake loads anything
    for name in names if publish is not None else ():
        f = funcs[name]
        slot = att.publish_variant(f.func, f.module_hash, name, 2, 12, **publish)
        assert slot is not None
        if forced is not None:
            att.set_slice_blocks(slot, forced, forced=True)
    att.set_slicing(slicing)
    go.touch()
    return p, {n: f.func for n, f in funcs.items()}


def _log(p: Prog) -> list[Logged]:
    out = []
    for line in p.lines:
        if line.startswith("L "):
            w = line.split()
            out.append(Logged(int(w[1], 16), (int(w[2]), int(w[3]), int(w[4])), int(w[5], 16),
                              int(w[6]), int(w[7]), [int(x) for x in w[8:]]))  # fmt: skip
    return out


def _blocks(logs: list[Logged], n_own: int) -> list[int]:
    """The linear block ids the sub-grid launches ran, in launch order, checking that each
    carries the full grid in its slice params."""
    out: list[int] = []
    for g in logs:
        ox, oy, oz, gx, gy, gz = g.vals[n_own : n_own + 6]
        for z in range(g.grid[2]):
            for y in range(g.grid[1]):
                for x in range(g.grid[0]):
                    out.append(((oz + z) * gy + oy + y) * gx + ox + x)
    return out


def _finish(p: Prog) -> list[Logged]:
    p.expect("done log", timeout=20)
    assert p.finish() == 0, p.err
    assert not [ln for ln in p.lines if ln.startswith("error")], p.lines
    return _log(p)


@pytest.mark.parametrize("grid,forced,sizes", [
    ((20, 1, 1), 3, [3] * 6 + [2]),  # below a wave (8): exactly 3, the last 2 (not < 3 // 2)
    ((20, 1, 1), 4, [4] * 5),
    ((21, 1, 1), 4, [4] * 4 + [5]),  # a remainder under half a forced slice joins the last
    ((5, 3, 1), 2, [5] * 3),  # whole rows when the grid has rows
    ((20, 1, 1), 12, [12, 8]),  # above a wave: no rounding to whole waves either
])  # fmt: skip
def test_an_operator_forced_slice_size_is_exact_below_a_wave_too(
    native, slice_prog, make_segment, tmp_path, grid, forced, sizes
) -> None:  # noqa: ANN001
    """``layout.SLICE_FORCED``: the operator's block count, no wave rounding (WAVE = 8)."""
    att = make_segment(L.CLASS_LP)
    step = f"kp:{grid[0]}:{grid[1]}:{grid[2]}"
    p, _ = _run(native, slice_prog, att, tmp_path, [step], {"slice_blocks": 100}, forced=forced)
    logs = _finish(p)
    assert _blocks(logs, 2) == list(range(grid[0] * grid[1] * grid[2]))  # each block once
    recs = [r for r in att.launches() if r.flags & L.LF_SLICE]
    assert [r.slice_blocks for r in recs] == sizes


@pytest.mark.parametrize("form", ["kp", "ex", "lex"])
@pytest.mark.parametrize("grid,blocks", [((1000, 1, 1), 100), ((64, 4, 3), 300), ((7, 5, 1), 1)])
def test_slices_cover_the_grid_once_in_order(native, slice_prog, make_segment, tmp_path, form,
                                             grid, blocks) -> None:  # fmt: skip
    att = make_segment(L.CLASS_LP)  # PASS mode: nothing waits
    step = f"{form}:{grid[0]}:{grid[1]}:{grid[2]}"
    p, funcs = _run(native, slice_prog, att, tmp_path, [step, "other:50"], {"slice_blocks": blocks})
    logs = _finish(p)
    *sliced, other = logs
    assert other.func == funcs["k_other"] and other.grid == (50, 1, 1)  # no variant: whole
    assert other.vals == [A & 0xFFFFFFFF, B]
    total = grid[0] * grid[1] * grid[2]
    assert all(g.func not in funcs.values() for g in sliced)  # the variant's function
    assert all(g.stream == 0x100 for g in sliced)
    if form == "ex":  # packed: u64 A, u32 B, then the six u32 at param_bytes = 12
        assert all(g.extra_size == 36 for g in sliced)
        assert all(g.vals[:3] == [A & 0xFFFFFFFF, A >> 32, B] for g in sliced)
        ran = _blocks(sliced, 3)
    else:
        assert all(g.vals[:2] == [A & 0xFFFFFFFF, B] and len(g.vals) == 8 for g in sliced)
        ran = _blocks(sliced, 2)
    assert ran == list(range(total))  # every block once, in order
    recs = [r for r in att.launches() if r.flags & L.LF_SLICE]
    assert [r.seq for r in recs] == sorted(r.seq for r in recs)
    assert recs[0].slice_start == 0 and sum(r.slice_blocks for r in recs) == total
    for a, b in zip(recs, recs[1:], strict=False):
        assert b.slice_start == a.slice_start + a.slice_blocks
    assert all(tuple(r.grid) == grid for r in recs)  # the whole launch's grid
    assert sum(r.slice_parts for r in recs) == len(sliced)
    per = max(WAVE, blocks // WAVE * WAVE)  # whole waves, at least one
    if grid[1] * grid[2] > 1:
        per = -(-per // grid[0]) * grid[0]  # whole rows
    assert max(r.slice_blocks for r in recs) <= per + WAVE // 2
    st = att.stats()
    assert st["sliced_launches"] == 1 and st["slice_launches"] == len(sliced)
    v = att.variant(funcs["k_slice"])
    assert v is not None and v.state == L.VAR_READY and v.wave_blocks == WAVE


def test_each_slice_waits_for_its_own_grant(native, slice_prog, engine, tmp_path) -> None:
    eng = engine()  # GATED, heart-beating
    att = eng.att
    p, funcs = _run(native, slice_prog, att, tmp_path, ["kp:64:1:1"], {"slice_blocks": 16})
    seen: list[L.Launch] = []
    for k in range(4):  # 64 blocks in slices of 16: four grants, one slice each
        (held,) = eng.wait_pending(1)
        time.sleep(0.05)
        seen += [r for r in att.launches() if r.flags & L.LF_SLICE]
        assert len(seen) == k and len(att.pending()) == 1  # nothing goes before its grant
        eng.grant(held.seq)
        deadline = time.monotonic() + 10
        while len(seen) == k and time.monotonic() < deadline:
            seen += [r for r in att.launches() if r.flags & L.LF_SLICE]
            time.sleep(0.002)
    logs = _finish(p)
    assert _blocks(logs, 2) == list(range(64)) and len(logs) == 4
    assert [r.slice_start for r in seen] == [0, 16, 32, 48]
    assert all(r.flags & L.LF_HELD for r in seen) and att.stats()["held_launches"] == 4


def test_slicing_off_or_a_grid_of_one_slice_runs_whole(
    native, slice_prog, make_segment, tmp_path
) -> None:
    att = make_segment(L.CLASS_LP)
    p, funcs = _run(native, slice_prog, att, tmp_path / "a", ["kp:1000:1:1"], {"slice_blocks": 64},
             slicing=False)  # fmt: skip
    (whole,) = _finish(p)
    assert whole.grid == (1000, 1, 1) and whole.vals == [A & 0xFFFFFFFF, B]
    att = make_segment(L.CLASS_LP)
    p, funcs = _run(native, slice_prog, att, tmp_path / "b", ["kp:10:1:1"], {"slice_blocks": 64})
    (whole,) = _finish(p)
    assert whole.grid == (10, 1, 1) and len(whole.vals) == 2
    assert att.stats()["sliced_launches"] == 0


def test_a_failing_variant_falls_back_to_the_whole_kernel(
    native, slice_prog, make_segment, tmp_path
) -> None:
    att = make_segment(L.CLASS_LP)
    # no <hash>.sliced.ptx: loading the variant fails
    p, funcs = _run(native, slice_prog, att, tmp_path, ["kp:1000:1:1"] * 2, {"slice_blocks": 64},
                    sliced=None)  # fmt: skip
    logs = _finish(p)
    assert [g.grid for g in logs] == [(1000, 1, 1)] * 2 and all(len(g.vals) == 2 for g in logs)
    v = att.variant(funcs["k_slice"])
    assert v is not None and v.state == L.VAR_FAILED and v.result != 0
    # a handle whose name or module does not match the entry is never sliced
    att2 = make_segment(L.CLASS_LP)
    mdir2 = tmp_path / "x" / "modules"
    mdir2.mkdir(parents=True)
    (mdir2 / f"{PTX_HASH:016x}.sliced.ptx").write_bytes(PTX)
    go2 = tmp_path / "x" / "go"
    e2 = prog_env(native, att2.name, cls="lp", HBTUI_MODULE_DIR=str(mdir2), FAKE_LOG="1")
    p = Prog([str(slice_prog), "load", f"wait:{go2}", "kp:1000:1:1", "sync", "log"], e2)
    p.expect("done load")
    f2 = {x.name: x for x in att2.functions()}["k_slice"]
    assert att2.publish_variant(f2.func, f2.module_hash ^ 1, "k_slice", 2, 12) is not None
    att2.set_slicing(True)
    go2.touch()
    (whole,) = _finish(p)
    assert whole.grid == (1000, 1, 1) and att2.variant(f2.func).state == L.VAR_FAILED


def test_big_dynamic_shared_memory_is_set_on_the_variant(
    native, slice_prog, make_segment, tmp_path
) -> None:
    att = make_segment(L.CLASS_LP)
    p, funcs = _run(native, slice_prog, att, tmp_path, ["big:100"], {"slice_blocks": 16})
    logs = _finish(p)
    assert all(g.smem == 100 * 1024 for g in logs) and len(logs) > 1
    assert _blocks(logs, 2) == list(range(100))


def test_a_module_loaded_from_a_file_is_hashed_and_sliced(
    native, slice_prog, make_segment, tmp_path
) -> None:
    """cuModuleLoad(path) (how Inductor's static launcher loads Triton cubins): recorded
    with the hash of the file's bytes, so its kernels can be sliced like any other."""
    att = make_segment(L.CLASS_LP)
    mdir, go, src = tmp_path / "modules", tmp_path / "go", tmp_path / "k.ptx"
    mdir.mkdir()
    src.write_bytes(PTX)
    e = prog_env(native, att.name, cls="lp", HBTUI_MODULE_DIR=str(mdir), FAKE_LOG="1")
    p = Prog([str(slice_prog), f"file:{src}", f"wait:{go}", "kp:100:1:1", "sync", "log"], e)
    p.expect(f"done file:{src}")
    (m,) = att.modules()
    assert (m.api, m.hash, m.image_kind, m.result) == (L.API_MODULE_LOAD, PTX_HASH, L.IMG_PTX, 0)
    (f,) = att.functions()
    assert f.module_hash == PTX_HASH
    (mdir / f"{PTX_HASH:016x}.sliced.ptx").write_bytes(PTX)
    assert att.publish_variant(f.func, f.module_hash, "k_slice", 2, 12, slice_blocks=8) is not None
    att.set_slicing(True)
    go.touch()
    logs = _finish(p)
    assert _blocks(logs, 2) == list(range(100)) and len(logs) > 1


def test_host_cost_per_slice(native, slice_prog, engine, tmp_path) -> None:
    """The interceptor's own host cost of the slicing path, with the fake driver (a
    driver call costs ~nothing here; on a GPU each sub-grid launch adds the driver's
    launch cost): a pre-granted 1,000-block launch whole vs in 10 slices of 96-104
    blocks. ``pytest -s`` prints it."""
    rows = {}
    for sliced in (False, True):
        eng = engine()
        eng.att.grant(2**62)  # everything pre-granted: the gate's fast path
        d = tmp_path / str(sliced)
        p, _ = _run(native, slice_prog, eng.att, d, ["bench:3000:1000"], {"slice_blocks": 96},
                    slicing=sliced)  # fmt: skip
        p.expect("done bench:3000:1000", timeout=60)
        (line,) = [ln for ln in p.lines if ln.startswith("bench ")]
        rows[sliced] = [float(x) for x in line.split()[1:]]
        p.finish()
        st = eng.att.stats()
        assert st["sliced_launches"] == (3000 if sliced else 0)
        if sliced:
            per_launch = st["slice_launches"] / st["sliced_launches"]  # 1-D: one per slice
    assert per_launch == 11
    per_slice = (rows[True][0] - rows[False][0]) / per_launch
    print(
        f"\nns per launch (median, p90): whole {rows[False]}, {per_launch:.0f} slices "
        f"{rows[True]}; added per slice {per_slice:.0f} ns (fake driver)"
    )
    assert per_slice < 20_000  # generous: shared CI boxes; the printed figure is the measure


def test_the_engine_slices_a_programs_module_and_its_launches_run_as_slices(
    native, slice_prog, make_segment, tmp_path, monkeypatch
) -> None:
    """The whole chain on CPU: the program loads PTX, the interceptor saves it, the
    engine's attached set (hummingbird) has it sliced, publishes the variant and turns
    slicing on; the program's next launches run as slices, gated by the engine's grants,
    and the engine learns the block time and reports the sliced share."""
    import threading

    from hbtui.engine.attached import AttachedSet
    from hbtui.engine.attached.variants import VariantWorker

    mdir = tmp_path / "modules"
    mdir.mkdir()
    monkeypatch.setenv("HBTUI_MODULE_DIR", str(mdir))  # the engine's fallback (no /proc read)
    seg = make_segment(L.CLASS_LP)
    s = AttachedSet(lambda: "hummingbird", variants=VariantWorker(processes=False))
    s.other_hp = lambda: True  # an HP to protect (with none, LP runs ungated and whole)
    at = s.attach(task="train", cls="lp", shm=seg.name, launcher_pid=os.getpid(), cmd=["prog"],
                  layout=L.VERSION, slo_ms=None, idle_ms=None, taken=set())  # fmt: skip
    stop = threading.Event()

    def engine_loop() -> None:  # the engine's scheduling thread: the only writer
        while not stop.is_set():
            s.poll()
            time.sleep(0.0002)

    t = threading.Thread(target=engine_loop, daemon=True)
    t.start()
    go = tmp_path / "go"
    e = prog_env(native, seg.name, cls="lp", HBTUI_MODULE_DIR=str(mdir), FAKE_LOG="1")
    p = Prog([str(slice_prog), "load", f"wait:{go}", *["kp:4000:1:1"] * 5, "sync", "log"], e)
    try:
        p.expect("done load")
        deadline = time.monotonic() + 20
        while not (at.lp is not None and at.lp.slices.slots and at.lp.slices.on):
            assert time.monotonic() < deadline, at.modules
            time.sleep(0.01)
        go.touch()
        logs = _finish(p)
    finally:
        stop.set()
        t.join(5)
    try:
        assert at.modules == {PTX_HASH: "ok"}
        assert (mdir / f"{PTX_HASH:016x}.sliced.ptx").is_file()
        assert _blocks(logs, 2) == list(range(4000)) * 5  # every launch, every block once
        assert len(logs) > 5  # ... as slices (at least one wave: 8 blocks)
        st = seg.stats()
        assert st["sliced_launches"] == 5 and st["held_launches"] + st["next_seq"] > 5
        s.poll()
        info = s.task_state(at)["attached"]
        assert info["slicing"] and info["sliceable_kernels"] == 2  # k_slice and k_other
        assert at.lp is not None and at.lp.slices.slices == st["slice_launches"]
    finally:
        s.close()


@pytest.mark.parametrize(
    "attr,sliced",
    [
        ("2:1:0:0", False),  # cooperative
        ("2:0:0:0", True),  # cooperative off
        ("4:2:1:1", False),  # cluster dimension 2x1x1
        ("4:1:1:1", True),  # a cluster of one block: none
        ("6:1:0:0", False),  # programmatic stream serialization
        ("7:0:0:0", False),  # programmatic event
        ("11:2:1:1", False),  # preferred cluster dimension 2x1x1 (CUDA 12.8)
        ("11:1:1:1", True),
        ("12:0:0:0", False),  # launch completion event
        ("8:1:0:0", True),  # priority: slicing keeps it
    ],
)
def test_launch_attributes_that_slicing_would_change_run_whole(
    native, slice_prog, make_segment, tmp_path, attr, sliced
) -> None:
    att = make_segment(L.CLASS_LP)
    p, funcs = _run(native, slice_prog, att, tmp_path, [f"attr:{attr}"], {"slice_blocks": 100})
    logs = _finish(p)
    if sliced:
        assert len(logs) > 1 and _blocks(logs, 2) == list(range(1000))
    else:
        (whole,) = logs
        assert whole.func == funcs["k_slice"] and whole.grid == (1000, 1, 1)
        assert whole.vals == [A & 0xFFFFFFFF, B]
    assert att.stats()["sliced_launches"] == int(sliced)


def _ranges(logs: list[Logged], n_own: int) -> list[tuple[int, int]]:
    """The sub-grid launches as linear block ranges [start, end) in launch order (each
    must be whole rows of x, or part of one row: one contiguous range), without listing
    the blocks (grids here have billions)."""
    out = []
    for g in logs:
        ox, oy, oz, gx, gy, gz = g.vals[n_own : n_own + 6]
        bx, by, bz = g.grid
        assert bx == gx or (by == 1 and bz == 1), g
        assert bz == 1 or (oy == 0 and by == gy), g
        s = ((oz * gy) + oy) * gx + ox
        out.append((s, s + bx * by * bz))
    return out


def test_slices_of_a_grid_over_2_to_the_32_blocks_are_recorded_whole(
    native, slice_prog, make_segment, tmp_path
) -> None:
    """(2^30+1) x 8 blocks with the largest slice size the engine can write: a slice of
    whole rows must still fit the record's u32 slice_blocks (2^32-8 blocks rounded up to
    4 rows is 2^32+4: it was recorded as 4)."""
    att = make_segment(L.CLASS_LP)
    grid = (2**30 + 1, 8, 1)
    total = grid[0] * grid[1]
    p, _ = _run(native, slice_prog, att, tmp_path, [f"kp:{grid[0]}:{grid[1]}:1"],
                {"slice_blocks": 2**32 - 1})  # fmt: skip
    logs = _finish(p)
    ran = _ranges(logs, 2)
    assert ran[0][0] == 0 and ran[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ran, ran[1:], strict=False))  # once, in order
    recs = [r for r in att.launches() if r.kind == L.KIND_KERNEL]
    assert recs and all(r.flags & L.LF_SLICE and r.slice_blocks for r in recs)
    assert sum(r.slice_blocks for r in recs) == total
    for a, b in zip(recs, recs[1:], strict=False):
        assert b.slice_start == a.slice_start + a.slice_blocks


def test_a_launch_from_a_thread_exit_destructor_still_slices(
    native, slice_prog, make_segment, tmp_path
) -> None:
    """A thread's parameter buffers are freed by a key destructor; a launch from another
    key's destructor after it (a library's per-thread cleanup) must get fresh ones, not
    the freed block. With malloc's mmap threshold at 64 KB the buffers (64 KB + a bit)
    are mapped, and a use after free faults."""
    att = make_segment(L.CLASS_LP)
    p, _ = _run(native, slice_prog, att, tmp_path, ["exit:100"], {"slice_blocks": 16},
                MALLOC_MMAP_THRESHOLD_="65536")  # fmt: skip
    rc = p.finish()
    assert rc == 0, (rc, p.err)  # -11: the destructor's launch used the freed buffers
    logs = _log(p)
    assert _blocks(logs, 2) == list(range(100)) * 2  # both launches, as slices
    assert att.stats()["sliced_launches"] == 2


def test_a_slow_variant_load_holds_no_other_thread(native, slice_prog, make_segment,
                                                   tmp_path) -> None:  # fmt: skip
    """The variant's module load (the driver's PTX JIT: can take 100s of ms) runs outside
    the interceptor's lock: another thread's cuModuleGetFunction meanwhile is not held."""
    att = make_segment(L.CLASS_LP)
    p, _ = _run(native, slice_prog, att, tmp_path, ["par:1000"], {"slice_blocks": 64},
                sliced=b"// slow\n" + PTX, FAKE_SLOW_LOAD_MS="800")  # fmt: skip
    logs = _finish(p)
    (ms,) = [float(ln.split()[1]) for ln in p.lines if ln.startswith("lookup_ms ")]
    assert ms < 400, ms  # (it waited out the 800-ms load while the lock was held)
    assert _blocks(logs, 2) == list(range(1000)) and len(logs) > 1  # sliced once loaded


def test_a_fork_during_a_variant_load_leaves_the_child_no_held_lock(
    native, slice_prog, make_segment, tmp_path
) -> None:
    """A thread loads a variant (slow) when another forks; the child's launch of a
    function with a variant of its own must not wait forever for the load lock."""
    att = make_segment(L.CLASS_LP)
    p, _ = _run(
        native,
        slice_prog,
        att,
        tmp_path,
        ["forkpar:1000"],
        {"slice_blocks": 64},
        sliced=b"// slow\n" + PTX,
        names=("k_slice", "k_other"),
        FAKE_SLOW_LOAD_MS="800",
    )
    p.expect("done sync", timeout=30)
    assert p.finish() == 0, p.err
    assert "child 0" in p.lines, p.lines  # (9: the child hung on a lock held at the fork)
