"""The engine's decisions for programs under ``hbtui run``, in simulated time: HP busy and
requests from launch records and completion counters (bursts, markers), the LP gate's
in-flight budget and learned durations, and what each policy lets through."""

from __future__ import annotations

from types import SimpleNamespace

from hbtui.attach import layout as L
from hbtui.engine.attached import AttachedSet, AttachedTask
from hbtui.engine.attached.hp import HpTracker
from hbtui.engine.attached.lp import LpGate
from hbtui.engine.metrics import TaskStats
from hbtui.engine.model import Task

US = 1_000


def rec(seq: int, t: int, slot: int = 1, kind: int = L.KIND_KERNEL, func: int = 0xF00,
        flags: int = 0) -> SimpleNamespace:  # fmt: skip
    return SimpleNamespace(seq=seq, kind=kind, flags=flags, comp_slot=slot, func=func, tid=0,
                           enqueue_ns=t, issue_ns=t, return_ns=t + 2 * US)  # fmt: skip


class FakeAtt:
    """The parts of ``Attachment`` the gate uses; ``done`` are the completion counters."""

    def __init__(self) -> None:
        self.next_seq = 0
        self.granted = 0
        self.gated = False
        self.held: list[SimpleNamespace] = []
        self._done = [0] * L.COMP_SLOTS
        self.counters = self._done  # Attachment.counters: read in place
        self.grace_ns = 2_000_000_000

    def completed(self, slot: int) -> int:
        return self._done[slot]

    def pending(self) -> list[SimpleNamespace]:
        return [p for p in self.held if p.seq > self.granted]

    def grant(self, seq: int) -> int:
        self.granted = max(self.granted, seq)
        return self.granted

    def set_gated(self, gated: bool) -> None:
        self.gated = gated

    def set_slicing(self, on: bool) -> None:  # no variants published in these tests
        self.slicing = on


def test_a_burst_is_one_request_closed_after_the_idle_threshold() -> None:
    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    for i in range(1, 4):
        hp.on_launch(rec(i, i * 10 * US), 0)
    assert hp.busy and hp.in_request and len(hp.open) == 1
    done[1] = 3
    hp.poll(done, 100 * US)  # all done: idle, but the request stays open for idle_ms
    assert not hp.busy and hp.in_request
    hp.poll(done, 900 * US)
    assert hp.take_done() == []
    hp.poll(done, 1101 * US)
    ((req, lat),) = hp.take_done()
    assert req.arrival_ns == 10 * US and lat == 90 * US  # first enqueue -> completion seen
    assert not hp.in_request


def test_markers_make_one_request_of_launches_with_long_host_gaps() -> None:
    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0, kind=L.KIND_REQ_BEGIN, slot=L.COMP_NONE), 0)
    hp.on_launch(rec(2, 10 * US), 0)
    done[1] = 2
    hp.poll(done, 50 * US)
    hp.poll(done, 5000 * US)  # idle far beyond idle_ms: markers say it is not over
    assert hp.take_done() == [] and hp.in_request
    hp.on_launch(rec(3, 6000 * US), 0)
    hp.on_launch(rec(4, 6001 * US, kind=L.KIND_REQ_END, slot=L.COMP_NONE), 0)
    hp.poll(done, 6100 * US)
    assert hp.take_done() == []  # seq 3 still running
    done[1] = 3
    hp.poll(done, 6200 * US)
    ((req, lat),) = hp.take_done()
    assert (req.arrival_ns, lat) == (0, 6200 * US)
    assert len(hp.gaps) == 1 and hp.gaps[0] == 6000 * US - 50 * US  # the in-request bubble


def test_lp_gate_keeps_granted_work_within_the_budget() -> None:
    att = FakeAtt()
    lp = LpGate(att)  # type: ignore[arg-type]
    lp.mean_ns = 50 * US
    lp.grant_within(500 * US)
    assert att.granted == 10  # nothing in flight: 500 us of 50-us kernels pre-granted
    for s in range(1, 11):
        lp.on_launch(rec(s, 0))
    att.next_seq = 10
    lp.grant_within(500 * US)
    assert att.granted == 10  # all ten in flight: no room
    att._done[1] = 4
    lp.poll(100 * US, set())  # four retired in one poll: 25 us each
    assert lp.completed == 4 and lp.dur[0xF00] == 25 * US
    lp.grant_within(500 * US)
    assert att.granted > 10


def test_a_kernel_longer_than_the_budget_runs_alone() -> None:
    att = FakeAtt()
    lp = LpGate(att)  # type: ignore[arg-type]
    lp.mean_ns = 2000 * US
    att.next_seq = 1
    att.held = [SimpleNamespace(seq=1, func=0xF00)]
    lp.grant_within(500 * US)
    assert att.granted == 1
    lp.on_launch(rec(1, 0))
    att.next_seq = 2
    att.held = [SimpleNamespace(seq=2, func=0xF00)]
    lp.grant_within(500 * US)
    assert att.granted == 1  # the first is still in flight


def _set(policy: str) -> tuple[AttachedSet, FakeAtt, HpTracker, AttachedTask]:
    s = AttachedSet(lambda: policy)
    att = FakeAtt()
    lp = LpGate(att)  # type: ignore[arg-type]
    lp.mean_ns = 20 * US
    at = AttachedTask(Task("train", "lp", slice_us=200.0), att, "/x", 1, ["train"], 1.0,  # type: ignore[arg-type]
                      lp=lp, stats=TaskStats("train", "lp"))  # fmt: skip
    hp = HpTracker(idle_ns=1000 * US)
    return s, att, hp, at


def _request_with_bubbles(hp: HpTracker) -> None:
    """One open request of short kernels with ~100-us bubbles between them."""
    done = [0] * L.COMP_SLOTS
    t = 0
    for i in range(1, 40):
        hp.on_launch(rec(i, t), t)
        done[1] = i
        hp.poll(done, t + 5 * US)
        t += 105 * US


def test_policies_decide_what_lp_may_do() -> None:
    cases = [("exclusive", True, 0), ("spatial", False, 0), ("temporal", True, 10),
             ("hummingbird", True, 10)]  # fmt: skip
    for policy, want_gated, want_grant in cases:
        s, att, hp, at = _set(policy)
        s._gate([at], [hp], 0)
        assert (att.gated, att.granted) == (want_gated, want_grant), policy


def test_temporal_holds_lp_during_a_request_hummingbird_uses_fitting_bubbles() -> None:
    for policy in ("temporal", "hummingbird"):
        s, att, hp, at = _set(policy)
        _request_with_bubbles(hp)
        assert hp.in_request and not hp.busy and len(hp.gaps) >= 16
        att.next_seq = 1
        att.held = [SimpleNamespace(seq=1, func=0xF00)]
        s._gate([at], [hp], hp.idle_since + 1 * US)
        # hummingbird: a 20-us kernel + 30-us margin fits a ~100-us bubble; temporal waits
        assert att.granted == (1 if policy == "hummingbird" else 0), policy
        lp = at.lp
        assert lp is not None
        lp.dur[0xF00] = 90 * US  # too long for what is left of the bubble
        att.held = [SimpleNamespace(seq=2, func=0xF00)]
        att.next_seq = 2
        lp.inflight.clear()
        s._gate([at], [hp], hp.idle_since + 1 * US)
        assert att.granted <= 1, policy


def test_the_bubble_margin_is_charged_to_every_grant_inside_a_request() -> None:
    """--bubble-margin-us: a 20-us kernel that fits a ~100-us bubble with the default 30-us
    margin does not with a 100-us one (the GPU's switch between the programs' contexts
    charged to the grant); nor while the harvest guard holds LP off the requests."""
    for margin_us, granted in ((30, 1), (100, 0), (30, -1)):
        s, att, hp, at = _set("hummingbird")
        s.bubble_margin_ns = margin_us * US
        if granted < 0:  # the harvest guard holds LP off (its cost was measured too high)
            hp.guard.target, hp.guard._until, granted = 0.05, 10**15, 0
        _request_with_bubbles(hp)
        att.next_seq = 1
        att.held = [SimpleNamespace(seq=1, func=0xF00)]
        s._gate([at], [hp], hp.idle_since + 1 * US)
        assert att.granted == granted, margin_us


def test_a_time_sliced_gpu_charges_the_context_switch_to_every_grant_inside_a_request() -> None:
    """--switch-cost-us: a 20-us kernel + 30-us margin fits the ~100-us bubbles, but not
    with the switch back to the HP's context added; under MPS (every program) no switch
    is charged, nor with the cost set to 0."""
    for mps, cost_us, granted in ((False, 150, 0), (True, 150, 1), (False, 0, 1)):
        s, att, hp, at = _set("hummingbird")
        at.mps = mps
        s.tasks["train"] = at
        s.switch_cost_ns = cost_us * US
        _request_with_bubbles(hp)
        hp.p50_ns = 100_000 * US  # a long median request: the share of switches is no limit
        att.next_seq = 1
        att.held = [SimpleNamespace(seq=1, func=0xF00)]
        s._gate([at], [hp], hp.idle_since + 1 * US)
        assert att.granted == granted, (mps, cost_us)


def test_a_time_sliced_request_takes_only_its_share_of_switches() -> None:
    """Each in-request grant costs the HP a switch: at 10 us a switch and a 5 % share of a
    2-ms median request, a request takes 10 grants, then LP waits for the next one; under
    MPS, or with the guard off, there is no such limit."""
    for grants, mps, guard, granted in ((9, False, 0.05, 1), (10, False, 0.05, 0),
                                        (10, True, 0.05, 1), (10, False, 0.0, 1)):  # fmt: skip
        s, att, hp, at = _set("hummingbird")
        at.mps = mps
        s.tasks["train"] = at
        s.switch_cost_ns, s.harvest_guard = 10 * US, guard
        _request_with_bubbles(hp)
        hp.p50_ns = 2000 * US
        hp.open[0].lp_bubbles = grants
        att.next_seq = 1
        att.held = [SimpleNamespace(seq=1, func=0xF00)]
        s._gate([at], [hp], hp.idle_since + 1 * US)
        assert att.granted == granted, (grants, mps, guard)
        assert hp.open[0].lp_bubbles == grants + granted  # the bubble LP entered is counted
        hp._finish(hp.open.popleft(), 3000 * US)
        assert hp.lp_bubbles_per_request == grants + granted  # per completed request


def test_no_lp_inside_a_request_that_has_used_up_its_slo_slack() -> None:
    """The slack of an open request: SLO x (1 - reserve) minus the longer of its time so far
    and the median request latency; a bubble grant must fit in it (none left: no LP)."""
    from hbtui.engine.attached.hp import SLACK_RESERVE

    s, att, hp, at = _set("hummingbird")
    _request_with_bubbles(hp)
    now = hp.idle_since + 1 * US
    assert hp.slack_ns(now, None) is None  # no SLO: no bound
    elapsed = now - hp.open[0].arrival_ns
    at.task.slo_ms = (elapsed / 1e6) / (1 - SLACK_RESERVE) * 1.001  # ~nothing left
    hp.slo_ns = at.task.slo_ns(None)
    assert 0 < hp.slack_ns(now, hp.slo_ns) < 10 * US
    att.next_seq = 1
    att.held = [SimpleNamespace(seq=1, func=0xF00)]
    s._gate([at], [hp], now)
    assert att.granted == 0  # a 20-us kernel does not fit in the slack, bubble or not
    at.task.slo_ms *= 2  # plenty of slack: the bubble decides (it fits, as above)
    hp.slo_ns = at.task.slo_ns(None)
    s._gate([at], [hp], now)
    assert att.granted == 1


def test_a_bubble_that_outlasted_the_short_ones_is_used() -> None:
    hp = HpTracker(idle_ns=10_000 * US)
    hp.gaps.extend([5 * US] * 80 + [400 * US] * 20)  # kernel gaps, and host gaps
    need = 50 * US
    assert not hp.bubble_fits(1 * US, need)  # most bubbles end within 5 us
    assert hp.bubble_fits(10 * US, need)  # past 5 us only the 400-us ones are left
    assert not hp.bubble_fits(380 * US, need)  # too close to their end


def test_coalesced_tail_counts_as_idle_once_the_program_is_quiet() -> None:
    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0), 0)  # written
    hp.on_launch(rec(2, 10 * US, flags=L.LF_COALESCED), 0)  # covered by nothing yet
    done[1] = 1
    hp.poll(done, 500 * US)
    assert hp.busy  # seq 2 unconfirmed and the program launched recently
    hp.poll(done, 2000 * US)
    assert not hp.busy  # quiet for idle_ms with every written launch done


def test_a_coalesced_tail_ends_no_earlier_than_its_last_launch() -> None:
    """Coarse writes (HP alone): a burst's only write may be its first launch's; its work
    is dated to its last launch at the earliest (short by at most the tail's GPU time)."""
    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0), 0)  # written; the burst runs on for 5 ms, coalesced
    for i in range(2, 7):
        hp.on_launch(rec(i, (i - 1) * 1000 * US, flags=L.LF_COALESCED), 0)
    done[1] = 1
    hp.poll(done, 300 * US)
    assert hp.busy
    hp.poll(done, 7000 * US)  # quiet for idle_ms: idle, and the request closes
    assert not hp.busy and hp.idle_since == 5002 * US  # the last launch's return
    [(_, lat)] = hp.done
    assert lat == 5002 * US
    # a burst with no write at all (its write failed): dated to its own last launch, not
    # to the last write's completion 8 ms before it began
    hp.on_launch(rec(7, 8_000 * US, flags=L.LF_COALESCED), 0)
    hp.poll(done, 8_100 * US)
    assert hp.busy  # (quiet < idle_ms)
    hp.poll(done, 9_500 * US)
    assert not hp.busy and hp.idle_since == 8_002 * US
    assert [lat for _, lat in hp.done][-1] == 2 * US  # what the engine can know of it


def _coalesced_request(hp: HpTracker, done: list[int], bursts: int = 12) -> int:
    """One open request of a host-bound service beside LP, in time order: bursts of 6
    launches 17 us apart (the first with a write of its own, which lands 10 us after its
    launch; the rest coalesced), 150-us host gaps between bursts, the engine polling every
    20 us. Returns the end of the last gap."""
    launches, t, seq = [], 0, 0
    for _ in range(bursts):
        for k in range(6):
            seq += 1
            launches.append((t, seq, k == 0))
            t += 17 * US
        t += 150 * US - 17 * US
    end, landed = t, []
    for now in range(0, end + 1, 20 * US):
        while launches and launches[0][0] <= now:
            at, sq, written = launches.pop(0)
            hp.on_launch(rec(sq, at, flags=0 if written else L.LF_COALESCED), at)
            if written:
                landed.append((at + 10 * US, sq))
        while landed and landed[0][0] <= now:
            done[1] = landed.pop(0)[1]
        hp.poll(done, now)
    return end


def test_predicted_bubbles_show_a_host_gap_that_coalesced_writes_hide() -> None:
    """--bubble-quiet-us: with writes 100 us apart only a burst's first launch carries one,
    so its tail is never seen done inside the request and no bubble shows (the default);
    with the prediction each host gap becomes a bubble for LP grants once the program was
    quiet that long and the tail is due (last launch + the newest write's lag). HP stays
    busy (request ends and latencies are the counters' alone)."""
    for quiet_us, want in ((0, 0), (50, 12)):
        hp = HpTracker(idle_ns=1000 * US)
        hp.bubble_quiet_ns = quiet_us * US
        done = [0] * L.COMP_SLOTS
        _coalesced_request(hp, done)
        assert hp.in_request and hp.busy, quiet_us  # one open request throughout
        assert hp.predicted_bubbles == want, quiet_us
        assert hp.gpu_idle == bool(want), quiet_us
        if want:
            # the newest write was first seen done 10-30 us after its launch (it lands
            # 10 us after it, the engine polls every 20 us); the tail is due that long
            # after the last launch returned
            assert 10 * US <= hp.written_lag_ns <= 30 * US
            assert hp.bubble_start == hp.last_launch_ns + hp.written_lag_ns
        # each next burst's first launch ends a bubble: the 150-us host gap less the lag
        # and the 2 us of the last launch's return; without the prediction none is seen
        # (the short gaps in the history: a burst's first launch seen done before its
        # second came, by the default rule)
        host_gaps = [g for g in hp.gaps if g >= 100 * US]
        assert len(host_gaps) == max(0, want - 1), list(hp.gaps)
        assert all(118 * US <= g <= 138 * US for g in host_gaps), host_gaps


def test_the_lag_is_measured_on_every_new_write() -> None:
    """Each newest write is measured when first seen done, not only when the set of
    written launches turns done: one late sighting does not stick."""
    hp = HpTracker(idle_ns=10_000 * US)
    hp.bubble_quiet_ns = 50 * US
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0), 0)
    hp.poll(done, 1000 * US)
    done[1] = 1
    hp.poll(done, 2000 * US)  # seen 2 ms after its launch (the engine was away)
    assert hp.written_lag_ns == 2000 * US
    hp.on_launch(rec(2, 3000 * US), 0)  # written
    done[1] = 2
    hp.poll(done, 3020 * US)
    assert hp.written_lag_ns == 20 * US


def test_a_predicted_bubble_waits_for_a_lagging_gpu_and_a_sync() -> None:
    """The tail is predicted done only as long after its last launch as the newest write
    took to show: a GPU behind the host keeps HP busy that long; a program inside a
    wrapped sync is never taken for GPU-idle (and a prediction made before it ends)."""
    hp = HpTracker(idle_ns=10_000 * US)
    hp.bubble_quiet_ns = 50 * US
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0), 0)  # written
    hp.on_launch(rec(2, 10 * US, flags=L.LF_COALESCED), 0)
    hp.poll(done, 100 * US)
    done[1] = 1
    hp.poll(done, 500 * US)  # its write seen 500 us after its launch
    assert hp.written_lag_ns == 500 * US and not hp.gpu_idle
    hp.poll(done, 505 * US)
    assert not hp.gpu_idle  # quiet 493 us, but the tail is due 500 us after 12 us
    hp.poll(done, 540 * US)
    assert hp.gpu_idle and hp.busy and hp.bubble_start == 512 * US
    assert hp.predicted_bubbles == 1
    hp.poll(done, 560 * US, syncing=lambda: True)  # the program starts waiting after all
    assert not hp.gpu_idle
    hp.poll(done, 600 * US)  # out of the sync, still busy: no new guess until a launch
    assert not hp.gpu_idle and hp.predicted_bubbles == 1
    hp.on_launch(rec(3, 610 * US), 0)  # written, seen done: idle by the counters
    done[1] = 3
    hp.poll(done, 700 * US)
    assert not hp.busy and hp.predicted_since == 0


def test_no_predicted_bubble_outside_a_request() -> None:
    """A marker request can close while the HP is still busy (work after its end marker):
    a prediction then lets nothing in, the request being gone."""
    hp = HpTracker(idle_ns=10_000 * US)
    hp.bubble_quiet_ns = 50 * US
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(0, 0, kind=L.KIND_REQ_BEGIN, slot=L.COMP_NONE), 0)
    hp.on_launch(rec(1, 0), 0)  # written
    hp.on_launch(rec(2, 10 * US, kind=L.KIND_REQ_END, slot=L.COMP_NONE), 0)
    hp.on_launch(rec(3, 20 * US, slot=2, flags=L.LF_COALESCED), 0)  # after the end marker
    done[1] = 1
    hp.poll(done, 40 * US)
    assert not hp.open and hp.busy  # closed: its own work is done; slot 2's is not
    hp.poll(done, 200 * US)
    assert not hp.gpu_idle and hp.predicted_since == 0


def test_a_prediction_changes_no_request_end() -> None:
    """A launch, a long coalesced kernel, host work, then the program's sync: the request
    is timed to the sync whether or not a bubble was predicted in the host work (which
    the sync then ends); a marker request closes when its work is confirmed either way."""
    for markers in (False, True):
        lat = []
        for quiet_us in (0, 50):
            hp = HpTracker(idle_ns=1000 * US)
            hp.bubble_quiet_ns = quiet_us * US
            done = [0] * L.COMP_SLOTS
            if markers:
                hp.on_launch(rec(0, 0, kind=L.KIND_REQ_BEGIN, slot=L.COMP_NONE), 0)
            hp.on_launch(rec(1, 0), 0)  # written, done at 10 us
            hp.on_launch(rec(2, 20 * US, flags=L.LF_COALESCED), 0)  # runs to ~390 us
            if markers:
                hp.on_launch(rec(3, 30 * US, kind=L.KIND_REQ_END, slot=L.COMP_NONE), 0)
            predicted = False
            for now in range(20 * US, 2000 * US, 20 * US):
                done[1] = max(done[1], 1)
                in_sync = 100 * US <= now < 400 * US  # the sync returns at 395 us
                if now >= 400 * US:
                    done[1] = 2
                hp.poll(done, now, syncing=lambda s=in_sync: s,
                        synced=lambda n=now: 395 * US if n >= 400 * US else 0)  # fmt: skip
                predicted = predicted or (hp.gpu_idle and hp.busy)
            assert predicted == (quiet_us == 50), (markers, quiet_us)
            [(_, ns)] = hp.take_done()
            lat.append(ns)
        assert lat[0] == lat[1], (markers, lat)


def test_the_engine_grants_lp_into_a_predicted_bubble() -> None:
    """hummingbird with --bubble-quiet-us: the held LP launch goes into a host gap of a
    request whose tail only the prediction shows done; without it, it waits. (The set has
    no tasks, so no switch is charged, as under MPS: on a time-sliced GPU a 150-us gap
    does not fit a grant's need of kernel + margin + switch.)"""
    for quiet_us, want in ((0, 0), (50, 1)):
        s, att, hp, at = _set("hummingbird")
        hp.bubble_quiet_ns = quiet_us * US
        hp.gaps.extend([150 * US] * 40)  # the bubble history: host gaps of ~150 us
        done = [0] * L.COMP_SLOTS
        _coalesced_request(hp, done, bursts=3)
        att.next_seq = 1
        att.held = [SimpleNamespace(seq=1, func=0xF00)]
        s._gate([at], [hp], hp.bubble_start + 1 * US)
        assert att.granted == want, quiet_us


def test_stuck_counters_never_hold_lp_or_hp_forever() -> None:
    from hbtui.engine.attached import hp as hp_mod
    from hbtui.engine.attached import lp as lp_mod

    att = FakeAtt()
    lp = LpGate(att)  # type: ignore[arg-type]
    lp.mean_ns = 2000 * US  # longer than the budget: only one at a time
    lp.on_launch(rec(1, 0))
    att.next_seq, att.held = 2, [SimpleNamespace(seq=2, func=0xF00)]
    lp.poll(500 * US, set())
    lp.grant_within(500 * US)
    assert att.granted == 0  # seq 1 in flight, its counter never moves
    lp.poll(lp_mod.STALE_NS + 3 * US, set())
    lp.grant_within(500 * US)
    assert lp.stale == 1 and att.granted == 2  # given up on: the held one goes
    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0), 0)
    hp.poll(done, 100 * US)
    assert hp.busy
    hp.poll(done, hp_mod.STALE_NS + 200 * US)
    assert not hp.busy and hp.stale == 1


def test_marker_requests_end_with_their_own_launches_and_time_out() -> None:
    from hbtui.engine.attached import hp as hp_mod

    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0, kind=L.KIND_REQ_BEGIN, slot=L.COMP_NONE), 0)
    hp.on_launch(rec(2, 10 * US), 0)
    hp.on_launch(rec(3, 20 * US, kind=L.KIND_REQ_END, slot=L.COMP_NONE), 0)
    hp.on_launch(rec(4, 30 * US, kind=L.KIND_REQ_BEGIN, slot=L.COMP_NONE), 0)
    hp.on_launch(rec(5, 40 * US), 0)  # the next request keeps the GPU busy
    done[1] = 2
    hp.poll(done, 300 * US)
    ((req, lat),) = hp.take_done()  # closed by its own launches, HP still busy
    assert req.arrival_ns == 0 and lat == 300 * US and hp.busy
    hp.poll(done, hp_mod.MAX_REQUEST_NS + 100 * US)  # the second never gets its end
    assert hp.timed_out == 1 and not hp.markers  # back to burst inference


def test_markers_that_stop_coming_give_the_burst_rule_back() -> None:
    from hbtui.engine.attached import hp as hp_mod

    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0, kind=L.KIND_REQ_BEGIN, slot=L.COMP_NONE), 0)
    hp.on_launch(rec(2, 1 * US, kind=L.KIND_REQ_END, slot=L.COMP_NONE), 0)
    hp.poll(done, 10 * US)
    assert hp.markers and hp.take_done()
    t = hp_mod.MARKER_QUIET_NS + 1000 * US
    hp.on_launch(rec(3, t), t)  # launching long after the last marker
    done[1] = 3
    hp.poll(done, t + 100 * US)
    assert not hp.markers


def test_the_engine_ticks_fast_only_while_a_program_is_active() -> None:
    from hbtui.engine import attached as A

    s, att, _, at = _set("temporal")
    att.heartbeat = lambda now=None: None  # type: ignore[attr-defined]
    att.modules = att.functions = lambda: []  # type: ignore[attr-defined]
    queued: list = []
    att.launches = lambda: [queued.pop() for _ in range(len(queued))]  # type: ignore[attr-defined]
    s.tasks["train"] = at
    s.poll(1_000 * US)
    assert s.poll_ns == A.IDLE_POLL_NS  # nothing launched, nothing in flight
    queued.append(rec(1, 0))
    s.poll(1_100 * US)
    assert s.poll_ns == A.POLL_NS  # a launch in flight on the GPU
    att._done[1] = 1
    s.poll(1_200 * US)
    s.poll(1_300 * US)
    assert s.poll_ns == A.IDLE_POLL_NS  # it finished and nothing new came
    # only an HP program attached: nothing to schedule, so a slower tick while it works
    hp_att = FakeAtt()
    hp_att.set_hp_comp_us = lambda us, burst_us=0: None  # type: ignore[attr-defined]
    hp_att.heartbeat = att.heartbeat  # type: ignore[attr-defined]
    hp_att.modules = hp_att.functions = att.modules  # type: ignore[attr-defined]
    hp_att.launches = att.launches  # type: ignore[attr-defined]
    hp_att.syncing, hp_att.synced_ns = False, 0  # type: ignore[attr-defined]
    del s.tasks["train"]
    hp = HpTracker(idle_ns=1000 * US)
    s.tasks["svc"] = AttachedTask(Task("svc", "hp"), hp_att, "/y", 2, ["svc"], 1.0,  # type: ignore[arg-type]
                                  hp=hp, stats=TaskStats("svc", "hp"))  # fmt: skip
    queued.append(rec(2, 1_400 * US))
    s.poll(1_400 * US)
    assert s.poll_ns == A.HP_POLL_NS
    s.tasks["train"] = at  # an LP program attaches: the fast tick again
    queued.append(rec(3, 1_500 * US))
    s.poll(1_500 * US)
    assert s.poll_ns == A.POLL_NS


def test_many_waiting_threads_are_let_go_only_as_far_as_the_budget() -> None:
    att = FakeAtt()
    lp = LpGate(att)  # type: ignore[arg-type]
    lp.mean_ns = 100 * US  # 500-us budget: five fit
    att.next_seq = 12
    att.held = [SimpleNamespace(seq=s, func=0xF00) for s in range(1, 13)]  # 12 threads wait
    lp.grant_within(500 * US)
    assert att.granted == 5  # the five oldest, not all twelve


def test_with_no_hp_to_protect_lp_runs_ungated_until_one_attaches() -> None:
    for policy in ("temporal", "hummingbird"):
        s, att, hp, at = _set(policy)
        s._gate([at], [], 0)
        assert not att.gated, policy  # no HP program: nothing to pace LP for
        assert at.lp is not None and not at.lp.slices.on  # nor to slice for
        s.other_hp = lambda: True  # the engine's own HP profile task shares the GPU
        s._gate([at], [], 0)
        assert att.gated and att.granted == 10, policy
        s.other_hp = lambda: False
        s._gate([at], [hp], 0)  # an HP program is attached
        assert att.gated, policy
    s, att, hp, at = _set("exclusive")
    s._gate([at], [], 0)
    assert att.gated and att.granted == 0  # exclusive holds LP regardless


def test_the_hp_measures_what_lp_in_a_bubble_costs_its_next_kernel() -> None:
    """The first HP launch after a bubble: enqueue -> completion took 150 us after the
    bubbles LP was let into, 20 us after the others: 130 us per grant."""
    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    t, seq = 0, 0
    for i in range(20):
        lp = i % 2 == 0
        if lp and hp.open:
            hp.on_grant()
        seq += 1
        hp.on_launch(rec(seq, t), t)
        if i < 2:
            assert hp.bubble_cost_ns is None
        done[1] = seq
        hp.poll(done, t + (150 if lp else 20) * US)
        t += 400 * US  # the next bubble
    assert len(hp.after_lp) >= 8 and len(hp.after_idle) >= 8
    assert hp.bubble_cost_ns == 130 * US


def test_a_measured_grant_cost_limits_grants_under_mps_too() -> None:
    """Once the HP's own kernels show what a grant costs (here 50 us after LP, under
    MPS where no switch is charged by default), a 2-ms median request at a 5 % share
    takes 2 grants; before that measurement it takes any number."""
    for measured, grants, granted in ((False, 5, 1), (True, 1, 1), (True, 2, 0)):
        s, att, hp, at = _set("hummingbird")
        at.mps = True
        s.tasks["train"] = at
        _request_with_bubbles(hp)
        hp.after_idle.clear()  # (the bubbles above measured 5 us each)
        if measured:
            hp.after_lp.extend([(0, 70 * US)] * 8)
            hp.after_idle.extend([(0, 20 * US)] * 8)
            assert hp.grant_cost_ns(0.0) == 50 * US
        hp.p50_ns = 2000 * US
        hp.open[0].lp_bubbles = grants
        att.next_seq = 1
        att.held = [SimpleNamespace(seq=1, func=0xF00)]
        s._gate([at], [hp], hp.idle_since + 1 * US)
        assert att.granted == granted, (measured, grants)


def test_lp_bubbles_are_counted_once_and_measured_only_inside_requests() -> None:
    """Two grants in one bubble are one switch back; a launch without a counter does not
    end the bubble; with markers the time between two requests is no bubble (neither in
    the bubble history nor in the cost); old samples expire so a cost is measured anew."""
    hp = HpTracker(idle_ns=1000 * US)
    done = [0] * L.COMP_SLOTS
    hp.on_launch(rec(1, 0), 0)
    done[1] = 1
    hp.poll(done, 10 * US)
    assert hp.in_request and not hp.busy
    hp.on_grant()
    hp.on_grant()
    assert hp.open[0].lp_bubbles == 1 and hp.may_grant(0.05, 10**9)  # same bubble: free
    hp.on_launch(rec(2, 300 * US, slot=L.COMP_NONE), 300 * US)
    assert hp.lp_in_bubble  # no counter: the bubble is not over
    hp.on_launch(rec(3, 400 * US), 400 * US)
    assert not hp.lp_in_bubble and hp._after is not None and hp._after[3]
    # markers: a request whose begin came after the HP went idle
    m = HpTracker(idle_ns=1000 * US)
    m.on_launch(SimpleNamespace(kind=L.KIND_REQ_BEGIN, seq=1, tid=0, enqueue_ns=0,
                                flags=0, comp_slot=0), 0)  # fmt: skip
    m.on_launch(rec(2, 10 * US), 10 * US)
    done = [0] * L.COMP_SLOTS
    done[1] = 2
    m.poll(done, 20 * US)
    m.on_launch(SimpleNamespace(kind=L.KIND_REQ_END, seq=3, tid=0, enqueue_ns=25 * US,
                                flags=0, comp_slot=0), 25 * US)  # fmt: skip
    m.poll(done, 30 * US)
    assert not m.open
    gaps = len(m.gaps)
    m.on_launch(SimpleNamespace(kind=L.KIND_REQ_BEGIN, seq=4, tid=0, enqueue_ns=5000 * US,
                                flags=0, comp_slot=0), 5000 * US)  # fmt: skip
    m.on_launch(rec(5, 5010 * US), 5010 * US)
    assert len(m.gaps) == gaps and m._after is None  # 5 ms between requests: no bubble
    # expiry
    hp.after_lp.extend([(0, 70 * US)] * 8)
    hp.after_idle.extend([(0, 20 * US)] * 8)
    assert hp.bubble_cost_ns == 50 * US
    hp.poll([0] * L.COMP_SLOTS, 31_000_000 * US)
    assert hp.bubble_cost_ns is None and not hp.after_lp


def test_a_measured_cost_below_the_switch_does_not_lift_the_limit_when_time_sliced() -> None:
    """The measured cost compares different kernels and can come out below the switch a
    time-sliced GPU surely costs, even negative: the limit then stays at the switch, and
    a request that has used its share gets no more grants (under MPS, with no floor, a
    cost of 0 is no limit)."""
    hp = HpTracker(idle_ns=1000 * US)
    hp.after_lp.extend([(0, 20 * US)] * 8)
    hp.after_idle.extend([(0, 30 * US)] * 8)
    assert hp.bubble_cost_ns == -10 * US
    assert hp.grant_cost_ns(150 * US) == 150 * US  # time-sliced: at least the switch
    assert hp.grant_cost_ns(0.0) == 0.0  # MPS
    hp.after_lp.extend([(0, 400 * US)] * 16)
    assert hp.grant_cost_ns(150 * US) == 370 * US  # measured above the switch: measured
    for mps, granted in ((False, 0), (True, 1)):
        s, att, hp, at = _set("hummingbird")
        at.mps = mps
        s.tasks["train"] = at
        _request_with_bubbles(hp)
        hp.after_lp.clear()
        hp.after_idle.clear()
        hp.after_lp.extend([(0, 20 * US)] * 8)
        hp.after_idle.extend([(0, 30 * US)] * 8)
        s.switch_cost_ns = 10 * US  # small enough for the ~100-us bubbles to fit
        hp.p50_ns = 2000 * US  # 5 %: 100 us, 10 switches
        hp.open[0].lp_bubbles = 10
        att.next_seq = 1
        att.held = [SimpleNamespace(seq=1, func=0xF00)]
        s._gate([at], [hp], hp.idle_since + 1 * US)
        assert att.granted == granted, mps


def test_lp_still_in_the_bubble_a_request_begins_in_is_charged_to_that_request() -> None:
    """LP granted in the tail of one marker request is still in the bubble when the next
    begins: that request's first kernel pays the switch, so it starts with one LP bubble
    (not free for a request that has no share left)."""
    m = HpTracker(idle_ns=1000 * US)
    begin = SimpleNamespace(kind=L.KIND_REQ_BEGIN, seq=1, tid=0, enqueue_ns=0, flags=0,
                            comp_slot=0)  # fmt: skip
    m.on_launch(begin, 0)
    m.on_launch(rec(2, 10 * US), 10 * US)
    done = [0] * L.COMP_SLOTS
    done[1] = 2
    m.poll(done, 20 * US)
    m.on_grant()  # LP in the tail bubble, before the end marker
    m.on_launch(SimpleNamespace(kind=L.KIND_REQ_END, seq=3, tid=0, enqueue_ns=25 * US,
                                flags=0, comp_slot=0), 25 * US)  # fmt: skip
    m.poll(done, 30 * US)
    assert not m.open and m.lp_bubbles_per_request == 1
    m.on_launch(SimpleNamespace(kind=L.KIND_REQ_BEGIN, seq=4, tid=0, enqueue_ns=40 * US,
                                flags=0, comp_slot=0), 40 * US)  # fmt: skip
    assert m.open[0].lp_bubbles == 1
    # bursts: the launch that opens the next request is the one that ends the bubble
    b = HpTracker(idle_ns=1000 * US)
    b.on_launch(rec(1, 0), 0)
    done = [0] * L.COMP_SLOTS
    done[1] = 1
    b.poll(done, 10 * US)
    b.on_grant()
    b.poll(done, 2000 * US)  # idle past idle_ms: the request closes, LP still running
    assert not b.open
    b.on_launch(rec(2, 2100 * US), 2100 * US)
    assert b.open[0].lp_bubbles == 1 and not b.lp_in_bubble


def test_lp_running_in_a_bubble_without_a_grant_in_it_is_counted() -> None:
    """Work granted before the request (or in an earlier bubble) still running in a
    bubble costs the HP's next kernel a switch as a grant would: the bubble counts as
    one LP entered, for the per-request limit and for the cost measurement."""
    s, att, hp, at = _set("hummingbird")
    _request_with_bubbles(hp)
    lp = at.lp
    assert lp is not None
    lp.inflight.append(SimpleNamespace(seq=1, slot=2, func=0xF00, issue_ns=0, blocks=0))
    hp.guard.target, hp.guard._until = 0.05, 10**15  # no grant may be made in the bubble
    s._gate([at], [hp], hp.idle_since + 1 * US)
    assert att.granted == 0
    assert hp.lp_in_bubble and hp.open[0].lp_bubbles == 1


def test_reset_stats_starts_the_request_figures_over() -> None:
    s, att, hp, at = _set("hummingbird")
    hpt = AttachedTask(Task("svc", "hp"), FakeAtt(), "/y", 2, ["svc"], 1.0,  # type: ignore[arg-type]
                       hp=hp, stats=TaskStats("svc", "hp"))  # fmt: skip
    s.tasks["svc"] = hpt
    _request_with_bubbles(hp)
    hp.open[0].lp_bubbles = 5
    hp._finish(hp.open.popleft(), 5000 * US)
    assert hp.lp_bubbles_per_request == 5 and hp.p50_ns > 0
    s.reset_stats()
    assert hp.lp_bubbles_per_request is None and hp.latency.n == 0
    assert len(hp.gaps) >= 16 and hp.p50_ns > 0  # what the gate learned is kept


def test_the_bubble_before_a_marker_requests_first_kernel_starts_at_its_begin() -> None:
    """A marker request that begins long after the HP went idle: its first bubble is
    measured from the begin marker, not from the end of the last request's work (which
    the bubble history leaves out), so a long wait between requests does not make it
    look like a bubble that outlasted every other."""
    s, att, hp, at = _set("hummingbird")
    _request_with_bubbles(hp)
    hp.open.clear()
    idle = hp.idle_since
    hp.on_launch(SimpleNamespace(kind=L.KIND_REQ_BEGIN, seq=100, tid=0,
                                 enqueue_ns=idle + 50_000 * US, flags=0, comp_slot=0),
                 idle + 50_000 * US)  # fmt: skip
    att.next_seq = 1
    att.held = [SimpleNamespace(seq=1, func=0xF00)]
    s._gate([at], [hp], idle + 50_001 * US)  # 1 us into the bubble: a short one may end
    granted_early = att.granted
    s2, att2, hp2, at2 = _set("hummingbird")
    _request_with_bubbles(hp2)  # the same history, now 1 us into a bubble of a request
    att2.next_seq = 1
    att2.held = [SimpleNamespace(seq=1, func=0xF00)]
    s2._gate([at2], [hp2], hp2.idle_since + 1 * US)
    assert granted_early == att2.granted == 1


def test_the_heartbeat_is_written_every_10_ms_or_every_quarter_grace() -> None:
    """Not on every 20-us poll (its line would keep moving between the engine's core and
    the program's), but often enough for any grace: every 10 ms, or grace/4 if shorter."""
    for grace_ms, want in ((2000, 4), (20, 8)):
        s, att, _, at = _set("temporal")
        att.grace_ns = grace_ms * 1_000_000
        beats: list[int] = []
        att.heartbeat = lambda now=None, b=beats: b.append(now)  # type: ignore[attr-defined]
        att.modules = att.functions = att.launches = lambda: []  # type: ignore[attr-defined]
        s.tasks["train"] = at
        for t in range(1, 40_000, 20):  # 40 ms of 20-us polls
            s.poll(10_000_000 * US + t * US)
        assert len(beats) == want, grace_ms
        assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) <= att.grace_ns // 4


def test_hp_completion_writes_are_fine_only_while_lp_depends_on_the_hp() -> None:
    """header.hp_comp_us: the HP's completion writes coalesced to 10 ms unless an LP program
    is attached under a policy whose grants follow the HP's activity (temporal: request
    ends; hummingbird: also bubbles): 100 us. header.hp_burst_us: the HP's burst rule's
    idle threshold, so a burst's first launch gets a write however coarse the writes."""
    from hbtui.engine import attached as A

    for policy in ("exclusive", "spatial", "temporal", "hummingbird"):
        s, att, _, at = _set(policy)
        hp_att = FakeAtt()
        asked: list[int] = []

        s.bubble_quiet_ns = 50 * US

        def ask(us: int, burst_us: int = 0, asked: list[int] = asked) -> None:
            assert burst_us == 2500  # the tracker's idle_ns, in us
            asked.append(us)

        hp_att.set_hp_comp_us = ask  # type: ignore[attr-defined]
        for a in (att, hp_att):
            a.heartbeat = lambda now=None: None  # type: ignore[attr-defined]
            a.modules = a.functions = a.launches = lambda: []  # type: ignore[attr-defined]
            a.syncing = 0  # type: ignore[attr-defined]
        hp = HpTracker(idle_ns=2500 * US)
        s.tasks["svc"] = AttachedTask(Task("svc", "hp"), hp_att, "/y", 2, ["svc"], 1.0,  # type: ignore[arg-type]
                                      hp=hp, stats=TaskStats("svc", "hp"))  # fmt: skip
        s.poll(1_000 * US)
        assert asked[-1] == A.HP_COMP_COARSE_US, policy  # HP alone
        s.tasks["train"] = at
        s.poll(1_100 * US)
        fine = policy in ("temporal", "hummingbird")
        assert asked[-1] == (A.HP_COMP_FINE_US if fine else A.HP_COMP_COARSE_US), policy
        # --bubble-quiet-us applies only to hummingbird's grants, with LP attached
        assert hp.bubble_quiet_ns == (50 * US if policy == "hummingbird" else 0), policy
        s.policy = lambda: "spatial"  # the operator switches policy: LP runs free
        s.poll(1_150 * US)
        assert asked[-1] == A.HP_COMP_COARSE_US, policy
        s.policy = lambda p=policy: p
        del s.tasks["train"]
        s.poll(1_200 * US)
        assert asked[-1] == A.HP_COMP_COARSE_US, policy  # the LP left
        assert hp.bubble_quiet_ns == 0, policy


def test_work_that_ends_in_the_programs_sync_is_dated_to_the_sync() -> None:
    """Seen done at a poll after a wrapped sync returned: the HP went idle when the sync
    returned, not at the engine's tick (a slower tick then does not stretch requests);
    a sync older than the previous poll, or than a launch seen since (its kernel ended
    after the sync), or later than now says nothing about this poll's completions."""
    cases = [(1_130, None, 1_130), (900, None, 1_200), (1_130, 1_150, 1_200), (1_300, None, 1_200)]
    for synced_at, relaunch_at, want in cases:
        hp = HpTracker(idle_ns=1000 * US)
        done = [0] * L.COMP_SLOTS
        hp.on_launch(rec(1, 1_000 * US), 1_000 * US)
        hp.poll(done, 1_100 * US, synced=lambda t=synced_at: t * US)
        assert hp.busy
        done[1] = 1
        if relaunch_at is not None:  # launched after the sync, done by the next poll
            hp.on_launch(rec(2, relaunch_at * US), relaunch_at * US)
            done[1] = 2
        hp.poll(done, 1_200 * US, synced=lambda t=synced_at: t * US)
        assert not hp.busy and hp.idle_since == want * US, (synced_at, relaunch_at)
        hp.poll(done, 2_300 * US)
        ((req, lat),) = hp.take_done()
        assert lat == (want - 1_000) * US
