"""LP kernels of real programs run as slices on a real GPU (issue 16): Triton kernels
(cubins, their PTX found in Triton's cache; 1-D and 2-D grids, a kernel reading
``num_programs``), and a CuPy RawKernel (NVRTC PTX) under ``hbtui run --lp`` with a
``hummingbird`` engine give bitwise the outputs of the same program without hbtui, and
the engine's summary lists them as sliced. Skipped without a usable GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hbtui.engine.backends.cuda import cuda_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="no usable GPU")]

PROG = r"""
import hashlib, sys, time
import torch, triton, triton.language as tl
import cupy as cp

@triton.jit
def axpy(x, y, out, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(out + i, 1.5 * tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)

@triton.jit
def rows(x, out, ncols, BLOCK: tl.constexpr):  # 2-D grid: (column tiles, rows)
    r = tl.program_id(1)
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = c < ncols
    v = tl.load(x + r * ncols + c, mask=m)
    tl.store(out + r * ncols + c, v * (r + 1) + tl.num_programs(0), mask=m)

@triton.jit
def stride(x, out, n, BLOCK: tl.constexpr):  # a grid-stride loop over num_programs
    start = tl.program_id(0) * BLOCK
    step = tl.num_programs(0) * BLOCK
    for s in range(start, n, step):
        i = s + tl.arange(0, BLOCK)
        m = i < n
        tl.store(out + i, tl.load(x + i, mask=m) * 3.0, mask=m)

k = cp.RawKernel(r'''extern "C" __global__ void scale(float* a, const float* b, float s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] = b[i] * s + blockIdx.x; }''',
  "scale")

g = torch.Generator(device="cuda").manual_seed(7)
n = 1 << 24
x = torch.randn(n, device="cuda", generator=g); y = torch.randn(n, device="cuda", generator=g)
o1, o2, o3 = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
X = torch.randn(512, 8192, device="cuda", generator=g); O = torch.empty_like(X)
a = cp.empty(n, dtype=cp.float32); b = cp.asarray(x)

def once():
    axpy[(triton.cdiv(n, 1024),)](x, y, o1, n, BLOCK=1024)
    rows[(triton.cdiv(8192, 256), 512)](X, O, 8192, BLOCK=256)
    stride[(4224,)](x, o3, n, BLOCK=1024)  # several waves, each program looping 4 times
    k(((n + 255) // 256,), (256,), (a, b, cp.float32(0.5), cp.int32(n)))

once(); torch.cuda.synchronize()
time.sleep(float(sys.argv[1]))  # the engine slices the modules and publishes the variants
for _ in range(5):
    once()
torch.cuda.synchronize()
h = hashlib.sha256()
for t in (o1, O, o3, torch.as_tensor(a, device="cuda")):
    h.update(t.cpu().numpy().tobytes())
print("digest", h.hexdigest())
"""


def _run(cmd: list[str], env: dict) -> str:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("digest ")]
    return line


def _wait_for_task(ctl: str, name: str, timeout: float = 30.0) -> None:
    from hbtui.engine.client import EngineClient

    c = EngineClient(ctl, timeout=2.0)
    deadline = time.monotonic() + timeout
    try:
        while not any(t["name"] == name for t in c.call("get_state", {})["tasks"]):
            assert time.monotonic() < deadline, f"{name} did not attach in {timeout} s"
            time.sleep(0.05)
    finally:
        c.close()


def test_triton_and_cupy_kernels_sliced_give_identical_outputs(tmp_path: Path) -> None:
    d = Path(tempfile.mkdtemp(prefix="hbsl-"))  # short: ipc paths are <= 107 bytes
    ctl, pub, summary = f"ipc://{d}/ctl", f"ipc://{d}/pub", d / "summary.json"
    elog = tmp_path / "engine.log"
    eng = subprocess.Popen([sys.executable, "-m", "hbtui", "engine", "--profile", "programs",
                            "--backend", "sim", "--ctl", ctl, "--pub", pub, "--calibrate", "0",
                            "--summary-json", str(summary)],
                           stdout=subprocess.DEVNULL, stderr=elog.open("w"))  # fmt: skip
    holder: subprocess.Popen[bytes] | None = None
    try:
        env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / "triton"),
               "HBTUI_MODULE_DIR": str(tmp_path / "modules")}  # fmt: skip
        prog = tmp_path / "prog.py"
        prog.write_text(PROG)
        plain = _run([sys.executable, str(prog), "0"], env)
        time.sleep(2)  # the engine is up by now
        # an idle HP program (no CUDA): with no HP attached LP runs ungated and whole
        holder = subprocess.Popen([sys.executable, "-m", "hbtui", "run", "--hp", "--task",
                                   "idle-hp", "--engine", ctl, "--", "sleep", "600"])  # fmt: skip
        _wait_for_task(ctl, "idle-hp")
        hb = [sys.executable, "-m", "hbtui", "run", "--lp", "--task", "train", "--engine", ctl,
              "--attach-timeout", "10", "--", sys.executable, str(prog), "3"]  # fmt: skip
        sliced = _run(hb, env)
        time.sleep(1.0)  # the engine notices the launcher left
    finally:
        if holder is not None:
            holder.terminate()
            holder.wait(30)
        eng.terminate()
        eng.wait(30)
    log = elog.read_text()
    doc = json.loads(summary.read_text())
    dep = (doc.get("attached_departed") or {}).get("train") or {}
    kernels = dep.get("sliced_kernels") or {}
    print("sliced kernels:", json.dumps(kernels, indent=1), "\nengine log:", log[-3000:])
    assert "attached train" in log, log[-3000:]
    assert sliced == plain
    for name in ("axpy", "rows", "stride", "scale"):
        hit = [v for k, v in kernels.items() if name in k]
        assert hit and hit[0]["slices"] > hit[0]["launches"] > 0, (name, kernels)
