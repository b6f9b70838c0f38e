"""Package data, found one way: ``importlib.resources`` on ``hbtui.native`` and ``hbtui.profiles``.

hbtui installs as a regular (unzipped) package, so the traversables are real directories:
the native sources are handed to NVRTC and ``cc`` by path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def native_dir() -> Path:
    """The CUDA C kernels and the C sources of the native threads (``hbtui/native``)."""
    return Path(str(resources.files("hbtui.native")))


def shipped_profiles_dir() -> Path:
    """The profiles shipped with hbtui (``hbtui/profiles``)."""
    return Path(str(resources.files("hbtui.profiles")))
