"""An attached HP program, seen through its segment: GPU busy or idle, and its requests.

HP launches are never held; the engine only reads what the interceptor recorded (launch
records with their enqueue time, and GPU-written completion counters per stream) to know

- whether the program has GPU work outstanding right now (the policies' "HP busy"),
- its requests, from explicit markers (``hbtui.request()``, the C API
  ``hbtui_request_begin/end``) when the program sends any, otherwise inferred from bursts:
  a request begins with the first launch after the program was idle and ends when all
  its launches completed and no new launch came for ``idle_ms`` (its latency runs from
  the first launch's enqueue to the last completion the engine saw),
- the bubbles inside requests (GPU idle while a request is open), from which the
  ``hummingbird`` gate predicts how long the next one lasts.

Completion times are the engine's poll times (a poll every ``POLL_NS`` while programs are
attached), so latencies carry up to one poll period of error.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hbtui.attach import layout as L
from hbtui.engine.attached.guard import HarvestGuard
from hbtui.engine.metrics import Histogram

KIND_REQ_BEGIN = L.KIND_REQ_BEGIN
KIND_REQ_END = L.KIND_REQ_END
GAPS_KEPT = 256  # in-request bubbles remembered for the prediction
MIN_GAPS = 16  # no bubble prediction before this many were seen
# A marker request open this long is closed (its latency recorded as is); a program whose
# markers stop pairing (an outer NVTX range, an exception that skipped the pop) falls
# back to burst inference after one such: LP must not be held forever by a lost end.
MAX_REQUEST_NS = 30_000_000_000
# Counters that stop advancing while launches are outstanding (a counter overwritten out
# of seq order, a kernel waiting on a held LP kernel) are given up on after this long
# with no launch: HP then counts as idle rather than busy forever.
STALE_NS = 200_000_000
# Markers that stop coming (a program that marked one range at start-up, then none) leave
# the burst rule off: after this long without a marker while it launches, it is back on.
MARKER_QUIET_NS = 10_000_000_000
# Of the SLO, the share LP work inside a request may never eat into: HP kernels run slower
# right after LP ran (6-9 % measured on an H100 with built-in kernels), which no bubble
# prediction sees (the cuda backend's slo_reserve, the same figure).
SLACK_RESERVE = 0.35
# What LP in a bubble costs the HP's next kernel (the switch back to its context,
# time-sliced; SM contention under MPS): the wait from the enqueue of the first HP launch
# after a bubble to its completion, after bubbles LP entered vs bubbles at least
# AFTER_MIN_GAP_NS long it did not (the kind LP could have used), medians over the last
# AFTER_KEPT of each within AFTER_TTL_NS (so a cost that stopped LP is measured anew),
# once both have AFTER_MIN.
AFTER_KEPT = 256
AFTER_MIN = 8
AFTER_MIN_GAP_NS = 100_000
AFTER_TTL_NS = 30_000_000_000


@dataclass(slots=True)
class HpRequest:
    id: int
    arrival_ns: int
    tid: int = 0
    end_seq: int = 0  # markers: the end marker's seq (0: still open)
    # markers: per completion slot, the highest seq launched before the end marker
    need: dict[int, int] | None = None
    lp_bubbles: int = 0  # its bubbles LP entered (each costs the HP one switch back)


class HpTracker:
    """Outstanding work, requests and bubbles of one attached HP program."""

    def __init__(self, idle_ns: int) -> None:
        self.idle_ns = idle_ns
        self.last_seq: dict[int, int] = {}  # completion slot -> highest seq launched on it
        # -> highest seq with a completion write of its own (HBTUI_COMP_EVERY_US coalesces
        # the others: they show done only after a later write or a program sync)
        self.last_written: dict[int, int] = {}
        self.busy = False
        self.idle_since = 0  # when the engine saw the last outstanding work complete
        self.last_launch_ns = 0
        self.markers = False  # the program sends request markers: no burst inference
        self.last_marker_ns = 0
        self.open: deque[HpRequest] = deque()
        self.next_id = 0
        self.gaps: deque[int] = deque(maxlen=GAPS_KEPT)
        self._sorted: list[int] | None = None  # gaps, sorted (rebuilt when they change)
        self.launches = 0
        self.latency = Histogram()
        self.done: list[tuple[HpRequest, int]] = []  # (request, latency) since the last take
        self.written_done_at = 0  # when every launch with a write of its own was seen done
        # --bubble-quiet-us (0: off; the attached set sets it only under hummingbird with
        # LP attached): a predicted bubble, for LP grants only (see _predict)
        self.bubble_quiet_ns = 0
        self.predicted_since = 0  # the predicted bubble's start (0: none)
        self._sync_seen = False  # a sync since the last launch: no prediction until the next
        self.predicted_bubbles = 0
        self.written_enq_ns = 0  # enqueue of the newest launch with a write of its own
        self._written_newest = 0  # ... its seq
        self._lag_seq = 0  # the written seq the lag was last measured on
        self.written_lag_ns = 0  # how long after its enqueue it was first seen done
        self.progress_at = 0  # when a counter last advanced or a launch last came
        self._seen_done: dict[int, int] = {}
        self.p50_ns = 0.0  # median request latency so far (the slack's expected remainder)
        self.slo_ns: int | None = None  # the task's SLO (the attached set keeps it current)
        self.timed_out = 0  # marker requests closed by MAX_REQUEST_NS
        self.stale = 0  # times outstanding work was given up on (STALE_NS)
        self.guard = HarvestGuard()  # what LP inside its requests costs it (target: set)
        self.lp_bubbles_done = 0  # bubbles LP entered in the requests completed so far
        self.lp_in_bubble = False  # LP was granted since the HP's last launch
        # the first launch after a bubble, until it completes: slot, seq, enqueue, LP
        # entered the bubble, the bubble's length
        self._after: tuple[int, int, int, bool, int] | None = None
        self.after_lp: deque[tuple[int, int]] = deque(maxlen=AFTER_KEPT)  # (when, wait ns)
        self.after_idle: deque[tuple[int, int]] = deque(maxlen=AFTER_KEPT)
        self._cost: tuple[tuple[object, ...], float | None] = ((), None)  # (samples' key, cost)
        self._polled_ns = 0  # the last poll's time

    # -- feeding -------------------------------------------------------------------
    def on_launch(self, rec: L.Launch, now_ns: int) -> None:
        if rec.kind in (KIND_REQ_BEGIN, KIND_REQ_END):
            self.last_marker_ns = max(self.last_marker_ns, rec.enqueue_ns)
        if rec.kind == KIND_REQ_BEGIN:
            self.markers = True
            self._begin(rec.enqueue_ns, rec.tid)
            return
        if rec.kind == KIND_REQ_END:
            self.markers = True
            mine = [r for r in self.open if r.end_seq == 0 and r.tid == rec.tid]
            for r in mine or [r for r in self.open if r.end_seq == 0]:
                r.end_seq, r.need = rec.seq, dict(self.last_seq)  # the thread's own first
                break
            return
        if rec.flags & L.LF_CAPTURED:
            return  # recorded into a graph, not run
        self.guard.on_launch(rec.enqueue_ns, bool(self.open))
        self.launches += 1
        # a bubble inside the newest open request (with markers, the time between two
        # requests is not one: idle_since is then older than the request's begin)
        start = self.bubble_start
        gap = rec.enqueue_ns - start
        lp_before = self.lp_in_bubble  # (a burst request this launch opens is charged it)
        bubble = self.gpu_idle and self.open and start >= self.open[-1].arrival_ns
        if bubble and start:
            self.gaps.append(max(0, gap))
            self._sorted = None
        self.predicted_since = 0  # (this launch ends a predicted bubble)
        self._sync_seen = False
        if rec.comp_slot != L.COMP_NONE:  # (without a counter, busy cannot be known)
            s = rec.comp_slot
            if bubble and self._after is None and not rec.flags & L.LF_COALESCED:
                self._after = (s, rec.seq, rec.enqueue_ns, self.lp_in_bubble, gap)
            self.lp_in_bubble = False
            if rec.seq > self.last_seq.get(s, 0):
                self.last_seq[s] = rec.seq
            if not rec.flags & L.LF_COALESCED and rec.seq > self.last_written.get(s, 0):
                self.last_written[s] = rec.seq
                if rec.seq > self._written_newest:
                    self._written_newest, self.written_enq_ns = rec.seq, rec.enqueue_ns
            self.busy = True
        self.last_launch_ns = max(self.last_launch_ns, rec.return_ns)
        self.progress_at = max(self.progress_at, now_ns)
        if not self.markers and not self.open:
            self._begin(rec.enqueue_ns, lp=lp_before)

    def _begin(self, t: int, tid: int = 0, lp: bool | None = None) -> None:
        # LP still in the bubble a request begins in (granted in the last one's tail): its
        # first kernel pays the switch back, so the new request is charged that bubble
        # (with markers a grant before the end marker was charged to that request too:
        # counted twice, on the cautious side)
        lp = self.lp_in_bubble if lp is None else lp
        self.open.append(HpRequest(self.next_id, t, tid, lp_bubbles=int(lp)))
        self.next_id += 1

    def poll(
        self,
        completed: list[int],
        now_ns: int,
        syncing: Callable[[], bool] = lambda: False,
        synced: Callable[[], int] = lambda: 0,
    ) -> None:
        """Update busy/idle from the completion counters; close finished requests.

        ``syncing()``: a program thread is inside a wrapped synchronisation, whose return
        advances the counters over the coalesced tail: the tail is not guessed done. Asked
        only then (it reads the interceptor's line: see ``segment._Ring.read``).
        ``synced()``: when a wrapped sync last returned having ended all the program's work;
        asked when the work is seen done, which is dated to that sync if it fell after the
        last poll and the last launch (a request that ends in the program's sync is timed
        to it, not to the engine's tick)."""
        since, self._polled_ns = self._polled_ns, now_ns
        self.guard.tick(now_ns)
        if self._after is not None:
            slot, seq, enq, lp, gap = self._after
            if completed[slot] >= seq:
                if lp or gap >= AFTER_MIN_GAP_NS:
                    (self.after_lp if lp else self.after_idle).append((now_ns, now_ns - enq))
                self._after = None
            elif now_ns - enq > STALE_NS:  # its counter will not move: measure the next
                self._after = None
        for d in (self.after_lp, self.after_idle):
            while d and now_ns - d[0][0] > AFTER_TTL_NS:
                d.popleft()
        for s in self.last_seq:
            if completed[s] != self._seen_done.get(s):
                self._seen_done[s] = completed[s]
                self.progress_at = now_ns
        if self.last_written and all(completed[s] >= q for s, q in self.last_written.items()):
            if not self.written_done_at:
                self.written_done_at = now_ns
            if self._written_newest != self._lag_seq:  # the newest write, first seen done
                self._lag_seq = self._written_newest
                self.written_lag_ns = max(0, now_ns - self.written_enq_ns)
        else:
            self.written_done_at = 0
        if self.busy:
            quiet = now_ns - self.last_launch_ns
            if all(completed[s] >= q for s, q in self.last_seq.items()):
                t = synced()  # (a launch after it, seen done by now, ended later)
                self._idle(t if max(since, self.last_launch_ns) < t <= now_ns else now_ns)
            elif quiet >= self.idle_ns and self.written_done_at and not syncing():
                # only coalesced launches unconfirmed and the program quiet: the work
                # ended once the last launch with a write of its own completed, and not
                # before the last launch was made (with coarse writes, 10 ms apart with HP
                # alone, the last write may lie far back in the burst, or in the one before)
                self._idle(max(self.written_done_at, self.last_launch_ns))
            elif quiet >= STALE_NS and now_ns - self.progress_at >= STALE_NS:
                self.stale += 1  # counters stuck: give up rather than hold LP forever
                self._idle(now_ns)
            elif self.bubble_quiet_ns:
                self._predict(now_ns, quiet, syncing)
        if self.markers:
            self._close_marked(completed, now_ns)
            quiet = self.last_launch_ns - self.last_marker_ns
            if not self.open and quiet >= MARKER_QUIET_NS:
                self.markers = False  # launching, no markers for long: infer from bursts
        elif not self.busy and self.open:
            if now_ns - max(self.idle_since, self.last_launch_ns) >= self.idle_ns:
                self._finish(self.open.popleft(), self.idle_since or now_ns)

    def _predict(self, now_ns: int, quiet: int, syncing: Callable[[], bool]) -> None:
        """--bubble-quiet-us: inside an open request, no launch for that long, every launch
        with a write of its own seen done and the coalesced tail after it due (its last
        launch + the lag with which the newest write was first seen done: about a poll
        while the GPU keeps up with the host, as in an eager service) -> a predicted
        bubble, which only lets LP grants in (busy, idle_since, request ends and the
        counters' story are left alone; the next launch ends it, and a sync ends it with
        no new one before the next launch: a program inside a wrapped sync is waiting for
        the GPU). A guess: a long kernel coalesced behind the write, or another stream's
        tail, is missed, and LP then runs beside HP work; the harvest guard measures what
        that costs. Not measured on a GPU."""
        if not self.open or self._sync_seen:  # (a marker request may close while busy)
            self.predicted_since = 0
            return
        if not self.written_done_at or quiet < self.bubble_quiet_ns:
            return
        if syncing():  # the GPU was not done after all; the time in it is no bubble
            self.predicted_since, self._sync_seen = 0, True
            return
        if now_ns < self.last_launch_ns + self.written_lag_ns:
            return
        if not self.predicted_since:
            self.predicted_since = max(
                self.written_done_at, self.last_launch_ns + self.written_lag_ns
            )
            self.predicted_bubbles += 1

    def _idle(self, at_ns: int) -> None:
        self.busy = False
        self.idle_since = at_ns
        self.predicted_since = 0  # (confirmed now)

    def _close_marked(self, completed: list[int], now_ns: int) -> None:
        keep: deque[HpRequest] = deque()
        for r in self.open:
            if r.need is not None and (
                not self.busy or all(completed[s] >= q for s, q in r.need.items())
            ):
                self._finish(r, now_ns if self.busy else (self.idle_since or now_ns))
            elif now_ns - r.arrival_ns >= MAX_REQUEST_NS:
                self.timed_out += 1
                self._finish(r, now_ns)
                if r.need is None:  # an end marker that never came: infer from bursts
                    self.markers = False
            else:
                keep.append(r)
        self.open = keep

    def _finish(self, r: HpRequest, end_ns: int) -> None:
        lat = max(0, end_ns - r.arrival_ns)
        self.latency.add(lat)
        self.lp_bubbles_done += r.lp_bubbles
        self.p50_ns = self.latency.percentile(50)  # (per request: not per poll)
        self.done.append((r, lat))

    def slack_ns(self, now_ns: int, slo_ns: int | None) -> float | None:
        """How much LP work the oldest open request can still absorb: SLO x (1 - reserve)
        minus what it will have taken at least (the time so far, or the median request
        latency if that is longer). None: no SLO or no open request."""
        if slo_ns is None or not self.open:
            return None
        elapsed = now_ns - self.open[0].arrival_ns
        return slo_ns * (1 - SLACK_RESERVE) - max(elapsed, self.p50_ns)

    def grant_cost_ns(self, default_ns: float) -> float:
        """What LP in one bubble costs this program: as measured on its own kernels
        (``bubble_cost_ns``) once it can be, never below ``default_ns`` (the switch on a
        time-sliced GPU, surely paid; 0 under MPS). The measurement compares the first
        kernels after different bubbles (LP fits only the long host gaps, which come
        before particular kernels), so it can come out below the switch, even negative,
        which would otherwise lift the per-request limit for good."""
        c = self.bubble_cost_ns
        return default_ns if c is None else max(default_ns, c)

    def reset(self) -> None:
        """``reset_stats``: the request figures start over (latency, LP bubbles per
        request, timeouts); what the gate learned (bubbles, costs, the median request it
        prices grants and slack by) is kept."""
        self.latency = Histogram()
        self.lp_bubbles_done = 0
        self.timed_out = self.stale = self.predicted_bubbles = 0
        self.done.clear()

    def may_grant(self, share: float, cost_ns: float) -> bool:
        """Whether LP may go into the current bubble: free if it is already in it (one
        switch back either way), else if its open requests can take one more bubble with
        LP at ``cost_ns`` while what LP costs them stays within ``share`` of the median
        request. With a cost: none before a request completed, none in requests shorter
        than ``cost_ns / share`` (3 ms at 150 us and 5 %)."""
        if cost_ns <= 0 or self.lp_in_bubble:
            return True
        allowed = share * self.p50_ns
        return all((r.lp_bubbles + 1) * cost_ns <= allowed for r in self.open)

    def on_grant(self) -> None:
        """An LP launch went inside the open requests (counted once per bubble)."""
        if not self.lp_in_bubble:
            for r in self.open:
                r.lp_bubbles += 1
        self.lp_in_bubble = True

    # -- reading -------------------------------------------------------------------
    @property
    def bubble_cost_ns(self) -> float | None:
        """How much longer the HP's first kernel after a bubble took when LP ran in the
        bubble than when it did not (medians; None until both have AFTER_MIN). The gate
        asks every poll inside a request: recomputed only when the samples changed."""
        a, b = self.after_lp, self.after_idle
        key = (len(a), a[0] if a else None, a[-1] if a else None,
               len(b), b[0] if b else None, b[-1] if b else None)  # fmt: skip
        if key != self._cost[0]:
            cost = None
            if len(a) >= AFTER_MIN and len(b) >= AFTER_MIN:
                cost = statistics.median(w for _, w in a) - statistics.median(w for _, w in b)
            self._cost = (key, cost)
        return self._cost[1]

    @property
    def lp_bubbles_per_request(self) -> float | None:
        """Bubbles LP entered in a completed request, on average (None before one)."""
        n = self.latency.n
        return self.lp_bubbles_done / n if n else None

    @property
    def in_request(self) -> bool:
        return bool(self.open) or self.busy

    @property
    def gpu_idle(self) -> bool:
        """HP GPU-idle as far as LP grants go: confirmed, or a predicted bubble."""
        return not self.busy or bool(self.predicted_since and self.open)

    @property
    def bubble_start(self) -> int:
        """When the current GPU-idle time began (confirmed or predicted)."""
        return self.predicted_since if self.busy else self.idle_since

    def bubble_fits(self, elapsed_ns: int, need_ns: float, confidence: float = 0.9) -> bool:
        """Whether a bubble that has lasted ``elapsed_ns`` will last ``need_ns`` more, with
        at least ``confidence``: among the recent in-request bubbles at least that long,
        the share that also lasted ``elapsed_ns + need_ns`` (the empirical survival
        function). Waiting through the short bubbles is what makes the long ones usable:
        inter-kernel gaps of a few µs say nothing about a host gap that already lasted
        100 µs."""
        if len(self.gaps) < MIN_GAPS:
            return False
        if self._sorted is None:
            self._sorted = sorted(self.gaps)
        g = self._sorted
        n = len(g)
        alive = n - bisect_left(g, elapsed_ns)
        if alive < MIN_GAPS // 2:
            return False
        last = n - bisect_left(g, elapsed_ns + need_ns)
        return last >= confidence * alive

    def take_done(self) -> list[tuple[HpRequest, int]]:
        d, self.done = self.done, []
        return d
