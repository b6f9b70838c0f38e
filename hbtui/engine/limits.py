"""Every numeric field's range and every size cap of the engine's inputs, in one place.

Profiles (engine.profile via engine.checks), ``add_task`` (the same parser) and the
``set_*`` ops (engine.server.ops) all check against these, so a value the engine accepts
keeps its arithmetic finite, fits msgpack on the way out and bounds the work one message
can cause. docs/protocol.md ("Limits") lists them for clients.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

# -- names and strings that reach telemetry --------------------------------------------
MAX_NAME = 64  # task, kernel, profile, buffer and builtin names
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_DESCRIPTION = 1024  # a profile's description (characters)
MAX_TEXT = 256  # other strings (entry symbols, kernel params values)

# -- counts per engine / profile / task -------------------------------------------------
MAX_TASKS = 64  # tasks of one engine (profile tasks, and add_task on top of them)
MAX_KERNELS = 256  # kernels of one profile
MAX_TASK_KERNELS = 64  # steps of an HP request, kernels of an LP loop
MAX_PARAMS = 32  # entries of a builtin kernel's params table
MAX_ARGS = 64  # user kernel args

# Arrivals. The scheduling loop handles an HP arrival and each kernel step of it in
# ~10-30 us of Python on one core. Measured on the sim backend (one HP task of two
# 132-block steps plus an LP task, docs/benchmarks/hardening.md): 5,000 Hz (10,000 HP
# kernels/s) keeps the loop within 1 ms of the wall clock; 10,000 Hz falls ~60 ms behind
# per second and 20,000 Hz ~400 ms. So a task is capped at MAX_RATE_HZ and the open-loop
# (poisson, periodic) HP tasks of one engine at MAX_HP_KERNELS_PER_S together
# (sum of rate_hz x kernels per request), half of what the loop was seen to sustain.
MAX_RATE_HZ = 5_000.0
MAX_HP_KERNELS_PER_S = 10_000.0
MIN_RATE_HZ = 0.01  # one arrival every 100 s: 1e9 / rate stays a finite integer
MAX_OUTSTANDING = 256  # closed loop: each outstanding request is a live Request object

# -- files ------------------------------------------------------------------------------
MAX_PROFILE_BYTES = 1 << 20  # a profile file (1 MiB; shipped ones are < 4 KiB)
MAX_TRACE_BYTES = 1 << 20  # an arrival trace file
MAX_TRACE_POINTS = 100_000  # arrival offsets of one trace
MAX_SOURCE_BYTES = 8 << 20  # a user kernel's .ptx / .cu source
MAX_TOML_DEPTH = 32  # nesting of arrays/tables in a profile (deeper: refused, no recursion)


class Range(NamedTuple):
    """A closed range ``[lo, hi]`` (``lo_open``: ``(lo, hi]``), integers only if ``integer``."""

    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False

    def span(self) -> str:
        lo, hi = (int(self.lo), int(self.hi)) if self.integer else (self.lo, self.hi)
        if self.integer:
            return f"{lo}..{hi}"
        return f"{'(' if self.lo_open else '['}{lo:g}, {hi:g}]"

    def problem(self, v: Any) -> str | None:
        """Why ``v`` is out of this range (the text after ``must be``), or None."""
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "an integer" if self.integer else "a number"
        if self.integer and not isinstance(v, int):
            return "an integer"
        if not isinstance(v, int) and not math.isfinite(v):
            return "finite"
        if v < self.lo or (self.lo_open and v == self.lo):
            return f"{'>' if self.lo_open else '>='} {_g(self.lo, self.integer)}"
        if v > self.hi:
            return f"<= {_g(self.hi, self.integer)}"
        return None


def _g(x: float, integer: bool) -> str:
    return str(int(x)) if integer else f"{x:g}"


POSITIVE = Range(0.0, 1e12, lo_open=True)  # sanity cap for figures with no better range

# Every numeric field, by the name profiles and ops use for it. Durations are in the
# field's unit (us, ms); all products the engine forms from them (ns as int, waves, SLOs)
# stay far below 2**63.
RANGES: dict[str, Range] = {
    "priority": Range(-1_000_000, 1_000_000, integer=True),
    "slo_ms": Range(0.01, 1e6),  # 10 us .. 1000 s
    "slo_factor": Range(0.1, 1000.0),
    "slice_us": Range(1.0, 1e6),  # below 1 us a slice cap divides by ~zero waves
    "slice_blocks": Range(1, 2**31, integer=True),
    "rate_hz": Range(MIN_RATE_HZ, MAX_RATE_HZ),
    "outstanding": Range(1, MAX_OUTSTANDING, integer=True),
    "think_us": Range(0.0, 1e7),  # up to 10 s
    "gap_us": Range(0.0, 1e6),  # up to 1 s of host work between kernels
    "jitter": Range(0.0, 1.0),
    # kernels
    "grid_x": Range(1, 2**31 - 1, integer=True),
    "grid_yz": Range(1, 65_535, integer=True),
    "total_blocks": Range(1, 2**31, integer=True),
    "block_dim": Range(1, 1024, integer=True),  # and the product of the three <= 1024
    "smem": Range(0, 1 << 20, integer=True),
    "blocks_per_sm": Range(1, 8, integer=True),
    "block_us": Range(0.01, 1e6),  # sim: one block alone on the GPU, up to 1 s
    "buffer_count": Range(1, 2**31, integer=True),
    "scalar_float": Range(-1e300, 1e300),
    # engine and simulated GPU
    "device": Range(0, 1023, integer=True),
    "seed": Range(-(2**63), 2**63 - 1, integer=True),
    "sms": Range(1, 1024, integer=True),
    "launch_latency_us": Range(0.0, 1e4),
    "launch_cost_us": Range(0.0, 1e4),
    "loop_delay_us": Range(0.0, 1e4),
    "interference": Range(0.0, 10.0),
    "version": Range(1, 1, integer=True),
}


def hp_kernels_per_s(tasks: Any) -> float:
    """Open-loop HP kernel issues per second that ``tasks`` (engine.model.Task) ask for."""
    total = 0.0
    for t in tasks:
        a = getattr(t, "arrival", None)
        if a is not None and a.kind in ("poisson", "periodic"):
            total += a.rate_hz * max(1, len(t.steps))
    return total
