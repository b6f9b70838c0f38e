"""The profile ops over the wire: ``list_profiles``, ``load_profile``, ``save_profile``.

Confined to the engine's profile directories (engine.profile_dirs: the user directory,
the operator's ``--profile-dir`` ones, the shipped one): a client names a profile, and a
``path`` is accepted only as ``D/NAME.toml`` of one of them. Loads read a regular file
(no symlink, at most 1 MiB) and parse it on a worker thread; their errors never quote the
file. Saves write only ``NAME.toml`` in the user directory, and only over a shipped or
operator profile's name with ``shadow = true``. docs/protocol.md, "Profiles over the
wire", is the contract.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from hbtui.engine import profile as profiles
from hbtui.engine import profile_dirs
from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.user_kernels import check_kernels
from hbtui.engine.protocol import (
    BAD_VALUE,
    BUSY,
    PROFILE_ERROR,
    ListProfilesResult,
    LoadProfileResult,
    ProfileEntry,
    SaveProfileResult,
)
from hbtui.engine.scheduler import ControlError
from hbtui.engine.server.deferred import Deferred

if TYPE_CHECKING:
    from hbtui.engine.server.engine import Engine
    from hbtui.engine.server.ops import Call


def shown(p: Path) -> str:
    """A path for replies and events: the home directory shortened to ``~``."""
    home = Path(os.path.expanduser("~"))
    if home != Path("/") and p.is_relative_to(home):
        return str(Path("~") / p.relative_to(home))
    return str(p)


def _dirs(eng: Engine) -> list[Path]:
    return [d for _, d in profile_dirs.search_dirs(eng.profile_dirs)]


def list_profiles(eng: Engine, c: Call) -> ListProfilesResult:
    out: list[ProfileEntry] = [
        {"name": name, "origin": origin, "path": shown(p)}
        for name, p, origin in profile_dirs.list_profiles(eng.profile_dirs)
    ]
    return {"profiles": out}


def _locate(eng: Engine, c: Call) -> Path:
    """The profile file a load names (ControlError when there is none to load)."""
    if "name" in c.args:
        name = c.args["name"]
        found = profile_dirs.find(name, eng.profile_dirs)
    else:
        hit = profile_dirs.in_dirs(str(c.args["path"]), _dirs(eng))
        if hit is None:
            raise ControlError(
                BAD_VALUE,
                f"{c.op}: 'path' must be NAME.toml directly in one of the engine's profile "
                "directories (load by 'name'; list_profiles shows what can be loaded)",
            )
        d, name = hit
        found = profile_dirs.find(name, [d]) if d in _dirs(eng) else None
        found = found if found is not None and found.parent == d else None
    if found is None:  # missing, a directory, a symlink, a FIFO: one answer for all
        raise ControlError(
            PROFILE_ERROR,
            f"{c.op}: no such profile {name!r} in the engine's profile directories "
            "(list_profiles shows what can be loaded)",
        )
    return found


def load_profile(eng: Engine, c: Call) -> Deferred:
    if any(d.op == c.op for _, d in eng.deferred):
        raise ControlError(BUSY, f"{c.op}: another profile is loading; retry shortly")
    path = _locate(eng, c)
    file = shown(path)

    def work() -> profiles.Profile:  # on the worker thread
        try:
            prof = profiles.load(path, echo=False, file=file, follow=False)
            # user kernels compile in prepare, after the old scheduler is gone: a bad one
            # must be an answer now, not a failed reload
            check_kernels(prof.kernels)
        except profiles.ProfileError as e:
            raise ControlError(PROFILE_ERROR, f"{c.op}: {e}") from None
        except BackendError:  # compiler logs quote the source: name the kernel step only
            raise ControlError(
                PROFILE_ERROR,
                f"{c.op}: {file}: a user kernel cannot be compiled or checked "
                "(`hbtui bench --profile` on the engine host shows why)",
            ) from None
        return prof

    def finish(prof: profiles.Profile) -> LoadProfileResult:  # back on the loop thread
        if eng.stopping or eng.sched is None or eng.pending is not None:
            raise ControlError(BUSY, f"{c.op}: the engine is stopping or reloading")
        eng.request_reload(prof)
        eng.tel.event("load_profile", profile=prof.name, path=file)
        return {"profile": prof.name, "path": str(path), "tasks": [t.name for t in prof.tasks]}

    return Deferred(c.op, work, finish)


def save_profile(eng: Engine, c: Call) -> SaveProfileResult:
    sched = eng.sched
    assert sched is not None  # a mutating op: the scheduler runs
    udir = profile_dirs.user_dir()
    if "path" in c.args:
        hit = profile_dirs.in_dirs(str(c.args["path"]), [udir])
        if hit is None:
            raise ControlError(
                BAD_VALUE,
                f"{c.op}: 'path' must be NAME.toml directly in the user profile directory "
                f"{shown(udir)} (or give a 'name')",
            )
        name = hit[1]
    else:
        name = c.args.get("name", eng.prof.name)
    target = udir / f"{name}.toml"
    other = profile_dirs.find(name, eng.profile_dirs)
    if other is not None and other.parent != udir and not c.args.get("shadow", False):
        kind = "shipped" if other.parent == profiles.shipped_dir() else "--profile-dir"
        raise ControlError(
            PROFILE_ERROR,
            f"{c.op}: {name!r} is a {kind} profile; save under another 'name', or pass "
            "shadow = true to shadow it with a user profile",
        )
    if os.path.islink(target) or (target.exists() and not target.is_file()):
        raise ControlError(PROFILE_ERROR, f"{c.op}: {shown(target)} is not a regular file")
    prof = replace(
        eng.prof,
        name=name,
        kernels=dict(sched.kernels),
        tasks=[replace(t) for t in sched.tasks.values()],
        policy=sched.policy.name,
    )
    try:
        # the user profile directory itself is the one directory a save may create
        udir.mkdir(mode=0o700, parents=True, exist_ok=True)
        written = profiles.save(prof, target, make_dirs=False)
    except profiles.ProfileError as e:
        raise ControlError(PROFILE_ERROR, f"{c.op}: {e}") from None
    except OSError as e:
        why = f"cannot write {shown(target)}: {e.strerror}"
        raise ControlError(PROFILE_ERROR, f"{c.op}: {why}") from None
    eng.tel.event("save_profile", path=shown(written), name=name)
    return {"path": str(written), "name": name}
