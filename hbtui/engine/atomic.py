"""Atomic file writes: a temp file in the target's directory, fsync, then rename.

A crash or a full disk never leaves a half-written profile, result or cache entry; the
old file (if any) stays intact until the rename.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

STALE_TMP_S = 60.0  # a temp file this old is a crashed writer's, not one in progress


def _remove_stale_temps(p: Path) -> None:
    """Temp files of earlier writes of ``p`` that were killed before the rename."""
    cutoff = time.time() - STALE_TMP_S
    for old in p.parent.glob(f".{p.name}.*.tmp"):
        try:
            if old.is_file() and not old.is_symlink() and old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass


def _fsync_dir(d: Path) -> None:
    """Make the rename itself durable (a power loss after it keeps the new file)."""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, make_dirs: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; ``make_dirs=False``: its directory must exist."""
    p = Path(path)
    if make_dirs:
        p.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(p)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        _fsync_dir(p.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p
