"""Sliceable variants of attached programs' modules (engine.attached.variants, .triton):
real corpus PTX sliced once and cached on disk (a second run compiles nothing), the
sliced module assembles for sm_90, failures are statuses, the work is bounded, and a
cubin's PTX is found in a Triton-style cache of unknown layout."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest

from hbtui.attach import layout as L
from hbtui.attach.modcache import ptx_name
from hbtui.engine.attached import variants as V
from hbtui.engine.attached.triton import TritonIndex, cubin_hash, elf_extent
from hbtui.engine.slicer import PARAM_NAMES, parse_module

CORPUS = Path(__file__).parents[1] / "slicer_corpus"
ADD2D = (CORPUS / "triton_add2d.ptx").read_bytes()  # one entry, sliceable
GRID_SYNC = (CORPUS / "coop_grid_sync.nvrtc13.ptx").read_bytes()  # refused: grid sync


def _put_ptx(d: Path, data: bytes) -> V.Job:
    """What the interceptor does for an LP program's PTX load, and the module record."""
    h = L.hash64(data + b"\0")
    (d / ptx_name(h)).write_bytes(data)
    return V.Job(h, L.IMG_PTX, len(data) + 1, str(d))


def _results(w: V.VariantWorker, n: int, timeout: float = 60.0) -> list[V.ModuleVariant]:
    out: list[V.ModuleVariant] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} results"
        out += w.take()
        time.sleep(0.002)
    return out


def test_modules_are_sliced_once_and_read_from_the_cache_after(tmp_path: Path) -> None:
    jobs = [_put_ptx(tmp_path, ADD2D), _put_ptx(tmp_path, GRID_SYNC)]
    w = V.VariantWorker(processes=False)
    for j in jobs:
        assert w.request(j)
    assert not w.request(jobs[0])  # asked once per module
    got = {v.hash: v for v in _results(w, 2)}
    w.close()
    assert w.compiled == 2 and w.cached == 0
    assert w.summary()["compiled"] == 2 and w.summary()["compile_s"] > 0
    add, sync = got[jobs[0].hash], got[jobs[1].hash]
    assert (add.status, add.compiled) == (V.OK, True)
    assert [(e.name, e.status) for e in add.entries] == [("add2d_kernel", "sliced")]
    assert sync.sliced_names() == frozenset() and sync.sliced_ptx is None
    assert all(e.status == "refused" and "grid-wide sync" in (e.reason or "")
               for e in sync.entries)  # fmt: skip
    # the files: the JSON names the entries with their own parameter counts and packed
    # size (3 pointers, a u32, then a pointer aligned to 8: 40 bytes; .ptr's .align 1 is
    # the pointee's)
    doc = json.loads(V.json_path(tmp_path, jobs[0].hash).read_text())
    orig = parse_module(ADD2D.decode()).entries()[0]
    assert doc["entries"] == [{"name": "add2d_kernel", "status": "sliced", "reason": None,
                               "params": len(orig.params), "param_bytes": 40}]  # fmt: skip
    sliced = Path(add.sliced_ptx or "").read_text()
    fn = parse_module(sliced).entries()[0]
    assert [p.name for p in fn.params] == [p.name for p in orig.params] + list(PARAM_NAMES)
    assert not (tmp_path / f"{jobs[1].hash:016x}.sliced.ptx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # a second run of the same program: everything from the cache, nothing compiled
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    w2 = V.VariantWorker(processes=False)
    for j in jobs:
        w2.request(j)
    again = {v.hash: v for v in _results(w2, 2)}
    w2.close()
    assert (w2.compiled, w2.cached) == (0, 2)
    assert w2.summary() == {"compiled": 0, "compile_s": 0.0, "cached": 2}
    assert again[jobs[0].hash].sliced_names() == add.sliced_names()
    assert again[jobs[0].hash].compiled is False
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes


def test_the_sliced_module_assembles_for_sm90(tmp_path: Path) -> None:
    pytest.importorskip("cuda.bindings.nvjitlink")
    pytest.importorskip("cuda.bindings.nvrtc")
    from hbtui.engine.slicer import compile_cuda, ptx_to_cubin

    nvrtc = compile_cuda((CORPUS / "vector_add.cu").read_text(), "vector_add.cu", "compute_90")
    for data, arch in ((nvrtc.encode(), "sm_90"), (ADD2D, "sm_90a")):  # NVRTC's; Triton's
        v = V.build_variant(_put_ptx(tmp_path, data))
        assert v.status == V.OK and v.sliced_ptx is not None and v.sliced_names()
        assert ptx_to_cubin(Path(v.sliced_ptx).read_text(), arch)[:4] == b"\x7fELF"


def test_in_a_child_process(tmp_path: Path) -> None:
    job = _put_ptx(tmp_path, ADD2D)
    w = V.VariantWorker(processes=True)
    w.request(job)
    (v,) = _results(w, 1)
    w.close()
    assert (v.status, v.compiled, w.compiled) == (V.OK, True, 1)
    assert V.read_cached(tmp_path, job.hash) is not None


def test_failures_are_statuses_and_only_stable_ones_are_cached(tmp_path: Path) -> None:
    bad = _put_ptx(tmp_path, b".version 8.0\n.target sm_90\n.entry broken( {\n")
    v = V.build_variant(bad)
    assert v.status == V.ERROR and "parse" in (v.reason or "")
    assert V.read_cached(tmp_path, bad.hash) is not None  # the same bytes fail the same way
    # a file that does not hash to its name (stale, or written by someone else)
    lie = V.Job(0x1234, L.IMG_PTX, 10, str(tmp_path))
    (tmp_path / ptx_name(0x1234)).write_bytes(ADD2D)
    assert V.build_variant(lie).status == V.ERROR
    assert V.read_cached(tmp_path, 0x1234) is None
    gone = V.Job(0x99, L.IMG_PTX, 10, str(tmp_path))
    assert V.build_variant(gone).status == V.MISSING
    fat = V.Job(0x77, L.IMG_FATBIN, 64, str(tmp_path))  # its .fatbin was not written
    assert V.build_variant(fat).status == V.MISSING
    big = _put_ptx(tmp_path, ADD2D)
    assert V.build_variant(big, max_bytes=1000).status == V.TOO_BIG
    assert not V.json_path(tmp_path, big.hash).exists()
    for j in (lie, gone, fat):
        assert V.read_cached(tmp_path, j.hash) is None


def test_the_queue_is_bounded_and_a_skipped_module_is_asked_again(tmp_path: Path) -> None:
    w = V.VariantWorker(processes=False, max_queued=1)
    w._thread = object()  # type: ignore[assignment]  # no worker draining: the queue fills
    a, b = V.Job(1, L.IMG_PTX, 9, str(tmp_path)), V.Job(2, L.IMG_PTX, 9, str(tmp_path))
    assert w.request(a) and not w.request(b)
    (skipped,) = w.take()
    assert (skipped.hash, skipped.status) == (2, V.SKIPPED)
    assert w._q.get_nowait() == a
    assert w.request(b)  # room again: the skipped module is taken this time


def _elf(body: bytes, trailing: bytes = b"") -> bytes:
    """An ELF64 header whose section headers end the image, plus bytes after it."""
    hdr = bytearray(0x40)
    hdr[:7] = b"\x7fELF\x02\x01\x01"
    n = 0x40 + len(body)
    struct.pack_into("<QQ", hdr, 0x20, 0, n - 64)  # phoff 0 (phnum 0), shoff
    struct.pack_into("<HHHH", hdr, 0x36, 0, 0, 64, 1)  # one 64-byte section header
    return bytes(hdr) + body + trailing


def test_triton_cache_lookup_by_cubin_hash(tmp_path: Path) -> None:
    root = tmp_path / "triton"
    (root / "ab" / "cd").mkdir(parents=True)
    (root / "zz").mkdir()
    cubin = _elf(b"\x11" * 200, trailing=b"padding the loader never sees")
    (root / "ab" / "cd" / "add2d_kernel.cubin").write_bytes(cubin)
    (root / "ab" / "cd" / "add2d_kernel.ptx").write_bytes(ADD2D)
    (root / "zz" / "lonely.cubin").write_bytes(_elf(b"\x22" * 100))  # no .ptx beside it
    (root / "zz" / "notes.cubin").write_bytes(b"not an elf")
    assert elf_extent(cubin) == 0x40 + 200
    h = L.hash64(cubin[: 0x40 + 200])  # what the interceptor records for the loaded image
    assert cubin_hash(cubin) == h
    idx = TritonIndex([root])
    assert idx.ptx_for(h) == root / "ab" / "cd" / "add2d_kernel.ptx"
    assert idx.ptx_for(cubin_hash(_elf(b"\x22" * 100)) or 0) is None
    assert (idx.scans, idx.hashed) == (2, 3)  # the rescan for the unknown hash read nothing
    seen = idx.scanned_ns - 1  # the load was seen before the last scan began: no rescan
    assert idx.ptx_for(0xDEAD, seen) is None and idx.scans == 2
    assert idx.ptx_for(0xDEAD, time.monotonic_ns()) is None and idx.scans == 3
    os.utime(root / "zz" / "lonely.cubin", ns=(1, 1))  # changed: hashed again
    idx.scan()
    assert idx.hashed == 4
    # the worker slices the Triton PTX for the cubin and caches it under the cubin's hash
    mdir = tmp_path / "modules"
    job = V.Job(h, L.IMG_CUBIN, len(cubin), str(mdir), (str(root),))
    v = V.build_variant(job)
    assert (v.status, v.kind, v.source) == (V.OK, "cubin", str(root / "ab/cd/add2d_kernel.ptx"))
    assert v.sliced_names() == {"add2d_kernel"}
    assert V.read_cached(mdir, h) is not None
    assert stat_mode(mdir) == 0o700
    miss = V.Job(0xBEEF, L.IMG_CUBIN, 10, str(mdir), (str(root),))
    assert V.build_variant(miss).status == V.MISSING


def stat_mode(p: Path) -> int:
    return p.stat().st_mode & 0o777
