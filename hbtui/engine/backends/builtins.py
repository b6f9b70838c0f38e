"""Built-in kernels (``native/*.cu``): names, params and launch layouts. Pure data: no
CUDA, no compiler (profiles import it to fill in launch shapes).

Built-in kernels (``KernelSpec.builtin`` and the ``params`` keys; defaults in brackets).
Every one is natively sliceable: it takes a block offset and the original grid, so a
slice [start, end) of the linearised grid (x fastest) is launched as a 1-D grid of
``end - start`` blocks. ``builtin_launch_shape(builtin, params)`` gives the (grid, block)
a profile may omit; a KernelSpec whose grid/block differ from it is rejected.

=========  ===========================  ============================  ===========
builtin    params                       grid                          block
=========  ===========================  ============================  ===========
gemm       m, n, k [4096 each];         (n/64, m/64, 1)               (128,1,1)
           m%64 = n%64 = 0, k%32 = 0
stream     n floats [1<<26]; n%4096=0    (n/4096, 1, 1)                (256,1,1)
reduce     rows [4096], cols [4096];    (rows, 1, 1)                  (256,1,1)
           cols%4 = 0
gelu       n floats [1<<24]; n%1024=0    (n/1024, 1, 1)                (256,1,1)
spin       us [20.0], blocks [1024],    (blocks, 1, 1)                (threads,1,1)
           threads [128] (32..1024)
=========  ===========================  ============================  ===========

- gemm: C[m,n] = A[m,k]·W[n,k]^T, fp16 inputs, fp32 output, tensor cores (mma.sync);
  compute-bound. 2·m·n·k flop.
- stream: c = a + 0.5·b over n fp32 (12 bytes per element moved); memory-bound.
- reduce: RMSNorm of each row (sum of squares, then scale by a weight vector).
- gelu: elementwise tanh-GELU over n fp32.
- spin: each block stays resident ``us`` µs of GPU wall time (%globaltimer), then
  writes a marker; the calibrated LP stand-in for slice-timing experiments.

Inputs are filled with hash-based random non-zero values (``native/init.cu``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class NativeError(RuntimeError):
    """Compilation or parameter error for a built-in kernel."""


@dataclass(frozen=True)
class BufferSpec:
    name: str
    dtype: str  # "f16" | "f32" | "u32"
    count: int
    output: bool = False

    @property
    def nbytes(self) -> int:
        return self.count * (2 if self.dtype == "f16" else 4)


@dataclass(frozen=True)
class ArgLayout:
    """Everything needed to launch one built-in kernel with given params."""

    builtin: str
    source: str  # file under native/
    function: str  # extern "C" symbol
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    buffers: tuple[BufferSpec, ...]  # passed as pointers, in this order, after the slice params
    scalars: tuple[tuple[str, float | int], ...]  # (ctype code: u32|u64|f32, value), after buffers


def _int(params: dict[str, Any], key: str, default: int, builtin: str) -> int:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v or v <= 0:
        raise NativeError(f"{builtin}: params.{key} must be a positive integer, got {v!r}")
    return int(v)


def _multiple(builtin: str, key: str, v: int, m: int) -> None:
    if v % m:
        raise NativeError(f"{builtin}: params.{key}={v} must be a multiple of {m}")


def _gemm(p: dict[str, Any]) -> ArgLayout:
    m, n, k = (_int(p, x, 4096, "gemm") for x in ("m", "n", "k"))
    _multiple("gemm", "m", m, 64)
    _multiple("gemm", "n", n, 64)
    _multiple("gemm", "k", k, 32)
    return ArgLayout(
        "gemm",
        "gemm.cu",
        "hb_gemm",
        (n // 64, m // 64, 1),
        (128, 1, 1),
        (
            BufferSpec("a", "f16", m * k),
            BufferSpec("w", "f16", n * k),
            BufferSpec("c", "f32", m * n, True),
        ),
        (("u32", m), ("u32", n), ("u32", k)),
    )


def _stream(p: dict[str, Any]) -> ArgLayout:
    n = _int(p, "n", 1 << 26, "stream")
    _multiple("stream", "n", n, 4096)
    return ArgLayout(
        "stream",
        "stream.cu",
        "hb_stream",
        (n // 4096, 1, 1),
        (256, 1, 1),
        (BufferSpec("a", "f32", n), BufferSpec("b", "f32", n), BufferSpec("c", "f32", n, True)),
        (("f32", 0.5),),
    )


def _reduce(p: dict[str, Any]) -> ArgLayout:
    rows = _int(p, "rows", 4096, "reduce")
    cols = _int(p, "cols", 4096, "reduce")
    _multiple("reduce", "cols", cols, 4)
    return ArgLayout(
        "reduce",
        "reduce.cu",
        "hb_reduce",
        (rows, 1, 1),
        (256, 1, 1),
        (
            BufferSpec("x", "f32", rows * cols),
            BufferSpec("w", "f32", cols),
            BufferSpec("y", "f32", rows * cols, True),
        ),
        (("u32", cols), ("f32", 1e-6)),
    )


def _gelu(p: dict[str, Any]) -> ArgLayout:
    n = _int(p, "n", 1 << 24, "gelu")
    _multiple("gelu", "n", n, 1024)
    return ArgLayout(
        "gelu",
        "gelu.cu",
        "hb_gelu",
        (n // 1024, 1, 1),
        (256, 1, 1),
        (BufferSpec("x", "f32", n), BufferSpec("y", "f32", n, True)),
        (),
    )


def _spin(p: dict[str, Any]) -> ArgLayout:
    us = p.get("us", 20.0)
    if isinstance(us, bool) or not isinstance(us, int | float) or us < 0:
        raise NativeError(f"spin: params.us must be a number ≥ 0, got {us!r}")
    blocks = _int(p, "blocks", 1024, "spin")
    threads = _int(p, "threads", 128, "spin")
    if not 32 <= threads <= 1024:
        raise NativeError(f"spin: params.threads={threads} must be in 32..1024")
    return ArgLayout(
        "spin",
        "spin.cu",
        "hb_spin",
        (blocks, 1, 1),
        (threads, 1, 1),
        (BufferSpec("out", "u32", blocks, True),),
        (("u64", int(round(float(us) * 1000))),),
    )


_LAYOUTS = {"gemm": _gemm, "stream": _stream, "reduce": _reduce, "gelu": _gelu, "spin": _spin}
BUILTINS: tuple[str, ...] = tuple(_LAYOUTS)
SOURCES: tuple[str, ...] = ("gemm.cu", "stream.cu", "reduce.cu", "gelu.cu", "spin.cu", "init.cu")


def builtin_layout(builtin: str, params: dict[str, Any] | None = None) -> ArgLayout:
    """The launch layout of ``builtin`` for ``params`` (NativeError when invalid)."""
    try:
        fn = _LAYOUTS[builtin]
    except KeyError:
        raise NativeError(
            f"unknown builtin kernel {builtin!r} (known: {', '.join(BUILTINS)})"
        ) from None
    return fn(dict(params or {}))


def builtin_launch_shape(
    builtin: str, params: dict[str, Any] | None = None
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) that ``builtin`` requires for ``params``; raises NativeError (a
    RuntimeError) with the offending key when the params are invalid."""
    lay = builtin_layout(builtin, params)
    return lay.grid, lay.block
