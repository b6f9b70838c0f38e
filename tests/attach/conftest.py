"""Fixtures for the interceptor tests: the fake driver, the test programs and the
interceptor built once per session with ``cc``; segments with a heart-beating "engine";
programs whose output lines are read as they come. Every wait has a deadline."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hbtui.attach import build, segment
from hbtui.attach import layout as L

HERE = Path(__file__).resolve().parent
CFLAGS = ["-O2", "-std=gnu11", "-pthread"]

if shutil.which(os.environ.get("CC", "cc")) is None:
    pytest.skip("no C compiler", allow_module_level=True)


@dataclass(frozen=True)
class Native:
    dir: Path
    fake: Path  # the fake driver, named libcuda.so.1
    prog: Path  # dlopen/dlsym/cuGetProcAddress program
    prog_link: Path  # the same, linked against libcuda.so.1
    so: Path  # the interceptor


def _cc(*args: str) -> None:
    cc = os.environ.get("CC", "cc").split()
    r = subprocess.run([*cc, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def native(tmp_path_factory: pytest.TempPathFactory) -> Native:
    d = tmp_path_factory.mktemp("attach")
    fake = d / "libcuda.so.1"
    # -Bsymbolic: the fake's cuGetProcAddress hands out its own functions, as the real
    # driver does, not the preloaded interceptor's exports of the same names
    _cc(*CFLAGS, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-Wl,-Bsymbolic", "-o",
        str(fake), str(HERE / "fake_cuda.c"))  # fmt: skip
    prog, prog_link = d / "prog", d / "prog_link"
    _cc(*CFLAGS, "-o", str(prog), str(HERE / "prog.c"), "-ldl")
    _cc(*CFLAGS, "-DLINKED", "-o", str(prog_link), str(HERE / "prog.c"), f"-L{d}",
        "-l:libcuda.so.1", f"-Wl,-rpath,{d}", "-ldl")  # fmt: skip
    so = build.build(cache=d / "cache")
    return Native(d, fake, prog, prog_link, so)


def prog_env(native: Native, shm: str | None = None, cls: str = "hp", **extra: str) -> dict:
    env = {**os.environ, "LD_PRELOAD": str(native.so), "HBTUI_REAL_LIBCUDA": str(native.fake),
           "LD_LIBRARY_PATH": str(native.dir), "HBTUI_CLASS": cls}  # fmt: skip
    env.pop("HBTUI_SHM", None)
    # a completion write per launch, unless a test asks for the default (coalesced) or
    # another period: most tests count the writes
    env["HBTUI_COMP_EVERY_US"] = "0"
    if shm:
        env["HBTUI_SHM"] = shm
    env.update(extra)
    return env


class Prog:
    """A running program; its stdout lines arrive in a queue (``expect``)."""

    def __init__(self, argv: list[str], env: dict) -> None:
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
        self.q: queue.Queue[str] = queue.Queue()
        self.lines: list[str] = []
        self.err: list[str] = []
        self._t = [threading.Thread(target=self._pump, args=(self.p.stdout, self.q), daemon=True),
                   threading.Thread(target=self._pump_err, daemon=True)]  # fmt: skip
        for t in self._t:
            t.start()

    @staticmethod
    def _pump(f, q) -> None:  # noqa: ANN001
        for line in f:
            q.put(line.rstrip("\n"))

    def _pump_err(self) -> None:
        for line in self.p.stderr:
            self.err.append(line.rstrip("\n"))

    def expect(self, line: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} within {timeout} s; got {self.lines[-5:]}")
            try:
                got = self.q.get(timeout=left)
            except queue.Empty:
                continue
            self.lines.append(got)
            if got == line:
                return

    def quiet(self, seconds: float) -> list[str]:
        """Lines that arrive within ``seconds`` (used to show that nothing moves)."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.q.get(timeout=left))
            except queue.Empty:
                break
        self.lines += out
        return out

    def finish(self, timeout: float = 20.0) -> int:
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
            raise
        for t in self._t:
            t.join(5)
        while not self.q.empty():
            self.lines.append(self.q.get())
        return rc


def run_prog(argv: list[str], env: dict, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


class Engine:
    """A stand-in engine on one segment: an Attachment plus a heartbeat thread."""

    def __init__(self, att: segment.Attachment, period: float = 0.02) -> None:
        self.att = att
        self.period = period
        self._stop = threading.Event()
        self._t: threading.Thread | None = None
        self.lock = threading.Lock()  # the Attachment's engine fields have one writer

    def beat(self) -> None:
        with self.lock:
            self.att.heartbeat()

    def start_beating(self) -> None:
        self._stop.clear()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def stop_beating(self) -> None:
        self._stop.set()
        if self._t:
            self._t.join(5)
            self._t = None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.beat()

    def grant(self, seq: int) -> None:
        with self.lock:
            self.att.grant(seq)

    def wait_pending(self, n: int = 1, timeout: float = 10.0) -> list[L.Pending]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.att.pending()
            if len(p) >= n:
                return p
            time.sleep(0.002)
        raise AssertionError(f"fewer than {n} launches pending after {timeout} s")


@pytest.fixture
def make_segment() -> Iterator:
    made: list[tuple[str, segment.Attachment]] = []

    def make(cls: int = L.CLASS_HP, **kw: object) -> segment.Attachment:
        name = segment.create_segment("test", cls, **kw)  # type: ignore[arg-type]
        att = segment.Attachment(name)
        made.append((name, att))
        return att

    yield make
    for name, att in made:
        att.close()
        segment.unlink_segment(name)


@pytest.fixture
def engine(make_segment) -> Iterator:  # noqa: ANN001
    """An LP segment in GATED mode with a beating engine."""
    engines: list[Engine] = []

    def make(cls: int = L.CLASS_LP, gated: bool = True, **kw: object) -> Engine:
        e = Engine(make_segment(cls, **kw))
        if gated:
            e.att.set_gated(True)
        e.start_beating()
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.stop_beating()
