"""User kernels named by a profile: slice their PTX and describe the params. Pure: no
compiler, no GPU (profile validation uses it for .ptx sources).

CUDA C sources are compiled by the backends when they prepare the kernel
(``engine.backends.user_kernels``), then analysed here like a .ptx file.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lexer import PtxParseError
from .ptx import Param, parse_module
from .rewrite import slice_module

# PTX scalar types → bytes. `.pred` params do not exist in kernels; `.b8 x[N]` arrays
# (structs by value) count N elements.
_PTX_BYTES = {
    **{f".{k}8": 1 for k in "bsu"},
    **{f".{k}16": 2 for k in "bsuf"},
    **{f".{k}32": 4 for k in "bsuf"},
    **{f".{k}64": 8 for k in "bsuf"},
}
SCALAR_BYTES = {"i32": 4, "u32": 4, "i64": 8, "u64": 8, "f32": 4, "f64": 8}


class UserKernelError(ValueError):
    """Problem with a user kernel; ``key`` is the profile key to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class ParamInfo:
    name: str
    ptx_type: str  # e.g. ".u64", ".f32"; ".b8" for byte arrays
    nbytes: int
    is_ptr: bool  # declared `.ptr` (LLVM/Triton); NVRTC emits pointers as plain .u64


@dataclass(frozen=True)
class UserKernel:
    entry: str
    ptx: str  # the module as compiled/read
    sliced_ptx: str  # the module after slicing (== ptx when refused)
    sliced: bool
    reason: str | None  # why the slicer refused the entry
    warnings: tuple[str, ...]
    params: tuple[ParamInfo, ...]  # the entry's own params (without the six slice params)

    @property
    def grid_sync(self) -> bool:
        """Refused for a grid-wide sync: it must be launched whole and cooperatively."""
        return not self.sliced and self.reason is not None and "grid-wide sync" in self.reason


def param_info(p: Param) -> ParamInfo:
    texts = [t.text for t in p.tokens]
    ty = next((t for t in texts if t in _PTX_BYTES), "")
    if not ty:
        raise UserKernelError("entry", f"parameter {p.name}: no scalar type in {' '.join(texts)}")
    n = _PTX_BYTES[ty]
    if "[" in texts:  # `.b8 name[16]`
        i = texts.index("[")
        try:
            n *= int(texts[i + 1])
        except (IndexError, ValueError):
            raise UserKernelError("entry", f"parameter {p.name}: bad array size") from None
    return ParamInfo(p.name, ty, n, ".ptr" in texts)


@functools.lru_cache(maxsize=64)
def _load_ptx(path: str, _mtime_ns: int, _size: int, entry: str | None) -> UserKernel:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserKernelError("source", f"cannot read {path!r}: {e}") from None
    return analyze(text, p.name, entry, cu_source=False)


def analyze(ptx: str, name: str, entry: str | None, *, cu_source: bool) -> UserKernel:
    """Slice ``entry`` of the PTX module ``ptx`` (read from, or compiled from, file
    ``name``; the only entry when None) and describe its params."""
    try:
        module = parse_module(ptx)
    except PtxParseError as e:
        raise UserKernelError("source", f"cannot parse the PTX of {name}: {e}") from None
    entries = [f.name for f in module.entries()]
    if entry is None:
        if len(entries) != 1:
            raise UserKernelError(
                "entry", f"is required: {name} has entries {', '.join(entries) or 'none'}"
            )
        entry = entries[0]
    if entry not in entries:
        hint = ""
        if cu_source and any(entry in e and e.startswith("_Z") for e in entries):
            hint = ' (C++ name mangling: declare the kernel extern "C")'
        raise UserKernelError(
            "entry",
            f"no entry named {entry!r} in {name} (entries: {', '.join(entries) or 'none'})" + hint,
        )
    fn = next(f for f in module.entries() if f.name == entry)
    params = tuple(param_info(q) for q in fn.params)
    res = slice_module(module, [entry])
    r = res[entry]
    return UserKernel(
        entry=entry,
        ptx=ptx,
        sliced_ptx=res.ptx if r.sliced else ptx,
        sliced=r.sliced,
        reason=r.reason,
        warnings=r.warnings,
        params=params,
    )


def check_source(path: str | Path) -> Path:
    """A ``.cu`` or ``.ptx`` file that exists (UserKernelError naming ``source``)."""
    p = Path(path)
    if p.suffix not in (".cu", ".ptx"):
        raise UserKernelError("source", f"must be a .cu or .ptx file, got {str(p)!r}")
    try:
        p.stat()
    except OSError as e:
        raise UserKernelError("source", f"cannot read {str(p)!r}: {e.strerror}") from None
    if not p.is_file():
        raise UserKernelError("source", f"{str(p)!r} is not a file")
    return p


def load_ptx_kernel(path: str | Path, entry: str | None) -> UserKernel:
    """Read the PTX module ``path`` and slice ``entry`` (no compiler involved); cached by
    the file's mtime and size. Raises UserKernelError naming the key to blame."""
    p = check_source(path)
    if p.suffix != ".ptx":
        raise UserKernelError("source", f"{str(p)!r} is CUDA C: it needs compiling")
    st = p.stat()
    return _load_ptx(str(p), st.st_mtime_ns, st.st_size, entry)


def check_args(uk: UserKernel, args: Sequence[tuple[Any, ...]]) -> None:
    """``args`` (KernelSpec.args) against the entry's params; the UserKernelError key is
    relative to the kernel's table (``args``, ``args[3].scalar``)."""
    for i, a in enumerate(args):
        if i >= len(uk.params):
            raise UserKernelError(
                f"args[{i}]",
                f"entry {uk.entry!r} has only {len(uk.params)} parameters, {len(args)} args given",
            )
        prm = uk.params[i]
        if a[0] == "buffer":
            if prm.nbytes != 8:
                raise UserKernelError(f"args[{i}].buffer", f"parameter {i} ({prm.name}) is "
                                      f"{prm.ptx_type} ({prm.nbytes} bytes), not a pointer "
                                      "(8 bytes)")  # fmt: skip
        elif SCALAR_BYTES[a[1]] != prm.nbytes:  # a u64 may stand for a raw pointer (null)
            raise UserKernelError(f"args[{i}].scalar", f"{a[1]} is {SCALAR_BYTES[a[1]]} bytes "
                                  f"but parameter {i} ({prm.name}) is {prm.ptx_type} "
                                  f"({prm.nbytes} bytes)")  # fmt: skip
    if len(args) < len(uk.params):
        missing = uk.params[len(args)]
        raise UserKernelError("args", f"entry {uk.entry!r} has {len(uk.params)} parameters, "
                              f"{len(args)} args given (args[{len(args)}] missing: "
                              f"{missing.ptx_type} {missing.name})")  # fmt: skip
