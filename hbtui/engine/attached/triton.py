"""Find the PTX of a Triton kernel from the cubin a program loaded.

Triton compiles to a cubin and loads that (``cuModuleLoadData``), so the module record
only has the cubin's image hash. Triton's cache keeps the PTX it assembled the cubin
from beside it: ``<stem>.ptx`` next to ``<stem>.cubin`` (``$TRITON_CACHE_DIR``, default
``~/.triton/cache``; the directory layout differs between versions, so the roots are
scanned recursively and nothing else is assumed). A cubin file's key is the hash the
interceptor computes for a loaded ELF image: ``layout.hash64`` of the bytes up to the
end of its section/program header tables (``elf_extent``, as ``image_bytes`` in
intercept.c), so a file with trailing bytes still matches.

``TritonIndex`` caches {cubin hash: ptx path} and each file's hash by (path, mtime,
size), so a rescan only reads new or changed cubins. Not thread-safe: one worker uses it.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from hbtui.attach.layout import hash64

MAX_CUBIN_BYTES = 256 << 20
MAX_FILES = 200_000  # per scan: a huge or looping tree is cut off, not walked forever


def triton_roots(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where Triton caches its kernels for a program with environment ``env``."""
    env = os.environ if env is None else env
    d = env.get("TRITON_CACHE_DIR")
    if d:
        return [Path(d)]
    home = env.get("HOME") or str(Path.home())
    return [Path(home) / ".triton" / "cache"]


def elf_extent(data: bytes) -> int | None:
    """The bytes of an ELF64 image the interceptor hashes (None: not ELF64)."""
    if len(data) < 0x40 or data[:4] != b"\x7fELF":
        return None
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    return max(shoff + shentsize * shnum, phoff + phentsize * phnum)


def cubin_hash(data: bytes) -> int | None:
    n = elf_extent(data)
    if n is None or n > len(data):
        return None
    return hash64(data[:n])


class TritonIndex:
    """{cubin image hash: sibling .ptx} over the cubins found under ``roots``."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = [Path(r) for r in roots]
        self._files: dict[str, tuple[int, int, int | None]] = {}  # path -> (mtime, size, hash)
        self._ptx: dict[int, Path] = {}
        self.scans = 0
        self.hashed = 0  # cubin files read and hashed (a rescan of an unchanged tree: 0)
        self.scanned_ns = 0  # time.monotonic_ns() when the last scan began

    def ptx_for(self, cubin: int, seen_ns: int | None = None) -> Path | None:
        """The .ptx beside a cubin whose image hash is ``cubin``. An unknown hash rescans
        the roots, unless a scan began after ``seen_ns`` (when the load was seen,
        CLOCK_MONOTONIC): then that scan already had the cubin Triton wrote before
        loading it, and one scan serves a burst of loads."""
        p = self._ptx.get(cubin)
        if p is not None and p.is_file():
            return p
        if seen_ns is None or self.scanned_ns <= seen_ns:
            self.scan()
            p = self._ptx.get(cubin)
        return p

    def scan(self) -> None:
        self.scans += 1
        self.scanned_ns = time.monotonic_ns()
        seen: set[str] = set()
        ptx: dict[int, Path] = {}
        for path in _cubins(self.roots):
            sibling = Path(path[: -len(".cubin")] + ".ptx")
            h = self._hash_of(path)
            seen.add(path)
            if h is not None and sibling.is_file():
                ptx[h] = sibling
        self._files = {k: v for k, v in self._files.items() if k in seen}
        self._ptx = ptx

    def _hash_of(self, path: str) -> int | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        old = self._files.get(path)
        if old is not None and old[:2] == (st.st_mtime_ns, st.st_size):
            return old[2]
        h = None
        if 0 < st.st_size <= MAX_CUBIN_BYTES:
            try:
                with open(path, "rb") as f:
                    h = cubin_hash(f.read())
            except OSError:
                return None
            self.hashed += 1
        self._files[path] = (st.st_mtime_ns, st.st_size, h)
        return h


def _cubins(roots: Iterable[Path]) -> Iterable[str]:
    count = 0
    for root in roots:
        for dirpath, _dirs, names in os.walk(root, onerror=lambda _e: None):
            for name in names:
                if name.endswith(".cubin"):
                    count += 1
                    if count > MAX_FILES:
                        return
                    yield os.path.join(dirpath, name)
