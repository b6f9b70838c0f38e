"""Streaming metrics with constant memory (definitions: docs/ARCHITECTURE.md#metrics).

- ``Histogram``: log-linear buckets over integer ns (< 0.8 % relative error), so
  percentiles over hours cost a fixed 2,816 counters.
- ``IntervalUnion``: total length of a union of intervals that arrive roughly in
  order; intervals older than a horizon are folded into a running total.
- ``Metrics``: per-task and GPU-wide aggregates fed by the scheduler.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from operator import mul
from typing import Any

from hbtui.engine.model import HP, Launch

_SUB = 64  # sub-buckets per power of two (top 7 bits of the value are kept)
_NBUCKETS = 64 * 42 + 128


def _bucket(v: int) -> int:
    if v < 2 * _SUB:
        return v if v > 0 else 0
    shift = v.bit_length() - 7
    return _SUB * shift + (v >> shift)


def _bucket_mid(i: int) -> float:
    if i < 2 * _SUB:
        return float(i)
    shift = i // _SUB - 1
    m = i - _SUB * shift
    return ((m << shift) + ((1 << shift) - 1) / 2) if shift else float(m)


_MIDS = [_bucket_mid(i) for i in range(_NBUCKETS)]  # increasing


class Histogram:
    """Fixed-size histogram of non-negative integer values (ns)."""

    __slots__ = ("counts", "n", "max", "sum")

    def __init__(self) -> None:
        self.counts = [0] * _NBUCKETS
        self.n = 0
        self.max = 0
        self.sum = 0  # of the values added (exact; a shifted copy's is from bucket midpoints)

    def add(self, v: int, count: int = 1) -> None:
        if v < 0:
            v = 0
        self.counts[_bucket(v)] += count
        self.n += count
        self.sum += v * count
        if v > self.max:
            self.max = v

    def shifted(self, by: int) -> Histogram:
        """A copy with ``by`` subtracted from every value (clamped at 0)."""
        h = Histogram()
        for i, c in enumerate(self.counts):
            if c:
                h.add(int(_bucket_mid(i)) - by, c)
        h.max = max(0, self.max - by)
        return h

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.n += other.n
        self.sum += other.sum
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float:
        """Value at percentile ``p`` (0–100); exact max for p=100; 0 when empty."""
        if self.n == 0:
            return 0.0
        if p >= 100:
            return float(self.max)
        rank = p / 100 * self.n
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                return min(_bucket_mid(i), float(self.max))
        return float(self.max)

    def fraction_le(self, v: int) -> float:
        """Share of values <= v (bucket resolution, < 0.8 % relative error in v)."""
        if self.n == 0:
            return 0.0
        b = _bucket(v)
        return sum(self.counts[: b + 1]) / self.n

    def cumulative_le(self, bounds_ns: list[int]) -> list[int]:
        """Counts of values <= each bound (ascending), for Prometheus buckets: a bucket of
        this histogram counts toward a bound when its midpoint is <= the bound, so only
        values within half a bucket of a bound (< 0.8 % of it) can land on the wrong side."""
        top = _bucket(self.max) + 1  # no value above max: the buckets past it are empty
        cum = list(accumulate(self.counts[:top]))
        ks = (min(top, bisect_right(_MIDS, b)) for b in bounds_ns)
        return [cum[k - 1] if k else 0 for k in ks]

    def excess(self, by: int, bounds_ns: list[int]) -> tuple[list[int], float]:
        """``shifted(by)``'s ``cumulative_le(bounds_ns)`` and sum without building the copy:
        counts of max(0, v - by) <= each bound, and the sum of max(0, v - by) (from bucket
        midpoints)."""
        le = self.cumulative_le([b + by for b in bounds_ns])
        k, top = bisect_right(_MIDS, by), _bucket(self.max) + 1
        tail = self.counts[k:top]
        return le, sum(map(mul, tail, _MIDS[k:top])) - by * sum(tail)


class IntervalUnion:
    """Length of the union of [start, end) intervals.

    Callers pass a ``horizon``: no interval added later will start before it. Merged
    intervals that end before the horizon are folded into ``closed``, keeping memory
    bounded by the number of intervals that can still overlap new ones.
    """

    __slots__ = ("closed", "_open")

    def __init__(self) -> None:
        self.closed = 0
        self._open: list[list[int]] = []  # disjoint, sorted by start

    def add(self, start: int, end: int, horizon: int) -> None:
        if end <= start:
            return
        iv = self._open
        if iv and iv[-1][0] <= start:  # common case: at or after the last interval's start
            last = iv[-1]
            if start <= last[1]:
                if end > last[1]:
                    last[1] = end
            else:
                iv.append([start, end])
            if iv[0][1] < horizon:
                self._fold(horizon)
            return
        i = len(iv)
        while i and iv[i - 1][0] > start:
            i -= 1
        if i and iv[i - 1][1] >= start:  # merge with the left neighbour
            i -= 1
            iv[i][1] = max(iv[i][1], end)
        else:
            iv.insert(i, [start, end])
        cur = iv[i]
        j = i + 1
        while j < len(iv) and iv[j][0] <= cur[1]:  # swallow right neighbours
            cur[1] = max(cur[1], iv[j][1])
            j += 1
        del iv[i + 1 : j]
        self._fold(horizon)

    def _fold(self, horizon: int) -> None:
        iv = self._open
        n = 0
        while n < len(iv) and iv[n][1] < horizon:
            self.closed += iv[n][1] - iv[n][0]
            n += 1
        del iv[:n]

    def total(self, upto: int | None = None) -> int:
        """Union length, counting open intervals clipped at ``upto``."""
        t = self.closed
        for s, e in self._open:
            if upto is not None:
                e = min(e, upto)
            if e > s:
                t += e - s
        return t


class TaskStats:
    """Aggregates for one task; HP fields stay empty for LP tasks and vice versa."""

    def __init__(self, name: str, cls: str) -> None:
        self.name = name
        self.cls = cls
        self.latency = Histogram()  # hp: request latency
        self.waits: dict[str, Histogram] = {}  # hp: raw enqueue→start per kernel
        self.requests = 0
        self.slo_hits = 0
        self.blocks = 0  # lp: blocks completed
        self.slices = 0  # lp: launches completed

    def preemption(self, baseline_ns: dict[str, int]) -> Histogram:
        """Enqueue→start beyond the exclusive median wait of the same kernel."""
        h = Histogram()
        for k, w in self.waits.items():
            h.merge(w.shifted(baseline_ns.get(k, 0)))
        return h

    def summary(self, slo_ns: int | None, wall_ns: int, lp_alone: float | None,
                baseline_ns: dict[str, int]) -> dict[str, Any]:  # fmt: skip
        d: dict[str, Any] = {"name": self.name, "class": self.cls}
        if self.cls == "hp":
            pre = self.preemption(baseline_ns)
            d.update(
                requests=self.requests,
                slo_ms=slo_ns / 1e6 if slo_ns else None,
                slo_attainment=self.slo_hits / self.requests if self.requests and slo_ns else None,
                p50_ms=self.latency.percentile(50) / 1e6,
                p99_ms=self.latency.percentile(99) / 1e6,
                preemption_us={
                    "p50": pre.percentile(50) / 1e3,
                    "p99": pre.percentile(99) / 1e3,
                    "max": pre.max / 1e3,
                },
            )
        else:
            rate = self.blocks / (wall_ns / 1e9) if wall_ns else 0.0
            d.update(
                work_per_s=rate,
                throughput_norm=rate / lp_alone if lp_alone else None,
                slices=self.slices,
            )
        return d


class Metrics:
    """Everything the bench JSON and the telemetry `stats` need, in constant memory."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskStats] = {}
        self.gpu_busy = IntervalUnion()  # any kernel running
        self.hp_active = IntervalUnion()  # an HP kernel queued or running
        self.lp_busy_or_hp = IntervalUnion()  # LP running ∪ HP active (for harvest)
        self.start_ns = 0
        self.preempt_baseline_ns: dict[str, int] = {}  # kernel -> exclusive median wait

    def reset(self, now_ns: int) -> None:
        names = [(t.name, t.cls) for t in self.tasks.values()]
        baseline = self.preempt_baseline_ns
        self.__init__()  # type: ignore[misc]
        self.preempt_baseline_ns = baseline
        self.start_ns = now_ns
        for name, cls in names:
            self.task(name, cls)

    def task(self, name: str, cls: str) -> TaskStats:
        ts = self.tasks.get(name)
        if ts is None or ts.cls != cls:  # new, or re-added under the same name as another class
            ts = self.tasks[name] = TaskStats(name, cls)
        return ts

    def on_launch_done(self, launch: Launch, horizon: int) -> None:
        """Account one completed launch; ``horizon`` = oldest issue time still in flight."""
        end = launch.end_ns
        if end <= self.start_ns:
            return
        start = max(launch.start_ns, self.start_ns)
        self.gpu_busy.add(start, end, horizon)
        ts = self.tasks[launch.task]
        if launch.cls == HP:
            hist = ts.waits.get(launch.kernel.name)
            if hist is None:
                hist = ts.waits[launch.kernel.name] = Histogram()
            hist.add(launch.start_ns - launch.issue_ns)
            issue = max(launch.issue_ns, self.start_ns)
            self.hp_active.add(issue, end, horizon)
            self.lp_busy_or_hp.add(issue, end, horizon)
        else:
            self.lp_busy_or_hp.add(start, end, horizon)
            ts.blocks += launch.blocks
            ts.slices += 1

    def on_request_done(self, task: str, latency_ns: int, slo_ns: int | None) -> None:
        ts = self.tasks[task]
        ts.requests += 1
        ts.latency.add(latency_ns)
        if slo_ns is not None and latency_ns <= slo_ns:
            ts.slo_hits += 1

    def wait_medians(self) -> dict[str, int]:
        """Median raw HP wait per kernel: the preemption baseline when taken under exclusive."""
        merged: dict[str, Histogram] = {}
        for ts in self.tasks.values():
            for k, h in ts.waits.items():
                merged.setdefault(k, Histogram()).merge(h)
        return {k: int(h.percentile(50)) for k, h in merged.items()}

    def gpu_figures(self, now_ns: int) -> dict[str, float]:
        wall = max(1, now_ns - self.start_ns)
        hp = self.hp_active.total(now_ns)
        bubble = wall - hp
        harvested = self.lp_busy_or_hp.total(now_ns) - hp
        return {
            "wall_s": wall / 1e9,
            "gpu_busy": self.gpu_busy.total(now_ns) / wall,
            "harvest_ratio": harvested / bubble if bubble > 0 else 0.0,
            "bubble_s": bubble / 1e9,
        }
