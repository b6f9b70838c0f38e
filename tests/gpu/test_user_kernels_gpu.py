"""User kernels through CudaBackend.prepare/submit on a real GPU: a kernel sliced 1, 2, 7
and one-block-per-slice ways (``plan_launches`` sub-grids, several per slice for 2-D/3-D
grids) leaves bit-identical buffers to one whole launch; a grid-syncing kernel runs whole
with a cooperative launch.

Skipped without a usable GPU. Run on the GPU machine:
    PYTHONPATH=. python3 -m pytest -q -m gpu tests/test_user_kernels_gpu.py
"""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import pytest

from hbtui.engine.backends import cuda_testing as ct
from hbtui.engine.backends.cuda import CudaBackend, cuda_available
from hbtui.engine.model import LP, KernelSpec, Launch
from hbtui.engine.profile import load

pytestmark = pytest.mark.gpu

CORPUS = Path(__file__).parents[1] / "slicer_corpus"
EXAMPLES = Path(__file__).parents[2] / "hbtui" / "profiles" / "examples"

# (file, table): the kernel table of a one-kernel profile; sources are copied to tmp.
CASES = {
    "saxpy-1d": (
        EXAMPLES / "saxpy.cu",
        """entry = "saxpy"
grid = 40
block = 64
args = [{ scalar = "f32", value = 1.5 }, { buffer = "x", count = 40000 },
        { buffer = "y", count = 40000 }, { scalar = "i32", value = 39000 }]""",
    ),
    "stencil-2d": (
        CORPUS / "stencil2d.cu",
        """entry = "stencil5"
grid = [7, 9]
block = [16, 8]
args = [{ buffer = "in", count = 7000 }, { buffer = "out", count = 7000, init = "zeros" },
        { scalar = "i32", value = 100 }, { scalar = "i32", value = 70 }]""",
    ),
    "fill-3d": (
        CORPUS / "grid3d.cu",
        """entry = "fill3d"
grid = [3, 4, 5]
block = [8, 4, 2]
args = [{ buffer = "out", dtype = "u32", count = 2520, init = "ones" },
        { buffer = "salt", dtype = "u32", count = 2520 },
        { scalar = "i32", value = 20 }, { scalar = "i32", value = 14 },
        { scalar = "i32", value = 9 }]""",
    ),
    "grid-math-3d": (
        CORPUS / "nctaid_math.cu",
        """entry = "grid_math"
grid = [5, 3, 4]
block = 64
args = [{ buffer = "out", dtype = "u32", count = 3840, init = "zeros" },
        { buffer = "in", dtype = "u32", count = 3840 }]""",
    ),
}


@pytest.fixture(scope="module")
def backend():
    if not cuda_available():
        pytest.skip("no usable CUDA GPU")
    be = CudaBackend(calibration_samples=16)
    yield be
    be.close()


def user_kernel(tmp: Path, name: str, src: Path, table: str) -> KernelSpec:
    shutil.copy(src, tmp / src.name)
    (tmp / f"{name}.toml").write_text(f"""version = 1
[kernels.{name}]
source = "{src.name}"
{table}
[[tasks]]
name = "t"
class = "lp"
kernels = ["{name}"]
""")
    return load(tmp / f"{name}.toml").kernels[name]


def run(be: CudaBackend, k: KernelSpec, ranges: list[tuple[int, int]]) -> list[Launch]:
    launches = [Launch(i + 1, "t", LP, k, s, e, 1) for i, (s, e) in enumerate(ranges)]
    for la in launches:
        be.submit(la)
    pending = {la.id for la in launches}
    deadline = time.perf_counter_ns() + 20_000_000_000
    while pending:
        assert time.perf_counter_ns() < deadline, "user-kernel launches did not complete"
        for la in be.wait(be.now_ns() + 1_000_000):
            pending.discard(la.id)
    return launches


def snapshot(be: CudaBackend, k: KernelSpec) -> dict[str, bytes]:
    return {b: ct.read_buffer(be, k.name, b) for b in ct.buffers(be, k.name)}


@pytest.mark.parametrize("case", list(CASES))
def test_sliced_user_kernel_matches_whole_launch(backend, tmp_path: Path, case: str) -> None:
    src, table = CASES[case]
    k = user_kernel(tmp_path, case.replace("-", "_"), src, table)
    assert k.sliceable
    backend.prepare(k)
    assert ct.prepared(backend, k.name).sliced
    ct.refill(backend, k.name, 7)
    before = snapshot(backend, k)
    (whole,) = run(backend, k, [(0, k.total_blocks)])
    want = snapshot(backend, k)
    assert want != before, "the whole launch changed nothing"
    assert whole.issue_ns <= whole.start_ns <= whole.end_ns
    total = k.total_blocks
    for n in sorted({1, 2, 7, total}):
        bounds = [total * i // n for i in range(n + 1)]
        ct.refill(backend, k.name, 7)
        assert snapshot(backend, k) == before, "refill is not deterministic"
        done = run(backend, k, list(zip(bounds, bounds[1:], strict=False)))
        assert snapshot(backend, k) == want, f"{n} slices differ from the whole launch"
        for la in done:
            assert la.issue_ns <= la.start_ns <= la.end_ns
        ends = [la.end_ns for la in done]
        assert ends == sorted(ends), "slices of one stream completed out of order"


def test_unsliceable_grid_sync_kernel_runs_whole(backend, tmp_path: Path) -> None:
    table = """entry = "coop_sync"
grid = 8
block = 128
sliceable = false
args = [{ buffer = "a", count = 1024 }, { scalar = "i32", value = 1000 }]"""
    k = user_kernel(tmp_path, "coop", CORPUS / "coop_sync.cu", table)
    assert not k.sliceable
    backend.prepare(k)  # compiled here: the grid sync makes it a cooperative launch
    p = ct.prepared(backend, k.name)
    assert not p.sliced and p.cooperative
    ct.refill(backend, k.name, 3)
    a0 = struct.unpack("1024f", ct.read_buffer(backend, k.name, "a"))
    run(backend, k, [(0, k.total_blocks)])
    got = struct.unpack("1024f", ct.read_buffer(backend, k.name, "a"))

    def f32(x: float) -> float:
        return struct.unpack("f", struct.pack("f", x))[0]

    want = tuple(f32(f32(v + 1.0) * 2.0) if i < 1000 else v for i, v in enumerate(a0))
    assert got == want
