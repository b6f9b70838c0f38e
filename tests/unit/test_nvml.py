"""NVML is sampled off the scheduling thread: a slow or missing NVML never blocks it."""

from __future__ import annotations

import sys
import threading
import types

import pytest

from hbtui.engine.nvml import BackgroundSampler


class _Util:
    gpu, memory = 97, 40


class _Mem:
    used, total = 2**30, 80 * 2**30


def _fake_pynvml(sample_gate: threading.Event, fail: bool = False) -> types.ModuleType:
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail:
            raise NVMLError("driver not loaded")

    def util(h: object) -> _Util:
        sample_gate.wait(10)  # a slow sample (the first took 6 ms on an H200 VM)
        return _Util()

    nv.NVMLError = NVMLError
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU = 1, 2, 0
    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetHandleByPciBusId = lambda bus: ("h", bus)
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("h", i)
    nv.nvmlDeviceGetName = lambda h: b"Fake GPU"
    nv.nvmlDeviceGetUtilizationRates = util
    nv.nvmlDeviceGetMemoryInfo = lambda h: _Mem()
    nv.nvmlDeviceGetPowerUsage = lambda h: 512_300
    nv.nvmlDeviceGetClockInfo = lambda h, which: 1980 if which == 1 else 3201
    nv.nvmlDeviceGetTemperature = lambda h, which: 41
    return nv


@pytest.mark.parametrize("fail", [False, True], ids=["nvml", "no-nvml"])
def test_sampling_never_blocks_the_caller(monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    gate = threading.Event()
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(gate, fail))
    s = BackgroundSampler("00000000:19:00.0", period_s=0.01)  # opens NVML here
    try:
        if fail:  # no NVML: no thread, no samples, nothing raised
            assert s.init_ms is None and s.latest() is None and not s._thread.is_alive()
            return
        assert s.init_ms is not None and s.init_ms >= 0
        assert s.latest() is None  # the first sample is stuck in the thread: no wait here
        gate.set()
        for _ in range(500):
            if s.latest() is not None:
                break
            threading.Event().wait(0.01)
        got = s.latest()
        assert got is not None and got["name"] == "Fake GPU" and got["util_pct"] == 97
        assert got["power_w"] == pytest.approx(512.3) and got["nvml_ms"] >= 0
    finally:
        s.close()
    assert not s._thread.is_alive()
