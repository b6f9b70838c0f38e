"""Small robustness fixes: closed-loop arrivals in O(1), atomic saves that clean up after
a killed writer, and key generation that never re-modes an existing directory."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import replace
from pathlib import Path

from test_workload import HP_TASK

from hbtui.engine.atomic import STALE_TMP_S, write_atomic
from hbtui.engine.keys import generate
from hbtui.engine.model import Arrival
from hbtui.engine.workload import Arrivals


def test_closed_loop_with_many_outstanding_needs_no_memory_per_request() -> None:
    task = replace(HP_TASK, arrival=Arrival("closed", outstanding=10**9, think_us=5.0))
    a = Arrivals(task, seed=1, start_ns=7)  # a list of 1e9 start times would need 8 GB
    assert [a.next() for _ in range(3)] == [7, 7, 7]
    assert a.on_complete(100) == 5_100


def test_closed_loop_initial_requests_then_releases() -> None:
    task = replace(HP_TASK, arrival=Arrival("closed", outstanding=2, think_us=1.0))
    a = Arrivals(task, seed=1, start_ns=5)
    assert [a.next(), a.next(), a.next()] == [5, 5, None]


def test_write_atomic_removes_stale_temps_of_a_killed_writer(tmp_path: Path) -> None:
    target = tmp_path / "p.toml"
    stale = tmp_path / ".p.toml.abc123.tmp"
    fresh = tmp_path / ".p.toml.def456.tmp"  # maybe a writer in progress: left alone
    other = tmp_path / ".q.toml.abc123.tmp"  # another file's: left alone
    for f in (stale, fresh, other):
        f.write_text("half")
    old = time.time() - STALE_TMP_S - 5
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_atomic(target, "x = 1\n")
    assert target.read_text() == "x = 1\n"
    assert not stale.exists() and fresh.exists() and other.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".p.toml.") and p != fresh]


def test_keys_generate_keeps_an_existing_directory_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    generate(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "server.key_secret").stat().st_mode) == 0o600
    new = tmp_path / "a" / "keys"
    generate(new)
    assert stat.S_IMODE(new.stat().st_mode) == 0o700


def test_mps_is_seen_only_where_a_daemon_answers(tmp_path) -> None:
    """`hbtui run` says whether MPS serves the program: a control socket left behind by
    a daemon that died is not MPS (the engine would charge no context switch)."""
    import socket

    from hbtui.attach.control import mps_serving

    env = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    assert not mps_serving(env)  # no socket
    path = str(tmp_path / "control")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a dead daemon leaves
    assert not mps_serving(env)
    stale.close()
    (tmp_path / "control").unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(path)
        live.listen(1)
        assert mps_serving(env)
