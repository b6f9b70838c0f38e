"""The "alone" figure: the share of the exclusive calibration run's requests within the
SLO in force now (so a tighter SLO after set_slo lowers it)."""

from hbtui.engine.calibrate import Calibration
from hbtui.engine.metrics import Histogram


def test_attainment_alone_follows_the_slo() -> None:
    h = Histogram()
    for ms in range(1, 101):  # 1..100 ms
        h.add(ms * 1_000_000)
    cal = Calibration(baseline_latency={"svc": h})
    assert cal.attainment_alone({"svc": 100_000_000}) == {"svc": 1.0}
    assert abs(cal.attainment_alone({"svc": 50_000_000})["svc"] - 0.50) < 0.02
    assert cal.attainment_alone({"svc": None, "other": 5}) == {}  # no SLO, no baseline
