"""The harvest guard (engine.attached.guard): the HP program's measured cost of LP inside
its requests, from control epochs without it, in simulated time."""

from __future__ import annotations

import pytest

from hbtui.engine.attached import guard as G

US = 1_000


def _run(g: G.HarvestGuard, cycles: int, harvest_gap_us: float, control_gap_us: float,
         t: int = 1) -> int:  # fmt: skip
    """Feed ``cycles`` cycles of HP launches inside requests: one every ``harvest_gap_us``
    in the epochs where LP may enter (as the gate would see it), ``control_gap_us`` in the
    control epochs and while held off; returns the time reached."""
    g.tick(t)
    end = t + cycles * G.CYCLE * G.EPOCH_NS
    while t < end:
        gap = harvest_gap_us if g.allowed(t) else control_gap_us
        t += int(gap * US)
        g.on_launch(t, True)
        g.tick(t)
    return t


def test_off_allows_everything_and_measures_nothing() -> None:
    g = G.HarvestGuard(0.0)
    _run(g, 8, 30, 20)
    assert g.allowed(10**12) and g.cost is None and not g.held_off


def test_lp_that_costs_nothing_keeps_its_place_but_the_control_epochs() -> None:
    g = G.HarvestGuard(0.05)
    t = _run(g, 8, 20, 20)
    assert g.cost == pytest.approx(1.0, abs=0.01) and g.times_held_off == 0
    seen = []
    for _ in range(2 * G.CYCLE):  # one tick per epoch: LP in 3 of every 4
        t += G.EPOCH_NS
        g.tick(t)
        seen.append(g.allowed(t))
    assert seen.count(False) == 2 and not g.held_off


def test_lp_that_slows_the_hp_is_held_off_then_measured_anew() -> None:
    g = G.HarvestGuard(0.05)
    t = _run(g, G.MIN_CYCLES + 1, 30, 20)  # harvest epochs: the HP 50 % slower
    assert g.times_held_off == 1 and g.held_off and not g.allowed(t)
    assert g.cost == pytest.approx(1.5, rel=0.02)
    # held off for COOL_NS: then LP may try again (and, as slow, is held off for twice as long)
    t = _run(g, int(G.COOL_NS / (G.CYCLE * G.EPOCH_NS)) + G.MIN_CYCLES + 2, 30, 20, t)
    assert g.times_held_off == 2 and g._cool == 4 * G.COOL_NS


def test_a_cost_under_the_target_is_let_be() -> None:
    g = G.HarvestGuard(0.05)
    _run(g, G.MIN_CYCLES + 3, 20.6, 20)  # +3 %
    assert g.times_held_off == 0 and g.cost == pytest.approx(1.03, abs=0.01)


def test_an_idle_hp_decides_nothing_and_a_long_quiet_restarts_the_epochs() -> None:
    g = G.HarvestGuard(0.05)
    _run(g, G.MIN_CYCLES + 2, 2_000, 1_000)  # 25 launches an epoch: fewer than MIN_LAUNCHES
    assert g.cost is None and g.times_held_off == 0
    g.tick(10**13)  # an hour later
    assert g.epoch == 0 and g.allowed(10**13)


def test_gaps_outside_requests_and_host_pauses_are_not_the_pace() -> None:
    g = G.HarvestGuard(0.05)
    g.tick(1)
    g.on_launch(1_000, False)
    g.on_launch(2_000, False)  # no request open before it: not counted
    g.on_launch(2_000 + G.MAX_GAP_NS + 1, True)  # a host pause: not counted
    g.on_launch(2_000 + G.MAX_GAP_NS + 1 + 20 * US, True)
    assert g._n[0] == 1 and g._sum[0] == 20 * US
