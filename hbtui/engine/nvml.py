"""NVML sampling through nvidia-ml-py (``import pynvml``), optional.

``open_sampler`` returns None when NVML (the package or the driver library) is
missing, so callers just skip GPU telemetry. A sample costs several NVML calls (the
first one 6 ms on an H200 VM, then ~13 µs), and opening NVML 68 ms: on the scheduling
thread they stall the loop that issues LP and hands HP requests to the GPU, so the engine
opens NVML before it schedules and samples in a ``BackgroundSampler`` thread. NVML calls
are ctypes calls, which release the GIL: the thread holds it only for the few µs of
Python around them, once a second.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class NvmlSampler:
    """Samples one GPU. Pick it by PCI bus id (matches the CUDA device exactly, whatever
    CUDA_VISIBLE_DEVICES says) or else by NVML index."""

    def __init__(self, pci_bus_id: str | None = None, index: int = 0) -> None:
        import pynvml  # nvidia-ml-py

        self._nv = pynvml
        pynvml.nvmlInit()
        self._open = True
        try:
            if pci_bus_id:
                self._h = pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
            else:
                self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(self._h)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:
            self.close()
            raise

    def sample(self) -> dict[str, Any] | None:
        """util %, SM/memory clocks (MHz), power (W), memory used/total (MiB), temp (°C).
        A field NVML cannot read on this GPU is None; None if NVML itself failed."""
        if not self._open:
            return None
        nv, h = self._nv, self._h

        def get(fn, *a):
            try:
                return fn(h, *a)
            except nv.NVMLError:
                return None

        util = get(nv.nvmlDeviceGetUtilizationRates)
        mem = get(nv.nvmlDeviceGetMemoryInfo)
        power = get(nv.nvmlDeviceGetPowerUsage)  # mW
        if util is None and mem is None and power is None:
            return None
        return {
            "name": self.name,
            "util_pct": None if util is None else int(util.gpu),
            "mem_util_pct": None if util is None else int(util.memory),
            "sm_clock_mhz": get(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": get(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM),
            "power_w": None if power is None else power / 1000.0,
            "mem_used_mb": None if mem is None else mem.used / 2**20,
            "mem_total_mb": None if mem is None else mem.total / 2**20,
            "temp_c": get(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
        }

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._nv.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down; nothing to report
                pass


def open_sampler(pci_bus_id: str | None = None, index: int = 0) -> NvmlSampler | None:
    """An NvmlSampler, or None where nvidia-ml-py or the NVML library is unusable."""
    try:
        return NvmlSampler(pci_bus_id, index)
    except Exception:  # noqa: BLE001 - ImportError, NVMLError (no driver), anything else
        return None


class BackgroundSampler:
    """Opens NVML on the caller's thread (``nvmlInit`` and loading the library took 68 ms
    on an H200 VM, much of it holding the GIL: do it before scheduling starts), then
    samples one GPU every ``period_s`` in a daemon thread. ``latest()`` never blocks: the
    newest sample, or None before the first one and where NVML is unusable. Each sample
    carries ``nvml_ms``, what NVML took for it."""

    def __init__(self, pci_bus_id: str | None = None, period_s: float = 1.0) -> None:
        self._period = period_s
        self._latest: dict[str, Any] | None = None
        self._stop = threading.Event()
        t0 = time.perf_counter()
        self._nv = open_sampler(pci_bus_id)
        self.init_ms = None if self._nv is None else (time.perf_counter() - t0) * 1e3
        self._thread = threading.Thread(target=self._run, name="hbtui-nvml", daemon=True)
        if self._nv is not None:
            self._thread.start()

    def latest(self) -> dict[str, Any] | None:
        return self._latest

    def _run(self) -> None:
        nv = self._nv
        assert nv is not None
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                s = nv.sample()
                if s is not None:
                    s["nvml_ms"] = (time.perf_counter() - t0) * 1e3
                self._latest = s  # one reference store: atomic for the reader
                self._stop.wait(self._period)
        finally:
            nv.close()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
