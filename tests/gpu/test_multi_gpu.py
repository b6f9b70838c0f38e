"""One engine per GPU on a multi-GPU box: each engine drives the GPU its ``--device``
names, both schedule at once, and a device that does not exist is a clear start-up error.
The GPU tests are skipped unless at least two CUDA devices are usable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from engines import ENGINE, stop, wait_running

from hbtui.engine.backends.cuda import cuda_available, smi_bus_id
from hbtui.engine.client import EngineClient, Subscriber


def _devices() -> list[str]:
    """PCI bus ids of the CUDA devices, by ordinal, as nvidia-smi prints them (no context
    is created)."""
    if not cuda_available():
        return []
    from cuda.bindings import driver as cu

    _, n = cu.cuDeviceGetCount()
    ids = []
    for i in range(n):
        _, dev = cu.cuDeviceGet(i)
        _, bus = cu.cuDeviceGetPCIBusId(32, dev)
        ids.append(smi_bus_id(bus))
    return ids


BUS_IDS = _devices()
two_gpus = pytest.mark.skipif(len(BUS_IDS) < 2, reason="needs two usable CUDA GPUs")
PROFILE = str(Path(__file__).resolve().parents[2] / "hbtui" / "profiles" / "default.toml")


def _start(device: int, d: Path) -> tuple[subprocess.Popen[str], str, str]:
    pub, ctl = f"ipc://{d}/pub{device}", f"ipc://{d}/ctl{device}"
    proc = subprocess.Popen(
        [*ENGINE, "--profile", PROFILE, "--backend", "cuda", "--device", str(device),
         "--pub", pub, "--ctl", ctl, "--calibrate", "1", "--duration", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, pub, ctl


def test_bus_ids_are_written_as_nvidia_smi_writes_them() -> None:
    assert smi_bus_id(b"0000:2a:00.0\0\0\0") == "00000000:2A:00.0"
    assert smi_bus_id("0001:c1:00.0") == "00000001:C1:00.0"
    assert smi_bus_id("weird") == "WEIRD" and smi_bus_id("zz:00.0") == "zz:00.0"


@pytest.mark.gpu
@two_gpus
def test_one_engine_per_gpu(tmp_path: Path) -> None:
    engines = [_start(i, tmp_path) for i in (0, 1)]
    clients: list[EngineClient] = []
    try:
        for _, _, ctl in engines:
            clients.append(wait_running(ctl, timeout=120.0))  # the first start compiles
        for i, c in enumerate(clients):
            st = c.get_state()
            assert st["backend"] == "cuda" and st["device_index"] == i
            assert st["pci_bus_id"] == BUS_IDS[i]  # the GPU --device named, not GPU 0
        import pynvml  # the form nvidia-smi prints: NVML finds the GPU by it and agrees

        pynvml.nvmlInit()
        try:
            for b in BUS_IDS[:2]:
                info = pynvml.nvmlDeviceGetPciInfo(pynvml.nvmlDeviceGetHandleByPciBusId(b))
                got = info.busId.decode() if isinstance(info.busId, bytes) else info.busId
                assert got == b
        finally:
            pynvml.nvmlShutdown()
        # both schedule at once: HP requests served and LP work done on each GPU
        for _, pub, _ in engines:
            with Subscriber(pub, topics=["stats"]) as sub:
                msg = sub.wait_for(
                    "stats",
                    10.0,
                    lambda m: (
                        m.body["tasks"]["train"]["work_per_s"] > 0
                        and m.body["tasks"]["llm"]["requests"] > 0
                    ),
                )
            assert msg is not None, f"{pub}: no HP requests and LP work within 10 s"
    finally:
        for c in clients:
            c.close()
        done = [stop(p, timeout=20.0) for p, _, _ in engines]
    for rc, err in done:
        assert rc == 0, err


@pytest.mark.gpu
@two_gpus
def test_a_device_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    proc, _, _ = _start(len(BUS_IDS), tmp_path)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode != 0
    assert f"CUDA device {len(BUS_IDS)} does not exist ({len(BUS_IDS)} visible)" in err
    assert "Traceback" not in err
