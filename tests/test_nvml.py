"""NVML is sampled off the scheduling thread: a slow or missing NVML never blocks it."""

from __future__ import annotations

import sys
import threading
import types

import pytest

from engine.nvml import BackgroundSampler


class _Util:
    gpu, memory = 97, 40


class _Mem:
    used, total = 2**30, 80 * 2**30


def _fake_pynvml(init_gate: threading.Event, fail: bool = False) -> types.ModuleType:
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        init_gate.wait(10)  # a slow nvmlInit (ms to 100s of ms on a VM)
        if fail:
            raise NVMLError("driver not loaded")

    nv.NVMLError = NVMLError
    nv.NVML_CLOCK_SM, nv.NVML_CLOCK_MEM, nv.NVML_TEMPERATURE_GPU = 1, 2, 0
    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetHandleByPciBusId = lambda bus: ("h", bus)
    nv.nvmlDeviceGetHandleByIndex = lambda i: ("h", i)
    nv.nvmlDeviceGetName = lambda h: b"Fake GPU"
    nv.nvmlDeviceGetUtilizationRates = lambda h: _Util()
    nv.nvmlDeviceGetMemoryInfo = lambda h: _Mem()
    nv.nvmlDeviceGetPowerUsage = lambda h: 512_300
    nv.nvmlDeviceGetClockInfo = lambda h, which: 1980 if which == 1 else 3201
    nv.nvmlDeviceGetTemperature = lambda h, which: 41
    return nv


@pytest.mark.parametrize("fail", [False, True], ids=["nvml", "no-nvml"])
def test_sampling_never_blocks_the_caller(monkeypatch: pytest.MonkeyPatch, fail: bool) -> None:
    gate = threading.Event()
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(gate, fail))
    s = BackgroundSampler("00000000:19:00.0", period_s=0.01)
    try:
        assert s.latest() is None  # nvmlInit still blocked in the thread: no wait here
        gate.set()
        if fail:
            s._thread.join(5)
            assert not s._thread.is_alive() and s.latest() is None and s.init_ms is None
            return
        for _ in range(500):
            if s.latest() is not None:
                break
            threading.Event().wait(0.01)
        got = s.latest()
        assert got is not None and got["name"] == "Fake GPU" and got["util_pct"] == 97
        assert got["power_w"] == pytest.approx(512.3) and got["nvml_ms"] >= 0
        assert s.init_ms is not None and s.init_ms >= 0
    finally:
        s.close()
    assert not s._thread.is_alive()
