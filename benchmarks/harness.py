"""Shared pieces of the benchmark scripts (public APIs only).

- ``provenance()``: what a result needs for a reader to trust and repeat it: the commit
  (and whether the tree had uncommitted changes), the machine, the UTC date and the exact
  command line.
- ``write_result(path, result)``: write a result JSON with that provenance on top.
- ``HeadlessEngine``: start ``python -m hbtui engine`` on private sockets, wait until it
  schedules, stop it with SIGTERM and read its ``--summary-json`` document.

The scripts import this module by its path (``python benchmarks/NAME.py`` puts
``benchmarks/`` first on ``sys.path``); importing it also puts the repository root on
``sys.path``, so a checkout runs without installing hbtui.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def git_commit() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout at ROOT."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": sha, "dirty": None if status is None else bool(status)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def gpu_names() -> list[str]:
    """GPU names as nvidia-smi prints them (empty without nvidia-smi or a GPU)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        r = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()] if r.returncode == 0 else []


def machine(**extra: Any) -> dict[str, Any]:
    """The host: CPU model and count, Python, OS, GPUs (name, driver) and ``extra``."""
    return {
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpus": gpu_names(),
        **extra,
    }


def command(argv: list[str] | None = None) -> str:
    """The command line that produced the result, relative to the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else None
    if script is not None and script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return shlex.join(["python", *argv])


def provenance(argv: list[str] | None = None, **machine_extra: Any) -> dict[str, Any]:
    g = git_commit()
    return {
        "commit": g["commit"],
        "commit_dirty": g["dirty"],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(**machine_extra),
        "command": command(argv),
    }


def write_result(path: str | os.PathLike[str], result: dict[str, Any], **extra: Any) -> None:
    """Write ``result`` as JSON with ``provenance()`` first (its keys win over the result's);
    ``extra`` goes into its ``machine`` (e.g. a library version)."""
    prov = provenance(**extra)
    doc = {**prov, **result, **prov}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HeadlessEngine:
    """``python -m hbtui engine`` in a subprocess, on ipc sockets in a private directory
    (``transport="ipc"``) or loopback TCP (``"tcp"``). The engine exits on its own if this
    process dies (``--exit-with-parent``)."""

    def __init__(
        self,
        profile: str,
        backend: str = "sim",
        *,
        calibrate: float = 1.0,
        transport: str = "ipc",
        extra: list[str] | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hbbench-"))
        if transport == "ipc":
            self.pub, self.ctl = f"ipc://{self.dir}/pub", f"ipc://{self.dir}/ctl"
        elif transport == "tcp":
            self.pub = f"tcp://127.0.0.1:{free_port()}"
            self.ctl = f"tcp://127.0.0.1:{free_port()}"
        else:
            raise ValueError(f"transport must be ipc or tcp, not {transport!r}")
        self.summary_path = self.dir / "summary.json"
        self.cmd = [sys.executable, "-m", "hbtui", "engine", "--profile", profile,
                    "--backend", backend, "--pub", self.pub, "--ctl", self.ctl,
                    "--calibrate", str(calibrate), "--summary-json", str(self.summary_path),
                    "--exit-with-parent", str(os.getpid()), *(extra or [])]  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""

    def start(self) -> HeadlessEngine:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        return self

    def wait_running(self, timeout: float = 180.0) -> None:
        """Until the engine reports phase ``running`` (after calibration and, on a GPU, the
        first NVRTC build); SystemExit if it dies or takes longer than ``timeout``."""
        from hbtui.engine.client import ClientError, EngineClient

        assert self.proc is not None, "start() first"
        c = EngineClient(self.ctl, timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if c.ping()["phase"] == "running":
                        return
                except ClientError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    sys.stderr.write(self.stderr)
                    raise SystemExit(f"engine not running: rc {self.proc.returncode}")
                time.sleep(0.05)
        finally:
            c.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait, keep stderr; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            err = self.proc.communicate(timeout=timeout)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = self.proc.communicate()[1]
        self.stderr += err or ""
        return self.proc.returncode

    def summary(self) -> dict[str, Any] | None:
        """The engine's final summary (``--summary-json``), once it has stopped."""
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text())

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> HeadlessEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
