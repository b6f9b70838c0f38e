"""CPU tests of the GPU → host clock conversion (engine.backends.clock): calibration from
samples, the two online bounds, the 50 ppm relaxation and per-stream FIFO."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hbtui.engine.backends.clock import RELAX_DIV, ClockTracker, calibrate

OFF = 1_000_000_000  # host = stamp + OFF in these tests


def test_calibration_takes_the_upper_bound_and_drops_cold_samples() -> None:
    # (h0, g, h_seen): the stamp g became visible between h0 - OFF and h_seen - OFF
    cold = [(0, 100 - OFF + 10_000, 50_000)] * 2  # first eighth: dropped
    warm = [(1_000 + i * 100, 1_000 + i * 100 - OFF + 3_000, 1_000 + i * 100 + 4_000 + i)
            for i in range(14)]  # fmt: skip
    cal = calibrate(cold + warm)
    assert cal.offset_ns == min(h - g for _, g, h in warm) == OFF + 1_000
    lower = max(h0 - g for h0, g, _ in warm)
    assert cal.bound_ns == cal.offset_ns - lower == 4_000
    assert cal.latency_ns == 3_000 + 1_000  # start stamp on the host clock (upper bound) − h0
    assert len(cal.latency_samples_ns) == 14


def test_calibration_needs_samples() -> None:
    with pytest.raises(ValueError):
        calibrate([])


def test_exact_stamps_convert_exactly() -> None:
    seen = 10_000_000
    c = ClockTracker(OFF, seen)  # calibrated just now: no relaxation yet
    start, end = c.times(1, issue=seen - 50_000, g0=seen - 40_000 - OFF, g1=seen - 1_000 - OFF,
                         seen_ns=seen)  # fmt: skip
    assert (start, end) == (seen - 40_000, seen - 1_000)
    assert c.stats == {"raised": 0, "no_stamp": 0}


def test_end_bound_lowers_the_offset_at_once() -> None:
    c = ClockTracker(OFF + 5_000, 0)  # 5 µs too late
    seen = 1_000_000
    _, end = c.times(1, issue=0, g0=1, g1=seen - OFF - 500, seen_ns=seen)
    assert c.offset_ns == OFF + 500 and end == seen  # it cannot have ended after it was seen


def test_start_bound_raises_the_offset_and_counts_it() -> None:
    c = ClockTracker(OFF - 5_000, 0)  # 5 µs too early
    issue = 2_000_000
    start, _ = c.times(1, issue=issue, g0=issue - OFF - 1_000, g1=issue - OFF + 9_000,
                       seen_ns=issue + 20_000)  # fmt: skip
    assert c.offset_ns == OFF + 1_000 and start == issue  # not before its issue
    assert c.stats["raised"] == 1


def test_offset_relaxes_upward_between_completions() -> None:
    c = ClockTracker(OFF, 0)
    assert c.tracked(RELAX_DIV * 7) == OFF + 7
    seen = RELAX_DIV * 1_000  # 20 ms later: +1 µs
    c.times(1, issue=seen - 100_000, g0=seen - 90_000 - OFF, g1=seen - 50_000 - OFF,
            seen_ns=seen)  # fmt: skip
    assert c.offset_ns == OFF + 1_000 and c.t_ns == seen


def test_missing_stamps_fall_back_to_issue_and_seen() -> None:
    c = ClockTracker(OFF, 0)
    assert c.times(1, issue=100, g0=0, g1=0, seen_ns=900) == (100, 900)
    assert c.stats["no_stamp"] == 1


def test_ends_stay_fifo_per_stream() -> None:
    c = ClockTracker(OFF, 0)
    c.times(1, issue=0, g0=1_000 - OFF, g1=8_000 - OFF, seen_ns=9_000)
    start, end = c.times(1, issue=0, g0=2_000 - OFF, g1=5_000 - OFF, seen_ns=9_500)
    assert end == 8_000 and start == 2_000  # not before the previous end on stream 1
    _, other = c.times(2, issue=0, g0=2_000 - OFF, g1=5_000 - OFF, seen_ns=9_600)
    assert other == 5_000  # another stream has its own order


def test_event_times_end_when_seen_and_never_start_before_issue() -> None:
    c = ClockTracker(OFF, 0)
    assert c.event_times(3, issue=1_000, dur_ns=5_000, seen_ns=10_000) == (5_000, 10_000)
    assert c.event_times(3, issue=9_000, dur_ns=5_000, seen_ns=11_000) == (9_000, 11_000)
    assert c.event_times(3, issue=0, dur_ns=1, seen_ns=10_500) == (10_999, 11_000)  # FIFO
    assert c.offset_ns == OFF  # events do not feed the offset


def test_reset_keeps_stats_and_first_offset() -> None:
    c = ClockTracker(OFF, 0)
    c.times(1, issue=100, g0=0, g1=0, seen_ns=900)
    c.reset(OFF + 77, 5_000)
    assert c.offset_ns == OFF + 77 and c.t_ns == 5_000 and c.last_end == {}
    assert c.first_offset_ns == OFF and c.stats["no_stamp"] == 1


class _Reference:
    """The conversion as CudaBackend._times/_finish_user wrote it before the tracker."""

    def __init__(self, off: int, t: int) -> None:
        self.off, self.off_t, self.last_end = off, t, {}

    def times(self, stream: int, issue: int, g0: int, g1: int, seen: int) -> tuple[int, int]:
        off = self.off + (seen - self.off_t) // RELAX_DIV
        if g1 and seen - g1 < off:
            off = seen - g1
        if g0 and issue - g0 > off:
            off = issue - g0
        self.off, self.off_t = off, seen
        start = g0 + off if g0 else issue
        end = g1 + off if g1 else seen
        start = max(start, issue)
        end = min(max(end, start), seen)
        end = max(end, self.last_end.get(stream, 0))
        self.last_end[stream] = end
        return min(start, end), end

    def event_times(self, stream: int, issue: int, dur: int, seen: int) -> tuple[int, int]:
        end = max(seen, self.last_end.get(stream, 0))
        self.last_end[stream] = end
        return min(end, max(issue, end - dur)), end


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 10**6),
            st.integers(0, 10**6), st.integers(1, 10**6), st.booleans(),
        ),
        max_size=40,
    )
)  # fmt: skip
def test_tracker_matches_the_reference(events: list[tuple[int, int, int, int, int, bool]]) -> None:
    c, ref = ClockTracker(OFF, 0), _Reference(OFF, 0)
    now = 0
    for stream, d_issue, d0, d1, d_seen, user in events:
        now += d_seen
        issue = max(0, now - d_issue)
        if user:
            got, want = (
                c.event_times(stream, issue, d0, now),
                ref.event_times(stream, issue, d0, now),
            )
        else:
            g0 = max(0, issue - OFF + d0) if d0 % 7 else 0  # some launches lack a stamp
            g1 = max(0, now - OFF - d1) if d1 % 5 else 0
            got, want = c.times(stream, issue, g0, g1, now), ref.times(stream, issue, g0, g1, now)
        assert got == want
        assert c.offset_ns == ref.off and c.t_ns == ref.off_t
