"""Robust online timing estimates for the scheduler's models.

The engine learns delays it cannot know in advance (launch latency, when a slice queued
behind an HP kernel starts, how late slices end). On a real host these samples have heavy
tails: a ms-long host or driver stall now and then. An EMA carries such a sample for many
updates, and an EMA-plus-deviation margin balloons (141 µs on the H100 where the median
lateness was 6 µs, docs/benchmarks/cuda_default_h100.md); a quantile of recent samples
moves only when most of them move.
"""

from __future__ import annotations


class RecentQuantile:
    """The ``q`` quantile of the last ``n`` samples, recomputed every ``every`` samples
    (and at every sample while the window is still short, so it leaves ``init`` fast)."""

    __slots__ = ("q", "init", "value", "_buf", "_i", "_n", "_every", "_since")

    def __init__(self, q: float, init: float, n: int = 128, every: int = 8) -> None:
        if not 0.0 <= q <= 1.0 or n < 1 or every < 1:
            raise ValueError(f"RecentQuantile: bad q={q}, n={n}, every={every}")
        self.q = q
        self.init = float(init)
        self._n = n
        self._every = every
        self.reset()

    def reset(self, init: float | None = None) -> None:
        if init is not None:
            self.init = float(init)
        self.value = self.init
        self._buf: list[float] = []
        self._i = 0
        self._since = 0

    def add(self, sample: float) -> None:
        buf = self._buf
        if len(buf) < self._n:
            buf.append(sample)
        else:
            buf[self._i] = sample
            self._i = (self._i + 1) % self._n
        self._since += 1
        if self._since >= self._every or len(buf) <= self._every:
            self._since = 0
            s = sorted(buf)
            self.value = s[int(self.q * (len(s) - 1) + 0.5)]

    def __len__(self) -> int:
        return len(self._buf)
