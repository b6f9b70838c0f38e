"""``hbtui keys``: CURVE key pairs for a non-loopback engine, and loading them.

``generate`` writes ``server.key``/``server.key_secret`` and ``client.key``/
``client.key_secret`` with ``zmq.auth.create_certificates`` (secret files mode 0600).
The engine takes ``--curve-secret server.key_secret --curve-allow client.key``; clients
use ``engine.client.CurveKeys.from_files("client.key_secret", "server.key")``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def default_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hbtui" / "keys"


def generate(directory: Path, force: bool = False) -> list[Path]:
    import zmq.auth

    # A directory we create is private; an existing one (maybe shared, like /tmp) keeps
    # its mode: the secret files themselves are 0600.
    if not directory.is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    out = []
    for name in ("server", "client"):
        targets = [directory / f"{name}.key", directory / f"{name}.key_secret"]
        if not force and any(p.exists() for p in targets):
            raise FileExistsError(f"{targets[0]} exists (use --force to overwrite)")
        pub, sec = zmq.auth.create_certificates(str(directory), name)
        os.chmod(sec, 0o600)
        out += [Path(pub), Path(sec)]
    return out


def load_allowed(paths: list[str]) -> set[bytes]:
    """Public keys (z85) from certificate files, or from every ``*.key`` in a directory."""
    from zmq.auth import load_certificate

    keys: set[bytes] = set()
    for p in map(Path, paths):
        files = sorted(p.glob("*.key")) if p.is_dir() else [p]
        for f in files:
            pub, _ = load_certificate(str(f))
            keys.add(pub)
    if not keys:
        raise ValueError(f"no public keys found in {', '.join(paths)}")
    return keys


def load_secret(path: str) -> tuple[bytes, bytes]:
    from zmq.auth import load_certificate

    pub, sec = load_certificate(path)
    if sec is None:
        raise ValueError(f"{path}: no secret key in this file (pass the .key_secret file)")
    return pub, sec


def keys_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hbtui keys", description="CURVE keys for the engine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write server and client key pairs")
    g.add_argument("--dir", type=Path, default=None, help=f"default: {default_dir()}")
    g.add_argument("--force", action="store_true", help="overwrite existing keys")
    args = ap.parse_args(argv)
    d = args.dir or default_dir()
    try:
        paths = generate(d, args.force)
    except (OSError, FileExistsError) as e:
        print(f"hbtui keys: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    print(
        f"engine: --curve-secret {d / 'server.key_secret'} --curve-allow {d / 'client.key'}",
        file=sys.stderr,
    )
    return 0


main = keys_main  # ``hbtui keys`` entry point (hbtui/__main__.py imports engine.keys.main)
