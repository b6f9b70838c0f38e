"""Build the interceptor (``hbtui/native/intercept.c``) with the system C compiler, cached.

Like the HP chain (engine/backends/hpchain.py): compiled at first use with ``$CC`` or
``cc``, cached under ``$XDG_CACHE_HOME/hbtui/host`` by a hash of the sources, the flags
and the compiler's version, written atomically (temp file + rename). Without a working
compiler ``BuildError`` says why.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

CFLAGS = ("-O2", "-std=gnu11", "-shared", "-fPIC", "-pthread", "-fvisibility=hidden")
LIBS = ("-ldl",)


class BuildError(RuntimeError):
    """The interceptor could not be built."""


def native_dir() -> Path:
    return Path(str(resources.files("hbtui.native")))


def sources() -> tuple[Path, Path]:
    d = native_dir()
    return d / "intercept.c", d / "hbtui_shm.h"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hbtui" / "host"


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def compile_c(
    srcs: list[Path], out: Path, flags: tuple[str, ...], libs: tuple[str, ...] = ()
) -> None:
    """Compile ``srcs`` into ``out`` atomically. Raises BuildError with the compiler's words."""
    cc = compiler()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    os.close(fd)
    try:
        r = subprocess.run(
            [*cc, *flags, "-o", tmp, *map(str, srcs), *libs],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if r.returncode != 0:
            names = " ".join(p.name for p in srcs)
            raise BuildError(f"{' '.join(cc)} failed on {names}:\n{r.stderr.strip()}")
        os.replace(tmp, out)
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"cannot run the C compiler ({' '.join(cc)}): {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build(cache: Path | None = None) -> Path:
    """The interceptor's shared library, built now or taken from the cache."""
    src, hdr = sources()
    try:
        blob = src.read_bytes() + b"\0" + hdr.read_bytes()
    except OSError as e:
        raise BuildError(f"cannot read the interceptor sources: {e}") from e
    cc = compiler()
    try:
        ver = subprocess.run(
            [*cc, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(
            f"no C compiler ({' '.join(cc)}): {e}; `hbtui run` builds its interceptor with "
            "cc (set $CC to another one)"
        ) from e
    parts = [*cc, *CFLAGS, *LIBS, *ver, platform.machine()]
    key = hashlib.sha256(blob + "\0".join(parts).encode()).hexdigest()[:24]
    root = cache if cache is not None else cache_dir()
    path = root / f"libhbtui-intercept-{key}.so"
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        compile_c([src], path, (*CFLAGS, f"-I{hdr.parent}"), LIBS)
    except OSError as e:
        raise BuildError(f"cannot write the build cache {root}: {e}") from e
    return path
