"""Reader of the CUDA fat binary container (what nvcc embeds and nvFatbin writes): its
entries, and the PTX ones as text. Pure Python and bounded: no read past the buffer, every
size checked before it is used, each entry moves the cursor forward by at least its
64-byte header (so no loop can spin), PTX capped (16 MB by default). Malformed input
raises ``FatbinError`` (a ``ValueError``) naming the byte offset and what was wrong.

The layout, little-endian, as public re-implementations describe it (the
cuda-fatbin-decompression and fatbinary projects, cuobjdump notes) and as checked here
against fat binaries that nvFatbin 13.5 writes::

  container header, 16 bytes: u32 magic 0xBA55ED50, u16 version 1, u16 header size (16),
                              u64 size of the entries that follow the header
  entry header (>= 64 bytes; the object name and ptxas options follow the 64), payload:
    0x00 u16 kind: 1 PTX, 2 ELF (a cubin); others (LTO-IR, ...) are skipped
    0x02 u16 entry format (0x0101)     0x04 u32 header size
    0x08 u64 payload size (padded to 8; the compressed bytes when compressed)
    0x10 u32 compressed size            0x14 u32 where the ptxas options are described
    0x18 u16 minor, 0x1A u16 major      (the PTX ISA version of a PTX entry)
    0x1C u32 arch: 90 for compute_90 / sm_90
    0x20 u32 name offset, 0x24 u32 name size (within the entry header)
    0x28 u64 flags: 0x2000 LZ4 (block format), 0x8000 zstd, 0x100000 arch-specific
             (compute_90a), 0x200000 family-specific (compute_100f); 0x1 64-bit, 0x10 Linux
    0x30 u64 0                          0x38 u64 uncompressed size (when compressed)

LZ4 blocks are decoded here; zstd frames by the system's libzstd (``libzstd.so.1``, through
ctypes) where there is one. A codec that cannot be decoded raises
``UnsupportedCompression`` (a status, not a malformed file).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

MAGIC = 0xBA55ED50
WRAPPER_MAGIC = 0x466243B1  # __fatBinC_Wrapper_t: points to the fat binary
KIND_PTX, KIND_ELF = 1, 2
FLAG_LZ4, FLAG_ZSTD = 0x2000, 0x8000
FLAG_ARCH_SPECIFIC, FLAG_FAMILY_SPECIFIC = 0x100000, 0x200000
MAX_PTX_BYTES = 16 << 20

_HEADER = struct.Struct("<IHHQ")  # 16 bytes
_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")  # the 64 bytes every entry header has

Buffer = bytes | bytearray | memoryview


class FatbinError(ValueError):
    """Malformed fat binary: ``what`` went wrong at byte ``offset`` of the buffer."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"byte {offset}: {what}")
        self.offset = offset
        self.what = what


class UnsupportedCompression(Exception):  # noqa: N818 - a status, not a failure
    """An entry compressed with a codec that cannot be decoded here."""

    def __init__(self, offset: int, codec: str) -> None:
        super().__init__(f"unsupported compression: the entry at byte {offset} is {codec}")
        self.offset = offset
        self.codec = codec


class PtxTooBig(Exception):  # noqa: N818
    """The PTX of an entry is larger than the cap."""


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int  # of its header in the buffer
    kind: int  # KIND_PTX, KIND_ELF, ...
    arch: int  # 90: compute_90 (PTX) or sm_90 (ELF)
    version: tuple[int, int]  # (major, minor): the PTX ISA version of a PTX entry
    flags: int
    name: str
    data_offset: int  # where the stored (maybe compressed) payload starts
    data_size: int  # its stored bytes
    size: int  # the payload's bytes once decompressed (padding included when plain)
    codec: str | None  # None (plain), "lz4", "zstd" or "an unknown codec (...)"

    @property
    def is_ptx(self) -> bool:
        return self.kind == KIND_PTX

    @property
    def target(self) -> str:
        """``compute_90``, ``compute_90a``, ``sm_100f``, ...: what the entry was made for."""
        suffix = ("a" if self.flags & FLAG_ARCH_SPECIFIC
                  else "f" if self.flags & FLAG_FAMILY_SPECIFIC else "")  # fmt: skip
        return f"{'compute' if self.is_ptx else 'sm'}_{self.arch}{suffix}"

    def runs_on(self, device_arch: int) -> bool:
        """Whether this entry's code may be used on a device of ``device_arch`` (90 for
        sm_90): the JIT takes PTX of the device's arch or an older one; arch-specific
        PTX (90a) only on that arch, family-specific (100f) on that family (major)."""
        if self.flags & FLAG_ARCH_SPECIFIC:
            return self.arch == device_arch
        if self.flags & FLAG_FAMILY_SPECIFIC:
            return self.arch // 10 == device_arch // 10 and self.arch <= device_arch
        return self.arch <= device_arch


def entries(data: Buffer) -> list[Entry]:
    """The entries of the fat binary at the start of ``data`` (bytes after the container,
    as its header sizes it, are not looked at)."""
    buf = memoryview(data).cast("B")
    n = len(buf)
    if n < _HEADER.size:
        raise FatbinError(0, f"{n} bytes: shorter than the 16-byte fat binary header")
    magic, version, hsize, fsize = _HEADER.unpack_from(buf, 0)
    if magic == WRAPPER_MAGIC:
        raise FatbinError(0, "a __fatBinC_Wrapper_t (it points to the fat binary), not one")
    if magic != MAGIC:
        raise FatbinError(0, f"magic {magic:#010x}, not a fat binary's {MAGIC:#010x}")
    if version != 1:
        raise FatbinError(4, f"container version {version} (only 1 is known)")
    if hsize < _HEADER.size:
        raise FatbinError(6, f"header size {hsize} (at least 16)")
    end = hsize + fsize
    if end > n:
        raise FatbinError(8, f"the header says {end} bytes, the buffer has {n}")
    out: list[Entry] = []
    off = hsize
    while off < end:  # each entry moves ``off`` on by its header, >= 64 bytes
        short = end - off < _ENTRY.size
        if (short or buf[off + 4 : off + 8] == b"\0\0\0\0") and not any(bytes(buf[off:end])):
            break  # zero padding after the last entry
        if short:
            raise FatbinError(off, f"entry header cut short: {end - off} bytes left, 64 needed")
        e, off = _entry(buf, off, end)
        out.append(e)
    return out


def _entry(buf: memoryview, off: int, end: int) -> tuple[Entry, int]:
    """The entry whose header is at ``off``, and where the next one starts."""
    (kind, _fmt, ehs, stored, csize, _opts, minor, major, arch, name_off, name_len, flags, _z,
     usize) = _ENTRY.unpack_from(buf, off)  # fmt: skip
    if ehs < _ENTRY.size:
        raise FatbinError(off + 4, f"entry header size {ehs} (at least 64)")
    start = off + ehs
    if start > end or stored > end - start:
        raise FatbinError(off + 8, f"entry payload of {stored} bytes at byte {start} runs "
                                   f"past the end of the fat binary (byte {end})")  # fmt: skip
    name = ""
    if name_len:
        if name_off < _ENTRY.size or name_off + name_len > ehs:
            raise FatbinError(off + 0x20, f"entry name ({name_len} bytes at {name_off}) "
                                          f"outside its {ehs}-byte header")  # fmt: skip
        raw = bytes(buf[off + name_off : off + name_off + name_len])
        name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    codec: str | None = None
    if flags & FLAG_LZ4 and flags & FLAG_ZSTD:
        codec = f"compressed by an unknown codec (flags {flags:#x})"
    elif flags & (FLAG_LZ4 | FLAG_ZSTD):
        codec = "lz4" if flags & FLAG_LZ4 else "zstd"
    elif csize:
        codec = f"compressed by an unknown codec (flags {flags:#x})"
    if codec is None:
        usize = stored
    else:
        if not 0 < csize <= stored:
            raise FatbinError(off + 0x10, f"compressed size {csize} (the entry stores "
                                          f"{stored} bytes)")  # fmt: skip
        if usize == 0:
            raise FatbinError(off + 0x38, "compressed entry with an uncompressed size of 0")
    e = Entry(off, kind, arch, (major, minor), flags, name, start,
              csize if codec else stored, usize, codec)  # fmt: skip
    return e, start + stored


def payload(data: Buffer, e: Entry, max_bytes: int = MAX_PTX_BYTES) -> bytes:
    """The entry's payload, decompressed (exactly ``e.size`` bytes)."""
    if e.size > max_bytes:
        raise PtxTooBig(f"the {e.target} entry at byte {e.offset} holds {e.size} bytes "
                        f"(limit {max_bytes})")  # fmt: skip
    raw = memoryview(data).cast("B")[e.data_offset : e.data_offset + e.data_size]
    if len(raw) != e.data_size:
        raise FatbinError(e.data_offset, "payload outside the buffer")
    if e.codec is None:
        return bytes(raw)
    if e.codec == "lz4":
        return lz4_block_decompress(raw, e.size, e.data_offset)
    decode = _zstd() if e.codec == "zstd" else None
    if decode is None:
        codec = "zstd-compressed (no libzstd here to decode it)" if e.codec == "zstd" else e.codec
        raise UnsupportedCompression(e.offset, codec)
    return decode(bytes(raw), e.size, e.data_offset)


def ptx_text(data: Buffer, e: Entry, max_bytes: int = MAX_PTX_BYTES) -> str:
    """A PTX entry's text (up to its first NUL: the padding)."""
    if not e.is_ptx:
        raise ValueError(f"the entry at byte {e.offset} is not PTX (kind {e.kind})")
    raw = payload(data, e, max_bytes)
    text = raw.split(b"\0", 1)[0]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as x:
        raise FatbinError(e.data_offset, f"the PTX (decompressed) is not UTF-8 at its "
                                         f"byte {x.start}") from None  # fmt: skip


def ptx_entries(data: Buffer, max_bytes: int = MAX_PTX_BYTES) -> list[tuple[int, str]]:
    """Every PTX entry of the fat binary as (arch, text), in file order."""
    return [(e.arch, ptx_text(data, e, max_bytes)) for e in entries(data) if e.is_ptx]


def select_ptx(found: Iterable[Entry], device_arch: int) -> Entry | None:
    """The PTX entry to JIT on a device of ``device_arch`` (90 for sm_90): the highest
    arch that may run there; on a tie an arch- or family-specific one (it may use more of
    the chip), then the first."""
    usable = [e for e in found if e.is_ptx and e.runs_on(device_arch)]
    return max(usable, key=_preference, default=None)  # max keeps the first of equals


def _preference(e: Entry) -> tuple[int, bool]:
    return e.arch, bool(e.flags & (FLAG_ARCH_SPECIFIC | FLAG_FAMILY_SPECIFIC))


# -- LZ4 (block format, https://github.com/lz4/lz4/blob/dev/doc/lz4_Block_format.md) -----
def lz4_block_decompress(src: Buffer, size: int, base: int = 0) -> bytes:
    """Decode one LZ4 block that must decode to exactly ``size`` bytes. ``base``: where
    ``src`` starts in the file (for the offsets errors name). Each sequence takes at least
    one input byte, and the output never grows past ``size``."""
    src = bytes(src)
    n = len(src)
    out = bytearray()
    i = 0
    while True:
        if i >= n:
            raise FatbinError(base + i, "LZ4 block ends inside a sequence")
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            lit, i = _lz4_length(src, i, lit, base)
        if lit > n - i:
            raise FatbinError(base + i, f"LZ4 literals of {lit} bytes run past the block")
        if lit > size - len(out):
            raise FatbinError(base + i, f"LZ4 output exceeds the declared {size} bytes")
        out += src[i : i + lit]
        i += lit
        if i == n:
            break  # the last sequence: literals only
        if n - i < 2:
            raise FatbinError(base + i, "LZ4 match offset cut short")
        dist = src[i] | src[i + 1] << 8
        start = len(out) - dist
        if dist == 0 or start < 0:
            raise FatbinError(base + i, f"LZ4 match offset {dist} with {len(out)} bytes out")
        i += 2
        mlen = (token & 15) + 4
        if mlen == 19:
            mlen, i = _lz4_length(src, i, mlen, base)
        if mlen > size - len(out):
            raise FatbinError(base + i, f"LZ4 output exceeds the declared {size} bytes")
        if dist >= mlen:
            out += out[start : start + mlen]
        else:  # overlapping: the last ``dist`` bytes repeated
            reps, rest = divmod(mlen, dist)
            chunk = out[start:]
            out += chunk * reps + chunk[:rest]
    if len(out) != size:
        raise FatbinError(base + n, f"LZ4 block decodes to {len(out)} bytes, not {size}")
    return bytes(out)


def _lz4_length(src: bytes, i: int, acc: int, base: int) -> tuple[int, int]:
    n = len(src)
    while True:
        if i >= n:
            raise FatbinError(base + i, "LZ4 length runs past the block")
        b = src[i]
        i += 1
        acc += b
        if b != 255:
            return acc, i


# -- zstd (the system's libzstd) ----------------------------------------------------------
@lru_cache(maxsize=1)
def _zstd() -> Callable[[bytes, int, int], bytes] | None:
    """A zstd decoder from libzstd through ctypes, or None where there is no libzstd."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
        dec = lib.ZSTD_decompress
        is_err, err_name = lib.ZSTD_isError, lib.ZSTD_getErrorName
    except (OSError, AttributeError):
        return None
    dec.restype, is_err.restype, err_name.restype = ctypes.c_size_t, ctypes.c_uint, ctypes.c_char_p
    dec.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    is_err.argtypes = err_name.argtypes = [ctypes.c_size_t]

    def decode(src: bytes, size: int, base: int) -> bytes:
        dst = ctypes.create_string_buffer(size)
        got = dec(dst, size, src, len(src))  # never writes past ``size``
        if is_err(got):
            why = (err_name(got) or b"?").decode(errors="replace")
            raise FatbinError(base, f"zstd frame does not decode: {why}")
        if got != size:
            raise FatbinError(base, f"zstd frame decodes to {got} bytes, not {size}")
        return dst.raw

    return decode
