"""Command line of the console.

    hbtui [--profile P] [--backend B] [--readonly]     start an embedded engine and watch it
    hbtui connect [ENGINE ...] [--ctl EP --pub EP]     attach to running headless engines

ENGINE is ``CTL[,PUB]``: the engine's control endpoint, then optionally its telemetry
endpoint. When PUB is left out it is derived from CTL: a tcp port one below (the
engine's defaults are ctl 5556, pub 5555) or, for ipc, the sibling ``pub`` socket of a
``.../ctl`` path. With no ENGINE and no --ctl, the defaults (tcp://127.0.0.1:5556,5555)
are used. One tab per engine.

Every value is checked before the console opens (``hbtui.console.limits``, the same
limits the console's edit dialogs use): a bad flag is one line on stderr and exit 2.
When the console ends because of an error it prints one line (the traceback goes to a
file under the XDG state dir) and exits 1.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hbtui.console.limits import parse_rate
from hbtui.console.link import Target
from hbtui.engine.protocol import DEFAULT_CTL, DEFAULT_PUB

if TYPE_CHECKING:
    from hbtui.engine.client import CurveKeys

# Every subcommand of ``hbtui`` and its one line (``hbtui --help``); ``hbtui.__main__``
# dispatches the engine-side ones before this parser ever sees them.
SUBCOMMANDS = {
    "connect": "open the console on running headless engines (one tab each)",
    "engine": "run a headless engine: ZeroMQ telemetry + control (hbtui engine --help)",
    "bench": "compare scheduling policies on identical arrivals (hbtui bench --help)",
    "slice": "make a PTX module sliceable (hbtui slice --help)",
    "keys": "generate CURVE keys for non-loopback engines (hbtui keys --help)",
    "run": "run an unmodified CUDA program under an engine as an HP or LP task (hbtui run --help)",
}

DESCRIPTION = """\
hbtui: SLO-oriented GPU sharing with a live operator console.

commands:
  (none)     open the console on an embedded engine (the options below)
""" + "".join(f"  {name:<10} {line}\n" for name, line in SUBCOMMANDS.items())


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("hbtui")
    except Exception:  # noqa: BLE001 - a source tree without metadata
        return "unknown"


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for misspelt options and subcommands."""

    def error(self, message: str) -> NoReturn:
        hint = self._suggest(message)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n(see {self.prog} --help)\n")

    def _suggest(self, message: str) -> str:
        m = re.search(r"unrecognized arguments: (.+)", message)
        if m:
            opts = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            for word in m.group(1).split():
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=")[0], opts, 1, 0.6)
                    if close:
                        return f"; did you mean {close[0]}?"
            return ""
        m = re.search(r"invalid choice: '([^']*)'", message)
        if m:
            choices: list[str] = []
            for a in self._actions:
                if a.choices:
                    choices += [str(c) for c in a.choices]
            close = difflib.get_close_matches(m.group(1), choices, 1, 0.6)
            if close:
                return f"; did you mean {close[0]}?"
        return ""


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


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="hbtui",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="hbtui [--profile P] [--backend B] [--readonly] [--rate HZ] | hbtui COMMAND ...",
    )
    p.add_argument("--version", action="version", version=f"hbtui {version()}")
    p.add_argument("--profile", default="default", help="profile name or path (embedded engine)")
    p.add_argument("--backend", default="auto", choices=("auto", "sim", "cuda"))
    p.add_argument("--readonly", action="store_true", help="watch only: edits are refused")
    p.add_argument(
        "--rate", type=_rate, default=None, metavar="HZ",
        help="UI refresh rate, 0.5..60 Hz (default: remembered, else 10)",
    )  # fmt: skip
    sub = p.add_subparsers(dest="cmd", title="subcommands", metavar="COMMAND", parser_class=Parser)
    c = sub.add_parser("connect", help=SUBCOMMANDS["connect"], description=SUBCOMMANDS["connect"])
    c.add_argument("engines", nargs="*", metavar="CTL[,PUB]")
    c.add_argument("--ctl", help="control endpoint of one more engine")
    c.add_argument("--pub", help="telemetry endpoint of that engine")
    c.add_argument("--readonly", action="store_true", dest="c_readonly")
    c.add_argument("--curve-secret", help="client secret key file (CURVE, non-loopback engines)")
    c.add_argument("--server-key", help="the engine's public key file (CURVE)")
    c.add_argument("--fleet", metavar="FILE", help="engines and keys from a TOML fleet file")
    c.add_argument("--rate", type=_rate, default=None, metavar="HZ", dest="c_rate",
                   help="UI refresh rate, 0.5..60 Hz")  # fmt: skip
    for name, line in SUBCOMMANDS.items():
        if name != "connect":  # listed for --help; hbtui.__main__ runs them
            sub.add_parser(name, help=line, add_help=False)
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
    fleet: list[Target] = []
    if getattr(args, "fleet", None):
        from hbtui.fleet import load

        fleet = [Target(f.ctl, f.pub, _fleet_curve(f.curve_secret, f.server_key) or curve,
                        f.name) for f in load(args.fleet)]  # fmt: skip
    if not pairs and not fleet:
        pairs = [(DEFAULT_CTL, DEFAULT_PUB)]
    targets = [Target(ctl, pub, curve) for ctl, pub in pairs] + fleet
    for t in targets:  # before the console starts: a bad one would end it in its worker
        at = f"engine {t.name!r}: " if t.name else ""
        check_endpoint(t.ctl, f"{at}control endpoint")
        check_endpoint(t.pub, f"{at}telemetry endpoint")
    return targets


def check_endpoint(endpoint: str, what: str) -> None:
    """ValueError naming ``what`` when ZeroMQ cannot connect to ``endpoint`` (malformed,
    or a wildcard host, which only a bind takes). The socket is closed at once (linger
    0): at most a TCP connect the I/O thread had begun, no message."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        raise ValueError(f"{what} {endpoint!r}: {zmq.strerror(e.errno)}; expected e.g. "
                         "tcp://gpu1:5556 or ipc:///path/ctl") from None  # fmt: skip
    finally:
        sock.close()


def _fleet_curve(secret: Path | None, server: Path | None) -> CurveKeys | None:
    """CURVE keys of one fleet engine (both paths, or neither: hbtui.fleet checks)."""
    if secret is None:
        return None
    from hbtui.engine.client import CurveKeys

    return CurveKeys.from_files(str(secret), str(server or ""))


def check_profile(name: str) -> tuple[str, str]:
    """(resolved path, description) of a profile, or ValueError listing the known ones.

    The CLI may use the engine's pure profile module; the console package never does."""
    from hbtui.engine import profile as profiles

    path = profiles.resolve(name)
    if not path.is_file():
        known = [n for n, _, _ in profiles.list_profiles()]
        close = difflib.get_close_matches(name, known, 1, 0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"no profile {name!r}{hint} (available: {', '.join(known) or 'none'}; "
            "or give a path to a .toml file)"
        )
    try:
        prof = profiles.load(path)
    except profiles.ProfileError as e:
        raise ValueError(str(e)) from None
    return str(path), prof.description


def _fail(where: str, msg: str, code: int = 2) -> int:
    print(f"{where}: error: {msg}", file=sys.stderr)
    return code


def _run_app(app: Any) -> int:
    """Run the console; exit status 0, or 1 with one line on stderr when an error ended it."""
    try:
        app.run()
    except Exception as e:  # noqa: BLE001 - before/after the app's own loop: still one line
        from hbtui.console.app import one_line

        return _fail("hbtui", one_line(e), 1)
    if app.fatal:
        return _fail("hbtui", app.fatal, 1)
    code = app.return_code
    return code if isinstance(code, int) else 0


def _options(p: argparse.ArgumentParser) -> set[str]:
    opts = {o for a in p._actions for o in a.option_strings}
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sp in a.choices.values():
                opts |= {o for x in sp._actions for o in x.option_strings}
    return opts


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse, reporting a misspelt ``--option`` first (with "did you mean"): argparse alone
    would complain about the option's value as an unknown subcommand."""
    p = build_parser()
    known = _options(p)
    for tok in argv:
        if tok == "--":
            break
        if tok.startswith("--") and tok.split("=")[0] not in known:
            p.error(f"unrecognized arguments: {tok}")
    return p.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from hbtui.console.prefs import Prefs

    prefs = Prefs.load()
    if args.cmd == "connect":
        try:
            targets = targets_from(args)
        except (ValueError, OSError) as e:
            return _fail("hbtui connect", str(e))
        from hbtui.console.app import ConsoleApp

        rate = args.c_rate or args.rate
        app = ConsoleApp(targets, readonly=args.readonly or args.c_readonly, rate_hz=rate,
                         prefs=prefs, handle_signals=True)  # fmt: skip
        return _run_app(app)

    try:
        _, description = check_profile(args.profile)
    except ValueError as e:
        return _fail("hbtui", str(e))
    from hbtui.console.app import ConsoleApp
    from hbtui.console.spawn import EmbeddedEngine

    engine = EmbeddedEngine(args.profile, args.backend, readonly=args.readonly)
    try:
        engine.start()
        app = ConsoleApp([engine.target], readonly=args.readonly, embedded=engine,
                         rate_hz=args.rate, prefs=prefs, handle_signals=True,
                         description=description)  # fmt: skip
        code = _run_app(app)
        exited = engine.exited()
        if exited not in (None, 0):
            print(
                f"hbtui: the embedded engine exited with {exited} (log {engine.log_path}):\n"
                f"{engine.log_tail()}",
                file=sys.stderr,
            )
            return code or 1
        return code
    finally:
        engine.stop()
