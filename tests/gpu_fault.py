"""GPU test helper: plant a fault in a fresh process and check that it surfaces as a
BackendError naming the CUDA error (a sticky error ruins the context of the process that
hits it, so never in the test process itself)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

_PRELUDE = """
import sys
from hbtui.engine.backends import cuda_testing
from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.cuda import CudaBackend
from hbtui.engine.backends.native import builtin_launch_shape
from hbtui.engine.model import KernelSpec, Launch
g, b = builtin_launch_shape("gelu", {"n": 1 << 20})
k = KernelSpec("bad", grid=g, block=b, builtin="gelu", params={"n": 1 << 20})
"""

_WAIT = """
try:
    while not be.wait(be.now_ns() + 10_000_000):
        pass
except BackendError as e:
    print("BACKEND_ERROR", e)
    sys.exit(0)
print("NO ERROR")
sys.exit(1)
"""


def assert_fault_is_backend_error(plant: str) -> None:
    """``plant`` makes ``be`` (a CudaBackend) and launches kernel ``k`` with a bad pointer
    (``cuda_testing.point_buffer_at``)."""
    code = _PRELUDE + textwrap.dedent(plant) + _WAIT
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BACKEND_ERROR" in r.stdout and "CUDA_ERROR_" in r.stdout, r.stdout
    assert time.monotonic() - t < 60
