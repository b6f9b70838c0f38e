"""Native helpers built with the system C compiler at first use, cached by content.

``$CC`` (default ``cc``) compiles; the result lands under ``$XDG_CACHE_HOME/hbtui/host``
named by a hash of the sources, the flags, the compiler's version and the machine, and is
written atomically (temp file + rename: concurrent processes never load half a file).
Used by the native HP issue thread and by ``hbtui run``'s interceptor.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path


class BuildError(RuntimeError):
    """A native helper could not be built; the message says why (the compiler's words)."""


def compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or "cc")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hbtui" / "host"


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


def build_cached(
    stem: str,
    srcs: list[Path],
    flags: tuple[str, ...],
    libs: tuple[str, ...] = (),
    extra: list[Path] | None = None,
    cache: Path | None = None,
    hint: str = "",
) -> Path:
    """The shared library ``stem-<hash>.so`` of ``srcs`` (``extra``: headers that count
    in the hash), built now or taken from the cache."""
    try:
        blob = b"\0".join(p.read_bytes() for p in [*srcs, *(extra or [])])
    except OSError as e:
        raise BuildError(f"cannot read the sources of {stem}: {e}") from e
    cc = compiler()
    try:
        ver = subprocess.run(
            [*cc, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"no C compiler ({' '.join(cc)}): {e}{hint}") from e
    parts = [*cc, *flags, *libs, *ver, platform.machine()]  # a home shared across archs
    key = hashlib.sha256(blob + "\0".join(parts).encode()).hexdigest()[:24]
    root = cache if cache is not None else cache_dir()
    path = root / f"{stem}-{key}.so"
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        compile_c(srcs, path, flags, libs)
    except OSError as e:
        raise BuildError(f"cannot write the build cache {root}: {e}") from e
    return path
