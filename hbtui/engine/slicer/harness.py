"""Small cuda.bindings.driver harness to run original vs sliced kernels on a GPU.

Used by tests/gpu/test_slicer_gpu.py and benchmarks/slicer_overhead.py. Arguments follow
the corpus manifest (tests/slicer_corpus/manifest.json): buffers {"buf": dtype, "count",
"init": "random"|"zeros", "out", "skip_compare"} and scalars {"scalar": dtype, "value"}.
"""

from __future__ import annotations

import array
import ctypes
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .launch import Dim3, SubLaunch, full_grid_args, slice_args
from .toolchain import ptx_to_cubin

_ARRAY_CODE = {"float32": "f", "uint32": "I", "int32": "i", "uint64": "Q"}
_CTYPE = {
    "float32": ctypes.c_float,
    "uint32": ctypes.c_uint32,
    "int32": ctypes.c_int32,
    "uint64": ctypes.c_uint64,
}


class GpuUnavailable(RuntimeError):
    pass


def random_buffer(dtype: str, count: int, rng: random.Random, init: str = "random") -> bytes:
    """Host bytes for a buffer; random data is never all zero."""
    code = _ARRAY_CODE[dtype]
    if init == "zeros":
        return array.array(code, [0] * count).tobytes()
    if dtype == "float32":
        vals: list[Any] = [rng.uniform(-4.0, 4.0) or 1.0 for _ in range(count)]
    elif dtype == "uint64":
        vals = [rng.getrandbits(64) | 1 for _ in range(count)]
    elif dtype == "int32":
        vals = [rng.randrange(-(2**31), 2**31) | 1 for _ in range(count)]
    else:
        vals = [rng.getrandbits(32) | 1 for _ in range(count)]
    return array.array(code, vals).tobytes()


@dataclass
class Buffer:
    spec: dict
    host: bytes  # initial contents
    dptr: int


class Gpu:
    """Device 0's primary context, one stream; errors raise RuntimeError with the call."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import driver as cu

            (err,) = cu.cuInit(0)
        except Exception as exc:  # DynamicLibNotFoundError without a driver, ImportError
            raise GpuUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if err != cu.CUresult.CUDA_SUCCESS:
            raise GpuUnavailable(f"cuInit: {err}")
        self.cu = cu
        count = self._ok(cu.cuDeviceGetCount(), "cuDeviceGetCount")
        if count < 1:
            raise GpuUnavailable("no CUDA device")
        self.dev = self._ok(cu.cuDeviceGet(0), "cuDeviceGet")
        self.ctx = self._ok(cu.cuDevicePrimaryCtxRetain(self.dev), "cuDevicePrimaryCtxRetain")
        self._ok(cu.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")
        attr = cu.CUdevice_attribute
        major = self._ok(
            cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.dev),
            "cuDeviceGetAttribute",
        )
        minor = self._ok(
            cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.dev),
            "cuDeviceGetAttribute",
        )
        self.arch = f"sm_{major}{minor}"
        name = self._ok(cu.cuDeviceGetName(256, self.dev), "cuDeviceGetName")
        self.name = bytes(name).split(b"\0")[0].decode(errors="replace")
        self.stream = self._ok(cu.cuStreamCreate(0), "cuStreamCreate")
        self._allocs: list[Any] = []
        self._modules: list[Any] = []

    def _ok(self, ret: Any, what: str) -> Any:
        err, *rest = ret if isinstance(ret, tuple) else (ret,)
        if err != self.cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"{what} failed: {err}")
        return rest[0] if len(rest) == 1 else tuple(rest)

    def load(self, ptx: str) -> Any:
        """Assemble with nvJitLink for this device (sm_90a kept when the PTX asks for it)."""
        target = self.arch + "a" if f".target {self.arch}a" in ptx else self.arch
        try:
            image = ptx_to_cubin(ptx, target)
        except ImportError:  # no nvJitLink wheel: the driver JITs the PTX (same for all)
            image = ptx.encode() + b"\0"
        module = self._ok(self.cu.cuModuleLoadData(image), "cuModuleLoadData")
        self._modules.append(module)
        return module

    def function(self, module: Any, name: str) -> Any:
        return self._ok(self.cu.cuModuleGetFunction(module, name.encode()), f"GetFunction {name}")

    def alloc(self, nbytes: int) -> int:
        dptr = self._ok(self.cu.cuMemAlloc(max(nbytes, 1)), "cuMemAlloc")
        self._allocs.append(dptr)
        return int(dptr)

    def free(self, dptr: int) -> None:
        self._allocs = [d for d in self._allocs if int(d) != dptr]  # CUdeviceptr objects
        self._ok(self.cu.cuMemFree(dptr), "cuMemFree")

    def upload(self, dptr: int, data: bytes) -> None:
        src = ctypes.create_string_buffer(data, len(data))
        self._ok(self.cu.cuMemcpyHtoD(dptr, ctypes.addressof(src), len(data)), "cuMemcpyHtoD")

    def download(self, dptr: int, nbytes: int) -> bytes:
        dst = ctypes.create_string_buffer(nbytes)
        self._ok(self.cu.cuMemcpyDtoH(ctypes.addressof(dst), dptr, nbytes), "cuMemcpyDtoH")
        return dst.raw

    def launch(self, fn: Any, grid: Dim3, block: Dim3, values: Sequence[Any]) -> None:
        """values: ctypes objects, one per kernel parameter, in declaration order."""
        params = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        ret = self.cu.cuLaunchKernel(fn, *grid, *block, 0, self.stream, ctypes.addressof(params), 0)
        self._ok(ret, "cuLaunchKernel")

    def sync(self) -> None:
        self._ok(self.cu.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def event(self) -> Any:
        return self._ok(self.cu.cuEventCreate(0), "cuEventCreate")

    def record(self, ev: Any) -> None:
        self._ok(self.cu.cuEventRecord(ev, self.stream), "cuEventRecord")

    def elapsed_ms(self, a: Any, b: Any) -> float:
        return float(self._ok(self.cu.cuEventElapsedTime(a, b), "cuEventElapsedTime"))

    def close(self) -> None:
        for d in self._allocs:
            self.cu.cuMemFree(d)
        for m in self._modules:
            self.cu.cuModuleUnload(m)
        self.cu.cuStreamDestroy(self.stream)
        self.cu.cuDevicePrimaryCtxRelease(self.dev)


class KernelCase:
    """One manifest entry's launch: device buffers, reset between runs, arg packing."""

    def __init__(self, gpu: Gpu, launch_spec: dict, seed: int) -> None:
        self.gpu = gpu
        self.grid: Dim3 = tuple(launch_spec["grid"])  # type: ignore[assignment]
        self.block: Dim3 = tuple(launch_spec["block"])  # type: ignore[assignment]
        self.args = launch_spec["args"]
        rng = random.Random(seed)
        self.buffers: list[Buffer] = []
        for a in self.args:
            if "buf" in a:
                host = random_buffer(a["buf"], a["count"], rng, a.get("init", "random"))
                self.buffers.append(Buffer(a, host, gpu.alloc(len(host))))

    def reset(self) -> None:
        for b in self.buffers:
            self.gpu.upload(b.dptr, b.host)

    def values(self, extra: Sequence[int] = ()) -> list[Any]:
        out: list[Any] = []
        bufs = iter(self.buffers)
        for a in self.args:
            if "buf" in a:
                out.append(ctypes.c_uint64(next(bufs).dptr))
            else:
                out.append(_CTYPE[a["scalar"]](a["value"]))
        return out + [ctypes.c_uint32(x) for x in extra]

    def outputs(self) -> dict[int, bytes]:
        """Contents of the compared output buffers, keyed by argument position."""
        got = {}
        for i, b in enumerate(self.buffers):
            if b.spec.get("out") and not b.spec.get("skip_compare"):
                got[i] = self.gpu.download(b.dptr, len(b.host))
        return got

    def initial_outputs(self) -> dict[int, bytes]:
        return {
            i: b.host
            for i, b in enumerate(self.buffers)
            if b.spec.get("out") and not b.spec.get("skip_compare")
        }

    def run_original(self, fn: Any) -> None:
        self.gpu.launch(fn, self.grid, self.block, self.values())

    def run_full(self, fn: Any) -> None:
        """The sliced kernel over its whole grid in one launch."""
        self.gpu.launch(fn, self.grid, self.block, self.values(full_grid_args(self.grid)))

    def run_slices(self, fn: Any, launches: Sequence[SubLaunch]) -> None:
        for ln in launches:
            self.gpu.launch(fn, ln.grid, self.block, self.values(slice_args(ln, self.grid)))
