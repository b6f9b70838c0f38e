"""Fleet files for ``hbtui connect --fleet FILE``: many engines, one tab each (docs/fleet.md).

    # fleet.toml
    curve_secret = "keys/client.key_secret"    # defaults for every engine (optional)
    server_key = "keys/server.key"

    [[hosts]]                                  # engines on the conventional ports
    name = "gpu-node-1"                        # the tab says gpu-node-1/gpu0, ...
    address = "10.0.0.5"                       # default: name
    gpus = [0, 1, 2, 3]                        # ctl 5556+10N, pub 5555+10N

    [[engines]]                                # or one engine spelt out
    name = "lab/a100"
    ctl = "tcp://lab:7001"
    pub = "tcp://lab:7000"                     # default: derived from ctl
    server_key = "keys/lab.key"                # per-host/engine keys override the defaults

Relative key paths are relative to the fleet file; ``~`` is expanded. ``parse`` is pure
(no sockets, no key reading): it returns what to connect to, or raises ``FleetError``
naming the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ENGINES = 256
MAX_GPU = 63
_KEYS = ("curve_secret", "server_key")
_TOP = {"hosts", "engines", *_KEYS}
_HOST = {"name", "address", "gpus", *_KEYS}
_ENGINE = {"name", "ctl", "pub", *_KEYS}
_NAME = re.compile(r"^[A-Za-z0-9_.:/@\[\]-]{1,64}$")


class FleetError(ValueError):
    pass


@dataclass(frozen=True)
class FleetEngine:
    name: str  # the tab's name: HOST/gpuN, or the engine's own name
    ctl: str
    pub: str
    curve_secret: Path | None = None
    server_key: Path | None = None


def ctl_port(gpu: int) -> int:
    return 5556 + 10 * gpu


def pub_port(gpu: int) -> int:
    return 5555 + 10 * gpu


def derive_pub(ctl: str) -> str:
    """The PUB next to a CTL endpoint: a tcp port one below, or ipc ``.../ctl`` → ``.../pub``."""
    m = re.fullmatch(r"(tcp://.+):(\d+)", ctl)
    if m:
        return f"{m.group(1)}:{int(m.group(2)) - 1}"
    if ctl.startswith("ipc://") and ctl.endswith("/ctl"):
        return ctl[: -len("ctl")] + "pub"
    raise FleetError(f"cannot derive a pub endpoint from {ctl!r}: give pub too")


def load(path: str | Path) -> list[FleetEngine]:
    """The engines of the fleet file at ``path``."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise FleetError(f"cannot read fleet file {path}: {e.strerror or e}") from None
    return parse(text, p.parent, str(path))


def parse(text: str, base: Path, where: str = "fleet file") -> list[FleetEngine]:
    """The engines of a fleet file's ``text``; relative key paths are taken from ``base``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FleetError(f"{where}: not valid TOML: {e}") from None
    _only(doc, _TOP, where)
    defaults = {k: _path(doc, k, base, where) for k in _KEYS}
    out: list[FleetEngine] = []
    for i, h in enumerate(_tables(doc, "hosts", where)):
        at = f"{where}: hosts[{i}]"
        _only(h, _HOST, at)
        name = _name(h, at)
        addr = _str(h, "address", at) or name
        if not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]{1,253}", addr):
            raise FleetError(f"{at}: address {addr!r} is not a host name or IP address")
        gpus = h.get("gpus", [0])
        if not isinstance(gpus, list) or not gpus or not all(_is_gpu(g) for g in gpus):
            raise FleetError(f"{at}: gpus must be a non-empty list of GPU indices 0..{MAX_GPU}")
        keys = _keys(h, defaults, base, at)
        for g in gpus:
            ctl, pub = f"tcp://{addr}:{ctl_port(g)}", f"tcp://{addr}:{pub_port(g)}"
            out.append(FleetEngine(f"{name}/gpu{g}", ctl, pub, *keys))
    for i, e in enumerate(_tables(doc, "engines", where)):
        at = f"{where}: engines[{i}]"
        _only(e, _ENGINE, at)
        name = _name(e, at)
        ctl = _endpoint(e, "ctl", at)
        if ctl is None:
            raise FleetError(f"{at}: ctl is required")
        try:
            pub = _endpoint(e, "pub", at) or derive_pub(ctl)
        except FleetError as err:
            raise FleetError(f"{at}: {err}") from None
        out.append(FleetEngine(name, ctl, pub, *_keys(e, defaults, base, at)))
    if not out:
        raise FleetError(f"{where}: no [[hosts]] or [[engines]]")
    if len(out) > MAX_ENGINES:
        raise FleetError(f"{where}: {len(out)} engines, at most {MAX_ENGINES}")
    seen: dict[str, str] = {}
    for f in out:
        for k in (f.name, f.ctl):
            if k in seen:
                raise FleetError(f"{where}: {k!r} appears twice")
            seen[k] = k
    return out


def _only(t: dict[str, Any], allowed: set[str], at: str) -> None:
    extra = sorted(set(t) - allowed)
    if extra:
        raise FleetError(f"{at}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _tables(doc: dict[str, Any], key: str, at: str) -> list[dict[str, Any]]:
    v = doc.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise FleetError(f"{at}: {key} must be an array of tables ([[{key}]])")
    return v


def _str(t: dict[str, Any], key: str, at: str) -> str | None:
    v = t.get(key)
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise FleetError(f"{at}: {key} must be a non-empty string")
    return v.strip() if v else None


def _name(t: dict[str, Any], at: str) -> str:
    n = _str(t, "name", at)
    if n is None:
        raise FleetError(f"{at}: name is required")
    if not _NAME.match(n):
        raise FleetError(f"{at}: name {n!r}: 1-64 letters, digits and _.:/@[]-")
    return n


def _endpoint(t: dict[str, Any], key: str, at: str) -> str | None:
    v = _str(t, key, at)
    if v is not None and not re.fullmatch(r"(tcp|ipc)://\S+", v):
        raise FleetError(f"{at}: {key} {v!r} is not a tcp:// or ipc:// endpoint")
    return v


def _is_gpu(g: object) -> bool:
    return isinstance(g, int) and not isinstance(g, bool) and 0 <= g <= MAX_GPU


def _path(t: dict[str, Any], key: str, base: Path, at: str) -> Path | None:
    v = _str(t, key, at)
    if v is None:
        return None
    p = Path(v).expanduser()
    return p if p.is_absolute() else base / p


def _keys(
    t: dict[str, Any], defaults: dict[str, Path | None], base: Path, at: str
) -> tuple[Path | None, Path | None]:
    secret = _path(t, "curve_secret", base, at) or defaults["curve_secret"]
    server = _path(t, "server_key", base, at) or defaults["server_key"]
    if (secret is None) != (server is None):
        raise FleetError(f"{at}: CURVE needs both curve_secret and server_key")
    return secret, server
