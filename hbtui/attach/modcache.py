"""Where an LP program's PTX module images are kept for the slicer (docs/attach.md,
"Slicing real programs").

The interceptor writes each PTX image an LP program loads once, as ``<hash>.ptx``
(``hash`` = the module record's image hash, 16 lowercase hex digits) in the directory
named by ``HBTUI_MODULE_DIR``; the launcher sets that to ``module_dir()`` after making
the directory (mode 0700). The engine's slicing worker
(``hbtui.engine.attached.variants``) reads the images there and writes its results
beside them. Both sides compute the directory from their environment the same way, so
they agree when they run as the same user with the same ``XDG_CACHE_HOME`` (or both name
``HBTUI_MODULE_DIR``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

ENV = "HBTUI_MODULE_DIR"


def module_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$HBTUI_MODULE_DIR``, else ``$XDG_CACHE_HOME/hbtui/modules``, else
    ``~/.cache/hbtui/modules``."""
    env = os.environ if env is None else env
    if env.get(ENV):
        return Path(env[ENV])
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "hbtui" / "modules"


def ensure_module_dir(path: Path) -> bool:
    """Make ``path`` (mode 0700) if needed; True when it is a real directory owned by
    this user that nobody else can write (else the program's images are not saved)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return False
    if st.st_mode & 0o022:
        try:
            os.chmod(path, 0o700)
        except OSError:
            return False
    return True


def ptx_name(image_hash: int) -> str:
    """The file name the interceptor gives the PTX image with this hash."""
    return f"{image_hash & 0xFFFFFFFFFFFFFFFF:016x}.ptx"
