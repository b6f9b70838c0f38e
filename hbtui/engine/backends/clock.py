"""GPU clock (%globaltimer stamps) → host clock (``time.perf_counter_ns``). Pure: no CUDA.

Both ends of every built-in launch are stamped by the kernel itself with %globaltimer
into host-mapped memory: block 0 writes the start at entry, the last block to finish
writes the end. Event timestamps are not used for this: an event recorded before an HP
kernel fires when the stream reaches it, not when the kernel gets SMs behind running LP
blocks, and on the lent H100 a chain of cuEventElapsedTime re-anchors drifted 245 µs
from the host clock in ~15 s and disagreed with %globaltimer.

host = stamp + offset. The offset starts from a calibration (``calibrate``: a one-block
kernel launched N times on an idle GPU, the host spinning on its stamp: offset = min(host
time the stamp became visible − stamp), an upper bound; ``bound_ns`` is the gap to the
lower bound max(host time before the launch − stamp)). ``ClockTracker`` then tracks it
online from two free bounds on every completion: the end cannot be later than the poll
that saw the launch done (offset ≤ seen − end stamp; applied at once) and the start
cannot precede the issue (offset ≥ issue − start stamp); between completions the
estimate relaxes by 50 ppm so it follows drift either way (%globaltimer vs
perf_counter_ns drifted ~13 ppm on the lent H100 VM, ~200 µs in 15 s, so a fixed offset
is not enough). Converted times are late by about the poll latency (≈1–3 µs); durations
are exact GPU-clock differences.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

RELAX_DIV = 20_000  # offset may drift up by 1 ns per 20 µs (50 ppm; 13 ppm seen on an H100)


@dataclass(frozen=True, slots=True)
class Calibration:
    offset_ns: int  # host − %globaltimer, the upper bound
    bound_ns: int  # upper − lower bound
    latency_ns: int  # median enqueue → start stamp, on the host clock
    latency_samples_ns: list[int]


def calibrate(samples: Sequence[tuple[int, int, int]]) -> Calibration:
    """The offset from (host time before the launch, start stamp, host time the stamp was
    seen) samples. The offset lies in [max(h0 − g), min(h_seen − g)]; the upper bound is
    used (stamps become visible late, never early). The first eighth is dropped (cold)."""
    use = samples[len(samples) // 8 :]
    if not use:
        raise ValueError("calibration needs at least one sample")
    up = min(h - g for _, g, h in use)
    lo = max(h0 - g for h0, g, _ in use)
    lat = [g + up - h0 for h0, g, _ in use]
    return Calibration(up, up - lo, int(statistics.median(lat)), lat)


class ClockTracker:
    """The tracked offset, and per-stream FIFO of the converted end times."""

    def __init__(self, offset_ns: int, t_ns: int) -> None:
        self.first_offset_ns = offset_ns
        self.stats = {"raised": 0, "no_stamp": 0}  # lower-bound raises; launches w/o stamps
        self.reset(offset_ns, t_ns)

    def reset(self, offset_ns: int, t_ns: int) -> None:
        """A fresh calibration at host time ``t_ns`` (the stats and the first offset stay)."""
        self.offset_ns = offset_ns
        self.t_ns = t_ns
        self.last_end: dict[int, int] = {}

    def tracked(self, now_ns: int) -> int:
        """The offset as it would be used at ``now_ns`` (relaxed since the last update)."""
        return self.offset_ns + (now_ns - self.t_ns) // RELAX_DIV

    def times(self, stream: int, issue: int, g0: int, g1: int, seen_ns: int) -> tuple[int, int]:
        """(start, end) on the host clock of a launch issued at ``issue``, stamped ``g0``
        and ``g1`` (0: no stamp) and seen done at ``seen_ns``; updates the offset."""
        off = self.offset_ns + (seen_ns - self.t_ns) // RELAX_DIV
        if g1 and seen_ns - g1 < off:  # it ended before we saw it done
            off = seen_ns - g1
        if g0 and issue - g0 > off:  # and started after it was issued
            off = issue - g0
            self.stats["raised"] += 1
        self.offset_ns, self.t_ns = off, seen_ns
        start = g0 + off if g0 else issue
        end = g1 + off if g1 else seen_ns
        if not (g0 and g1):
            self.stats["no_stamp"] += 1
        start = max(start, issue)
        end = self._fifo(stream, min(max(end, start), seen_ns))
        return min(start, end), end

    def event_times(self, stream: int, issue: int, dur_ns: int, seen_ns: int) -> tuple[int, int]:
        """(start, end) of a launch timed by events (user kernels): it ended when seen,
        started ``dur_ns`` (their elapsed time) before, never before its issue. Does not
        touch the offset."""
        end = self._fifo(stream, seen_ns)
        return min(end, max(issue, end - dur_ns)), end

    def _fifo(self, stream: int, end: int) -> int:
        last = self.last_end.get(stream, 0)
        if end < last:  # keep per-stream FIFO visible
            end = last
        self.last_end[stream] = end
        return end
