"""Build the interceptor (``hbtui/native/intercept.c``) with the system C compiler, cached.

Through engine.ccbuild, like the HP chain: compiled at first use with ``$CC`` or
``cc``, cached under ``$XDG_CACHE_HOME/hbtui/host`` by a hash of the sources, the flags
and the compiler's version, written atomically (temp file + rename). Without a working
compiler ``BuildError`` says why.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hbtui.engine.ccbuild import BuildError, build_cached, cache_dir, compile_c, compiler

__all__ = ["BuildError", "build", "cache_dir", "compile_c", "compiler", "native_dir", "sources"]

CFLAGS = ("-O2", "-std=gnu11", "-shared", "-fPIC", "-pthread", "-fvisibility=hidden")
LIBS = ("-ldl",)


def native_dir() -> Path:
    return Path(str(resources.files("hbtui.native")))


def sources() -> tuple[Path, Path, Path]:
    """The translation unit, the segment layout and the slicing part it includes."""
    d = native_dir()
    return d / "intercept.c", d / "hbtui_shm.h", d / "intercept_slices.h"


def build(cache: Path | None = None) -> Path:
    """The interceptor's shared library, built now or taken from the cache."""
    src, hdr, slices = sources()
    hint = "; `hbtui run` builds its interceptor with cc (set $CC to another one)"
    return build_cached("libhbtui-intercept", [src], (*CFLAGS, f"-I{hdr.parent}"), LIBS,
                        extra=[hdr, slices], cache=cache, hint=hint)  # fmt: skip
