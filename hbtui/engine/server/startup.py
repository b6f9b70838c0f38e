"""``hbtui engine`` start-up and shutdown: the command line, sockets with CURVE, the
Prometheus exporter, signals, the final summary, exit codes (2: usage/bind/profile)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from hbtui.engine import attached
from hbtui.engine import profile as profiles
from hbtui.engine.atomic import write_atomic
from hbtui.engine.backends import BackendError, resolve_backend
from hbtui.engine.protocol import DEFAULT_CTL, DEFAULT_PUB, MAX_CONTROL_BYTES
from hbtui.engine.server.engine import Engine
from hbtui.engine.server.net import AllowList, UsageError, bind, is_loopback
from hbtui.engine.server.reports import log_summary
from hbtui.engine.telemetry import SNDHWM

log = logging.getLogger("hbtui.engine")


def _number_in(lo: float, hi: float, what: str, unit: str, span: str) -> Callable[[str], float]:
    """An argparse type: a number in [lo, hi] (NaN refused), errors naming the unit."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{text} {unit}: {span}")
        return v

    return parse


_margin_us = _number_in(0, 1e6, "a number of microseconds", "us", "from 0 to 1000000")
_poll_us = _number_in(10, 250, "a number of microseconds", "us", "from 10 to 250 (the idle tick)")
_guard_pct = _number_in(0, 100, "a percentage", "%", "from 0 (off) to 100")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hbtui engine", description="Run the headless engine (ZeroMQ telemetry + control)."
    )
    ap.add_argument(
        "--profile",
        default="default",
        help="profile name (looked up in the profile directories, never the current one) or "
        "a path (with a / or ending in .toml); default: default",
    )
    ap.add_argument(
        "--profile-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="also find profiles by name in DIR (repeatable; after the user directory, "
        "before the shipped one); load_profile over the wire reads only these directories",
    )
    ap.add_argument("--backend", choices=("auto", "sim", "cuda"), default="auto")
    ap.add_argument("--device", type=int, default=None, help="CUDA device index")
    ap.add_argument(
        "--hp-issue",
        choices=("auto", "native", "python"),
        default=None,
        help="cuda: who issues HP kernels (default: $HBTUI_HP_ISSUE or auto)",
    )
    ap.add_argument("--pub", default=DEFAULT_PUB, help=f"telemetry endpoint ({DEFAULT_PUB})")
    ap.add_argument("--ctl", default=DEFAULT_CTL, help=f"control endpoint ({DEFAULT_CTL})")
    ap.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    ap.add_argument("--summary-json", default=None, help="write the final summary here")
    ap.add_argument("--readonly", action="store_true", help="refuse every mutating op")
    ap.add_argument(
        "--insecure", action="store_true", help="allow non-loopback binds without CURVE"
    )
    ap.add_argument("--curve-secret", default=None, help="server secret key file")
    ap.add_argument("--curve-allow", nargs="+", default=None, help="allowed client public keys")
    ap.add_argument("--metrics", default=None, metavar="HOST:PORT", help="Prometheus exporter")
    ap.add_argument(
        "--sndhwm",
        type=int,
        default=SNDHWM,
        metavar="N",
        help=f"telemetry messages queued per subscriber before dropping ({SNDHWM})",
    )
    ap.add_argument(
        "--calibrate",
        type=float,
        default=1.0,
        metavar="S",
        help="exclusive calibration seconds (LP alone runs S/2); 0 skips it",
    )
    ap.add_argument(
        "--slice-programs",
        choices=("on", "off"),
        default="on",
        help="under hummingbird, run sliceable kernels of `hbtui run --lp` programs as "
        "slices (off: whole kernels, for comparison)",
    )
    ap.add_argument(
        "--bubble-margin-us",
        type=_margin_us,
        default=attached.BUBBLE_MARGIN_NS / 1e3,
        metavar="US",
        help="spare time an LP grant inside an `hbtui run` HP request must leave in the "
        "predicted bubble (30: the engine's poll and the launch)",
    )
    ap.add_argument(
        "--switch-cost-us",
        type=_margin_us,
        default=attached.SWITCH_COST_NS / 1e3,
        metavar="US",
        help="on a time-sliced GPU (a program not under MPS), what the switch back to an "
        "HP program's context adds to an in-request grant's need (150: an H100 measured "
        "+133 us; 0: ignore it)",
    )
    ap.add_argument(
        "--bubble-quiet-us",
        type=_margin_us,
        default=0,
        metavar="US",
        help="under hummingbird with an LP program attached, let LP into a predicted "
        "bubble of an `hbtui run` HP request: the HP launched nothing for US us, is not "
        "in a sync, every launch with a completion write is seen done and the coalesced "
        "tail after it is due by the newest write's lag (0, the default: only bubbles "
        "where every launch is seen done, rare for a host-bound service between writes "
        "100 us apart; not yet measured on a GPU)",
    )
    ap.add_argument(
        "--hp-poll-us",
        type=_poll_us,
        default=attached.HP_POLL_NS / 1e3,
        metavar="US",
        help="with only `hbtui run --hp` programs attached, how often the engine polls "
        "them while they work (100; LP scheduling ticks every 20 us, which kept the "
        "engine at 86 %% of a core)",
    )
    ap.add_argument(
        "--harvest-guard",
        type=_guard_pct,
        default=attached.DEFAULT_HARVEST_GUARD * 100,
        metavar="PCT",
        help="what LP inside an `hbtui run` HP program's requests may cost it: LP stays "
        "out while it measurably slows them by more than PCT %% (control epochs without "
        "LP), and a request takes only as many grants as cost it PCT %% of the median "
        "request at what one costs its next kernel (measured on its kernels; until then "
        "--switch-cost-us on a time-sliced GPU, 0 under MPS) (0: neither)",
    )
    ap.add_argument(
        "--exit-with-parent",
        type=int,
        default=None,
        metavar="PID",
        help="stop cleanly when process PID (the console that spawned us) is gone",
    )
    ap.add_argument(
        "--owned-dir",
        default=None,
        metavar="DIR",
        help="with --exit-with-parent: remove DIR (the private socket dir) if the parent died",
    )
    return ap


def _setup_logging() -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("hbtui engine: %(levelname)s %(message)s"))
    log.handlers[:] = [h]
    log.setLevel(logging.INFO)
    log.propagate = False


def _curve(args: argparse.Namespace) -> tuple[tuple[bytes, bytes], set[bytes]] | None:
    """The server keypair and allowed client keys, or None; refuses exposed plain binds."""
    exposed = [e for e in (args.pub, args.ctl) if not is_loopback(e)]
    curve = None
    if args.curve_secret or args.curve_allow:
        if not (args.curve_secret and args.curve_allow):
            raise UsageError("CURVE needs both --curve-secret and --curve-allow")
        from hbtui.engine.keys import load_allowed, load_secret

        try:
            curve = (load_secret(args.curve_secret), load_allowed(args.curve_allow))
        except (OSError, ValueError) as e:
            raise UsageError(f"CURVE keys: {e}") from None
    if exposed and curve is None:
        if not args.insecure:
            raise UsageError(
                f"refusing to bind {', '.join(exposed)} (not loopback) without CURVE: "
                "pass --curve-secret/--curve-allow (see `hbtui keys generate`) or --insecure"
            )
        log.warning(
            "!!! INSECURE: %s bound without authentication or encryption; anyone who can "
            "reach it can read telemetry and steer the GPU !!!",
            ", ".join(exposed),
        )
    return curve


def _open_sockets(
    ctx: zmq.Context,
    args: argparse.Namespace,
    keys: tuple[bytes, bytes] | None,
    socks: list[zmq.Socket],
) -> tuple[zmq.Socket, zmq.Socket]:
    """PUB and ROUTER with their limits (and CURVE); appended to ``socks`` at once, so
    they are closed even if an option fails (else ``ctx.term`` would hang)."""
    pub = ctx.socket(zmq.PUB)
    ctl = ctx.socket(zmq.ROUTER)
    socks += [pub, ctl]
    pub.sndhwm = max(1, args.sndhwm)
    pub.linger = 200  # give the final summary a moment to leave on shutdown
    ctl.maxmsgsize = MAX_CONTROL_BYTES
    ctl.rcvhwm = 1000
    ctl.sndhwm = 1000
    ctl.linger = 0
    for s in (pub, ctl):
        if keys is not None:
            s.curve_server = True
            s.curve_publickey, s.curve_secretkey = keys
    return pub, ctl


def _prometheus(spec: str) -> Any:
    m = re.match(r"^(.*):(\d+)$", spec)
    if not m:
        raise UsageError(f"--metrics wants HOST:PORT, got {spec!r}")
    host = m.group(1).strip("[]") or "127.0.0.1"
    if not is_loopback(f"tcp://{host}:1"):
        log.warning("Prometheus metrics exposed on %s (no authentication)", host)
    from hbtui.engine.prom import PromExporter

    try:
        return PromExporter(host, int(m.group(2)))
    except OSError as e:
        raise UsageError(f"cannot serve --metrics {spec}: {e.strerror}") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hbtui engine``; returns the exit code (2: usage/bind/profile)."""
    _setup_logging()
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    ctx = zmq.Context()
    auth = prom = engine = None
    socks: list[zmq.Socket] = []
    try:
        extra = [Path(d).resolve() for d in args.profile_dir]
        for d, given in zip(extra, args.profile_dir, strict=True):
            if not d.is_dir():
                raise UsageError(f"--profile-dir {given}: not a directory")
        try:
            prof = profiles.load(profiles.resolve(args.profile, extra))
        except profiles.ProfileError as e:
            raise UsageError(str(e)) from None
        try:
            kind = resolve_backend(args.backend)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args.backend == "auto":
            log.info("backend auto -> %s", kind)
        device = prof.device if args.device is None else args.device
        if args.hp_issue:
            os.environ["HBTUI_HP_ISSUE"] = args.hp_issue  # read by the cuda backend
        if args.calibrate < 0:
            raise UsageError("--calibrate must be >= 0")

        curve = _curve(args)
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve_callback("*", credentials_provider=AllowList(curve[1]))
        pub, ctl = _open_sockets(ctx, args, None if curve is None else curve[0], socks)
        bind(pub, args.pub, "--pub")
        bind(ctl, args.ctl, "--ctl")
        if args.metrics:
            prom = _prometheus(args.metrics)

        try:
            engine = Engine(prof, kind, device, pub, ctl, args.readonly, args.calibrate, prom)
            engine.attached.slicing = args.slice_programs == "on"
            engine.attached.bubble_margin_ns = args.bubble_margin_us * 1e3
            engine.attached.switch_cost_ns = args.switch_cost_us * 1e3
            engine.attached.hp_poll_ns = int(args.hp_poll_us * 1e3)
            engine.attached.harvest_guard = args.harvest_guard / 100
            engine.attached.bubble_quiet_ns = int(args.bubble_quiet_us * 1e3)
        except (BackendError, ValueError) as e:
            raise UsageError(f"backend {kind}: {e}") from None
        engine.profile_dirs = extra
        log.info(
            "engine %s: profile %s on %s (%s%s), pub %s, ctl %s%s",
            engine.engine_id,
            prof.name,
            engine.backend.device,
            kind,
            ", wall-clock paced" if engine.paced else "",
            args.pub,
            args.ctl,
            ", read-only" if args.readonly else "",
        )
        return _run(engine, args)
    except UsageError as e:
        print(f"hbtui engine: error: {e}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            try:
                engine.backend.close()  # idempotent; here for the error paths
            except Exception as e:  # noqa: BLE001 - closing after a device failure
                log.warning("closing the backend: %s", e)
        if prom is not None:
            prom.close()
        for s in socks:
            s.close()
        if auth is not None:
            auth.stop()
        ctx.term()


def _run(engine: Engine, args: argparse.Namespace) -> int:
    """Run until the duration, a signal or a dead parent; then the final summary."""

    def _stop(signum: int, _frame: Any) -> None:
        engine.stopping = True

    engine.parent_pid = args.exit_with_parent
    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    rc = 0
    try:
        engine.run(args.duration)
    except BackendError as e:  # the device failed: report, flush, exit non-zero
        log.error("backend failure: %s", e)
        engine.tel.event("error", "error", message=f"backend failure: {e}")
        rc = 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    summary = engine.final()
    engine.backend.close()  # stops the cuda backend's native HP thread first
    log_summary(summary)
    if args.summary_json:
        _write_json(args.summary_json, summary)
    if engine.orphaned and args.owned_dir:  # nobody else will clean up our sockets
        shutil.rmtree(args.owned_dir, ignore_errors=True)
    return rc


def _write_json(path: str, obj: Any) -> None:
    import json

    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def keys_main(argv: list[str] | None = None) -> int:
    """Entry point of ``hbtui keys`` (lives in engine.keys)."""
    from hbtui.engine.keys import keys_main as _keys_main

    return _keys_main(argv)
