"""The limits on every value an operator types, in ONE place for the console and the CLI.

They mirror the limits the engine enforces on its control ops (``set_priority``,
``set_slice``, ``set_slo``; see ``hbtui.engine.server``/``hbtui.engine.protocol``), so a
value that passes here is one the engine can take, and nothing out of range is ever
packed and sent (a priority of 10**20 used to crash msgpack inside the console). Where
the engine is more permissive, these are the tighter, documented operator limits.

Each ``parse_*`` turns operator text into control-op args or raises ``ValueError`` with
a one-line message that the edit modal shows inline (and the CLI prints).
"""

from __future__ import annotations

import math
import re

PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000  # the engine's range
SLICE_US_MIN, SLICE_US_MAX = 1.0, 1_000_000.0  # 1 µs .. 1 s
SLICE_BLOCKS_MIN, SLICE_BLOCKS_MAX = 1, 2**31
SLO_MS_MIN, SLO_MS_MAX = 0.01, 1_000_000.0  # 0.01 ms .. 1000 s (the engine's range)
SLO_FACTOR_MIN, SLO_FACTOR_MAX = 0.1, 100.0  # × the exclusive (alone) p99
RATE_HZ_MIN, RATE_HZ_MAX = 0.5, 60.0  # UI refresh rate

_MAX_LEN = 64  # longer input is never a number we accept (and int() of 5000 digits raises)
_NUM = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e([-+]?[0-9]{1,4}))?"


def _number(text: str, units: str) -> tuple[float, str] | None:
    """(value, unit) for ASCII ``<number><unit>`` (spaces ignored, case-insensitive)."""
    s = text.strip().lower().replace(" ", "")
    if not s or len(s) > _MAX_LEN:
        return None
    m = re.fullmatch(_NUM + f"({units})?", s)
    if not m:
        return None
    try:
        v = float(m.group(1) + (f"e{m.group(2)}" if m.group(2) else ""))
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(v):
        return None
    return v, m.group(3) or ""


def _g(v: float) -> str:
    return f"{v:,.10g}".replace(",", " ")


def parse_priority(text: str) -> dict[str, int]:
    """``"10"`` → ``{"priority": 10}``; a 32-bit signed integer."""
    s = text.strip()
    if not re.fullmatch(r"[-+]?[0-9]{1,20}", s):
        raise ValueError(
            f"priority: a whole number from {PRIORITY_MIN} to {PRIORITY_MAX} "
            "(larger is more important)"
        )
    v = int(s)
    if not PRIORITY_MIN <= v <= PRIORITY_MAX:
        raise ValueError(f"priority: {s} is out of range {PRIORITY_MIN}..{PRIORITY_MAX}")
    return {"priority": v}


def parse_slice(text: str) -> dict[str, float | int]:
    """``"100"``/``"100us"``/``"100µs"`` → ``{"us": 100.0}``; ``"64b"``/``"64 blocks"`` →
    ``{"blocks": 64}``; ``"2ms"`` → ``{"us": 2000.0}``."""
    got = _number(text, r"us|µs|μs|ms|b|blk|blocks?")
    if got is None:
        raise ValueError("slice: a duration (e.g. 50us, 2ms) or a block count (e.g. 264b)")
    v, unit = got
    if unit in ("b", "blk", "block", "blocks"):
        digits = re.sub(r"[a-z]+$", "", text.strip().lower().replace(" ", ""))
        if not digits.isdigit() or not digits.isascii():  # "1e9b", "2.0b": not a count
            raise ValueError("slice: a block count is a whole number in digits (e.g. 264b)")
        if not SLICE_BLOCKS_MIN <= v <= SLICE_BLOCKS_MAX:
            raise ValueError(
                f"slice: blocks must be a whole number from {SLICE_BLOCKS_MIN} to "
                f"{SLICE_BLOCKS_MAX}"
            )
        return {"blocks": int(v)}
    us = v * 1000 if unit == "ms" else v
    if not SLICE_US_MIN <= us <= SLICE_US_MAX:
        raise ValueError(f"slice: {_g(us)} µs is out of range 1 µs .. 1 s (1000000 µs)")
    return {"us": us}


def parse_slo(text: str) -> dict[str, float]:
    """``"5"``/``"5ms"`` → ``{"ms": 5.0}``; ``"2s"`` → ``{"ms": 2000.0}``; ``"1.2x"`` →
    ``{"factor": 1.2}`` (a factor of the exclusive p99, i.e. HP running alone)."""
    got = _number(text, r"ms|s|x")
    if got is None:
        raise ValueError("SLO: a latency (e.g. 5ms) or a factor of the alone p99 (e.g. 1.2x)")
    v, unit = got
    if unit == "x":
        if not SLO_FACTOR_MIN <= v <= SLO_FACTOR_MAX:
            raise ValueError(
                f"SLO: factor {_g(v)}x is out of range {SLO_FACTOR_MIN:g}x .. {SLO_FACTOR_MAX:g}x"
            )
        return {"factor": v}
    ms = v * 1000 if unit == "s" else v
    if not SLO_MS_MIN <= ms <= SLO_MS_MAX:
        raise ValueError(f"SLO: {_g(ms)} ms is out of range 0.01 ms .. 1000 s")
    return {"ms": ms}


def check_rate(hz: float) -> float:
    """A UI refresh rate in Hz, or ValueError."""
    if not math.isfinite(hz) or not RATE_HZ_MIN <= hz <= RATE_HZ_MAX:
        raise ValueError(f"refresh rate {hz:g} Hz is out of range {RATE_HZ_MIN:g}..{RATE_HZ_MAX:g}")
    return hz


def parse_rate(text: str) -> float:
    """argparse ``type=`` for ``--rate``: a clear error instead of a crash at ``1/0``."""
    try:
        hz = float(text)
    except ValueError:
        raise ValueError(f"refresh rate: {text!r} is not a number of Hz") from None
    return check_rate(hz)


def clamp_slice(args: dict[str, float | int]) -> dict[str, float | int]:
    """The ``[``/``]`` quick keys scale a slice: keep the result inside the limits."""
    if "blocks" in args:
        b = int(args["blocks"])
        return {"blocks": min(SLICE_BLOCKS_MAX, max(SLICE_BLOCKS_MIN, b))}
    us = float(args["us"])
    return {"us": round(min(SLICE_US_MAX, max(SLICE_US_MIN, us)), 3)}
