"""Test tools for the cuda backend (the GPU tests use them; the engine never does):
read and refill a prepared kernel's buffers, and plant faults."""

from __future__ import annotations

import ctypes

from hbtui.engine.backends.cuda import CudaBackend
from hbtui.engine.backends.cuda_kernels import PreparedBuiltin, PreparedUser


def buffers(be: CudaBackend, kernel_name: str) -> dict[str, tuple[int, int, bool]]:
    """name → (device pointer, bytes, is_output) of a prepared kernel."""
    p = be._prepared[kernel_name]
    return {k: (ptr, b.nbytes, b.output) for k, (ptr, b) in p.bufs.items()}


def read_buffer(be: CudaBackend, kernel_name: str, buf: str) -> bytes:
    """The bytes of buffer ``buf`` once the GPU is idle."""
    ptr, b = be._prepared[kernel_name].bufs[buf]
    be.synchronize()
    host = bytearray(b.nbytes)
    arr = (ctypes.c_char * b.nbytes).from_buffer(host)
    be._drv.check(be._cu.cuMemcpyDtoH(ctypes.addressof(arr), ptr, b.nbytes), "cuMemcpyDtoH")
    return bytes(host)


def refill(be: CudaBackend, kernel_name: str, seed: int) -> None:
    """Fresh random inputs (from ``seed``) and NaN-poisoned outputs."""
    p = be._prepared[kernel_name]
    if isinstance(p, PreparedUser):  # keeps its init kinds (a zeroed counter stays zero)
        be._kernels.init_user(p, seed * 7919)
        be.synchronize()
        return
    for i, (ptr, b) in enumerate(p.bufs.values()):
        be._kernels.fill(ptr, b, seed * 7919 + i)
    be.synchronize()


def poison_outputs(be: CudaBackend, kernel_name: str) -> None:
    """NaN in every output buffer of a prepared kernel."""
    for ptr, b in be._prepared[kernel_name].bufs.values():
        if b.output:
            be._kernels.fill(ptr, b, 0)
    be.synchronize()


def prepared(be: CudaBackend, kernel_name: str) -> PreparedBuiltin | PreparedUser:
    """The prepared kernel (its launch mode: ``sliced``, ``cooperative`` for user kernels)."""
    return be._prepared[kernel_name]


def blocks_per_sm(be: CudaBackend, kernel_name: str) -> int:
    return be._prepared[kernel_name].blocks_per_sm


def point_buffer_at(be: CudaBackend, kernel_name: str, buf: str, address: int) -> None:
    """Fault injection: built-in kernel ``kernel_name`` reads buffer ``buf`` at ``address``
    (e.g. 0x10, unmapped), in its own argument array and in every copy made from now on
    (the HP chain's and armed slices')."""
    p = be._prepared[kernel_name]
    if not isinstance(p, PreparedBuiltin):
        raise TypeError(f"{kernel_name!r} is not a built-in kernel")
    p.arg_cell(buf).value = address
    p.bufs[buf] = (address, p.bufs[buf][1])
