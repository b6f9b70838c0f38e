"""``hbtui run``: exit codes and signals like a shell, the segment removed however the
program ends, a program that never touches CUDA runs as without hbtui, no engine -> one
warning and the program still runs, and attach/detach against a stand-in engine (a
ZeroMQ ROUTER that maps the segment, gates and grants)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from conftest import Native, Prog

from hbtui.attach import layout as L
from hbtui.attach import segment
from hbtui.attach.launcher import child_env

RUN = [sys.executable, "-m", "hbtui", "run"]


@pytest.fixture
def env(native: Native) -> dict:
    e = {**os.environ, "XDG_CACHE_HOME": str(native.dir / "xdg"),
         "HBTUI_REAL_LIBCUDA": str(native.fake), "LD_LIBRARY_PATH": str(native.dir)}  # fmt: skip
    for k in ("HBTUI_SHM", "HBTUI_CLASS", "LD_PRELOAD"):
        e.pop(k, None)
    return e


def _mine() -> set[str]:
    pre = f"hbtui-{os.getuid()}-"
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(pre)}


def run(env: dict, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_program_without_cuda_runs_as_without_hbtui(env: dict) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(7)"
    bare = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    before = _mine()
    r = run(env, "--hp", "--task", "plain", "--no-engine", "--", sys.executable, "-c", code)
    assert (r.returncode, r.stdout, r.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    assert r.returncode == 7 and _mine() == before


def test_the_program_sees_its_attachment(env: dict) -> None:
    r = run(env, "--lp", "--task", "t1", "--no-engine", "--", "sh", "-c",
            'echo "$HBTUI_CLASS $HBTUI_TASK $HBTUI_SHM"; case "$LD_PRELOAD" in '
            '*libhbtui-intercept-*) echo preloaded;; esac')  # fmt: skip
    cls, task, shm = r.stdout.splitlines()[0].split()
    assert (r.returncode, cls, task, r.stdout.splitlines()[1]) == (0, "lp", "t1", "preloaded")
    assert shm.startswith(f"/hbtui-{os.getuid()}-")


@pytest.mark.parametrize(("script", "code"), [
    ("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 137),
])  # fmt: skip
def test_exit_status_like_a_shell(env: dict, script: str, code: int) -> None:
    r = run(env, "--hp", "--task", "t", "--no-engine", "--", "sh", "-c", script)
    assert r.returncode == code


def test_command_not_found(env: dict) -> None:
    r = run(env, "--hp", "--task", "t", "--no-engine", "--", "no-such-command-hbtui")
    assert r.returncode == 127 and "command not found" in r.stderr


def test_usage_errors(env: dict) -> None:
    assert run(env, "--task", "t", "--", "true").returncode == 2  # neither --hp nor --lp
    assert run(env, "--hp", "--lp", "--task", "t", "--", "true").returncode == 2
    assert run(env, "--hp", "--task", "t").returncode == 2  # no command
    for flags, what in [(["--engine", "gpu1:5556"], "--engine: cannot connect to 'gpu1:5556'"),
                        (["--engine", "tcp://*:5556"], "--engine"),
                        (["--attach-timeout", "0"], "--attach-timeout")]:  # fmt: skip
        r = run(env, "--lp", "--task", "t", *flags, "--", "true")
        assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_no_compiler_is_a_clear_error(env: dict, tmp_path: Path) -> None:
    bad = {**env, "CC": "/nonexistent/cc", "XDG_CACHE_HOME": str(tmp_path)}
    r = run(bad, "--hp", "--task", "t", "--no-engine", "--", "true")
    assert r.returncode == 2 and "cannot build the interceptor" in r.stderr
    assert "no C compiler" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_are_forwarded(env: dict, sig: signal.Signals) -> None:
    code = (
        "import signal, sys, time\n"
        "def h(s, f):\n"
        "    print('got', s, flush=True); sys.exit(5)\n"
        f"signal.signal({int(sig)}, h)\n"
        "print('ready', flush=True)\n"
        "time.sleep(20)\n"
    )
    p = Prog([*RUN, "--lp", "--task", "t", "--no-engine", "--", sys.executable, "-c", code], env)
    p.expect("ready", timeout=20)
    p.p.send_signal(sig)
    p.expect(f"got {int(sig)}", timeout=10)
    assert p.finish() == 5


def test_segment_removed_after_kill_9_of_the_program(env: dict) -> None:
    p = Prog([*RUN, "--lp", "--task", "t", "--no-engine", "--", "sh", "-c",
              'echo "$$ $HBTUI_SHM"; exec sleep 20'], env)  # fmt: skip
    deadline = time.monotonic() + 20
    while not p.q.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    pid, shm = p.q.get(timeout=1).split()
    assert Path("/dev/shm" + shm).exists()
    os.kill(int(pid), signal.SIGKILL)
    assert p.finish() == 137
    assert not Path("/dev/shm" + shm).exists()


def test_stale_segments_of_dead_launchers_are_swept(env: dict) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = segment.create_segment("old", L.CLASS_HP, name=segment.segment_name(dead.pid))
    assert run(env, "--hp", "--task", "t", "--no-engine", "--", "true").returncode == 0
    assert not Path("/dev/shm" + name).exists()


def test_no_engine_answering_warns_once_and_runs(env: dict, native: Native, tmp_path) -> None:
    r = run(env, "--lp", "--task", "t", "--engine", f"ipc://{tmp_path}/nobody",
            "--attach-timeout", "0.2", "--", str(native.prog), "dlsym", "launch:3")  # fmt: skip
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "done"
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "no engine answers" in lines[0] and "ungated" in lines[0]


class StandInEngine:
    """Answers ``attach``/``detach`` on a ROUTER; maps the segment, gates, beats, grants."""

    def __init__(self, endpoint: str, unknown_op: bool = False) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind(endpoint)
        self.unknown_op = unknown_op
        self.requests: list[tuple[str, dict]] = []
        self.granted_launches = 0
        self.att: segment.Attachment | None = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _reply(self, ident: bytes, rid: str, ok: bool, body: dict) -> None:
        rep = {"v": 1, "id": rid, "ok": ok}
        rep["result" if ok else "error"] = body
        self.sock.send_multipart([ident, msgpack.packb(rep)])

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(5):
                ident, frame = self.sock.recv_multipart()
                req = msgpack.unpackb(frame)
                op, args = req["op"], req["args"]
                self.requests.append((op, args))
                if self.unknown_op:
                    err = {"code": "unknown_op", "message": f"unknown op {op!r}"}
                    self._reply(ident, req["id"], False, err)
                elif op == "attach":
                    self.att = segment.Attachment(args["shm"])
                    self.att.set_gated(args["class"] == "lp")
                    self._reply(ident, req["id"], True, {"gated": args["class"] == "lp"})
                else:
                    self._reply(ident, req["id"], True, {})
                    if self.att is not None:
                        self.att.close()
                        self.att = None
            if self.att is not None:  # the scheduling loop: beat, let the held ones go
                self.att.heartbeat()
                if self.att.pending():
                    self.granted_launches += 1
                    self.att.grant(self.att.pending()[0].seq)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        if self.att is not None:
            self.att.close()
        self.sock.close(0)
        self.ctx.term()


def test_attach_gate_and_detach_with_an_engine(env: dict, native: Native, tmp_path) -> None:
    eng = StandInEngine(f"ipc://{tmp_path}/ctl")
    try:
        r = run(env, "--lp", "--task", "train", "--slo", "12.5", "--engine",
                f"ipc://{tmp_path}/ctl", "--", str(native.prog), "dlsym", "launch:4")  # fmt: skip
    finally:
        eng.close()
    assert r.returncode == 0 and r.stderr == "", r.stderr
    (op1, a), (op2, d) = eng.requests
    assert (op1, op2) == ("attach", "detach")
    assert a["task"] == "train" and a["class"] == "lp" and a["slo_ms"] == 12.5
    assert a["layout"] == L.VERSION and a["cmd"][-1] == "launch:4" and a["pid"] > 0
    assert d == {"shm": a["shm"], "exit_code": 0}
    assert eng.granted_launches == 4  # every launch waited for the engine's grant
    assert not Path("/dev/shm" + a["shm"]).exists()


def test_engine_without_attach_support(env: dict, native: Native, tmp_path) -> None:
    eng = StandInEngine(f"ipc://{tmp_path}/ctl", unknown_op=True)
    try:
        r = run(env, "--lp", "--task", "t", "--engine", f"ipc://{tmp_path}/ctl", "--",
                str(native.prog), "dlsym", "launch:2")  # fmt: skip
    finally:
        eng.close()
    assert r.returncode == 0
    assert "does not support attach" in r.stderr and len(r.stderr.splitlines()) == 1
    assert [op for op, _ in eng.requests] == ["attach"]  # no detach after a failed attach


def test_hbtui_run_asks_mps_for_below_normal_priority_for_lp_only() -> None:
    lp = child_env({}, "/x/libhbtui.so", "/hbtui-1-2-ab", "lp", "train")
    hp = child_env({}, "/x/libhbtui.so", "/hbtui-1-2-ab", "hp", "svc")
    own = child_env({"CUDA_MPS_CLIENT_PRIORITY": "0"}, "/x/libhbtui.so", "/hbtui-1-2-ab",
                    "lp", "train")  # fmt: skip
    assert lp["CUDA_MPS_CLIENT_PRIORITY"] == "1"
    assert "CUDA_MPS_CLIENT_PRIORITY" not in hp
    assert own["CUDA_MPS_CLIENT_PRIORITY"] == "0"  # the operator's choice stands


def test_sm_percent_confines_an_lp_program_under_mps(env: dict, tmp_path: Path) -> None:
    """--sm-percent N: the LP program's MPS client limit (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE),
    the operator's flag over an inherited variable; HP or out of range is a usage error;
    without an MPS daemon, one warning that it has no effect."""
    lp = child_env({"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "90"}, "/x/libhbtui.so",
                   "/hbtui-1-2-ab", "lp", "train", sm_percent=60)  # fmt: skip
    assert lp["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "60"
    kept = child_env({"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "90"}, "/x/libhbtui.so",
                     "/hbtui-1-2-ab", "lp", "train")  # fmt: skip
    assert kept["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "90"
    for bad in (["--hp", "--sm-percent", "50"], ["--lp", "--sm-percent", "0"],
                ["--lp", "--sm-percent", "101"], ["--lp", "--sm-percent", "x"]):  # fmt: skip
        r = run(env, *bad, "--task", "t", "--no-engine", "--", "true")
        assert r.returncode == 2 and "--sm-percent" in r.stderr, bad
    no_mps = {**env, "CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    r = run(no_mps, "--lp", "--sm-percent", "50", "--task", "t", "--no-engine", "--",
            "sh", "-c", "echo $CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "50"
    assert "applies under MPS only" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sm_percent_reaches_the_engine_when_mps_serves(env: dict, native: Native, tmp_path) -> None:
    """Under MPS (a control socket that answers) the attach carries the LP's SM share, from
    --sm-percent or else the program's own CUDA_MPS_ACTIVE_THREAD_PERCENTAGE."""
    import socket

    pipe = tmp_path / "mps"
    pipe.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon:
        daemon.bind(str(pipe / "control"))
        daemon.listen(8)
        shares = []
        for extra, var in ((["--sm-percent", "30"], "90"), ([], "70"), ([], "lots"), ([], "²")):
            eng = StandInEngine(f"ipc://{tmp_path}/ctl")
            e = {**env, "CUDA_MPS_PIPE_DIRECTORY": str(pipe),
                 "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": var}  # fmt: skip
            try:
                r = run(e, "--lp", *extra, "--task", "train", "--engine",
                        f"ipc://{tmp_path}/ctl", "--", "true")  # fmt: skip
            finally:
                eng.close()
            assert r.returncode == 0 and r.stderr == "", r.stderr
            (op, a), _ = eng.requests
            assert op == "attach" and a["mps"] is True
            shares.append(a.get("sm_percent"))
    assert shares == [30, 70, None, None]
