"""Added host cost per launch, measured: the C micro-benchmark (bench_launch.c) calls
the fake driver's cuLaunchKernel through dlsym without and with the interceptor. HP
(record + completion write), HP without completions (record only) and LP pre-granted
(the gate's fast path). Target: <= 1 us median added for HP. ``pytest -s`` prints it."""

from __future__ import annotations

import subprocess

from conftest import Native, prog_env

from hbtui.attach import build
from hbtui.attach import layout as L
from hbtui.attach.segment import Attachment

HERE = build.Path(__file__).resolve().parent


def _median(native: Native, exe, env: dict, runs: int = 3) -> list[float]:  # noqa: ANN001
    best: list[float] | None = None
    for _ in range(runs):  # the least disturbed run of a few (CI boxes are shared)
        out = subprocess.run([str(exe), "1000"], env=env, capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()  # fmt: skip
        vals = [float(x) for x in out]
        if best is None or vals[0] < best[0]:
            best = vals
    assert best is not None
    return best


def test_added_host_cost_per_launch(native: Native, make_segment) -> None:
    exe = native.dir / "bench_launch"
    build.compile_c([HERE / "bench_launch.c"], exe, ("-O2", "-std=gnu11"), ("-ldl",))
    plain = prog_env(native, FAKE_GPU="inline")
    del plain["LD_PRELOAD"]
    hp = make_segment(L.CLASS_HP)
    rec_only = make_segment(L.CLASS_HP, flags=L.FLAG_NO_COMPLETION)
    lp: Attachment = make_segment(L.CLASS_LP)
    lp.set_gated(True)
    lp.grant(2**62)
    rows = {
        "no interceptor": _median(native, exe, plain),
        "preloaded, no segment": _median(native, exe, prog_env(native, FAKE_GPU="inline")),
        "HP record + completion": _median(
            native, exe, prog_env(native, hp.name, FAKE_GPU="inline")),
        "HP coalesced (100 us)": _median(
            native, exe, prog_env(native, hp.name, FAKE_GPU="inline", HBTUI_COMP_EVERY_US="100")),
        "HP record only": _median(
            native, exe, prog_env(native, rec_only.name, FAKE_GPU="inline")),
        "LP pre-granted": _median(
            native, exe, prog_env(native, lp.name, "lp", FAKE_GPU="inline")),
    }  # fmt: skip
    base = rows["no interceptor"][0]
    print("\nns per cuLaunchKernel (median p90 p99 min; added = median - baseline)")
    for k, (med, p90, p99, mn) in rows.items():
        print(f"  {k:22s} {med:7.1f} {p90:7.1f} {p99:7.1f} {mn:7.1f}  added {med - base:6.1f}")
    assert hp.h.comp_state == L.COMP_WRITEVAL  # the completion path was the real one
    assert rows["HP record + completion"][0] - base <= 1000.0
