"""Built-in kernels (``native/*.cu``): the NVRTC compile cache. The registry (names,
params, launch layouts) is ``engine.backends.builtins``, re-exported here.

Importable without a GPU and without cuda-bindings (NVRTC is imported only to compile).

Compile cache: cubins (or PTX when NVRTC cannot target the device's SM) live under
``$XDG_CACHE_HOME/hbtui/kernels`` (``~/.cache/hbtui/kernels``), named by a SHA-256 of
the source, the included headers, the options, the target and the NVRTC version, and
written atomically (temp file + rename), so concurrent engines never read half a file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from hbtui.engine.atomic import write_atomic
from hbtui.engine.backends.builtins import (  # noqa: F401 - the registry, re-exported
    BUILTINS,
    SOURCES,
    ArgLayout,
    BufferSpec,
    NativeError,
    builtin_launch_shape,
    builtin_layout,
)
from hbtui.engine.resources import native_dir

NATIVE_DIR = native_dir()
HEADERS = ("common.cuh",)
BASE_OPTIONS = ("-std=c++17",)


# ---------------------------------------------------------------------------- compiling


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hbtui" / "kernels"


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except Exception as e:  # noqa: BLE001 - any import failure means "no NVRTC"
        raise NativeError(f"NVRTC unavailable (pip install 'cuda-bindings[all]'): {e}") from e
    return nvrtc


def _nv_check(nvrtc, res, op: str):
    err = res[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, msg = nvrtc.nvrtcGetErrorString(err)
        raise NativeError(f"{op} failed: {msg.decode() if isinstance(msg, bytes) else msg}")
    return res[1] if len(res) == 2 else res[1:]


def nvrtc_version() -> tuple[int, int]:
    nvrtc = _nvrtc()
    major, minor = _nv_check(nvrtc, nvrtc.nvrtcVersion(), "nvrtcVersion")
    return int(major), int(minor)


def supported_sms() -> list[int]:
    nvrtc = _nvrtc()
    return [
        int(a) for a in _nv_check(nvrtc, nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
    ]


def target_for(cc: tuple[int, int]) -> str:
    """NVRTC target for a device of compute capability ``cc``: ``sm_XY`` (a cubin, no
    driver JIT) when NVRTC supports it, else PTX for the newest supported arch ≤ cc."""
    sm = cc[0] * 10 + cc[1]
    archs = supported_sms()
    if sm in archs:
        return f"sm_{sm}"
    lower = [a for a in archs if a <= sm]
    if not lower:
        raise NativeError(f"NVRTC supports none of the archs ≤ sm_{sm} (has {archs})")
    return f"compute_{max(lower)}"


def _read_native(name: str) -> str:
    path = NATIVE_DIR / name
    try:
        return path.read_text()
    except OSError as e:
        raise NativeError(f"cannot read built-in kernel source {path}: {e}") from e


def compile_source(
    source: str,
    name: str,
    target: str,
    headers: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
) -> tuple[bytes, str]:
    """Compile CUDA C ``source`` with NVRTC. ``target`` is ``sm_XY`` (cubin) or
    ``compute_XY`` (PTX). Returns (image, log); raises NativeError with the log."""
    nvrtc = _nvrtc()
    hdrs = headers or {}
    prog = _nv_check(
        nvrtc,
        nvrtc.nvrtcCreateProgram(
            source.encode(),
            name.encode(),
            len(hdrs),
            [v.encode() for v in hdrs.values()],
            [k.encode() for k in hdrs],
        ),
        "nvrtcCreateProgram",
    )
    try:
        opts = [f"--gpu-architecture={target}".encode(), *(o.encode() for o in options)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        size = _nv_check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        log = bytearray(size)  # not b" " * size: a 1-byte bytes object is shared
        _nv_check(nvrtc, nvrtc.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
        log_s = log.rstrip(b"\x00 ").decode(errors="replace")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NativeError(f"NVRTC failed to compile {name} for {target}:\n{log_s}")
        if target.startswith("sm_"):
            size = _nv_check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            buf = bytearray(size)
            _nv_check(nvrtc, nvrtc.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
        else:
            size = _nv_check(nvrtc, nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
            buf = bytearray(size)
            _nv_check(nvrtc, nvrtc.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
        return bytes(buf), log_s
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def cache_key(source: str, headers: dict[str, str], options: tuple[str, ...], target: str) -> str:
    h = hashlib.sha256()
    try:
        ver = nvrtc_version()
    except NativeError:
        ver = (0, 0)
    for part in (source, *(f"{k}\0{v}" for k, v in sorted(headers.items())), *options, target):
        h.update(part.encode())
        h.update(b"\0\1")
    h.update(f"nvrtc{ver[0]}.{ver[1]}".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Compiled:
    source: str
    target: str
    image: bytes
    path: Path | None  # cache file (None when the cache could not be written)
    cached: bool  # True when read from the cache


def compile_native(
    source_name: str,
    target: str,
    options: tuple[str, ...] = (),
    cache: Path | None = None,
) -> Compiled:
    """Compile ``native/<source_name>`` for ``target``, through the on-disk cache."""
    src = _read_native(source_name)
    headers = {h: _read_native(h) for h in HEADERS}
    opts = BASE_OPTIONS + tuple(options)
    key = cache_key(src, headers, opts, target)
    ext = "cubin" if target.startswith("sm_") else "ptx"
    root = cache if cache is not None else cache_dir()
    path = root / f"{Path(source_name).stem}-{target}-{key[:24]}.{ext}"
    try:
        data = path.read_bytes()
        if data:  # an empty file is a crashed writer from before atomic writes: recompile
            return Compiled(source_name, target, data, path, True)
    except OSError:
        pass
    image, _log = compile_source(src, source_name, target, headers, opts)
    try:
        write_atomic(path, image)
        stored: Path | None = path
    except OSError:
        stored = None  # read-only home: still usable, just not cached
    return Compiled(source_name, target, image, stored, False)


def compile_all(target: str, cache: Path | None = None) -> dict[str, Compiled]:
    """Compile every built-in source (and the init kernels) for ``target``."""
    return {s: compile_native(s, target, cache=cache) for s in SOURCES}
