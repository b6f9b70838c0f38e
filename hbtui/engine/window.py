"""Rolling-window figures over the last few seconds, in constant memory.

The cumulative ``engine.metrics`` aggregates cover everything since the last reset;
the console also wants "now". A ring of ``slots`` time slots (each ``slot_ns`` of
backend time) holds per-task counters and coarse latency histograms; figures merge the
slots. Histograms here use 16 buckets per power of two (≤ 4.4 % relative error) over
1 ns .. ~1 h: 560 counters, so merging a 10-slot window is cheap enough for 1 Hz stats.
"""

from __future__ import annotations

import math
from typing import Any

_PER_OCTAVE = 16
_NB = 42 * _PER_OCTAVE  # up to 2^42 ns ≈ 73 min


def _bucket(v: int) -> int:
    if v <= 0:
        return 0
    return min(_NB - 1, int(math.log2(v) * _PER_OCTAVE))


def _value(i: int) -> float:
    return 2.0 ** ((i + 0.5) / _PER_OCTAVE)


class CoarseHist:
    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = [0] * _NB
        self.n = 0

    def add(self, v: int) -> None:
        self.counts[_bucket(v)] += 1
        self.n += 1

    def clear(self) -> None:
        self.counts = [0] * _NB
        self.n = 0


def percentile(hists: list[CoarseHist], p: float) -> float | None:
    """Percentile ``p`` (0-100) over several histograms; None when they are empty."""
    n = sum(h.n for h in hists)
    if n == 0:
        return None
    rank = p / 100 * n
    seen = 0
    for i in range(_NB):
        seen += sum(h.counts[i] for h in hists if h.n)
        if seen >= rank:
            return _value(i) if i else 0.0
    return _value(_NB - 1)


class _Slot:
    __slots__ = ("t0", "latency", "preempt", "requests", "hits")

    def __init__(self) -> None:
        self.t0 = 0
        self.latency: dict[str, CoarseHist] = {}
        self.preempt: dict[str, CoarseHist] = {}
        self.requests: dict[str, int] = {}
        self.hits: dict[str, int] = {}

    def reset(self, t0: int) -> None:
        self.t0 = t0
        for h in (*self.latency.values(), *self.preempt.values()):
            h.clear()
        for d in (self.requests, self.hits):
            d.clear()


Mark = dict[str, Any]  # cumulative totals: busy/hp/lp_or_hp (ns), blocks/slices per task


class Window:
    """Figures over the last ``slots × slot_ns`` of backend time.

    HP latencies and waits go into per-slot coarse histograms (``on_request``,
    ``on_wait``). Everything cumulative (GPU interval totals, LP blocks) is not fed per
    launch — that would cost the loop ~1 µs per slice — but sampled as a ``Mark`` at
    each slot boundary; window figures are differences between now and the oldest mark.
    Tasks that disappear keep their small histograms until ``clear``; the task count is
    bounded, so memory is too.
    """

    def __init__(self, slots: int = 10, slot_ns: int = 500_000_000) -> None:
        self.slot_ns = slot_ns
        self._slots = [_Slot() for _ in range(slots)]
        self._marks: list[tuple[int, Mark]] = []
        self.clear(0)

    def clear(self, now_ns: int, mark: Mark | None = None) -> None:
        for s in self._slots:
            s.reset(now_ns)
        self._cur = 0
        self._marks = [(now_ns, mark)] if mark is not None else []

    def advance(self, now_ns: int, mark: Any) -> None:
        """Rotate slots so the current one covers ``now_ns``; call it from the loop tick.
        ``mark`` is a callable returning the current cumulative ``Mark``."""
        cur = self._slots[self._cur]
        if now_ns - cur.t0 < self.slot_ns:
            return
        t0 = cur.t0 + self.slot_ns
        if now_ns - t0 >= self.slot_ns:  # idle for more than a slot: realign
            t0 = now_ns - (now_ns - cur.t0) % self.slot_ns
        self._cur = (self._cur + 1) % len(self._slots)
        self._slots[self._cur].reset(t0)
        self._marks.append((now_ns, mark()))
        horizon = now_ns - self.slot_ns * len(self._slots)
        while len(self._marks) > 1 and self._marks[1][0] <= horizon:
            self._marks.pop(0)

    def on_wait(self, task: str, preempt_ns: int) -> None:
        cur = self._slots[self._cur]
        h = cur.preempt.get(task)
        if h is None:
            h = cur.preempt[task] = CoarseHist()
        h.add(preempt_ns)

    def on_request(self, task: str, latency_ns: int, slo_ok: bool | None) -> None:
        cur = self._slots[self._cur]
        h = cur.latency.get(task)
        if h is None:
            h = cur.latency[task] = CoarseHist()
        h.add(latency_ns)
        cur.requests[task] = cur.requests.get(task, 0) + 1
        if slo_ok:
            cur.hits[task] = cur.hits.get(task, 0) + 1

    def figures(
        self,
        now_ns: int,
        mark: Mark,
        hp_tasks: list[str],
        lp_tasks: list[str],
        lp_alone: dict[str, float],
    ) -> dict[str, Any]:
        """``{"span_s", "gpu_busy", "harvest_ratio", "tasks": {name: {...}}}``."""
        full = self.slot_ns * len(self._slots)
        live = [s for s in self._slots if now_ns - s.t0 < full]
        out: dict[str, Any] = {"span_s": 0.0, "gpu_busy": None, "harvest_ratio": None}
        t0, m0 = self._marks[0] if self._marks else (now_ns, mark)
        span = now_ns - t0
        if span > 0:
            out["span_s"] = span / 1e9
            hp = mark["hp"] - m0["hp"]
            bubble = span - hp
            out["gpu_busy"] = (mark["busy"] - m0["busy"]) / span
            out["harvest_ratio"] = (mark["lpu"] - m0["lpu"] - hp) / bubble if bubble > 0 else 0.0
        tasks: dict[str, Any] = {}
        for name in hp_tasks:
            lat = [s.latency[name] for s in live if name in s.latency]
            pre = [s.preempt[name] for s in live if name in s.preempt]
            req = sum(s.requests.get(name, 0) for s in live)
            hits = sum(s.hits.get(name, 0) for s in live)
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            q50, q99 = percentile(pre, 50), percentile(pre, 99)
            tasks[name] = {
                "requests": req,
                "slo_attainment": hits / req if req else None,
                "p50_ms": None if p50 is None else p50 / 1e6,
                "p99_ms": None if p99 is None else p99 / 1e6,
                "preemption_us": {
                    "p50": None if q50 is None else q50 / 1e3,
                    "p99": None if q99 is None else q99 / 1e3,
                },
            }
        for name in lp_tasks:
            d: dict[str, Any] = {"work_per_s": None, "throughput_norm": None, "slices_per_s": None}
            if span > 0:
                blocks = mark["blocks"].get(name, 0) - m0["blocks"].get(name, 0)
                rate = max(0, blocks) / (span / 1e9)
                alone = lp_alone.get(name)
                slices = mark["slices"].get(name, 0) - m0["slices"].get(name, 0)
                d = {
                    "work_per_s": rate,
                    "throughput_norm": rate / alone if alone else None,
                    "slices_per_s": max(0, slices) / (span / 1e9),
                }
            tasks[name] = d
        out["tasks"] = tasks
        return out
