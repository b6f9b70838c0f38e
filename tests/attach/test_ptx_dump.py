"""An LP program's PTX module images are written once to ``HBTUI_MODULE_DIR`` for the
slicer (``<hash>.ptx``, whole files only); HP programs write nothing; a directory that
cannot be written only counts errors; ``hbtui run --lp`` makes the directory (0700); the
engine's attached set slices what the program loaded and marks its kernels sliceable."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import Native, prog_env, run_prog

from hbtui.attach import layout as L
from hbtui.attach.modcache import ptx_name
from hbtui.engine.attached import AttachedSet
from hbtui.engine.attached.variants import VariantWorker

PTX = b".version 8.0\n.target sm_80\n.entry k_add() { ret; }\n"  # what prog.c's "mod" loads
PTX_HASH = L.hash64(PTX + b"\0")  # the module record's hash (the image with its NUL)


def _mod(native: Native, env: dict) -> subprocess.CompletedProcess:
    r = run_prog([str(native.prog), "dlsym", "mod"], env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r


def test_lp_program_writes_each_ptx_image_once(native: Native, make_segment, tmp_path) -> None:
    att = make_segment(L.CLASS_LP)
    d = tmp_path / "modules"
    d.mkdir()
    env = prog_env(native, att.name, cls="lp", HBTUI_MODULE_DIR=str(d))
    _mod(native, env)
    mods = att.modules()
    ptx_hashes = {m.hash for m in mods if m.image_kind == L.IMG_PTX}
    assert len(ptx_hashes) == 1  # cuModuleLoadData and cuLibraryLoadData, same image
    (h,) = ptx_hashes
    assert h == PTX_HASH
    (fat,) = {m.hash for m in mods if m.image_kind == L.IMG_FATBIN}
    names = [ptx_name(h), f"{fat:016x}.fatbin"]  # the fat binary is kept for its PTX too
    assert sorted(p.name for p in d.iterdir()) == sorted(names)  # no temp file left
    f = d / ptx_name(h)
    assert f.read_bytes() == PTX and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert L.hash64((d / names[1]).read_bytes()) == fat  # the bytes the record hashed
    st = att.stats()
    assert (st["ptx_saved"], st["ptx_save_errors"]) == (2, 0)  # the second load found it
    mtime = f.stat().st_mtime_ns
    _mod(native, env)  # a second run of the same program writes nothing
    assert f.stat().st_mtime_ns == mtime and att.stats()["ptx_saved"] == 2


def test_hp_program_writes_nothing(native: Native, make_segment, tmp_path) -> None:
    att = make_segment(L.CLASS_HP)
    _mod(native, prog_env(native, att.name, cls="hp", HBTUI_MODULE_DIR=str(tmp_path)))
    assert len(att.modules()) == 4 and list(tmp_path.iterdir()) == []
    assert att.stats()["ptx_saved"] == att.stats()["ptx_save_errors"] == 0


def test_unwritable_directory_only_counts_errors(native: Native, make_segment, tmp_path) -> None:
    att = make_segment(L.CLASS_LP)
    missing = tmp_path / "no" / "such"
    r = _mod(native, prog_env(native, att.name, cls="lp", HBTUI_MODULE_DIR=str(missing)))
    assert r.stdout.startswith("mod m1=")  # the program ran as usual, and said nothing else
    # two PTX loads (the same image, no file found either time) and the fat binary
    assert att.stats()["ptx_save_errors"] == 3 and att.stats()["ptx_saved"] == 0
    assert not missing.exists()


def test_concurrent_programs_leave_one_whole_file(native: Native, make_segment, tmp_path) -> None:
    att = make_segment(L.CLASS_LP)
    env = prog_env(native, att.name, cls="lp", HBTUI_MODULE_DIR=str(tmp_path))
    ps = [subprocess.Popen([str(native.prog), "dlsym", "mod"], env=env,
                           stdout=subprocess.DEVNULL) for _ in range(6)]  # fmt: skip
    assert [p.wait(20) for p in ps] == [0] * 6
    files = {p.suffix: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(files) == [".fatbin", ".ptx"] and files[".ptx"] == PTX  # one whole file each
    assert att.stats()["ptx_save_errors"] == 0 and att.stats()["ptx_saved"] >= 1


def test_hbtui_run_lp_makes_the_private_module_dir(native: Native, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "HBTUI_REAL_LIBCUDA": str(native.fake),
           "LD_LIBRARY_PATH": str(native.dir)}  # fmt: skip
    for k in ("HBTUI_SHM", "HBTUI_CLASS", "LD_PRELOAD", "HBTUI_MODULE_DIR"):
        env.pop(k, None)
    run = [sys.executable, "-m", "hbtui", "run", "--task", "t", "--no-engine"]
    prog = ["--", str(native.prog), "dlsym", "mod"]
    r = subprocess.run([*run, "--hp", *prog], env=env, capture_output=True, text=True, timeout=60)
    d = tmp_path / "hbtui" / "modules"
    assert r.returncode == 0 and not d.exists(), r.stderr
    r = subprocess.run([*run, "--lp", *prog], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert {p.suffix: p.read_bytes() for p in d.iterdir()}[".ptx"] == PTX


def test_the_engine_slices_what_an_lp_program_loaded(native: Native, make_segment, tmp_path,
                                                     monkeypatch) -> None:  # fmt: skip
    monkeypatch.setenv("HBTUI_MODULE_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    (tmp_path / "m").mkdir()
    seg = make_segment(L.CLASS_LP)
    s = AttachedSet(lambda: "spatial", variants=VariantWorker(processes=False))
    at = s.attach(task="train", cls="lp", shm=seg.name, launcher_pid=os.getpid(), cmd=["prog"],
                  layout=L.VERSION, slo_ms=None, idle_ms=None, taken=set())  # fmt: skip
    try:
        s.poll()  # spatial: PASS, nothing waits
        r = _mod(native, prog_env(native, seg.name, cls="lp"))
        h = {k: int(v, 16) for k, v in re.findall(r"(\w+)=(0x[0-9a-f]+)", r.stdout)}
        deadline = time.monotonic() + 20
        while "pending" in at.modules.values() or not at.modules:
            assert time.monotonic() < deadline, at.modules
            s.poll()
            time.sleep(0.005)
        s.poll()
        # ELF (no Triton cache), PTX, and prog.c's fat binary (a header over 48 junk bytes)
        assert sorted(at.modules.values()) == ["error", "missing", "ok"]
        assert h["func"] in at.sliceable  # k_add, an entry of the PTX image
        assert h["kernel"] not in at.sliceable  # "k_lib" is no entry of it (fake driver)
        assert (tmp_path / "m" / f"{PTX_HASH:016x}.json").is_file()
        assert s.variants.compiled == 1
    finally:
        s.close()
