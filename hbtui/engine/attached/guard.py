"""The harvest guard: what LP work inside an HP program's requests costs that program,
measured, and LP kept out of its requests while the cost is above a target
(``hbtui engine --harvest-guard PCT``; docs/attach.md, "Harvest guard").

The bubble rule decides from a model (how long bubbles last, how long LP kernels take);
on a time-sliced GPU each grant inside a request also costs the HP the switches between
the two programs' contexts, which no model of the HP's own gaps sees (on an H100 a
compiled GPT-2 LP, using 3 % of the GPU, slowed the eager service's requests by 50 %).
So the engine measures the cost itself. Time is cut into epochs of ``EPOCH_NS``; the
last of every ``CYCLE`` epochs is a *control* with no LP inside requests. An epoch's HP
pace is the mean time between the program's consecutive launches inside requests (gaps
over ``MAX_GAP_NS``, host pauses, left out): work slowed by LP, on the GPU or the host,
stretches it. The cost is the median over the recent cycles of the harvest epochs' pace
over the control's. Above ``1 + target`` LP stays out of the requests for a cool-down
(doubling while the cost stays high, up to ``MAX_COOL_NS``); then it is measured anew.
"""

from __future__ import annotations

import statistics
from collections import deque

EPOCH_NS = 50_000_000
CYCLE = 4  # epochs per cycle; the last is the control (LP in requests costs 1/4 of it)
MIN_LAUNCHES = 50  # an epoch with fewer HP launches inside requests says nothing
MAX_GAP_NS = 10_000_000
KEEP = 20  # cycles in the estimate
MIN_CYCLES = 5  # ... at least, before it decides
COOL_NS = 5_000_000_000
MAX_COOL_NS = 60_000_000_000


class HarvestGuard:
    """Per HP program: its measured cost of LP inside its requests, and whether LP may go
    there now (``allowed``). ``target`` 0: off (always allowed, nothing measured)."""

    def __init__(self, target: float = 0.0) -> None:
        self.target = target
        self.cost: float | None = None  # the latest estimate (pace with LP / without)
        self.held_off = False  # LP kept out of the requests (cost above the target)
        self.times_held_off = 0
        self.epoch = 0
        self._start = 0  # the current epoch's start (0: not started)
        self._sum = [0.0] * CYCLE
        self._n = [0] * CYCLE
        self._ratios: deque[float] = deque(maxlen=KEEP)
        self._until = 0  # held off until
        self._cool = COOL_NS
        self._last = 0  # the previous launch's enqueue time

    def on_launch(self, enqueue_ns: int, in_request: bool) -> None:
        """An HP kernel launch; ``in_request``: a request was open before it."""
        if self.target <= 0:
            return
        gap = enqueue_ns - self._last
        if in_request and self._last and 0 <= gap <= MAX_GAP_NS:
            i = self.epoch % CYCLE
            self._sum[i] += gap
            self._n[i] += 1
        self._last = enqueue_ns

    def tick(self, now_ns: int) -> None:
        if self.target <= 0:
            return
        if not self._start or now_ns - self._start >= 10 * EPOCH_NS:  # first, or long quiet
            self._start, self.epoch = now_ns, 0
            self._sum, self._n = [0.0] * CYCLE, [0] * CYCLE
            return
        while now_ns - self._start >= EPOCH_NS:
            self._start += EPOCH_NS
            self.epoch += 1
            if self.epoch % CYCLE == 0:
                self._end_cycle(now_ns)
        self.held_off = now_ns < self._until

    def allowed(self, now_ns: int) -> bool:
        """Whether LP may go into this program's requests now."""
        if self.target <= 0:
            return True
        return now_ns >= self._until and self.epoch % CYCLE != CYCLE - 1

    def _end_cycle(self, now_ns: int) -> None:
        paces = [
            s / n if n >= MIN_LAUNCHES else None for s, n in zip(self._sum, self._n, strict=True)
        ]
        self._sum, self._n = [0.0] * CYCLE, [0] * CYCLE
        if now_ns < self._until:
            return  # held off: the harvest epochs had no LP either
        control, harvest = paces[-1], [p for p in paces[:-1] if p is not None]
        if control is None or control <= 0 or not harvest:
            return  # the HP was (mostly) idle: nothing to compare
        self._ratios.append(statistics.fmean(harvest) / control)
        if len(self._ratios) < MIN_CYCLES:
            return
        self.cost = statistics.median(self._ratios)
        if self.cost > 1 + self.target:
            self._until = now_ns + self._cool
            self._cool = min(2 * self._cool, MAX_COOL_NS)
            self.times_held_off += 1
            self._ratios.clear()  # measured anew once the cool-down ends
        elif self.cost <= 1 + self.target / 2:
            self._cool = COOL_NS
