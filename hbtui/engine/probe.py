"""Health probe of a running engine through its control ``ping`` (Kubernetes readiness and
liveness, systemd ``ExecStartPost`` or any script).

    python -m hbtui.engine.probe --ctl tcp://127.0.0.1:5556 [--alive]
        [--curve-secret CLIENT.key_secret --server-key SERVER.key]

Exit 0: the engine answered (and, without ``--alive``, is in phase ``running``, i.e.
calibrated and scheduling); 1: it did not answer in time or is still calibrating; 2: bad
arguments. One line on stdout either way.
"""

from __future__ import annotations

import argparse
import sys

from hbtui.engine.client import ClientError, CurveKeys, EngineClient


def probe(ctl: str, timeout: float, alive: bool, curve: CurveKeys | None) -> tuple[int, str]:
    """(exit code, one line) for the engine at ``ctl``."""
    c = EngineClient(ctl, timeout=timeout, curve=curve)
    try:
        r = c.ping()
    except ClientError as e:
        return 1, f"no answer from {ctl}: {e}"
    finally:
        c.close()
    phase = r.get("phase", "?")
    line = f"engine {r.get('engine_id', '?')} at {ctl}: {phase}"
    return (0 if alive or phase == "running" else 1), line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hbtui.engine.probe", description=__doc__)
    ap.add_argument("--ctl", required=True, help="the engine's control endpoint")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (2)")
    ap.add_argument("--alive", action="store_true", help="any answer will do (liveness)")
    ap.add_argument("--curve-secret", help="client secret key file (CURVE)")
    ap.add_argument("--server-key", help="the engine's public key file (CURVE)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    curve = None
    if args.curve_secret or args.server_key:
        if not (args.curve_secret and args.server_key):
            print("probe: CURVE needs both --curve-secret and --server-key")
            return 2
        try:
            curve = CurveKeys.from_files(args.curve_secret, args.server_key)
        except (OSError, ValueError) as e:
            print(f"probe: {e}")
            return 2
    code, line = probe(args.ctl, args.timeout, args.alive, curve)
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
