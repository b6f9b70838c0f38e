"""The operator-input limits (hbtui.console.limits): every modal and CLI flag goes through them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hbtui.console import limits as L


@pytest.mark.parametrize(
    "text",
    ["99999999999999999999", "1000001", "-1000001", "1.5", "", "ten", "٣", "1e3", "9" * 5000],
)
def test_priority_refuses_out_of_range_and_non_integers(text: str) -> None:
    with pytest.raises(ValueError, match="priority"):
        L.parse_priority(text)


def test_priority_bounds_are_the_engines() -> None:
    assert L.parse_priority("1000000") == {"priority": 1_000_000}
    assert L.parse_priority(" -1000000 ") == {"priority": -1_000_000}


@pytest.mark.parametrize(
    "text", ["5000000us", "1e9b", "0.5us", "0", "1.5b", "0b", "2147483649b", "inf", "nan", "1e999"]
)
def test_slice_refuses_out_of_range(text: str) -> None:
    with pytest.raises(ValueError, match="slice"):
        L.parse_slice(text)


def test_slice_accepts_units() -> None:
    assert L.parse_slice("50us") == {"us": 50.0}
    assert L.parse_slice("50 µs") == {"us": 50.0}
    assert L.parse_slice("2ms") == {"us": 2000.0}
    assert L.parse_slice("1000000") == {"us": 1e6}
    assert L.parse_slice("264b") == {"blocks": 264}
    assert L.parse_slice(f"{2**31}b") == {"blocks": 2**31}


@pytest.mark.parametrize("text", ["0.001ms", "3600001ms", "2h", "0.05x", "101x", "-5ms", "1e9"])
def test_slo_refuses_out_of_range(text: str) -> None:
    with pytest.raises(ValueError, match="SLO"):
        L.parse_slo(text)


def test_slo_accepts_ms_seconds_and_factors() -> None:
    assert L.parse_slo("5ms") == {"ms": 5.0}
    assert L.parse_slo("0.01") == {"ms": 0.01}
    assert L.parse_slo("1000s") == {"ms": 1e6}
    assert L.parse_slo("1.2x") == {"factor": 1.2}


@pytest.mark.parametrize("text", ["0", "0.4", "61", "inf", "nan", "x", "-1"])
def test_rate_refused(text: str) -> None:
    with pytest.raises(ValueError, match="refresh rate"):
        L.parse_rate(text)


def test_rate_bounds() -> None:
    assert L.parse_rate("0.5") == 0.5 and L.parse_rate("60") == 60.0


def test_quick_keys_stay_inside_limits() -> None:
    assert L.clamp_slice({"us": 4e6}) == {"us": 1e6}
    assert L.clamp_slice({"us": 0.2}) == {"us": 1.0}
    assert L.clamp_slice({"blocks": 2**33}) == {"blocks": 2**31}


@given(st.text(max_size=40))
def test_any_text_is_refused_cleanly_or_accepted_in_range(text: str) -> None:
    """No input raises anything but ValueError, and what is accepted is sendable."""
    for parse in (L.parse_priority, L.parse_slice, L.parse_slo):
        try:
            args = parse(text)
        except ValueError:
            continue
        for k, v in args.items():
            assert isinstance(v, int | float) and math.isfinite(v)
            lo, hi = {
                "priority": (L.PRIORITY_MIN, L.PRIORITY_MAX),
                "us": (L.SLICE_US_MIN, L.SLICE_US_MAX),
                "blocks": (L.SLICE_BLOCKS_MIN, L.SLICE_BLOCKS_MAX),
                "ms": (L.SLO_MS_MIN, L.SLO_MS_MAX),
                "factor": (L.SLO_FACTOR_MIN, L.SLO_FACTOR_MAX),
            }[k]
            assert lo <= v <= hi
