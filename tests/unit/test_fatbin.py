"""Fat binaries (engine.attached.fatbin, and their path through engine.attached.variants).

Real fat binaries are built here on the CPU with nvFatbin (``cuda.bindings.nvfatbin``;
``cuda-bindings[all]`` brings libnvfatbin): PTX from NVRTC for compute_80 and compute_90
plus an sm_90 cubin from nvJitLink, uncompressed, LZ4-compressed (``-compress-mode=speed``)
and zstd-compressed (nvFatbin 13's default codec). Those tests skip where the toolkit's
libraries are missing. Everything else (malformed input, arch choice, unknown codecs) uses
fat binaries put together by hand in this file from the documented layout (see the
module's docstring), including an LZ4 entry made by the small encoder below.
"""

from __future__ import annotations

import json
import random
import re
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hbtui.attach import layout as L
from hbtui.engine.attached import fatbin as F
from hbtui.engine.attached import variants as V

CORPUS = Path(__file__).parents[1] / "slicer_corpus"
ADD2D = (CORPUS / "triton_add2d.ptx").read_bytes()  # .target sm_90a, one sliceable entry
PLAIN, LZ4, ZSTD = ["-compress=false"], ["-compress-all", "-compress-mode=speed"], []


# -- hand-made fat binaries ----------------------------------------------------------------
def lz4_encode(data: bytes) -> bytes:
    """A greedy LZ4 block encoder (tests only): 4-byte matches by a dict of last places."""
    out = bytearray()

    def ext(v: int) -> None:
        while v >= 255:
            out.append(255)
            v -= 255
        out.append(v)

    def seq(lit: bytes, dist: int = 0, mlen: int = 0) -> None:
        ml = mlen - 4
        out.append(min(len(lit), 15) << 4 | (min(ml, 15) if dist else 0))
        if len(lit) >= 15:
            ext(len(lit) - 15)
        out.extend(lit)
        if dist:
            out.extend(dist.to_bytes(2, "little"))
            if ml >= 15:
                ext(ml - 15)

    last: dict[bytes, int] = {}
    i = anchor = 0
    while i + 4 <= len(data):
        key = data[i : i + 4]
        j = last.get(key)
        last[key] = i
        if j is None or i - j > 0xFFFF:
            i += 1
            continue
        m = 4
        while i + m < len(data) and data[j + m] == data[i + m]:
            m += 1
        seq(data[anchor:i], i - j, m)
        i = anchor = i + m
    seq(data[anchor:])
    return bytes(out)


def entry(
    kind: int,
    arch: int,
    payload: bytes,
    *,
    flags: int = 0x11,
    codec: str | None = None,
    name: bytes = b"k",
    ehs: int | None = None,
    stored: int | None = None,
    csize: int | None = None,
    usize: int | None = None,
) -> bytes:
    """One entry: header (name after the 64 bytes), payload padded to 8."""
    data = payload
    if codec == "lz4":
        data, flags = lz4_encode(payload), flags | F.FLAG_LZ4
    pad = data + b"\0" * (-len(data) % 8)
    hsize = 64 + len(name) + (-len(name) % 8)
    head = struct.pack(
        "<HHIQIIHHIIIQQQ", kind, 0x101, hsize if ehs is None else ehs,
        len(pad) if stored is None else stored, (len(data) if codec else 0) if csize is None
        else csize, 0, 5, 9, arch, 64 if name else 0, len(name), flags, 0,
        (len(payload) if codec else 0) if usize is None else usize,
    )  # fmt: skip
    return head + name + b"\0" * (hsize - 64 - len(name)) + pad


def container(*entries: bytes, fat_size: int | None = None) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", F.MAGIC, 1, 16, len(body) if fat_size is None else fat_size) + body


def ptx_of(arch: str, body: str = "") -> bytes:
    return f".version 8.0\n.target {arch}\n.address_size 64\n{body}\n".encode()


# -- real ones: NVRTC, nvJitLink, nvFatbin -------------------------------------------------
def toolkit() -> tuple[str, str, bytes]:
    """PTX of vector_add.cu for compute_80 and compute_90, and an sm_90 cubin."""
    pytest.importorskip("cuda.bindings.nvrtc")
    pytest.importorskip("cuda.bindings.nvjitlink")
    from hbtui.engine.slicer import compile_cuda, ptx_to_cubin

    src = (CORPUS / "vector_add.cu").read_text()
    p80, p90 = (compile_cuda(src, "va.cu", f"compute_{a}") for a in (80, 90))
    return p80, p90, ptx_to_cubin(p90, "sm_90")


def nvfatbin(options: Sequence[str], ptx: Sequence[tuple[str, str]], cubin: bytes = b"") -> bytes:
    nvf = pytest.importorskip("cuda.bindings.nvfatbin")
    try:
        h = nvf.create(list(options), len(options))
    except Exception as e:  # noqa: BLE001 - no libnvfatbin here
        pytest.skip(f"nvFatbin: {e}")
    try:
        for arch, text in ptx:
            b = text.encode()
            nvf.add_ptx(h, b, len(b), arch, "va", "")
        if cubin:
            nvf.add_cubin(h, cubin, len(cubin), "90", "va")
        buf = bytearray(nvf.size(h))
        nvf.get(h, buf)
        return bytes(buf)
    finally:
        nvf.destroy(h)


def _bare(ptx: str) -> list[str]:
    """PTX lines without comments, with whitespace runs as one space (nvFatbin stores PTX
    without comments and indentation)."""
    lines = (" ".join(re.sub(r"//.*", "", ln).split()) for ln in ptx.splitlines())
    return [ln for ln in lines if ln]


def test_real_fat_binaries_plain_lz4_and_zstd() -> None:
    p80, p90, cubin = toolkit()
    ptx = [("80", p80), ("90", p90)]
    built = {c: nvfatbin(o, ptx, cubin) for c, o in (("plain", PLAIN), ("lz4", LZ4),
                                                     ("zstd", ZSTD))}  # fmt: skip
    plain = F.entries(built["plain"])
    assert [(e.target, e.codec, e.name) for e in plain] == [
        ("compute_80", None, "va"), ("compute_90", None, "va"), ("sm_90", None, "va")]  # fmt: skip
    assert plain[0].version[0] >= 7  # the PTX ISA version (9.5 from NVRTC 13.5)
    want = F.ptx_entries(built["plain"])
    assert [a for a, _ in want] == [80, 90]
    for (_, text), src in zip(want, (p80, p90), strict=True):
        assert _bare(text) == _bare(src)  # nvFatbin drops comments, whitespace
    assert F.payload(built["plain"], plain[2]) == cubin
    assert [e.codec for e in F.entries(built["lz4"])] == ["lz4", "lz4", "lz4"]
    assert [e.codec for e in F.entries(built["zstd"])][:2] == ["zstd", "zstd"]
    assert F.ptx_entries(built["lz4"]) == want  # the exact bytes nvFatbin stored
    assert F.payload(built["lz4"], F.entries(built["lz4"])[2]) == cubin
    if F._zstd() is None:
        with pytest.raises(F.UnsupportedCompression, match="zstd"):
            F.ptx_entries(built["zstd"])
    else:
        assert F.ptx_entries(built["zstd"]) == want
    # the device's arch picks the entry
    assert F.select_ptx(plain, 90) is plain[1] and F.select_ptx(plain, 86) is plain[0]
    assert F.select_ptx(plain, 75) is None
    # every cut of the LZ4 one is a clean error (or, past the end, the same entries)
    lz = built["lz4"]
    for n in range(len(lz)):
        with pytest.raises(F.FatbinError):
            F.ptx_entries(lz[:n])


def test_hand_made_entries_and_lz4() -> None:
    p80 = ptx_of("sm_80", "// " + "add.s32 %r1, %r2, %r3;\n" * 200)
    p90 = ptx_of("sm_90", "// " + "mul.lo.s32 %r1, %r2, 7;\n" * 300)
    elf = b"\x7fELF" + bytes(range(256)) * 4
    fb = container(entry(1, 80, p80 + b"\0"), entry(1, 90, p90 + b"\0", codec="lz4"),
                   entry(2, 90, elf, codec="lz4"))  # fmt: skip
    es = F.entries(fb)
    want = [(1, 80, None), (1, 90, "lz4"), (2, 90, "lz4")]
    assert [(e.kind, e.arch, e.codec) for e in es] == want
    assert es[1].data_size < len(p90) // 10  # really compressed
    assert F.ptx_entries(fb) == [(80, p80.decode()), (90, p90.decode())]
    assert F.payload(fb, es[2]) == elf
    with pytest.raises(ValueError, match="not PTX"):
        F.ptx_text(fb, es[2])
    # zero padding after the last entry is not an entry; trailing bytes are not looked at
    body = b"".join(entry(1, 80, p80 + b"\0") for _ in range(2)) + b"\0" * 72
    assert len(F.entries(container(body))) == 2
    assert len(F.entries(container(entry(1, 80, p80)) + b"junk")) == 1


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=3000),
                 st.lists(st.sampled_from([b"ld.param", b" %r1", b"\n", b"x"]),
                          max_size=800).map(b"".join)))  # fmt: skip
def test_lz4_round_trip(data: bytes) -> None:
    assert F.lz4_block_decompress(lz4_encode(data), len(data)) == data


def test_lz4_overlapping_matches_and_long_lengths() -> None:
    # "ab", then a match 2 back of 4 + 15 + 255 + 3 bytes: the run repeats the pattern
    blk = bytes([0x2F]) + b"ab" + b"\x02\x00" + bytes([255, 3]) + bytes([0x10]) + b"!"
    assert F.lz4_block_decompress(blk, 2 + 277 + 1) == (b"ab" * 140)[:279] + b"!"
    lits = bytes(range(200)) * 2  # 400 literals: 15 + 255 + 130
    assert F.lz4_block_decompress(bytes([0xF0, 255, 130]) + lits, 400) == lits


@pytest.mark.parametrize(
    ("block", "size", "offset", "what"),
    [
        (b"", 0, 100, "ends inside"),
        (b"\x10a\x00\x00", 5, 102, "match offset 0"),
        (b"\x10a\x05\x00", 5, 102, "match offset 5 with 1"),
        (b"\x50ab", 5, 101, "run past the block"),
        (b"\x10a\x01\x00\x00", 3, 104, "exceeds the declared 3"),
        (b"\x40abcd", 3, 101, "exceeds the declared 3"),
        (b"\xf0\xff\xff", 9, 103, "length runs past"),
        (b"\x10a\x01", 5, 102, "cut short"),
        (b"\x30abc", 5, 104, "decodes to 3 bytes, not 5"),
    ],
)
def test_lz4_errors(block: bytes, size: int, offset: int, what: str) -> None:
    with pytest.raises(F.FatbinError, match=what) as e:
        F.lz4_block_decompress(block, size, base=100)
    assert e.value.offset == offset and isinstance(e.value, ValueError)


GOOD = entry(1, 90, ptx_of("sm_90") + b"\0")


@pytest.mark.parametrize(
    ("data", "offset", "what"),
    [
        (b"", 0, "shorter than the 16-byte"),
        (struct.pack("<IHHQ", 0x12345678, 1, 16, 0), 0, "magic 0x12345678"),
        (struct.pack("<IIQQ", F.WRAPPER_MAGIC, 1, 0x1000, 0), 0, "__fatBinC_Wrapper_t"),
        (struct.pack("<IHHQ", F.MAGIC, 2, 16, 0), 4, "version 2"),
        (struct.pack("<IHHQ", F.MAGIC, 1, 8, 0), 6, "header size 8"),
        (container(GOOD, fat_size=len(GOOD) + 1), 8, "the header says"),
        (container(GOOD, fat_size=1 << 63), 8, "the header says"),
        (container(GOOD[:40]), 16, "cut short: 40 bytes left"),
        (container(GOOD + b"\x01" * 10), 16 + len(GOOD), "cut short: 10"),
        (container(entry(1, 90, b"x" * 8, ehs=0)), 20, "header size 0"),  # would loop
        (container(entry(1, 90, b"x" * 8, ehs=63)), 20, "header size 63"),
        (container(entry(1, 90, b"x" * 8, ehs=4096)), 24, "runs past the end"),
        (container(entry(1, 90, b"x" * 8, stored=9)), 24, "9 bytes at byte 88 runs past"),
        (container(entry(1, 90, b"x" * 8, stored=1 << 63)), 24, "runs past the end"),
        (container(entry(1, 90, b"x" * 64, codec="lz4", csize=999)), 32, "compressed size 999"),
        (container(entry(1, 90, b"x" * 64, codec="lz4", usize=0)), 72, "uncompressed size of 0"),
        (container(entry(1, 90, b"x" * 8, name=b"n" * 9, ehs=64)), 48, "outside its 64-byte"),
    ],
)
def test_malformed_containers(data: bytes, offset: int, what: str) -> None:
    with pytest.raises(F.FatbinError, match=re.escape(what)) as e:
        F.ptx_entries(data)
    assert e.value.offset == offset and str(e.value).startswith(f"byte {offset}: ")


def test_malformed_payloads() -> None:
    bad_lz4 = entry(1, 90, b"y" * 40, flags=0x11 | F.FLAG_LZ4, csize=4, usize=40)
    bad_lz4 = bad_lz4[:72] + b"\x10y\x09\x00" + bad_lz4[76:]  # offset 9 with 1 byte out
    with pytest.raises(F.FatbinError, match="match offset 9") as e:
        F.ptx_entries(container(bad_lz4))
    assert e.value.offset == 16 + 72 + 2
    with pytest.raises(F.FatbinError, match="not UTF-8"):
        F.ptx_entries(container(entry(1, 90, b".version 8.0\n\xff\xfe\0")))
    if F._zstd() is not None:
        junk = entry(1, 90, b"z" * 16, flags=0x11 | F.FLAG_ZSTD, csize=16, usize=100)
        with pytest.raises(F.FatbinError, match="zstd frame does not decode"):
            F.ptx_entries(container(junk))


def test_random_corruption_gives_only_clean_outcomes() -> None:
    fb = container(
        entry(1, 80, ptx_of("sm_80", "ret;" * 50) + b"\0", codec="lz4"),
        entry(1, 90, ptx_of("sm_90") + b"\0"),
        entry(2, 90, b"\x7fELF" * 30),
    )
    rng = random.Random(16)
    for _ in range(3000):
        b = bytearray(fb)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice([0, 1, 0xFF, 0x80, rng.randrange(256)])
        try:
            F.ptx_entries(bytes(b), max_bytes=1 << 16)
        except (F.FatbinError, F.UnsupportedCompression, F.PtxTooBig):
            pass


def test_unknown_codecs_and_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    both = entry(1, 90, b"q" * 8, flags=0x11 | F.FLAG_LZ4 | F.FLAG_ZSTD, csize=8, usize=8)
    unflagged = entry(1, 90, b"q" * 8, csize=8, usize=8)
    for e in (both, unflagged):
        with pytest.raises(F.UnsupportedCompression, match="unknown codec") as x:
            F.ptx_entries(container(e))
        assert x.value.offset == 16
    monkeypatch.setattr(F, "_zstd", lambda: None)  # a host without libzstd
    zstd = entry(1, 90, b"q" * 8, flags=0x11 | F.FLAG_ZSTD, csize=8, usize=80)
    with pytest.raises(F.UnsupportedCompression, match="unsupported compression.*zstd"):
        F.ptx_entries(container(zstd))
    big = container(entry(1, 90, ptx_of("sm_90", "ret;" * 500) + b"\0", codec="lz4"))
    with pytest.raises(F.PtxTooBig, match="limit 1000"):
        F.ptx_entries(big, max_bytes=1000)  # before decompressing


def test_arch_choice() -> None:
    A, FAM = F.FLAG_ARCH_SPECIFIC, F.FLAG_FAMILY_SPECIFIC
    specs = [(75, 0), (80, 0), (90, 0), (90, A), (100, 0), (100, FAM), (120, 0)]
    es = F.entries(container(*(entry(1, a, ptx_of(f"sm_{a}") + b"\0", flags=0x11 | f)
                               for a, f in specs), entry(2, 90, b"\x7fELF")))  # fmt: skip
    assert [e.target for e in es] == ["compute_75", "compute_80", "compute_90", "compute_90a",
                                      "compute_100", "compute_100f", "compute_120",
                                      "sm_90"]  # fmt: skip

    def pick(dev: int) -> str | None:
        e = F.select_ptx(es, dev)
        return None if e is None else e.target

    assert pick(90) == "compute_90a"  # the arch-specific one on its own arch
    assert pick(89) == pick(86) == "compute_80"
    assert pick(100) == pick(103) == "compute_100f"  # family-specific: 100 and 103
    assert pick(110) == "compute_100"  # 100f is not for another family, 90a not for 100+
    assert pick(121) == "compute_120"
    assert pick(70) is None
    assert F.select_ptx([es[1], es[1]], 90) is es[1]


# -- through variants.py ------------------------------------------------------------------
def put(d: Path, fb: bytes, arch: int = 90) -> V.Job:
    """What the interceptor does for an LP program's fat binary, and the module record."""
    h = L.hash64(fb)
    (d / V.fatbin_name(h)).write_bytes(fb)
    return V.Job(h, L.IMG_FATBIN, len(fb), str(d), arch=arch)


def _real_or_hand_made() -> tuple[bytes, str]:
    try:
        p80, p90, cubin = toolkit()
        return nvfatbin(LZ4, [("80", p80), ("90", p90)], cubin), "vadd"
    except pytest.skip.Exception:
        fb = container(entry(1, 90, ADD2D + b"\0", flags=0x11 | F.FLAG_ARCH_SPECIFIC,
                             codec="lz4"))  # fmt: skip
        return fb, "add2d_kernel"


def test_a_fat_binary_is_sliced_like_ptx(tmp_path: Path) -> None:
    fb, name = _real_or_hand_made()
    job = put(tmp_path, fb)
    assert not V._nothing_to_slice(job)
    v = V.build_variant(job)
    assert (v.status, v.kind, v.compiled, v.arch) == (V.OK, "fatbin", True, 90), v.reason
    assert v.sliced_names() == {name} and v.sliced_ptx is not None
    assert "compute_90" in (v.source or "") and V.fatbin_name(job.hash) in (v.source or "")
    doc = json.loads(V.json_path(tmp_path, job.hash).read_text())
    assert (doc["kind"], doc["arch"], doc["status"]) == ("fatbin", 90, "ok")
    again = V.build_variant(job)  # from the cache
    assert again.compiled is False and again.sliced_names() == {name}
    if name == "vadd":  # the real one: the sliced PTX assembles; sm_80 takes compute_80
        from hbtui.engine.slicer import ptx_to_cubin

        assert ptx_to_cubin(Path(v.sliced_ptx).read_text(), "sm_90")[:4] == b"\x7fELF"
        old = V.build_variant(V.Job(job.hash, job.kind, job.size, job.module_dir, arch=80))
        assert old.compiled and old.arch == 80 and "compute_80 " in (old.source or "")
        assert ".target sm_80" in Path(old.sliced_ptx or "").read_text()


def test_in_a_child_process(tmp_path: Path) -> None:
    fb = container(entry(1, 90, ADD2D + b"\0", codec="lz4"))
    job = put(tmp_path, fb)
    w = V.VariantWorker(processes=True)
    assert w.request(job)
    got: list[V.ModuleVariant] = []
    deadline = time.monotonic() + 60
    while not got and time.monotonic() < deadline:
        got = w.take()
        time.sleep(0.01)
    w.close()
    assert [(v.status, v.kind, v.compiled) for v in got] == [(V.OK, "fatbin", True)], got


def test_fat_binaries_that_cannot_be_sliced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def status(fb: bytes, **kw: int) -> V.ModuleVariant:
        return V.build_variant(put(tmp_path, fb, **kw))

    sass = status(container(entry(2, 90, b"\x7fELF" * 8), entry(2, 80, b"\x7fELF" * 8)))
    assert (sass.status, sass.reason) == (V.UNSUPPORTED, "no PTX in the fat binary (SASS only)")
    assert V.read_cached(tmp_path, sass.hash) is not None  # a property of the bytes
    newer = status(container(entry(1, 100, ptx_of("sm_100") + b"\0")))
    assert newer.status == V.UNSUPPORTED and "compute_100" in (newer.reason or "")
    bad = status(container(entry(1, 90, b"x" * 8, ehs=0)))
    assert bad.status == V.ERROR and "malformed fat binary: byte 20" in (bad.reason or "")
    assert V.read_cached(tmp_path, bad.hash) is not None
    monkeypatch.setattr("hbtui.engine.attached.fatbin._zstd", lambda: None)
    z = status(container(entry(1, 90, b"q" * 8, flags=0x11 | F.FLAG_ZSTD, csize=8, usize=80)))
    assert z.status == V.UNSUPPORTED and "unsupported compression" in (z.reason or "")
    assert V.read_cached(tmp_path, z.hash) is None  # another host may have the codec
    big = status(container(entry(1, 90, ADD2D + b"\0")))
    assert big.status == V.OK
    tb = put(tmp_path, container(entry(1, 90, ptx_of("sm_90", "ret;" * 400) + b"\0")))
    assert V.build_variant(tb, max_bytes=100).status == V.TOO_BIG
    # a file that is not what the module record says, or not there
    fb = container(GOOD)
    (tmp_path / V.fatbin_name(0x1234)).write_bytes(fb)
    lie = V.Job(0x1234, L.IMG_FATBIN, len(fb), str(tmp_path))
    assert V.build_variant(lie).status == V.ERROR and V.read_cached(tmp_path, 0x1234) is None
    short = V.Job(0x1234, L.IMG_FATBIN, len(fb) + 8, str(tmp_path))
    assert "is not the" in (V.build_variant(short).reason or "")
    gone = V.Job(0x99, L.IMG_FATBIN, 64, str(tmp_path))
    assert V._nothing_to_slice(gone) and V.build_variant(gone).status == V.MISSING
    huge = V.Job(0x98, L.IMG_FATBIN, V.MAX_FATBIN_BYTES + 1, str(tmp_path))
    assert V.build_variant(huge).status == V.TOO_BIG
