"""The history chart never raises, whatever it is handed: NaN, ±inf, ±1e308, values far
outside a fixed range, an empty series; at any size, zoomed or not. The wire check keeps
such values out (``wire.MAX_NUM``), but a chart must not rely on it: an exception in
``render`` takes the whole console down."""

from __future__ import annotations

import itertools
import math

import pytest
from textual.app import App, ComposeResult

from hbtui.console.charts import HistoryChart

SERIES = {
    "empty": [],
    "nan": [1.0, math.nan, 2.0],
    "inf": [1.0, math.inf, -math.inf],
    "1e308": [1.0, 1e308],
    "±1e308": [-1e308, 1e308],
    "near max": [1.7e308] * 3,
    "above the fixed range": [1e8] * 5,
    "below the fixed range": [-1e8] * 5,
    "constant": [5.0] * 10,
    "negative": [-3.0, -1.0],
    "subnormal": [1e-300, 2e-300],
}
LIMITS = [None, 2.0, math.nan, math.inf, 1e308, -1e308]
KINDS = [  # the pane's kinds of chart: fixed 0-100 %, auto, from zero
    {"lo": 0.0, "hi": 100.0, "higher_is_better": True},
    {"lo": None},
    {"lo": 0.0},
]


class Charts(App):
    def compose(self) -> ComposeResult:
        for i, kind in enumerate(KINDS):
            yield HistoryChart("t", "{:.3g}", id=f"c{i}", unit=" %", **kind)


@pytest.mark.parametrize("size", [(80, 24), (20, 6), (10, 3), (4, 3), (1, 1)])
async def test_any_value_renders(size: tuple[int, int]) -> None:
    app = Charts()
    async with app.run_test(size=size) as pilot:
        for (_, values), zoomed in itertools.product(SERIES.items(), (False, True)):
            for limit, chart in itertools.product(LIMITS, app.query(HistoryChart)):
                chart.zoomed = zoomed
                chart.set_data(values, limit, marks=[0, 5, 99])
                chart.render()  # raises here, if at all
            await pilot.pause()  # and the compositor draws the last of them


async def test_zoom_on_data_beyond_the_fixed_range_shows_that_edge() -> None:
    chart = HistoryChart("t", lo=0.0, hi=100.0)
    chart.zoomed = True
    chart.values = [150.0] * 4  # e.g. harvest wobbling above 100 %
    lo, hi = chart.scale(chart.values)
    assert 99.0 < lo < hi == 100.0
    chart.values = [-1e8] * 4
    lo, hi = chart.scale(chart.values)
    assert lo == 0.0 < hi < 1.0
