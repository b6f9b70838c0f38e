"""User kernels named by a profile: read or compile to PTX, slice, and describe the params.

Shared by profile validation (on a CPU: compute_90 PTX) and the cuda backend (the
device's own compute arch). NVRTC output is cached on disk like the built-in kernels
(``engine.backends.native``: keyed by source, options, target and NVRTC version, atomic
writes), and whole results in memory keyed by the file's mtime and size, so a profile
loaded and then prepared compiles and slices once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from hbtui.engine.atomic import write_atomic

from .lexer import PtxParseError
from .ptx import Param, parse_module
from .rewrite import slice_module
from .toolchain import ToolchainError, compile_cuda

# PTX scalar types → bytes. `.pred` params do not exist in kernels; `.b8 x[N]` arrays
# (structs by value) count N elements.
_PTX_BYTES = {
    **{f".{k}8": 1 for k in "bsu"},
    **{f".{k}16": 2 for k in "bsuf"},
    **{f".{k}32": 4 for k in "bsuf"},
    **{f".{k}64": 8 for k in "bsuf"},
}
NVRTC_LOG_LINES = 8  # a profile error quotes this many lines of the NVRTC log


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


def _compile_cached(path: Path, source: str, arch: str) -> str:
    from hbtui.engine.backends import native  # local: keeps the slicer importable on its own

    opts = ("-std=c++17", f"-I{path.parent}")
    # local headers are not part of the key: skip the disk cache when there are any
    cacheable = '#include "' not in source
    key = native.cache_key(source, {}, opts, arch)
    cache = native.cache_dir() / f"user-{path.stem}-{arch}-{key[:24]}.ptx"
    if cacheable:
        try:
            text = cache.read_text()
            if text:
                return text
        except (OSError, UnicodeDecodeError):
            pass
    ptx = compile_cuda(source, path.name, arch, opts)
    if cacheable:
        try:
            write_atomic(cache, ptx)
        except OSError:
            pass  # read-only cache dir: still usable, just not cached
    return ptx


@functools.lru_cache(maxsize=64)
def _load(path: str, _mtime_ns: int, _size: int, entry: str | None, arch: str) -> UserKernel:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserKernelError("source", f"cannot read {path!r}: {e}") from None
    if p.suffix == ".cu":
        try:
            ptx = _compile_cached(p, text, arch)
        except ToolchainError as e:
            lines = str(e).splitlines()
            head = "\n".join(lines[1 : 1 + NVRTC_LOG_LINES])
            more = "\n  ..." if len(lines) > 1 + NVRTC_LOG_LINES else ""
            raise UserKernelError("source", f"{lines[0]}\n{head}{more}") from None
    else:
        ptx = text
    try:
        module = parse_module(ptx)
    except PtxParseError as e:
        raise UserKernelError("source", f"cannot parse the PTX of {p.name}: {e}") from None
    entries = [f.name for f in module.entries()]
    if entry is None:
        if len(entries) != 1:
            raise UserKernelError(
                "entry", f"is required: {p.name} has entries {', '.join(entries) or 'none'}"
            )
        entry = entries[0]
    if entry not in entries:
        hint = ""
        if p.suffix == ".cu" and any(entry in e and e.startswith("_Z") for e in entries):
            hint = ' (C++ name mangling: declare the kernel extern "C")'
        raise UserKernelError(
            "entry",
            f"no entry named {entry!r} in {p.name} (entries: {', '.join(entries) or 'none'})"
            + hint,
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


def load_user_kernel(path: str | Path, entry: str | None, arch: str = "compute_90") -> UserKernel:
    """Read ``path`` (.ptx) or compile it with NVRTC for ``arch`` (.cu), then slice ``entry``
    (the only entry when None). Raises UserKernelError naming the key to blame."""
    p = Path(path)
    if p.suffix not in (".cu", ".ptx"):
        raise UserKernelError("source", f"must be a .cu or .ptx file, got {str(p)!r}")
    try:
        st = p.stat()
    except OSError as e:
        raise UserKernelError("source", f"cannot read {str(p)!r}: {e.strerror}") from None
    if not p.is_file():
        raise UserKernelError("source", f"{str(p)!r} is not a file")
    return _load(str(p), st.st_mtime_ns, st.st_size, entry, arch)
