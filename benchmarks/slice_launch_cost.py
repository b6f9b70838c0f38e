"""Host cost of the slicing path on a granted LP launch (issue 16: host us per slice).

    python3 benchmarks/slice_launch_cost.py [--waves 4,16] [--batches N] [--per P]
        [--runs R] [--out FILE]

Compiles benchmarks/native/slice_cost_gpu.c (cc): a kernel that writes its block id,
loaded from PTX, launched on a grid of W waves (SMs x resident blocks) in timed batches
of P launches. Each configuration is a fresh process, run R times (the lowest median is
kept, the least disturbed):

- ``none``: no interceptor;
- ``whole``: ``hbtui run --lp``'s interceptor on a pre-granted LP segment (the gate's fast
  path), the module's sliced variant published but slicing off;
- ``sliced``: the same with slicing on and a one-wave slice size, so each launch runs as
  W slices (each gated, recorded and followed by a completion write, 1 sub-grid launch).

The variant is made as the engine makes it (the module the interceptor saved, through
``build_variant``), and after the timed launches the program checks that every block
wrote its own id (``wrong_blocks`` 0; -1: not checked). The JSON gives each slice's host
cost (the sliced launch's time over its slices) and the marginal cost of one more slice
((sliced - whole) / (slices - 1)). The run fails (exit 1, the JSON still written, with
its ``errors``) when a launch did not run as the expected slices or a block wrote a
wrong id. With the fake driver of the CPU tests (``HBTUI_REAL_LIBCUDA``) the same runs
measure the interceptor's own share; on a GPU the driver's launch of each sub-grid is in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness

from hbtui.attach import build, segment
from hbtui.attach import layout as L
from hbtui.engine.attached.variants import Job, build_variant

HERE = Path(__file__).resolve().parent
NAME = "hb_blocks"
WARMUP = 50  # untimed batches (slice_cost_gpu.c's WARMUP)


class RunError(Exception):
    """A configuration's process failed; the message says how."""


def _config(exe: Path, env: dict[str, str], argv: list[str], mdir: Path, mode: str) -> dict:
    """One process: ``mode`` none | whole | sliced. Returns its row."""
    shm = None
    att = None
    stop = threading.Event()
    if mode != "none":
        shm = segment.create_segment("slicebench", L.CLASS_LP)
        att = segment.Attachment(shm)
        att.set_gated(True)
        att.grant(2**62)  # everything pre-granted: what is timed is the path, not a wait
        env = {**env, "LD_PRELOAD": str(build.build()), "HBTUI_SHM": shm, "HBTUI_CLASS": "lp",
               "HBTUI_TASK": "slicebench", "HBTUI_MODULE_DIR": str(mdir)}  # fmt: skip

    def beat() -> None:  # an engine that lives (else the grace period ungates the LP)
        while not stop.wait(0.1):
            att.heartbeat()

    t = threading.Thread(target=beat, daemon=True)
    if att is not None:
        t.start()
    p = subprocess.Popen([str(exe), *argv], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdin is not None
        ready = p.stdout.readline().split()
        if len(ready) != 3 or ready[0] != "ready":
            raise RunError(f"slice_cost_gpu ({mode}): {ready} {p.stderr.read()[-2000:]}")
        wave, grid = int(ready[1]), int(ready[2])
        func = _publish(att, mdir, wave, slicing=mode == "sliced") if att is not None else 0
        p.stdin.write("go\n")
        p.stdin.flush()
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            raise RunError(f"slice_cost_gpu ({mode}) did not finish in 300 s") from None
        if p.returncode != 0 or len(out.split()) != 5:
            raise RunError(f"slice_cost_gpu ({mode}) failed ({p.returncode}): {out[-500:]} "
                           f"{err[-2000:]}")  # fmt: skip
        med, p90, p99, mn, wrong = out.split()
        row = {"median_ns": float(med), "p90_ns": float(p90), "p99_ns": float(p99),
               "min_ns": float(mn), "wrong_blocks": int(wrong), "wave": wave,
               "grid": grid}  # fmt: skip
        if att is not None:
            st = att.stats()
            row.update({k: st[k] for k in ("sliced_launches", "slice_launches",
                                           "slice_fallbacks")})  # fmt: skip
            v = att.variant(func)  # the interceptor's view: its wave, state, load result
            if v is not None:
                row["variant"] = {"state": v.state, "wave_blocks": v.wave_blocks,
                                  "result": v.result}  # fmt: skip
        return row
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        stop.set()
        if att is not None:
            t.join(2)
            att.close()
        if shm is not None:
            segment.unlink_segment(shm)


def _publish(att: segment.Attachment, mdir: Path, wave: int, slicing: bool) -> int:
    """Slice the module the interceptor saved, as the engine does, and publish the kernel's
    variant with a one-wave slice size. Returns the kernel's function handle."""
    deadline = time.monotonic() + 10
    fn = None
    while fn is None and time.monotonic() < deadline:
        fn = next((f for f in att.functions() if f.name == NAME), None)
        time.sleep(0.01)
    if fn is None:
        raise RunError(f"the interceptor recorded no {NAME} function")
    (mod,) = [m for m in att.modules() if m.hash == fn.module_hash]
    arch = att.h.device_cc or 90
    v = build_variant(Job(fn.module_hash, mod.image_kind, mod.size, str(mdir), arch=arch))
    ent = next((e for e in v.entries if e.name == NAME), None)
    if ent is None or ent.status != "sliced" or ent.params is None:
        raise RunError(f"the slicer did not slice {NAME}: {v}")
    if att.publish_variant(fn.func, fn.module_hash, NAME, ent.params, ent.param_bytes,
                           slice_blocks=wave) is None:  # fmt: skip
        raise RunError("the variant table is full")
    att.set_slicing(slicing)
    return fn.func


def _best(exe: Path, env: dict[str, str], argv: list[str], mdir: Path, mode: str,
          runs: int) -> dict:  # fmt: skip
    rows = [_config(exe, env, argv, mdir, mode) for _ in range(runs)]
    return min(rows, key=lambda r: r["median_ns"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--waves", default="4,16", help="grid sizes in waves = slices a launch")
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--per", type=int, default=10, help="launches a timed batch")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    try:
        waves = [int(w) for w in a.waves.split(",")]
    except ValueError:
        ap.error(f"--waves: integers separated by commas, got {a.waves!r}")
    if any(w < 2 for w in waves) or a.batches < 1 or a.per < 1 or a.runs < 1:
        ap.error("--waves must be >= 2 (one wave runs whole); --batches, --per, --runs >= 1")
    tmp = Path(tempfile.mkdtemp())
    exe = tmp / "slice_cost_gpu"
    build.compile_c([HERE / "native" / "slice_cost_gpu.c"], exe, ("-O2", "-std=gnu11"),
                    ("-ldl",))  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("HBTUI_")}
    base.pop("LD_PRELOAD", None)
    if "HBTUI_REAL_LIBCUDA" in os.environ:  # the CPU tests' fake driver
        base["HBTUI_REAL_LIBCUDA"] = os.environ["HBTUI_REAL_LIBCUDA"]
    results: dict[str, dict] = {}
    errors: list[str] = []
    for w in waves:
        mdir = tmp / f"modules-{w}"
        mdir.mkdir()
        argv = [str(a.batches), str(w), str(a.per)]
        try:
            rows = {m: _best(exe, base, argv, mdir, m, a.runs) for m in ("none", "whole", "sliced")}
        except RunError as e:
            errors.append(f"{w} waves: {e}")
            continue
        results[f"{w}_waves"] = row = _summary(rows)
        bad = _check(rows, w, a)
        row["ok"] = not bad
        errors += [f"{w} waves: {e}" for e in bad]
    doc = {
        "what": "host ns per LP launch: none / whole (interceptor, pre-granted) / sliced",
        "fake_driver": "HBTUI_REAL_LIBCUDA" in os.environ,
        "batches": a.batches,
        "per": a.per,
        "runs": a.runs,
        "results": results,
        "errors": errors,
    }
    print(json.dumps(doc, indent=1))
    if a.out:
        harness.write_result(a.out, doc)
    for e in errors:
        print(f"slice_launch_cost: {e}", file=sys.stderr)
    return 1 if errors else 0


def _summary(rows: dict[str, dict]) -> dict:
    """Per slice: its whole host cost (the sliced launch's time over its slices) and the
    marginal cost of one more slice ((sliced - whole) / (slices - 1): a launch in N
    slices does the work of one whole launch plus N - 1 more)."""
    s, whole = rows["sliced"], rows["whole"]["median_ns"]
    n = s["slice_launches"] / s["sliced_launches"] if s["sliced_launches"] else 0.0
    return {
        **rows,
        "slices_per_launch": n,
        "whole_added_ns": round(whole - rows["none"]["median_ns"], 1),
        "ns_per_slice": round(s["median_ns"] / n, 1) if n else None,
        "marginal_ns_per_slice": round((s["median_ns"] - whole) / (n - 1), 1) if n > 1 else None,
    }


def _check(rows: dict[str, dict], waves: int, a: argparse.Namespace) -> list[str]:
    """What would make the figures wrong: launches that did not run as slices (a variant
    that failed to load runs whole, silently for the program), or blocks that did not
    write their own id."""
    out = []
    s = rows["sliced"]
    launches = (WARMUP + a.batches) * a.per + (s["wrong_blocks"] >= 0)
    if s["slice_fallbacks"] or s["sliced_launches"] != launches:
        out.append(f"{s['sliced_launches']} of {launches} launches ran as slices "
                   f"({s['slice_fallbacks']} fell back; variant {s.get('variant')})")  # fmt: skip
    elif s["slice_launches"] != waves * launches:
        out.append(f"{s['slice_launches'] / launches:.2f} slices a launch, not {waves}")
    if rows["whole"]["sliced_launches"]:
        out.append("the whole configuration ran slices")
    out += [
        f"{m}: {r['wrong_blocks']} blocks wrong" for m, r in rows.items() if r["wrong_blocks"] > 0
    ]
    return out


if __name__ == "__main__":
    sys.exit(main())
