"""CUDA driver helpers for the cuda backend: loading cuda.bindings, error checks, device
attributes, allocations, events and streams of one context.

Every failed driver call becomes a ``BackendError`` naming the call and the CUresult
(``cuLaunchKernel(gelu) failed: CUDA_ERROR_ILLEGAL_ADDRESS``). The hot paths of the
backend (launch, event record and query) call ``cu`` directly and compare with ``OK``:
``check`` costs a few hundred ns that a launch cannot spare.
"""

from __future__ import annotations

import ctypes
from typing import Any, NoReturn

from hbtui.engine.backends.base import BackendError


def cuda_available() -> bool:
    """True when cuda.bindings imports, cuInit succeeds and a device exists. Any
    failure (no package, no driver: DynamicLibNotFoundError, no device) → False."""
    try:
        from cuda.bindings import driver as cu

        (err,) = cu.cuInit(0)
        if err != cu.CUresult.CUDA_SUCCESS:
            return False
        err, n = cu.cuDeviceGetCount()
        return err == cu.CUresult.CUDA_SUCCESS and n > 0
    except Exception:  # noqa: BLE001 - "no GPU" whatever the reason
        return False


def smi_bus_id(raw: str | bytes) -> str:
    """A PCI bus id from cuDeviceGetPCIBusId ("0000:2a:00.0", NUL-padded) as nvidia-smi and
    NVML print it ("00000000:2A:00.0"), which is what operators compare it with."""
    s = (raw.split(b"\0", 1)[0].decode() if isinstance(raw, bytes) else raw).strip("\0").strip()
    dom, sep, rest = s.partition(":")
    try:
        return f"{int(dom, 16):08X}:{rest.upper()}" if sep else s.upper()
    except ValueError:
        return s  # not the form we know: as the driver gave it


def load_driver() -> Any:
    """The ``cuda.bindings.driver`` module (BackendError when it does not import)."""
    try:
        from cuda.bindings import driver
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"cuda.bindings unavailable: {e}") from e
    return driver


def err_name(cu: Any, err: Any) -> str:
    """``CUDA_ERROR_...`` for a CUresult (its number where the driver cannot name it)."""
    try:
        r, name = cu.cuGetErrorName(err)
        if r == cu.CUresult.CUDA_SUCCESS:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        pass
    return f"CUresult {int(err)}"


class Driver:
    """Checked driver calls for one device; remembers the allocations to free at close."""

    def __init__(self, cu: Any) -> None:
        self.cu = cu
        self.OK = cu.CUresult.CUDA_SUCCESS
        self.NOT_READY = cu.CUresult.CUDA_ERROR_NOT_READY
        self.dev: Any = None
        self.allocs: list[int] = []

    def check(self, res: tuple[Any, ...], op: str) -> Any:
        """The call's result (None, one value or a tuple), or BackendError naming ``op``."""
        err = res[0]
        if err != self.OK:
            raise BackendError(f"{op} failed: {err_name(self.cu, err)}")
        if len(res) == 1:
            return None
        return res[1] if len(res) == 2 else res[1:]

    def fail(self, op: str, err: Any) -> NoReturn:
        """A failed call that leaves the context unusable (sticky errors)."""
        raise BackendError(f"{op} failed: {err_name(self.cu, err)} (the CUDA context is unusable)")

    def attr(self, a: Any) -> int:
        return int(self.check(self.cu.cuDeviceGetAttribute(a, self.dev), "cuDeviceGetAttribute"))

    def new_event(self) -> Any:
        """An event without timing: it only says "done" and surfaces sticky errors."""
        return self.check(
            self.cu.cuEventCreate(self.cu.CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate"
        )

    def new_timing_event(self) -> Any:
        return self.check(self.cu.cuEventCreate(0), "cuEventCreate")

    def malloc(self, nbytes: int) -> int:
        ptr = int(self.check(self.cu.cuMemAlloc(max(nbytes, 4)), f"cuMemAlloc({nbytes} B)"))
        self.allocs.append(ptr)
        return ptr

    def host_mapped(self, nbytes: int) -> tuple[int, int]:
        """Zeroed pinned host memory mapped into the device: (host address, device address).
        The caller frees it with cuMemFreeHost."""
        cu = self.cu
        flags = cu.CU_MEMHOSTALLOC_DEVICEMAP | cu.CU_MEMHOSTALLOC_PORTABLE
        host = int(self.check(cu.cuMemHostAlloc(nbytes, flags), "cuMemHostAlloc"))
        ctypes.memset(host, 0, nbytes)
        dev = int(self.check(cu.cuMemHostGetDevicePointer(host, 0), "cuMemHostGetDevicePointer"))
        return host, dev

    def stream(self, flags: Any, priority: int) -> Any:
        return self.check(
            self.cu.cuStreamCreateWithPriority(flags, priority), "cuStreamCreateWithPriority"
        )
