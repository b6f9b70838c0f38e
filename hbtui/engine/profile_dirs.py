"""Where profiles live, how a name finds one, and how a profile file is read.

The engine's profile directories, in lookup order: the user directory
(``$XDG_CONFIG_HOME/hbtui/profiles``), the directories the operator names with
``hbtui engine --profile-dir``, then the shipped ones (package data). A *name* resolves
only there (never in the current directory). A profile is a regular file ``NAME.toml``
directly in one of them, not a symlink; reads are capped and never block (a FIFO or a
device is refused without opening it for reading).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from hbtui.engine.checks import ProfileError
from hbtui.engine.limits import MAX_PROFILE_BYTES, NAME_RE
from hbtui.engine.resources import shipped_profiles_dir

USER, EXTRA, SHIPPED = "user", "dir", "shipped"  # list_profiles origins


def shipped_dir() -> Path:
    return shipped_profiles_dir()


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hbtui" / "profiles"


def search_dirs(extra: Sequence[str | os.PathLike[str]] = ()) -> list[tuple[str, Path]]:
    """(origin, directory) in lookup order: user, the operator's, shipped."""
    return [(USER, user_dir()), *((EXTRA, Path(d)) for d in extra), (SHIPPED, shipped_dir())]


def _is_profile_file(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(p).st_mode)  # lstat: a symlink is not one
    except OSError:
        return False


def find(name: str, extra: Sequence[str | os.PathLike[str]] = ()) -> Path | None:
    """The profile file ``name`` names in the profile directories, or None."""
    if not NAME_RE.match(name):
        return None
    for _, d in search_dirs(extra):
        cand = d / f"{name}.toml"
        if _is_profile_file(cand):
            return cand
    return None


def is_path(name_or_path: str) -> bool:
    """An explicit path (operator command lines only): has a slash or ends in .toml."""
    return os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(".toml")


def resolve(name_or_path: str, extra: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """A path as given (``is_path``), else the profile of that name in the profile
    directories (``default`` → the shipped default.toml unless a user one shadows it).
    A name found nowhere gives the user directory's ``NAME.toml`` (which does not exist,
    so loading it says so); it never falls back to the current directory."""
    if is_path(name_or_path):
        return Path(name_or_path)
    found = find(name_or_path, extra)
    return found if found is not None else user_dir() / f"{name_or_path}.toml"


def list_profiles(extra: Sequence[str | os.PathLike[str]] = ()) -> list[tuple[str, Path, str]]:
    """(name, path, origin) of every loadable profile; earlier directories shadow later."""
    found: dict[str, tuple[str, Path, str]] = {}
    for origin, d in reversed(search_dirs(extra)):
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                if NAME_RE.match(p.stem) and _is_profile_file(p):
                    found[p.stem] = (p.stem, p, origin)
    return sorted(found.values())


def in_dirs(path: str, dirs: Sequence[Path]) -> tuple[Path, str] | None:
    """(directory, name) when ``path`` is ``D/NAME.toml`` for one of ``dirs`` (compared
    as given and resolved; the file itself is not looked at), else None."""
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() or p.suffix != ".toml" or not NAME_RE.match(p.stem):
        return None
    parent = Path(os.path.normpath(p.parent))
    for d in dirs:
        if parent in (Path(os.path.normpath(d)), d.resolve()) or parent.resolve() == d.resolve():
            return d, p.stem
    return None


def read_capped(
    path: str | os.PathLike[str],
    what: str = "profile",
    cap: int = MAX_PROFILE_BYTES,
    follow: bool = True,
) -> str:
    """The UTF-8 text of a regular file of at most ``cap`` bytes (ProfileError otherwise).

    Opened non-blocking (a FIFO never blocks the caller) and, with ``follow=False``,
    without following a symlink. Missing, a directory, a symlink, a FIFO or a device all
    give the same message, so the error is no oracle for what exists."""
    file = str(path)
    missing = ProfileError(f"{file}: no such {what} file (or not a regular file)")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENOTDIR, errno.ENXIO):
            raise missing from None
        raise ProfileError(f"{file}: cannot read the {what} file: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise missing
        if st.st_size > cap:
            raise ProfileError(f"{file}: {what} file is larger than {cap} bytes")
        chunks, size = [], 0
        while size <= cap:
            b = os.read(fd, min(1 << 16, cap + 1 - size))
            if not b:
                break
            chunks.append(b)
            size += len(b)
    except OSError as e:
        raise ProfileError(f"{file}: cannot read the {what} file: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > cap:  # grew while we read it
        raise ProfileError(f"{file}: {what} file is larger than {cap} bytes")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{file}: {what} file is not UTF-8 text") from None
