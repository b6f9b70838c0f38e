"""Real engine processes for the integration, console and GPU tests: start, wait, stop.

Every wait has a deadline so a broken engine fails a test and never hangs CI.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hbtui.engine.client import ClientError, EngineClient

ENGINE = [sys.executable, "-m", "hbtui", "engine"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
START_S = 20.0  # engine start + calibration on a slow CI core


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(
    *args: str,
    cwd: Path | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """``hbtui engine ARGS``; stderr is piped (read it with ``stop``) or appended to ``log``;
    ``env`` is added to the environment (e.g. a private ``XDG_CONFIG_HOME``)."""
    err = open(log, "a") if log is not None else subprocess.PIPE  # noqa: SIM115
    return subprocess.Popen(
        [*ENGINE, *args],
        stderr=err,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**ENV, **(env or {})},
        cwd=cwd,
    )


def wait_running(ctl: str, timeout: float = 15.0, **kw: object) -> EngineClient:
    """A client of the engine at ``ctl`` once it reports phase ``running``."""
    c = EngineClient(ctl, timeout=0.5, **kw)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if c.ping()["phase"] == "running":
                c.timeout = 3.0
                return c
        except ClientError:
            pass
        time.sleep(0.05)
    c.close()
    raise AssertionError(f"engine at {ctl} did not reach phase running in {timeout}s")


def stop(
    proc: subprocess.Popen[str], timeout: float = 10.0, sig: int = signal.SIGTERM
) -> tuple[int, str]:
    """Signal the engine, wait for it and return (exit code, stderr when piped)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"engine did not stop on {signal.Signals(sig).name}:\n{err}") from None
    return proc.returncode, err or ""
