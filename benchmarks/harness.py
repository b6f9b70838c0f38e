"""Shared pieces of the benchmark scripts (public APIs only).

- ``provenance()``: what a result needs for a reader to trust and repeat it: the commit
  (and whether the tree had uncommitted changes), the machine, the UTC date and the exact
  command line.
- ``write_result(path, result)``: write a result JSON with that provenance on top.
- ``HeadlessEngine``: start ``python -m hbtui engine`` on private sockets, wait until it
  schedules, stop it with SIGTERM and read its ``--summary-json`` document.
- ``Proc`` (with ``log``, ``StepError``, ``kill_all``): a child process in its own
  session, its output to a log file and a tail in memory, waited for with deadlines and
  killed with its whole process group (real_programs.py, hp_overhead_ab.py).

The scripts import this module by its path (``python benchmarks/NAME.py`` puts
``benchmarks/`` first on ``sys.path``); importing it also puts the repository root on
``sys.path``, so a checkout runs without installing hbtui.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def git_commit() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout at ROOT, or the
    caller's ``HBTUI_COMMIT`` (a copied tree, as on the lent GPU machines, keeps the git
    metadata of another commit; its dirty flag is then unknown)."""
    if os.environ.get("HBTUI_COMMIT"):
        return {"commit": os.environ["HBTUI_COMMIT"], "dirty": None}

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
        self.hp_holder: subprocess.Popen[bytes] | None = None
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

    def hold_hp(self, timeout: float = 30.0) -> None:
        """Attach an idle HP program (``hbtui run --hp -- sleep``, no CUDA): with no HP
        attached the engine lets LP run ungated and whole, so a check of the slicing path
        needs one. Stopped with the engine."""
        from hbtui.engine.client import EngineClient

        self.hp_holder = subprocess.Popen(
            [sys.executable, "-m", "hbtui", "run", "--hp", "--task", "idle-hp", "--engine",
             self.ctl, "--", "sleep", "86400"], cwd=ROOT)  # fmt: skip
        c = EngineClient(self.ctl, timeout=2.0)
        deadline = time.monotonic() + timeout
        try:
            while not any(t["name"] == "idle-hp" for t in c.call("get_state", {})["tasks"]):
                if time.monotonic() > deadline or self.hp_holder.poll() is not None:
                    raise SystemExit("the idle HP program did not attach")
                time.sleep(0.05)
        finally:
            c.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait, keep stderr; returns the exit code."""
        if self.hp_holder is not None and self.hp_holder.poll() is None:
            self.hp_holder.terminate()
            self.hp_holder.wait(30)
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


# -- child processes -----------------------------------------------------------------------
def file_name(name: str) -> str:
    """``name`` with only letters, digits and ``._-`` (a scenario's ``+`` kept its files
    from coming back from the lent GPU machine)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class StepError(Exception):
    """A step failed; ``tail`` is the end of the process log that explains it."""

    def __init__(self, msg: str, tail: str = "") -> None:
        super().__init__(msg)
        self.tail = tail


LIVE: list[Proc] = []


class Proc:
    """A child process in its own session, stdout+stderr to a log file (and a tail kept in
    memory); ``ready`` is set when it prints a line that is exactly "ready"; every other
    line goes to ``on_line`` (subclasses parse their own). ``stdin_pipe``: its stdin is a
    pipe (``self.p.stdin``), else /dev/null."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path,
                 stdin_pipe: bool = False) -> None:  # fmt: skip
        self.name = name
        self.cmd = cmd
        self.log_path = logdir / file_name(f"{name}.log")
        self.tail: deque[str] = deque(maxlen=60)
        self.ready = threading.Event()
        self.t_start = time.monotonic()
        self.t_ready: float | None = None
        log(f"start {name}: {shlex.join(cmd)}")
        self.logf = open(self.log_path, "w", buffering=1)  # noqa: SIM115 - closed by the reader
        self.logf.write(f"$ {shlex.join(cmd)}\n")
        try:
            self.p = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            self.logf.close()
            raise StepError(f"{name}: cannot start {cmd[0]}: {e}") from None
        LIVE.append(self)
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"read-{name}")
        self.reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        try:
            for line in self.p.stdout:
                self.logf.write(line)
                self.tail.append(line.rstrip("\n"))
                s = line.strip()
                if s == "ready" and not self.ready.is_set():
                    self.t_ready = time.monotonic()
                    self.ready.set()
                elif s:
                    self.on_line(s)
        finally:
            self.logf.close()

    def on_line(self, s: str) -> None:
        """A line of its output other than "ready" (stripped, not empty)."""

    def tail_text(self, n: int = 25) -> str:
        return "\n".join(list(self.tail)[-n:])

    def alive(self) -> bool:
        return self.p.poll() is None

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start to "ready"; StepError if it exits or times out first."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.p.poll() is not None:
                self.reader.join(2)
                raise StepError(f"{self.name} exited with {self.p.returncode} before 'ready'",
                                self.tail_text())  # fmt: skip
            if time.monotonic() > deadline:
                self.kill()
                raise StepError(f"{self.name}: not ready after {timeout:.0f} s (killed)",
                                self.tail_text())  # fmt: skip
        assert self.t_ready is not None
        return self.t_ready - self.t_start

    def wait(self, timeout: float) -> int:
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise StepError(f"{self.name}: still running after {timeout:.0f} s (killed)",
                            self.tail_text()) from None  # fmt: skip
        self.reader.join(5)
        self._forget()
        return rc

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` to the process itself (``hbtui run`` forwards it to its program), then
        SIGKILL to its whole process group after ``timeout``."""
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: no exit {timeout:.0f} s after signal {sig}: SIGKILL")
                self.kill(grace=0)
        self.reader.join(5)
        self._forget()
        return self.p.returncode

    def kill(self, grace: float = 5.0) -> None:
        """SIGTERM first (``hbtui run`` then stops its program and removes its segment),
        SIGKILL to the whole process group after ``grace`` s."""
        if self.p.poll() is None and grace > 0:
            with contextlib.suppress(ProcessLookupError):
                self.p.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.p.pid, signal.SIGKILL)  # its own session: pgid == pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(10)
        self._forget()

    def _forget(self) -> None:
        if self in LIVE and self.p.poll() is not None:
            LIVE.remove(self)


def kill_all() -> None:
    for p in list(LIVE):
        log(f"cleanup: killing {p.name} (pid {p.p.pid})")
        p.kill()


class Mps:
    """A private MPS control daemon (own pipe and log dirs); ``env`` joins it."""

    def __init__(self, tmp: Path) -> None:
        exe = os.environ.get("HBTUI_MPS_CONTROL") or shutil.which("nvidia-cuda-mps-control")
        if not exe:
            raise StepError("mps: nvidia-cuda-mps-control not found on PATH")
        if not os.access(exe, os.X_OK):
            raise StepError(f"mps: {exe} (HBTUI_MPS_CONTROL) is not an executable file")
        self.exe = exe
        self.pipe = Path(tempfile.mkdtemp(prefix="mps-pipe-", dir=tmp))
        self.logdir = Path(tempfile.mkdtemp(prefix="mps-log-", dir=tmp))
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe),
                    "CUDA_MPS_LOG_DIRECTORY": str(self.logdir)}  # fmt: skip
        self.started = False

    def _ctl(self, text: str | None, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        args = [self.exe] if text is not None else [self.exe, "-d"]
        return subprocess.run(args, input=text, env={**os.environ, **self.env}, text=True,
                              capture_output=True, timeout=timeout)  # fmt: skip

    def start(self) -> None:
        r = self._ctl(None)
        if r.returncode != 0:
            raise StepError(f"mps: `{self.exe} -d` exited {r.returncode}",
                            (r.stdout + r.stderr)[-2000:])  # fmt: skip
        self.started = True
        deadline = time.monotonic() + 15
        while True:  # the daemon answers its control pipe once it is up
            r = self._ctl("get_server_list\n", 10)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise StepError("mps: the control daemon does not answer get_server_list",
                                (r.stdout + r.stderr + self.log_tail())[-2000:])  # fmt: skip
            time.sleep(0.2)
        log(f"mps: control daemon up (pipe {self.pipe})")

    def stop(self) -> str | None:
        """Quit the daemon (its servers quit once their clients are gone); the problem, if
        any, as a line."""
        if not self.started:
            return None
        problem = None
        try:
            r = self._ctl("quit\n", 30)
            if r.returncode != 0:
                problem = f"mps quit exited {r.returncode}: {(r.stdout + r.stderr)[-300:]}"
        except subprocess.TimeoutExpired:
            problem = "mps quit timed out after 30 s"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self._ctl("get_server_list\n", 5).returncode != 0:
                    break  # nobody answers any more: the daemon is gone
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.3)
        else:
            problem = (problem or "") + " mps daemon still answering 20 s after quit"
        self.started = False
        log("mps: control daemon stopped" + (f" ({problem})" if problem else ""))
        return problem

    def log_tail(self) -> str:
        out = []
        for f in sorted(self.logdir.glob("*.log")):
            with contextlib.suppress(OSError):
                out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-1500:])
        return "\n".join(out)
