"""The four scheduling policies. Each decides which LP launches to issue *now*.

HP kernels are always issued by the scheduler the moment they are due; a policy only
chooses the stream HP goes on and what LP work to issue. Policies read live task state
(priority, slice size, SLO, paused) at every decision, so a change applies at the next
one. ``decide`` returns the time at which it wants to be asked again (or None: ask me at
the next completion or host event).
"""

from __future__ import annotations

from dataclasses import dataclass

from hbtui.engine.backends.base import HP_STREAM, LP_STREAM
from hbtui.engine.model import Launch
from hbtui.engine.timing import AFTER, ARMED, COLD, DEFAULT_SLICE_US, QUEUED
from hbtui.engine.view import SchedulerView

MAX_LEAD_NS = 100_000  # cap on how early pre-issue wake-ups are moved (host loop delay)
_RECHECK_NS = 2_000  # an HP kernel due but not issued, and LP that cannot be armed: retry


@dataclass(frozen=True)
class HummingbirdConfig:
    """Hummingbird's tuning. Benchmarks vary it by constructing one (``make_policy``)."""

    max_consolidate: int = 4  # slices merged into one launch in long inter-request bubbles
    late_margin: bool = True  # end slices the learned lateness before the next HP kernel is due
    # Fraction of each HP SLO that LP slices may never use; None: the backend's figure
    # (Backend.slo_reserve: what LP costs HP that the slack model cannot see).
    slack_reserve: float | None = None
    behind_hp: bool = True  # queue a gap's first slice behind the next (chained) HP kernel
    arm_ahead: bool = True  # ... already during the gap before that kernel (armed in the backend)
    behind_slices: int = 3  # slices queued behind it (the cuda backend's native thread arms 3)
    # LP plans for a host gap this many mean absolute deviations below its learned mean (1.5:
    # about the 12th percentile of a uniform ±jitter, 2.0 its shortest gap). A gap shorter
    # than planned makes the next HP kernel wait for the slice still running; on the H100,
    # 1.5 gave as much or more LP than 2.0 at no cost in attainment, 1.0 less of both.
    gap_devs: float = 1.5


class Policy:
    name = "?"
    hp_stream = HP_STREAM

    def decide(self, s: SchedulerView, now: int) -> int | None:
        raise NotImplementedError


class Exclusive(Policy):
    """HP only: the reference latency."""

    name = "exclusive"

    def decide(self, s: SchedulerView, now: int) -> int | None:
        return None


class Spatial(Policy):
    """HP and LP launched freely on separate priority streams (multi-stream sharing)."""

    name = "spatial"

    def decide(self, s: SchedulerView, now: int) -> int | None:
        for task in s.lp_tasks():
            while s.lp_inflight_of(task.name) < 2:  # keep the LP stream fed
                s.issue_lp(task, s.lp_remaining(task))
        return None


class Temporal(Policy):
    """REEF-style time sharing: whole LP kernels, only while no HP request is in flight.

    HP shares the LP stream, so an HP request that arrives while an LP kernel runs
    waits for that whole kernel (no concurrent execution, no preemption).
    """

    name = "temporal"
    hp_stream = LP_STREAM

    def decide(self, s: SchedulerView, now: int) -> int | None:
        if s.hp_requests_in_flight or s.lp_inflight:
            return None
        tasks = s.lp_tasks()
        if tasks:
            s.issue_lp(tasks[0], s.lp_remaining(tasks[0]))
        return None


class Hummingbird(Policy):
    """LP sliced into wave-sized sub-grids issued only into HP bubbles.

    slice = min(operator cap, predicted remaining bubble, SLO-slack bound), in whole
    waves (the smallest slice that still fills the GPU) unless the operator forces a
    block count. The next slice is pre-issued at the predicted end of the current one
    minus the launch latency, with at most one queued, so LP never leaves a gap and
    an arriving HP kernel waits for at most the in-flight slice. When the backend issues
    HP itself (the HP chain), a gap's first slices (up to ``behind_slices``) are queued
    behind the HP kernel before the gap as soon as nothing more fits into the gap before
    that — while it runs, or armed in the backend before it is even issued: they start
    when it ends, with no host round trip (25–45 µs on the H100's host). An unsliceable
    kernel is launched whole, and only while no LP launch and no HP request is in flight.
    """

    name = "hummingbird"

    def __init__(self, config: HummingbirdConfig | None = None) -> None:
        self.config = cfg = config or HummingbirdConfig()
        self._gap_devs = cfg.gap_devs
        # The host loop answers a wake-up late (tens of µs on a busy VM): pre-issue wakes
        # this much earlier, learned from how late pre-issues reached submit().
        self.lead_ns = 0.0
        self._wake = (0, -1)  # (pre-issue wake-up asked for, id of the slice it follows)
        # why decisions issued nothing (or issued): cheap counters for diagnostics
        self.why: dict[str, int] = dict.fromkeys(
            ("hp_active", "behind_hp", "armed", "armed_wait", "two_inflight",
             "pre_issue_wait", "hp_due", "below_wave", "issued"), 0,
        )  # fmt: skip

    def _reserve(self, s: SchedulerView) -> float:
        r = self.config.slack_reserve
        return s.backend.slo_reserve if r is None else r

    def decide(self, s: SchedulerView, now: int) -> int | None:
        why = self.why
        cfg = self.config
        woken, self._wake = self._wake, (0, -1)  # only the next decision may learn from it
        if s.hp_kernels_active:
            got = self._behind_hp(s, now) if cfg.behind_hp and not s.lp_inflight else False
            if got:
                why["behind_hp"] += 1
                return None
            why["hp_active"] += 1
            if got is None:  # due, not issued yet, and this kernel cannot be armed
                return now + _RECHECK_NS
            return None  # HP work queued or running: issue stops at once
        inflight = s.lp_inflight
        if len(inflight) >= 2:
            why["two_inflight"] += 1
            if s.hp_requests_in_flight and not self._fits_after(s, now, inflight[-1]):
                self._arm(s, now, True)  # the gap is full: queue the next one's first slices
            return None  # one running, one queued: the next completion wakes us
        tasks = s.lp_tasks()
        if not tasks:
            return None
        task = tasks[0]
        kernel = s.lp_kernel(task)
        if not kernel.sliceable:  # e.g. grid sync: run it whole, gated like temporal
            if not inflight and not s.hp_requests_in_flight:
                s.issue_lp(task, s.lp_remaining(task))
            return None
        lat = s.launch_latency_ns
        pre_issue = bool(inflight)
        if pre_issue and inflight[-1].after is not None:
            if not s.backend.chain_issued(inflight[-1].after):
                why["armed_wait"] += 1
                return None  # armed behind an HP kernel not issued yet: nothing goes first
        # nothing we issue now starts before this (the loop's own delay to submit())
        earliest = now + s.issue_delay_ns + lat
        if pre_issue:
            slice_start = inflight[-1].predicted_ns
            wake = slice_start - lat - int(self.lead_ns)
            if now < wake:
                why["pre_issue_wait"] += 1
                self._wake = (wake, inflight[-1].id)
                return wake  # pre-issue at predicted end − launch latency (− loop delay)
            target = slice_start
            slice_start = max(slice_start, earliest)  # woken late: the slice ahead is done
        else:
            slice_start = target = earliest

        wave_blocks, wave_ns = s.waves.model(kernel)
        # An operator block count replaces the µs cap; the bubble and SLO bounds still hold.
        cap_ns = 1 << 62 if task.slice_blocks else int((task.slice_us or DEFAULT_SLICE_US) * 1000)
        in_request = s.hp_requests_in_flight > 0
        if not in_request:  # long inter-request bubble: consolidate slices
            age = now - s.bubble_start_ns
            cap_ns *= min(cfg.max_consolidate, 1 + age // (4 * cap_ns))
        left_now = s.predicted_bubble_left(now, self._gap_devs)
        if left_now < 2 * lat:
            # The next HP kernel is due about now: issuing would keep the (single) host
            # thread busy in cuLaunchKernel just when it must enqueue HP.
            why["hp_due"] += 1
            self._arm(s, now, in_request)
            return None
        bubble = left_now - (slice_start - now)
        if cfg.late_margin:
            bubble -= s.margin_ns(QUEUED if pre_issue else COLD)
        budget = min(cap_ns, bubble, s.slack_bound(now, self._reserve(s)))
        waves = budget // wave_ns if wave_ns > 0 else 0
        if task.slice_blocks:  # operator-forced block count (may be below one wave)
            if budget <= 0:
                self._arm(s, now, in_request)
                return None
            blocks = min(task.slice_blocks, max(1, waves) * wave_blocks)
        elif waves < 1:
            if cap_ns < wave_ns:  # the cap alone forbids this kernel: say so, once
                s.warn_once(
                    (task.name, kernel.name),
                    f"task {task.name}: slice cap {cap_ns / 1e3:g} us is below one wave of "
                    f"{kernel.name} ({wave_ns / 1e3:.1f} us): LP is stalled; raise slice_us "
                    "or force slice_blocks",
                )
            why["below_wave"] += 1
            self._arm(s, now, in_request)
            return None  # below one full wave the GPU is not saturated: wait
        else:
            blocks = waves * wave_blocks
        why["issued"] += 1
        la = s.issue_lp(task, min(blocks, s.lp_remaining(task)), start_ns=slice_start)
        wake, after_id = woken
        if pre_issue and after_id == s.lp_inflight[-2].id and now >= wake:
            # the pre-issue we asked to be woken for: how late (or early) did it reach
            # submit() against its target? The lead converges to the loop's delay.
            err = min(la.issue_ns - (target - lat), MAX_LEAD_NS)
            self.lead_ns = min(max(self.lead_ns + 0.2 * err, 0.0), MAX_LEAD_NS)
        return None  # the loop asks again right away, to schedule the pre-issue

    def _arm(self, s: SchedulerView, now: int, in_request: bool) -> None:
        """Nothing more fits into this host gap: queue the next gap's first slices behind
        the HP kernel that ends this one, now. The backend arms it to go out right after
        that kernel's launch, so it starts when the kernel ends even when the kernel is
        shorter than the host loop's reaction time (norm, act: 2-5 µs on the H100)."""
        if not (self.config.behind_hp and self.config.arm_ahead and in_request):
            return
        nxt = s.next_chained_hp()
        if nxt is None or (s.lp_inflight and s.lp_inflight[-1].after is nxt.launch):
            return  # armed already
        if self._behind_hp(s, now):  # (None: cannot be armed, try once the kernel is out)
            self.why["armed"] += 1

    def _fits_after(self, s: SchedulerView, now: int, last: Launch) -> bool:
        """Would one more wave of LP fit into this gap after ``last``?"""
        tasks = s.lp_tasks()
        if not tasks:
            return False
        _, wave_ns = s.waves.model(s.lp_kernel(tasks[0]))
        left = (
            s.predicted_bubble_left(now, self._gap_devs)
            - (last.predicted_ns - now)
            - s.margin_ns(QUEUED)
        )
        return left >= wave_ns

    def _behind_hp(self, s: SchedulerView, now: int) -> bool | None:
        """Queue the next gap's first slices (up to ``behind_slices``, each within the
        cap) behind the chained HP kernel that is running, due, or (from ``_arm``) ends
        the current gap. True: at least one issued; None: not yet (the kernel is not
        issued and the LP kernel cannot be armed: ask again once it is)."""
        nxt = s.next_chained_hp()
        if nxt is None:
            return False
        if nxt.next_gap_ns is None or nxt.next_gap_dev_ns is None:
            return False  # the request's last kernel: what follows is not predictable
        tasks = s.lp_tasks()
        if not tasks:
            return False
        task = tasks[0]
        hp, issued = nxt.launch, nxt.issued
        lat = s.hp_latency_ns
        # the chain issues the kernel exactly its host gap after the previous one ended;
        # it ends one learned duration after its start
        hp_end = nxt.due_ns + lat + int(nxt.dur_ns)
        start = hp_end + s.dep_ns
        if issued:  # launched from here: not before the loop's delay + launch latency
            start = max(start, now + s.issue_delay_ns + s.launch_latency_ns)
        if s.lp_inflight:  # (armed while this gap's last slices still run) behind them too
            start = max(start, s.lp_inflight[-1].predicted_ns)
        # the next HP kernel starts a host gap after this one ends, plus its issue latency
        gap_low = max(0.0, nxt.next_gap_ns - self._gap_devs * nxt.next_gap_dev_ns)
        end = hp_end + int(gap_low) + lat - s.margin_ns(AFTER if issued else ARMED)
        cap_ns = 1 << 62 if task.slice_blocks else int((task.slice_us or DEFAULT_SLICE_US) * 1000)
        slack = s.slack_bound(now, self._reserve(s))
        n = 0
        for _ in range(self.config.behind_slices):  # each within the cap: one runs, the next waits
            kernel = s.lp_kernel(task)
            if not kernel.sliceable:
                break
            if not (issued or s.backend.can_arm(kernel)):
                return None if n == 0 else True
            budget = min(cap_ns, end - start, slack)
            wave_blocks, wave_ns = s.waves.model(kernel)
            waves = budget // wave_ns if wave_ns > 0 else 0
            if task.slice_blocks:
                if budget <= 0:
                    break
                blocks = min(task.slice_blocks, max(1, waves) * wave_blocks)
            elif waves < 1:
                break
            else:
                blocks = waves * wave_blocks
            la = s.issue_lp(task, min(blocks, s.lp_remaining(task)), start_ns=start, after=hp)
            start = la.predicted_ns
            n += 1
        return n > 0


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (Exclusive, Spatial, Temporal, Hummingbird)}


def make_policy(name: str, hummingbird: HummingbirdConfig | None = None) -> Policy:
    """A fresh policy by name; ``hummingbird`` tunes the hummingbird policy."""
    if name == Hummingbird.name:
        return Hummingbird(hummingbird)
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (choose from {', '.join(POLICIES)})") from None
