"""Command line of the console.

    hbtui [--profile P] [--backend B] [--readonly]     start an embedded engine and watch it
    hbtui connect [ENGINE ...] [--ctl EP --pub EP]     attach to running headless engines

ENGINE is ``CTL[,PUB]``: the engine's control endpoint, then optionally its telemetry
endpoint. When PUB is left out it is derived from CTL: a tcp port one below (the
engine's defaults are ctl 5556, pub 5555) or, for ipc, the sibling ``pub`` socket of a
``.../ctl`` path. With no ENGINE and no --ctl, the defaults (tcp://127.0.0.1:5556,5555)
are used. One tab per engine.
"""

from __future__ import annotations

import argparse
import re
import sys

from hbtui.console.link import Target
from hbtui.engine.protocol import DEFAULT_CTL, DEFAULT_PUB


def pub_for(ctl: str) -> str:
    """The conventional PUB endpoint next to a CTL endpoint (see module doc)."""
    m = re.fullmatch(r"(tcp://.+):(\d+)", ctl)
    if m:
        return f"{m.group(1)}:{int(m.group(2)) - 1}"
    if ctl.startswith("ipc://") and ctl.endswith("/ctl"):
        return ctl[: -len("ctl")] + "pub"
    raise ValueError(f"cannot derive a PUB endpoint from {ctl!r}: write it as CTL,PUB")


def parse_engine(spec: str) -> tuple[str, str]:
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not 1 <= len(parts) <= 2 or not all("://" in p for p in parts):
        raise ValueError(f"bad engine {spec!r}: expected CTL[,PUB], e.g. tcp://gpu1:5556")
    return parts[0], parts[1] if len(parts) == 2 else pub_for(parts[0])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hbtui", description="hbtui operator console")
    p.add_argument("--profile", default="default", help="profile name or path (embedded engine)")
    p.add_argument("--backend", default="auto", choices=("auto", "sim", "cuda"))
    p.add_argument("--readonly", action="store_true", help="watch only: edits are refused")
    p.add_argument("--rate", type=float, default=10.0, help="UI refresh rate in Hz")
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("connect", help="attach to running headless engines (one tab each)")
    c.add_argument("engines", nargs="*", metavar="CTL[,PUB]")
    c.add_argument("--ctl", help="control endpoint of one more engine")
    c.add_argument("--pub", help="telemetry endpoint of that engine")
    c.add_argument("--readonly", action="store_true", dest="c_readonly")
    c.add_argument("--curve-secret", help="client secret key file (CURVE, non-loopback engines)")
    c.add_argument("--server-key", help="the engine's public key file (CURVE)")
    return p


def targets_from(args: argparse.Namespace) -> list[Target]:
    curve = None
    if args.curve_secret or args.server_key:
        if not (args.curve_secret and args.server_key):
            raise ValueError("CURVE needs both --curve-secret and --server-key")
        from hbtui.engine.client import CurveKeys

        curve = CurveKeys.from_files(args.curve_secret, args.server_key)
    pairs = [parse_engine(s) for s in args.engines]
    if args.ctl or args.pub:
        ctl = args.ctl or DEFAULT_CTL
        pairs.append((ctl, args.pub or pub_for(ctl)))
    if not pairs:
        pairs = [(DEFAULT_CTL, DEFAULT_PUB)]
    return [Target(ctl, pub, curve) for ctl, pub in pairs]


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from hbtui.console.app import ConsoleApp

    if args.cmd == "connect":
        try:
            targets = targets_from(args)
        except (ValueError, OSError) as e:
            print(f"hbtui connect: {e}", file=sys.stderr)
            return 2
        app = ConsoleApp(targets, readonly=args.readonly or args.c_readonly, rate_hz=args.rate)
        app.run()
        return 0

    from hbtui.console.spawn import EmbeddedEngine

    engine = EmbeddedEngine(args.profile, args.backend, readonly=args.readonly)
    try:
        engine.start()
        app = ConsoleApp(
            [engine.target], readonly=args.readonly, embedded=engine, rate_hz=args.rate
        )
        app.run()
        code = engine.exited()
        if code not in (None, 0):
            print(
                f"hbtui: the embedded engine exited with {code}:\n{engine.log_tail()}",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        engine.stop()
