"""Workload generators: HP arrival processes and per-request host gaps.

Every random draw comes from a generator seeded by (seed, task name[, request id]), so
the same seed gives the same arrivals and gaps under every policy: the bench compares
policies on identical inputs. (``closed`` arrivals depend on completions by nature.)
"""

from __future__ import annotations

import random
import zlib

from hbtui.engine.model import Task


def _seed(*parts: int | str) -> int:
    h = 0
    for p in parts:
        h = zlib.crc32(str(p).encode(), h)
    return h


class Arrivals:
    """Arrival times (ns) of one HP task's requests."""

    def __init__(self, task: Task, seed: int, start_ns: int = 0) -> None:
        assert task.arrival is not None
        self.spec = task.arrival
        self._rng = random.Random(_seed(seed, task.name, "arrivals"))
        self._t = start_ns
        self._trace_i = 0
        self._trace_base = start_ns
        # closed loop: its initial requests all arrive at the start (a count, not a list:
        # O(1) memory and time however many are outstanding)
        self._start = start_ns
        self._initial = self.spec.outstanding if self.spec.kind == "closed" else 0

    def next(self) -> int | None:
        """The next arrival time; None for a closed loop once its initial requests are out
        (later ones are released by ``on_complete``)."""
        kind = self.spec.kind
        if kind == "poisson":
            self._t += max(1, int(self._rng.expovariate(self.spec.rate_hz) * 1e9))
            return self._t
        if kind == "periodic":
            self._t += max(1, int(1e9 / self.spec.rate_hz))
            return self._t
        if kind == "trace":
            times = self.spec.times_ms
            if self._trace_i == len(times):  # replay the trace back to back
                self._trace_i = 0
                self._trace_base += int(times[-1] * 1e6) + 1
            t = self._trace_base + int(times[self._trace_i] * 1e6)
            self._trace_i += 1
            return t
        if self._initial > 0:
            self._initial -= 1
            return self._start
        return None

    def on_complete(self, now_ns: int) -> int | None:
        """Closed loop: a completion releases the next request; returns its arrival time."""
        if self.spec.kind != "closed":
            return None
        return now_ns + int(self.spec.think_us * 1000)


def request_gaps(task: Task, seed: int, request_id: int) -> tuple[int, ...]:
    """Host gap (ns) before each kernel of one request, with the configured jitter."""
    rng = random.Random(_seed(seed, task.name, request_id))
    gaps = []
    for step in task.steps:
        g = step.gap_us
        if step.jitter:
            g *= 1.0 + step.jitter * (2.0 * rng.random() - 1.0)
        gaps.append(int(g * 1000))
    return tuple(gaps)
