"""Cost of slicing on a GPU: each corpus kernel's sliced variant in one full-grid launch
(offsets 0) vs the original, CUDA-event timed, interleaved, after a warm-up.

    python benchmarks/slicer_overhead.py OUT.json [--reps 200] [--warmup 20]

Writes {"schema": 1, "device", "arch", "reps", "warmup", "kernels": {"file:entry":
{"blocks", "original_us": {"median", "p99"}, "sliced_us": {...}, "median_overhead_pct"}}}.
Exit 2 without a usable GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.slicer import compile_cuda, slice_ptx  # noqa: E402
from engine.slicer.harness import Gpu, KernelCase  # noqa: E402

CORPUS = ROOT / "tests" / "slicer_corpus"


def _ptx(module: dict) -> str:
    path = CORPUS / module["file"]
    if path.suffix == ".ptx":
        return path.read_text()
    opts = module.get("nvrtc_options", [])
    return compile_cuda(path.read_text(), path.name, "compute_90", opts)


def _stats(samples_ms: list[float]) -> dict[str, float]:
    us = sorted(x * 1000.0 for x in samples_ms)
    p99 = us[min(len(us) - 1, math.ceil(0.99 * len(us)) - 1)]
    return {"median": statistics.median(us), "p99": p99}


def _time(gpu: Gpu, kc: KernelCase, run, fn, reps: int, warmup: int, evs) -> list[float]:
    out = []
    for i in range(warmup + reps):
        kc.reset()  # outside the timed region; keeps counters/accumulators realistic
        gpu.record(evs[0])
        run(fn)
        gpu.record(evs[1])
        gpu.sync()
        if i >= warmup:
            out.append(gpu.elapsed_ms(evs[0], evs[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="JSON output path")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    try:
        gpu = Gpu()
    except Exception as exc:  # GpuUnavailable, DynamicLibNotFoundError, ...
        print(f"slicer_overhead: no usable GPU: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    report: dict = {
        "schema": 1,
        "device": gpu.name,
        "arch": gpu.arch,
        "reps": args.reps,
        "warmup": args.warmup,
        "kernels": {},
    }
    evs = (gpu.event(), gpu.event())
    try:
        for module in manifest["modules"]:
            if module.get("needs_cudadevrt"):
                continue
            entries = [e for e in module["entries"] if "launch" in e]
            if not entries:
                continue
            original = _ptx(module)
            if ".target sm_90a" in original and gpu.arch != "sm_90":
                continue
            for spec in entries:
                name = spec["name"]
                sliced = slice_ptx(original, [name], allow_clusters="cluster" in spec)
                f_orig = gpu.function(gpu.load(original), name)
                f_slice = gpu.function(gpu.load(sliced.ptx), name)
                seed = zlib.crc32(f"{module['file']}:{name}".encode())
                kc = KernelCase(gpu, spec["launch"], seed)
                t_orig, t_slice = [], []
                # Interleave in chunks so clock/thermal drift hits both alike.
                chunk = max(1, args.reps // 10)
                done = 0
                while done < args.reps:
                    n = min(chunk, args.reps - done)
                    warm = args.warmup if done == 0 else 0
                    t_orig += _time(gpu, kc, kc.run_original, f_orig, n, warm, evs)
                    t_slice += _time(gpu, kc, kc.run_full, f_slice, n, warm, evs)
                    done += n
                o, s = _stats(t_orig), _stats(t_slice)
                g = kc.grid
                report["kernels"][f"{module['file']}:{name}"] = {
                    "blocks": g[0] * g[1] * g[2],
                    "original_us": o,
                    "sliced_us": s,
                    "median_overhead_pct": (s["median"] / o["median"] - 1.0) * 100.0,
                }
                print(f"{name:14s} original {o['median']:8.2f} us  sliced {s['median']:8.2f} us")
    finally:
        gpu.close()
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
