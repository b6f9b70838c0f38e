"""Where the console keeps things: XDG config (preferences), XDG state (logs), screenshots."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    v = os.environ.get(var)
    return Path(v) if v and os.path.isabs(v) else Path.home() / fallback


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/hbtui`` (default ``~/.config/hbtui``)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "hbtui"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/hbtui`` (default ``~/.local/state/hbtui``): logs kept after quit."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "hbtui"


def prefs_path() -> Path:
    return config_dir() / "console.toml"


def writable_dir(*candidates: Path) -> Path:
    """The first candidate that exists (or can be made) and is writable, else the temp dir."""
    for d in candidates:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    return Path(tempfile.gettempdir())


def log_dir() -> Path:
    return writable_dir(state_dir())


def screenshot_dir() -> Path:
    """``~/Downloads`` when it exists, else the state dir, else the temp dir."""
    dl = Path.home() / "Downloads"
    if dl.is_dir() and os.access(dl, os.W_OK):
        return dl
    return writable_dir(state_dir() / "screenshots")
