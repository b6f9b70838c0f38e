"""An attached LP program's gate: which of its launches may go, and what is in flight.

The interceptor holds every LP launch until ``granted_seq`` covers its seq. Grants are a
watermark, so the engine can *pre-grant*: let the next k launches go without a round
trip. What bounds an arriving HP request's wait is the LP work already queued on the GPU,
so the gate keeps granted-but-unfinished LP work at or under a budget (the task's slice
cap, ``slice_us``; default ``DEFAULT_BUDGET_US``), using a per-function duration learned
online from the completion counters (the time between the engine seeing successive
completions on a stream, split evenly among the launches completed in one poll; an
estimate with one poll period of resolution). A kernel longer than the whole budget still
runs, alone, when nothing else is in flight: LP never starves on a big kernel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hbtui.attach import layout as L
from hbtui.attach.segment import Attachment
from hbtui.engine.attached.slices import Slices

DEFAULT_BUDGET_US = 500.0
FIRST_GUESS_NS = 20_000  # a kernel's duration before any was measured
EWMA = 0.25
MAX_AHEAD = 256  # pre-granted launches at most
# In-flight launches whose counters do not move for this long are given up on (a counter
# overwritten out of order, or a kernel that waits on one still held, e.g. a collective):
# the gate then grants again instead of waiting forever. A genuinely longer LP kernel only
# lets more LP work in early.
STALE_NS = 1_000_000_000


@dataclass(slots=True)
class InFlight:
    seq: int
    slot: int
    func: int
    issue_ns: int
    blocks: int = 0  # a slice's blocks (0: a whole launch)


class LpGate:
    """Grants, in-flight accounting and learned durations of one attached LP program."""

    def __init__(self, att: Attachment) -> None:
        self.att = att
        self.inflight: deque[InFlight] = deque()
        self.dur: dict[int, float] = {}  # func -> EWMA duration (ns)
        self.mean_ns = float(FIRST_GUESS_NS)
        self.slot_seen: dict[int, int] = {}  # slot -> when the engine last saw progress
        self.kernels = 0  # launches issued (recorded)
        self.completed = 0
        self.busy_ns = 0.0  # estimated GPU time of completed launches
        self.sliceable_ns = 0.0  # of which in kernels the slicer sliced (variants.py)
        self.gated = False
        self.progress_at = 0  # when a launch last entered or left the in-flight list
        self.stale = 0  # in-flight launches given up on (STALE_NS)
        self.slices = Slices(att)  # launches run as slices (engine.attached.slices)

    def set_gated(self, gated: bool) -> None:
        if gated != self.gated:
            self.gated = gated
            self.att.set_gated(gated)

    def duration_ns(self, func: int) -> float:
        d = self.slices.duration_ns(func)  # a sliced function's next slice
        return d if d is not None else self.dur.get(func, self.mean_ns)

    # -- feeding -------------------------------------------------------------------
    def on_launch(self, rec: L.Launch) -> None:
        if rec.kind not in L.KIND_NAMES or rec.kind >= L.KIND_REQ_BEGIN:
            return
        self.kernels += 1
        if rec.flags & (L.LF_CAPTURED | L.LF_NO_SLOT) or rec.comp_slot == L.COMP_NONE:
            return  # no completion to wait for: it cannot be accounted as in flight
        blocks = rec.slice_blocks if rec.flags & L.LF_SLICE else 0
        if blocks:
            self.slices.on_slice(rec.func, rec.slice_start == 0)
        self.inflight.append(InFlight(rec.seq, rec.comp_slot, rec.func, rec.issue_ns, blocks))
        self.progress_at = max(self.progress_at, rec.return_ns)

    def poll(self, now_ns: int, sliceable: set[int]) -> None:
        """Retire what the GPU completed (in seq order per stream) and learn durations."""
        if not self.inflight:
            return
        done_by_slot: dict[int, list[InFlight]] = {}
        keep: deque[InFlight] = deque()
        att = self.att
        for f in self.inflight:
            if att.completed(f.slot) >= f.seq:
                done_by_slot.setdefault(f.slot, []).append(f)
            else:
                keep.append(f)
        if not done_by_slot and now_ns - self.progress_at >= STALE_NS:
            self.stale += len(keep)  # nothing moved for a second: stop counting them
            keep.clear()
        elif done_by_slot:
            self.progress_at = now_ns
        self.inflight = keep
        for slot, fs in done_by_slot.items():
            start = max(fs[0].issue_ns, self.slot_seen.get(slot, 0))
            share = max(0, now_ns - start) / len(fs)
            self.slot_seen[slot] = now_ns
            for f in fs:
                if f.blocks:  # a slice: its function's block time (whole launches: below)
                    self.slices.learn(f.func, f.blocks, share, f.issue_ns)
                else:
                    old = self.dur.get(f.func)
                    self.dur[f.func] = share if old is None else old + EWMA * (share - old)
                self.busy_ns += share
                if f.func in sliceable and f.func not in self.slices.failed:
                    self.sliceable_ns += share  # (one-wave grids included: they run whole)
            self.completed += len(fs)
            self.mean_ns += EWMA * (share - self.mean_ns)

    def waited(self) -> list[float]:
        """Launches that waited for a grant so far, and the seconds they waited in all."""
        h = self.att.h
        return [int(h.held_launches), int(h.held_ns) / 1e9]

    # -- granting ------------------------------------------------------------------
    def inflight_ns(self) -> float:
        return sum(self.duration_ns(f.func) for f in self.inflight)

    def grant_within(self, budget_ns: float) -> None:
        """HP is not in a request: keep granted LP work at or under ``budget_ns``.

        Held launches (threads already waiting) count against the room like the ones to
        come: with more held than fit, only the oldest that fit are let go (a watermark
        at the next seq would release every waiting thread at once)."""
        att = self.att
        room = budget_ns - self.inflight_ns()
        ahead = min(MAX_AHEAD, int(room // max(1.0, self.mean_ns)))
        held = att.pending() if att.next_seq > att.granted else []  # cheap when none wait
        if ahead > 0:
            if len(held) >= ahead:
                self._grant(held[ahead - 1].seq)
            else:
                self._grant(att.next_seq + ahead - len(held))
        elif not self.inflight and held:  # one kernel bigger than the budget: alone
            self._grant(held[0].seq)

    def grant_in_bubble(self, fits: Callable[[float], bool], cap_ns: float) -> bool:
        """In a bubble inside an HP request: the oldest held launch goes, alone, as a slice
        sized to the bubble when it runs as slices, else whole when ``fits(its learned
        duration)`` and the duration is within ``cap_ns``. True when something went."""
        head = self._head()
        if head is None:
            return False
        before = self.att.granted
        if not self._slice_head(head, fits, cap_ns):
            d = self.duration_ns(head.func)
            if d <= cap_ns and fits(d):
                self._grant(head.seq)
        return self.att.granted != before

    def grant_slice_if(self, fits: Callable[[float], bool], cap_ns: float) -> bool:
        """The slice part of ``grant_in_bubble``: True when the oldest held launch runs as
        slices (its next slice, sized to the bubble, granted or, if none fits, not)."""
        head = self._head()
        return head is not None and self._slice_head(head, fits, cap_ns)

    def _head(self) -> L.Pending | None:
        """The oldest held launch, when nothing of the program is in flight."""
        if self.inflight:
            return None
        pend = self.att.pending()
        return pend[0] if pend else None

    def _slice_head(self, head: L.Pending, fits: Callable[[float], bool], cap_ns: float) -> bool:
        blocks = self.slices.fit_blocks(head.func, fits, cap_ns)  # None: runs whole
        if blocks:
            self._grant(head.seq)
        return blocks is not None

    def _grant(self, seq: int) -> None:
        if seq > self.att.granted:
            self.att.grant(seq)
