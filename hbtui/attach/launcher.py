"""``hbtui run (--hp | --lp) --task NAME [--slo MS] [--engine ENDPOINT] -- CMD [ARGS...]``

Runs CMD under the interceptor: creates the program's segment, attaches it to the
engine (``hbtui.attach.control``), starts CMD with ``LD_PRELOAD`` and the ``HBTUI_*``
variables, forwards SIGINT/SIGTERM/SIGHUP to it, and returns its exit status (128+N when
signal N killed it, like a shell). The segment is removed however CMD ends (kill -9
included); segments left by a launcher that was itself killed -9 are swept at the next
start. With no engine answering, CMD still runs: observed, ungated, one warning line.

Signals: the launcher blocks them and takes them with ``sigtimedwait`` (so none is lost
between start-up steps), and CMD starts with an empty mask and default dispositions. A
signal the kernel sent to the whole foreground process group (Ctrl-C, terminal hang-up:
``si_code == SI_KERNEL``) already reached CMD and is not sent twice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys

from hbtui.attach import layout, modcache
from hbtui.attach.build import BuildError, build
from hbtui.attach.control import AttachInfo, EngineLink, NoEngine, ZmqEngineLink, mps_serving
from hbtui.attach.segment import SegmentError, create_segment, sweep_stale, unlink_segment

FORWARD = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SI_KERNEL = 0x80
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"  # hbtui.engine.protocol.DEFAULT_CTL


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hbtui run",
        description="Run an unmodified CUDA program under an hbtui engine.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  hbtui run --hp --task svc --slo 25 -- python serve.py
  hbtui run --lp --task train -- python train.py

HP requests come from markers when the program sends any: `with hbtui.request():`,
hbtui_request_begin()/hbtui_request_end() (C), or NVTX ranges (top-level ones; with
HBTUI_NVTX_RANGE=NAME only those named NAME); otherwise from bursts (--idle-ms).

environment:
  HBTUI_GRACE_MS       LP runs ungated once the engine's heartbeat is older (2000)
  HBTUI_COMP_EVERY_US  HP: at most one completion write per stream per N us (100; 0: each)

details: docs/attach.md""",
    )
    cls = p.add_mutually_exclusive_group(required=True)
    cls.add_argument("--hp", action="store_true", help="latency-critical: observed, never held")
    cls.add_argument("--lp", action="store_true", help="best effort: launches wait for grants")
    p.add_argument("--task", required=True, help="task name shown by the engine")
    p.add_argument("--slo", type=float, metavar="MS", help="latency SLO in ms (HP)")
    p.add_argument("--idle-ms", type=float, metavar="MS",
                   help="HP without request markers: a request ends when the program's GPU "
                        "work is done and no launch came for MS (engine default 1)")  # fmt: skip
    p.add_argument("--sm-percent", type=int, metavar="N",
                   help="LP under MPS: run on at most N %% of the GPU's SMs "
                        "(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), leaving the rest free for the "
                        "HP's kernels; no effect without MPS")  # fmt: skip
    p.add_argument("--engine", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                   help=f"engine control endpoint (default {DEFAULT_ENDPOINT})")  # fmt: skip
    p.add_argument("--attach-timeout", type=float, default=1.0, metavar="S",
                   help="how long to wait for the engine's attach reply (default 1 s)")  # fmt: skip
    p.add_argument("--no-engine", action="store_true",
                   help="do not contact an engine: observe only, nothing held")  # fmt: skip
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    return p


def _warn(msg: str) -> None:
    print(f"hbtui run: {msg}", file=sys.stderr, flush=True)


def child_env(
    base: dict[str, str],
    so: str,
    shm: str,
    cls: str,
    task: str,
    module_dir: str | None = None,
    sm_percent: int | None = None,
) -> dict[str, str]:
    env = dict(base)
    pre = env.get("LD_PRELOAD", "").strip()
    env["LD_PRELOAD"] = f"{so} {pre}" if pre else so
    env["HBTUI_SHM"] = shm
    env["HBTUI_CLASS"] = cls
    env["HBTUI_TASK"] = task
    if cls == "hp" and not env.get("NVTX_INJECTION64_PATH"):  # NVTX ranges -> requests
        env["NVTX_INJECTION64_PATH"] = so  # (a profiler already named there keeps its place)
    if cls == "lp":
        # under MPS, kernels of both programs share the SMs; BELOW_NORMAL (1) tells the
        # MPS server to schedule the HP's pending blocks first (no effect without MPS)
        env.setdefault("CUDA_MPS_CLIENT_PRIORITY", "1")
        if sm_percent is not None:  # (the operator's --sm-percent wins over the variable)
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(sm_percent)
    if cls == "lp" and module_dir:  # the interceptor saves the PTX images it sees there
        env[modcache.ENV] = module_dir
        # CuPy compiles RawKernels to cubins (no PTX to slice) unless told otherwise; with
        # PTX the driver JITs them once (cached) and the slicer gets their text
        env.setdefault("CUPY_COMPILE_WITH_PTX", "1")
    elif cls == "lp":
        env.pop(modcache.ENV, None)
    return env


def _sm_share(base: dict[str, str], sm_percent: int | None) -> int | None:
    """The LP's MPS thread percentage: --sm-percent, else the program's own variable when it
    is a whole number in 1..100 (None: all SMs)."""
    if sm_percent is not None:
        return sm_percent
    v = base.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "").strip()
    return int(v) if v.isascii() and v.isdigit() and 1 <= int(v) <= 100 else None


def _module_dir(base: dict[str, str]) -> str | None:
    """LP: the PTX image cache (made 0700), or None when it cannot be used."""
    d = modcache.module_dir(base)
    if not d.is_absolute() or not modcache.ensure_module_dir(d):
        _warn(f"warning: cannot use {d} for PTX images; kernels will not be sliced")
        return None
    return str(d)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _spawn(cmd: list[str], env: dict[str, str]) -> int:
    sigdef = {*FORWARD, signal.SIGCHLD, signal.SIGPIPE, signal.SIGQUIT}
    if hasattr(signal, "SIGXFSZ"):
        sigdef.add(signal.SIGXFSZ)
    exe = cmd[0] if "/" in cmd[0] else (shutil.which(cmd[0], path=env.get("PATH")) or cmd[0])
    return os.posix_spawn(exe, cmd, env, setsigmask=(), setsigdef=tuple(sigdef))


def supervise(pid: int) -> int:
    """Wait for ``pid`` (signals blocked by the caller), forwarding FORWARD signals."""
    waitset = {*FORWARD, signal.SIGCHLD}
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return exit_code(status)
        info = signal.sigtimedwait(waitset, 0.25)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_code == SI_KERNEL:
            continue  # sent to the whole foreground group: the child has it too
        try:
            os.kill(pid, info.si_signo)
        except ProcessLookupError:
            pass


def run(
    cmd: list[str],
    *,
    cls: str,
    task: str,
    slo_ms: float | None = None,
    idle_ms: float | None = None,
    link: EngineLink | None = None,
    env: dict[str, str] | None = None,
    sm_percent: int | None = None,
) -> int:
    """Run ``cmd`` attached; returns its exit code. ``link`` defaults to no engine."""
    link = link or NoEngine()
    base = dict(os.environ if env is None else env)
    mps = mps_serving(base)
    if sm_percent is not None and not mps:
        _warn("warning: --sm-percent applies under MPS only and no MPS daemon serves this "
              "program (CUDA_MPS_PIPE_DIRECTORY): the GPU is time-sliced, the LP gets every "
              "SM while it runs")  # fmt: skip
    try:
        so = str(build())
    except BuildError as e:
        _warn(f"error: cannot build the interceptor: {e}")
        return 2
    # from here on no signal can end us with the segment left behind
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARD, signal.SIGCHLD})
    sweep_stale()
    grace = base.get("HBTUI_GRACE_MS", "")
    try:
        shm = create_segment(
            task,
            layout.CLASS_LP if cls == "lp" else layout.CLASS_HP,
            grace_ms=int(grace) if grace.isdigit() and int(grace) > 0 else 2000,
        )
    except SegmentError as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        _warn(f"error: {e}")
        return 2
    attached = False
    code: int | None = None
    try:
        share = _sm_share(base, sm_percent) if mps and cls == "lp" else None
        res = link.attach(AttachInfo(task, cls, shm, os.getpid(), cmd, slo_ms, idle_ms, mps, share))
        attached = res.attached
        if not attached and res.reason:
            _warn(f"warning: {res.reason}; running {cmd[0]} ungated (observed only)")
        try:
            mdir = _module_dir(base) if cls == "lp" else None
            pid = _spawn(cmd, child_env(base, so, shm, cls, task, mdir, sm_percent))
        except FileNotFoundError:
            _warn(f"{cmd[0]}: command not found")
            code = 127
            return code
        except PermissionError as e:
            _warn(f"{cmd[0]}: {e.strerror}")
            code = 126
            return code
        code = supervise(pid)
        return code
    finally:
        try:
            if attached:
                link.detach(shm, code)
            link.close()
        finally:
            unlink_segment(shm)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def main(argv: list[str]) -> int:
    args = list(argv)
    cmd: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, cmd = args[:i], args[i + 1 :]
    ns = _parser().parse_args(args)
    cmd = cmd or [c for c in ns.cmd if c != "--"]
    if not cmd:
        _parser().error("no command: hbtui run (--hp | --lp) --task NAME -- CMD [ARGS...]")
    if not ns.task.strip() or len(ns.task) > 63:
        _parser().error("--task: 1-63 characters")
    if ns.slo is not None and not 0 < ns.slo < 3.6e6:
        _parser().error("--slo: a positive number of ms")
    if ns.idle_ms is not None and not 0.01 <= ns.idle_ms <= 1e4:
        _parser().error("--idle-ms: a number of ms in 0.01..10000")
    if ns.sm_percent is not None and (not ns.lp or not 1 <= ns.sm_percent <= 100):
        _parser().error("--sm-percent: LP only, a whole number of percent in 1..100")
    link: EngineLink = NoEngine()
    if not ns.no_engine:
        if not 0 < ns.attach_timeout <= 3600:
            _parser().error("--attach-timeout: a positive number of seconds (at most 3600)")
        import zmq  # here: a program run with --no-engine never loads pyzmq

        try:
            link = ZmqEngineLink(ns.engine, timeout=ns.attach_timeout)
        except zmq.ZMQError as e:  # a malformed endpoint: the socket refuses it at connect
            _parser().error(f"--engine: cannot connect to {ns.engine!r} ({zmq.strerror(e.errno)}); "
                            f"expected e.g. {DEFAULT_ENDPOINT} or ipc:///path/ctl")  # fmt: skip
    return run(
        cmd,
        cls="lp" if ns.lp else "hp",
        task=ns.task,
        slo_ms=ns.slo,
        idle_ms=ns.idle_ms,
        link=link,
        sm_percent=ns.sm_percent,
    )
