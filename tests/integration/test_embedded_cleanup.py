"""An embedded engine outlives no console: killed parent → engine stops, dir removed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PARENT = r"""
import os, subprocess, sys, time
from hbtui.console.spawn import EmbeddedEngine
eng = EmbeddedEngine("default", "sim", runtime_dir=None, extra=["--calibrate", "0"])
eng.start()
print(eng.proc.pid, eng.dir, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_engine_stops_and_cleans_up_when_its_console_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline().split()
        engine_pid, run_dir = int(line[0]), Path(line[1])
        deadline = time.monotonic() + 20
        while not (run_dir / "ctl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_dir / "ctl").exists(), "engine did not bind its control socket"
        assert _alive(engine_pid)
        parent.send_signal(signal.SIGKILL)  # no chance to stop the engine itself
        parent.wait(5)
        deadline = time.monotonic() + 10
        while _alive(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(engine_pid), "engine kept running after its console died"
        deadline = time.monotonic() + 5
        while run_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not run_dir.exists(), "private socket directory left behind"
    finally:
        if parent.poll() is None:
            parent.kill()
