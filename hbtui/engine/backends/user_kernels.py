"""User kernels at prepare time: compile CUDA C to PTX (NVRTC), check the profile's args
against the entry, decide how to launch it. Shared by the cuda and sim backends, so a
profile that prepares on one prepares on the other.

Profile validation (engine.profile) never compiles: for a ``.cu`` source it checks the
file and the args' own syntax, and everything that needs the PTX is checked here; the
errors name the profile key (``kernels.k.args[3].scalar: u64 is 8 bytes but ...``).
NVRTC output is cached on disk like the built-in kernels (``engine.backends.native``:
keyed by source, options, target and NVRTC version, atomic writes), and whole results
in memory keyed by the file's mtime and size, so each source compiles once.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hbtui.engine.atomic import write_atomic
from hbtui.engine.backends import native
from hbtui.engine.backends.base import BackendError
from hbtui.engine.model import KernelSpec
from hbtui.engine.slicer.toolchain import ToolchainError, compile_cuda
from hbtui.engine.slicer.user import (
    UserKernel,
    UserKernelError,
    analyze,
    check_args,
    check_source,
    load_ptx_kernel,
)

NVRTC_LOG_LINES = 8  # an error quotes this many lines of the NVRTC log


class KernelWarning(UserWarning):
    """A user kernel that prepares but deserves a note (a slicer warning)."""


@dataclass(frozen=True)
class Resolved:
    """How to launch a user kernel on one arch."""

    entry: str
    ptx: str  # sliced when ``sliced``
    sliced: bool
    cooperative: bool  # grid-wide sync: launch whole with cuLaunchCooperativeKernel
    kernel: UserKernel


def _compile_cached(path: Path, source: str, arch: str) -> str:
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
def _load_cu(path: str, _mtime_ns: int, _size: int, entry: str | None, arch: str) -> UserKernel:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserKernelError("source", f"cannot read {path!r}: {e}") from None
    try:
        ptx = _compile_cached(p, text, arch)
    except ToolchainError as e:
        lines = str(e).splitlines()
        head = "\n".join(lines[1 : 1 + NVRTC_LOG_LINES])
        more = "\n  ..." if len(lines) > 1 + NVRTC_LOG_LINES else ""
        raise UserKernelError("source", f"{lines[0]}\n{head}{more}") from None
    return analyze(ptx, p.name, entry, cu_source=True)


def load_user_kernel(path: str | Path, entry: str | None, arch: str = "compute_90") -> UserKernel:
    """Read ``path`` (.ptx) or compile it with NVRTC for ``arch`` (.cu), then slice ``entry``
    (the only entry when None). Raises UserKernelError naming the key to blame."""
    p = check_source(path)
    if p.suffix == ".ptx":
        return load_ptx_kernel(p, entry)
    st = p.stat()
    return _load_cu(str(p), st.st_mtime_ns, st.st_size, entry, arch)


def resolve(k: KernelSpec, arch: str = "compute_90") -> Resolved:
    """Compile (``.cu``) and check the user kernel ``k`` for ``arch``. BackendError names
    the profile key: ``kernels.<name>.<key>: what is wrong``."""
    assert k.source is not None
    where = f"kernels.{k.name}"
    try:
        uk = load_user_kernel(k.source, k.entry, arch)
        check_args(uk, k.args)
    except UserKernelError as e:
        raise BackendError(f"{k.source}: {where}.{e.key}: {e}") from None
    if k.sliceable and not uk.sliced:
        # a .ptx kernel the slicer refuses is already unsliceable in its profile; a .cu one
        # is only seen compiled: it runs whole (Backend.sliceable tells the scheduler)
        warnings.warn(
            KernelWarning(
                f"{where}: the slicer refused {uk.entry!r} ({uk.reason}): it runs whole "
                "under temporal gating"
            ),
            stacklevel=3,
        )
    sliced = k.sliceable and uk.sliced
    if sliced and Path(k.source).suffix == ".cu":
        for w in uk.warnings:  # .ptx sources warned when the profile was loaded
            warnings.warn(KernelWarning(f"{where}: {w}"), stacklevel=3)
    return Resolved(uk.entry, uk.sliced_ptx if sliced else uk.ptx, sliced, uk.grid_sync, uk)


def check_kernels(kernels: Mapping[str, KernelSpec], arch: str = "compute_90") -> None:
    """Resolve every user kernel of a profile (BackendError naming the first bad key):
    what a caller runs before swapping a live engine over to a freshly loaded profile,
    so that the error is an answer, not a failed prepare."""
    for k in kernels.values():
        if k.source:
            resolve(k, arch)
