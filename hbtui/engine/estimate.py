"""Robust online timing estimates for the scheduler's models.

The engine learns delays it cannot know in advance (launch latency, when a slice queued
behind an HP kernel starts, how late slices end). On a real host these samples have heavy
tails: a ms-long host or driver stall now and then. An EMA carries such a sample for many
updates, and an EMA-plus-deviation margin balloons (141 µs on the H100 where the median
lateness was 6 µs, docs/benchmarks/h100.md); a quantile of recent samples
moves only when most of them move.
"""

from __future__ import annotations


class RecentQuantile:
    """The ``q`` quantile of the last ``n`` samples, recomputed every ``every`` samples;
    ``init`` until ``every`` samples have come (one bad first sample must not decide).

    A scheduler model often gates its own samples (a large learned delay stops the very
    slices that would measure it), so ``expire`` goes back to ``init`` once no sample came
    for a while: the path is tried again rather than shut for good.
    """

    __slots__ = ("q", "init", "value", "last_ns", "_buf", "_i", "_n", "_every", "_since")

    def __init__(self, q: float, init: float, n: int = 128, every: int = 8) -> None:
        if not 0.0 <= q <= 1.0 or n < 1 or not 1 <= every <= n:
            raise ValueError(f"RecentQuantile: bad q={q}, n={n}, every={every}")
        self.q = q
        self.init = float(init)
        self._n = n
        self._every = every
        self.last_ns = 0
        self.reset()

    def reset(self, init: float | None = None) -> None:
        if init is not None:
            self.init = float(init)
        self.value = self.init
        self._buf: list[float] = []
        self._i = 0
        self._since = 0

    def add(self, sample: float, now_ns: int = 0) -> None:
        buf = self._buf
        if len(buf) < self._n:
            buf.append(sample)
        else:
            buf[self._i] = sample
            self._i = (self._i + 1) % self._n
        self.last_ns = now_ns
        self._since += 1
        if self._since >= self._every:
            self._since = 0
            s = sorted(buf)
            self.value = s[int(self.q * (len(s) - 1) + 0.5)]

    def expire(self, now_ns: int, max_age_ns: int) -> bool:
        """Back to ``init`` when the last sample is older than ``max_age_ns``: True if so."""
        if self._buf and now_ns - self.last_ns > max_age_ns:
            self.reset()
            return True
        return False

    def __len__(self) -> int:
        return len(self._buf)
