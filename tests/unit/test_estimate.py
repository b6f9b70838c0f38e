"""engine.estimate.RecentQuantile: windowed quantiles for the scheduler's timing models."""

from __future__ import annotations

import pytest

from hbtui.engine.estimate import RecentQuantile


def test_keeps_its_prior_until_a_few_samples_agree_then_ignores_outliers() -> None:
    m = RecentQuantile(0.5, init=2_000, n=64, every=8)
    m.add(75_000)  # one bad first sample does not decide
    assert m.value == 2_000
    for _ in range(7):
        m.add(3_000)
    assert m.value == 3_000
    for i in range(56):
        m.add(1_000_000 if i % 10 == 0 else 3_000)  # rare ms stalls
    assert m.value == 3_000


def test_high_quantile_and_window() -> None:
    m = RecentQuantile(0.9, init=0, n=100, every=1)
    for x in range(100):
        m.add(x)
    assert m.value == 89
    for _ in range(100):  # the window forgets the old samples
        m.add(5)
    assert m.value == 5


def test_expires_back_to_its_prior_when_no_sample_comes() -> None:
    m = RecentQuantile(0.5, init=2_000, every=1)
    m.add(90_000, now_ns=1_000)
    assert m.value == 90_000
    assert not m.expire(now_ns=10_000, max_age_ns=20_000)
    assert m.expire(now_ns=30_000, max_age_ns=20_000)
    assert m.value == 2_000 and len(m) == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="bad q"):
        RecentQuantile(1.5, 0)
    with pytest.raises(ValueError):
        RecentQuantile(0.5, 0, n=4, every=8)
