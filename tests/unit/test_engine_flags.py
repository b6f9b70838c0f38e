"""`hbtui engine` flags that tune how attached programs are gated."""

from __future__ import annotations

import pytest

from hbtui.engine.server.startup import _parser


def test_bubble_margin_is_microseconds_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args([]).bubble_margin_us == 30.0
    assert _parser().parse_args(["--bubble-margin-us", "300"]).bubble_margin_us == 300.0
    for bad, why in (("-1", "from 0 to 1000000"), ("lots", "not a number of microseconds")):
        with pytest.raises(SystemExit) as e:
            _parser().parse_args(["--bubble-margin-us", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--bubble-margin-us" in err and why in err, err


def test_switch_cost_is_microseconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args([]).switch_cost_us == 150.0
    assert _parser().parse_args(["--switch-cost-us", "0"]).switch_cost_us == 0.0
    with pytest.raises(SystemExit):
        _parser().parse_args(["--switch-cost-us", "-5"])
    assert "--switch-cost-us" in capsys.readouterr().err


def test_harvest_guard_is_a_percentage(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args([]).harvest_guard == 5.0
    assert _parser().parse_args(["--harvest-guard", "0"]).harvest_guard == 0.0
    for bad, why in (("150", "from 0 (off) to 100"), ("some", "not a percentage")):
        with pytest.raises(SystemExit):
            _parser().parse_args(["--harvest-guard", bad])
        err = capsys.readouterr().err
        assert "--harvest-guard" in err and why in err, err


def test_bubble_quiet_is_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args([]).bubble_quiet_us == 0
    assert _parser().parse_args(["--bubble-quiet-us", "50"]).bubble_quiet_us == 50.0
    with pytest.raises(SystemExit):
        _parser().parse_args(["--bubble-quiet-us", "-1"])
    assert "--bubble-quiet-us" in capsys.readouterr().err
