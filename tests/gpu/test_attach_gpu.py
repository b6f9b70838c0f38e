"""The interceptor (``hbtui run``'s LD_PRELOAD library) under real PyTorch on a real GPU:
pass-through (same results), HP launch records with GPU completions, LP launches held
until granted. Skipped without a usable GPU and PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hbtui.engine.backends.cuda import cuda_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="no usable GPU")]
torch = pytest.importorskip("torch")

from hbtui.attach import build, segment  # noqa: E402
from hbtui.attach import layout as L  # noqa: E402

PROG = r"""
import sys, time, torch
torch.manual_seed(0)
x = torch.randn(1024, 1024, device="cuda")
w = torch.randn(1024, 1024, device="cuda")
for _ in range(3):
    y = torch.relu(x @ w).sum()  # eager: cuBLAS + elementwise + reduction kernels
torch.cuda.synchronize()
g = torch.cuda.CUDAGraph()
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    z = torch.relu(x @ w)
torch.cuda.current_stream().wait_stream(s)
with torch.cuda.graph(g):
    z = torch.relu(x @ w)
t0 = time.perf_counter()
acc = 0.0
for i in range(int(sys.argv[1])):
    y = torch.tanh(x @ w * 1e-3).sum()
    g.replay()
    acc += float(y) + float(z[0, 0])
torch.cuda.synchronize()
print(f"{acc:.6f} {time.perf_counter() - t0:.4f}", flush=True)
"""


def _run(env_extra: dict[str, str], iters: int = 50, timeout: float = 180) -> tuple[str, float]:
    env = {**os.environ, **env_extra}
    r = subprocess.run([sys.executable, "-c", PROG, str(iters)], env=env, capture_output=True,
                       text=True, timeout=timeout)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    val, secs = r.stdout.split()
    return val, float(secs)


@pytest.fixture(scope="module")
def so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build.build(cache=tmp_path_factory.mktemp("attach"))


def _env(so: Path, shm: str, cls: str) -> dict[str, str]:
    return {"LD_PRELOAD": str(so), "HBTUI_SHM": shm, "HBTUI_CLASS": cls, "HBTUI_TASK": "t"}


def test_hp_program_is_unchanged_and_observed(so: Path) -> None:
    want, t_plain = _run({})
    shm = segment.create_segment("svc", L.CLASS_HP)
    try:
        got, t_hp = _run(_env(so, shm, "hp"))
        assert got == want  # bitwise the same printed result
        with segment.Attachment(shm) as a:
            launches = a.launches()
            funcs = a.functions()  # (each call returns what came since the last)
            names = {f.name for f in funcs}
            done = [a.done(x) for x in launches]
            print(f"\nHP: {len(launches)} launches recorded, {len(names)} function names, "
                  f"done {sum(d is True for d in done)}, unknown {sum(d is None for d in done)}; "
                  f"loop {t_plain:.4f} s plain vs {t_hp:.4f} s under the interceptor; "
                  f"stats {a.stats()} lost {a.lost()}")  # fmt: skip
            fnames = {f.func: f.name for f in funcs}
            late = [
                f"#{i}/{len(launches)} seq {x.seq} slot {x.comp_slot} counter "
                f"{a.completed(x.comp_slot)} stream {x.stream:#x} kind {x.kind} flags {x.flags} "
                f"result {x.result} tid {x.tid} {fnames.get(x.func, hex(x.func))[:60]}"
                for i, (x, d) in enumerate(zip(launches, done, strict=True))
                if d is False
            ]
            assert len(launches) > 100 and a.lost()["launch"] == 0
            assert not late, (len(late), late[:20])  # every completion counted by the GPU or a sync
    finally:
        segment.unlink_segment(shm)


SYNC_PROG = r"""
import torch
x = torch.randn(512, 512, device="cuda")
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):  # two kernels on a side stream: the second has no write of its own
    y = torch.relu(x @ x)
torch.cuda.synchronize()  # the CUDA 13 runtime: cuCtxSynchronize_v2 via cuGetProcAddress
print(float(y.sum()))
"""


def test_torch_cuda_synchronize_is_seen(so: Path) -> None:
    """torch.cuda.synchronize() confirms an HP side stream's coalesced tail and dates the
    program's sync (synced_ns), whatever entry point the CUDA runtime uses for it
    (cuCtxSynchronize_v2 under CUDA 13)."""
    shm = segment.create_segment("sync", L.CLASS_HP)
    try:
        env = {**os.environ, **_env(so, shm, "hp"), "HBTUI_COMP_EVERY_US": "1000000"}
        r = subprocess.run([sys.executable, "-c", SYNC_PROG], env=env, capture_output=True,
                           text=True, timeout=180)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        with segment.Attachment(shm) as a:
            side = [x for x in a.launches() if x.comp_slot != L.COMP_NONE]
            coalesced = [x for x in side if x.flags & L.LF_COALESCED]
            print(f"\n{len(side)} launches with a counter, {len(coalesced)} coalesced, "
                  f"synced_ns {a.synced_ns}, torch {torch.__version__}")  # fmt: skip
            assert coalesced, "no coalesced launch: the test proves nothing"
            assert all(a.done(x) for x in side)
            assert a.synced_ns > 0 and a.h.syncing == 0
    finally:
        segment.unlink_segment(shm)


def test_lp_program_is_held_until_granted(so: Path) -> None:
    want, _ = _run({})
    shm = segment.create_segment("train", L.CLASS_LP, grace_ms=5000)
    stop = threading.Event()
    grants = 0
    with segment.Attachment(shm) as a:
        a.heartbeat()
        a.set_gated(True)

        def engine() -> None:  # grants whatever is pending, every 0.2 ms
            nonlocal grants
            while not stop.is_set():
                a.heartbeat()
                if a.pending():
                    a.grant_pending()
                    grants += 1
                time.sleep(0.0002)

        t = threading.Thread(target=engine, daemon=True)
        t.start()
        try:
            got, secs = _run(_env(so, shm, "lp"))
        finally:
            stop.set()
            t.join(5)
        print(f"\nLP gated: {grants} grant rounds, {a.next_seq} launches, {secs:.4f} s loop")
        assert got == want and grants > 0 and a.granted >= 1
    segment.unlink_segment(shm)


def test_hbtui_run_without_engine_passes_through() -> None:
    want, _ = _run({})
    r = subprocess.run(
        [sys.executable, "-m", "hbtui", "run", "--hp", "--task", "svc", "--no-engine", "--",
         sys.executable, "-c", PROG, "50"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[0] == want
