"""Sliced kernels on a real GPU: outputs must be bit-identical to the unsliced original
for 1, 2, 7 and one-block-per-slice (one cluster per slice for cluster kernels) slicings.

Skipped without a usable GPU (cuInit failing, e.g. DynamicLibNotFoundError without a
driver). Run on the GPU machine: pytest -m gpu tests/test_slicer_gpu.py
"""

from __future__ import annotations

import functools
import json
import zlib
from pathlib import Path

import pytest

from hbtui.engine.slicer import compile_cuda, plan_launches, slice_ptx
from hbtui.engine.slicer.harness import Gpu, GpuUnavailable, KernelCase

pytestmark = pytest.mark.gpu

CORPUS = Path(__file__).parents[1] / "slicer_corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
MODULES = {m["file"]: m for m in MANIFEST["modules"]}
CASES = [
    (m["file"], e)
    for m in MANIFEST["modules"]
    if not m.get("needs_cudadevrt")
    for e in m["entries"]
    if "launch" in e
]


@pytest.fixture(scope="module")
def gpu():
    try:
        g = Gpu()
    except GpuUnavailable as exc:
        pytest.skip(f"no usable CUDA GPU: {exc}")
    except Exception as exc:  # any other driver trouble also means "no usable GPU"
        pytest.skip(f"no usable CUDA GPU: {type(exc).__name__}: {exc}")
    yield g
    g.close()


@functools.cache
def module_ptx(file: str) -> str:
    path = CORPUS / file
    if path.suffix == ".ptx":
        return path.read_text()
    opts = MODULES[file].get("nvrtc_options", [])
    return compile_cuda(path.read_text(), file, "compute_90", opts)


def slice_counts(total: int) -> list[int]:
    return sorted({1, 2, 7, total} & set(range(1, total + 1)))


@pytest.mark.parametrize("case", CASES, ids=[f"{f}:{e['name']}" for f, e in CASES])
def test_sliced_matches_original(gpu, case) -> None:
    file, spec = case
    original = module_ptx(file)
    if ".target sm_90a" in original and gpu.arch != "sm_90":
        pytest.skip(f"sm_90a PTX cannot run on {gpu.arch}")
    cluster = tuple(spec.get("cluster", (1, 1, 1)))
    result = slice_ptx(original, [spec["name"]], allow_clusters=cluster != (1, 1, 1))
    assert result[spec["name"]].sliced, result[spec["name"]].reason

    f_orig = gpu.function(gpu.load(original), spec["name"])
    f_slice = gpu.function(gpu.load(result.ptx), spec["name"])
    seed = zlib.crc32(f"{file}:{spec['name']}".encode())
    kc = KernelCase(gpu, spec["launch"], seed)

    kc.reset()
    kc.run_original(f_orig)
    gpu.sync()
    want = kc.outputs()
    assert want, "manifest lists no compared output"
    assert want != kc.initial_outputs(), "original kernel left its outputs unchanged"

    kc.reset()
    kc.run_full(f_slice)
    gpu.sync()
    assert kc.outputs() == want, "sliced kernel, one full-grid launch"

    grid = kc.grid
    units = [g // c for g, c in zip(grid, cluster, strict=True)]
    total = units[0] * units[1] * units[2]
    for k in slice_counts(total):
        bounds = [total * i // k for i in range(k + 1)]
        kc.reset()
        for start, end in zip(bounds, bounds[1:], strict=False):
            kc.run_slices(f_slice, plan_launches(start, end, grid, cluster))
        gpu.sync()
        got = kc.outputs()
        assert got == want, f"{k} slices: outputs differ from the original"


def test_block_per_slice_reversed_order(gpu) -> None:
    """Slices may run in any order when the kernel has no cross-block dependency:
    issue one-block slices last-to-first and still match (vector add, 2-D stencil)."""
    for file, name in (("vector_add.cu", "vadd"), ("stencil2d.cu", "stencil5")):
        spec = next(e for e in MODULES[file]["entries"] if e["name"] == name)
        original = module_ptx(file)
        f_orig = gpu.function(gpu.load(original), name)
        f_slice = gpu.function(gpu.load(slice_ptx(original, [name]).ptx), name)
        kc = KernelCase(gpu, spec["launch"], seed=12345)
        kc.reset()
        kc.run_original(f_orig)
        gpu.sync()
        want = kc.outputs()
        kc.reset()
        total = kc.grid[0] * kc.grid[1] * kc.grid[2]
        for b in reversed(range(total)):
            kc.run_slices(f_slice, plan_launches(b, b + 1, kc.grid))
        gpu.sync()
        assert kc.outputs() == want
