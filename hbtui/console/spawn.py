"""The embedded engine: a child process the console starts, talks to over ipc, and stops.

The engine runs in its own process (never a thread of the console) so rendering never
competes with the scheduling loop for the GIL. Its sockets live in a private 0700
runtime directory, so no other user can connect; ``stop`` removes the directory, so
quitting leaves no process and no socket file behind. The engine's log is NOT in that
directory: it is kept at ``$XDG_STATE_HOME/hbtui/engine-<console pid>.log`` (shown in
the help screen and in the CLI's error), so what went wrong can still be read after quit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hbtui.console.link import Target
from hbtui.console.paths import log_dir

ENGINE_CMD = "import sys; from hbtui.engine.server import main; sys.exit(main(sys.argv[1:]))"


def private_runtime_dir() -> Path:
    """A fresh 0700 directory under $XDG_RUNTIME_DIR (else the system temp dir).

    ipc paths are limited to ~107 bytes (sun_path), so keep the name short.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base) or not os.access(base, os.W_OK):
        base = None
    d = Path(tempfile.mkdtemp(prefix="hbtui-", dir=base))
    os.chmod(d, 0o700)
    return d


class EmbeddedEngine:
    """``start`` runs ``hbtui.engine.server`` on ipc endpoints; ``stop`` ends and cleans it."""

    def __init__(
        self,
        profile: str = "default",
        backend: str = "auto",
        readonly: bool = False,
        runtime_dir: Path | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.profile = profile
        self.backend = backend
        self.readonly = readonly
        self.extra = extra or []
        self._own_dir = runtime_dir is None
        self.dir = runtime_dir or private_runtime_dir()
        self.target = Target(ctl=f"ipc://{self.dir}/ctl", pub=f"ipc://{self.dir}/pub")
        self.log_path = log_dir() / f"engine-{os.getpid()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-c",
            ENGINE_CMD,
            "--profile",
            self.profile,
            "--pub",
            self.target.pub,
            "--ctl",
            self.target.ctl,
            "--backend",
            self.backend,
        ]
        if self.readonly:
            cmd.append("--readonly")
        # If the console dies without stopping us (killed, terminal closed), the engine
        # notices its parent is gone, stops and removes the private socket directory.
        cmd += ["--exit-with-parent", str(os.getpid())]
        if self._own_dir:
            cmd += ["--owned-dir", str(self.dir)]
        return cmd + self.extra

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # ctrl+c in the terminal goes to the console only
            )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, wait, SIGKILL if it will not go; then remove the runtime directory."""
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
            except ProcessLookupError:
                pass
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
