"""Issue 14, engine side, in process: the reply encoder guard, the profile ranges and the
file reader (the same inputs replayed against a real engine in
tests/integration/test_hardening.py)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import msgpack
import pytest

from hbtui.engine.limits import RANGES
from hbtui.engine.profile import ProfileError, load
from hbtui.engine.profile_dirs import read_capped, resolve
from hbtui.engine.protocol import reply_ok
from hbtui.engine.server.engine import Engine

GOOD = """version = 1
[kernels.k]
grid = 8
[[tasks]]
name = "t"
class = "lp"
kernels = ["k"]
"""


class _Sock:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


def test_an_unencodable_reply_becomes_an_internal_error() -> None:
    fake = SimpleNamespace(ctl=_Sock(), ctl_errors=0, ctl_dropped=0)
    Engine._reply(fake, [b"id"], reply_ok("r1", {"priority": 2**64}))  # type: ignore[arg-type]
    (frames,) = fake.ctl.sent
    rep = msgpack.unpackb(frames[-1], raw=False)
    assert rep["id"] == "r1" and rep["ok"] is False and rep["error"]["code"] == "internal"
    assert fake.ctl_errors == 1


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda t: t.replace("version = 1", "version = 1.0"), "version: unsupported version"),
        (lambda t: 'description = 5\n' + t, "description: must be a string"),
        (lambda t: t.replace("grid = 8", "grid = 8\nblock_us = 1e305"), "kernels.k.block_us"),
        (lambda t: t.replace("grid = 8", "grid = [8, 70000]"), "kernels.k.grid"),
        (lambda t: t.replace("grid = 8", "grid = 8\n[engine.sim]\ninterference = 1e305"),
         "engine.sim.interference"),
        (lambda t: t.replace('name = "t"', f'name = "{"x" * 65}"'), "tasks[0].name"),
        (lambda t: "x = " + "[" * 20_000 + "]" * 20_000 + "\n" + t, "nested too deeply"),
        (lambda t: "x = " + "[" * 40 + "]" * 40 + "\n" + t, "nest deeper than"),
    ],
)  # fmt: skip
def test_profile_values_outside_their_range_name_file_and_key(
    tmp_path: Path, edit: object, where: str
) -> None:
    p = tmp_path / "p.toml"
    p.write_text(edit(GOOD))  # type: ignore[operator]
    with pytest.raises(ProfileError) as e:
        load(p)
    assert str(e.value).startswith(f"{p}: ") and where in str(e.value)


def test_every_range_is_finite_and_ordered() -> None:
    for key, r in RANGES.items():
        assert r.lo <= r.hi, key
        if r.integer:  # fits msgpack (int64 / uint64)
            assert -(2**63) <= r.lo and r.hi < 2**64, key
        elif key != "scalar_float":  # a float kernel argument, passed as is
            assert abs(r.hi) <= 1e7 and abs(r.lo) <= 1e7, key  # x 1e3 (ns) stays exact
        assert r.problem(r.hi) is None and r.problem(r.hi * 2 + 1) is not None, key


def test_reader_refuses_fifos_and_devices_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "f.toml")
    for p in (tmp_path / "f.toml", Path("/dev/zero"), tmp_path, tmp_path / "missing.toml"):
        with pytest.raises(ProfileError, match="no such profile file"):
            read_capped(p)


def test_a_bare_name_never_resolves_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    (tmp_path / "default").write_text("junk")
    (tmp_path / "mine").write_text("junk")
    assert resolve("default").name == "default.toml" and resolve("default").parent != tmp_path
    assert resolve("mine") == tmp_path / "cfg" / "hbtui" / "profiles" / "mine.toml"
    assert resolve("./mine") == Path("./mine")  # an explicit path stays one
