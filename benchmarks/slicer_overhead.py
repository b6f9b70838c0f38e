"""Cost of slicing on a GPU: each corpus kernel's rewritten (sliced) variant in ONE
full-grid launch (offsets 0) against the original, at problem sizes where the kernel,
not the launch, is measured. Issue 6 target: median overhead <= 2 %.

    python3 benchmarks/slicer_overhead.py OUT.json [--reps 200] [--warmup 20]
        [--manifest-sizes] [--only FILE:ENTRY]...

Method (why each step):
- Sizes: the corpus manifest's launches are tiny (16-63 blocks, ~15 us, launch-latency
  bound), so each kernel runs at the size in SIZES below: >= ~0.5 ms and hundreds of
  waves (``--manifest-sizes`` gives the old tiny sizes for comparison).
- Same configuration: both variants are assembled the same way (nvJitLink cubin for
  this device), launched by the same cuLaunchKernel call on the same stream, same grid,
  block, smem 0 and the same device buffers; only the six appended params differ.
- Argument arrays are built once, before timing. The old harness built ctypes args
  between the start event and cuLaunchKernel (6 more for the sliced kernel) while the
  GPU was idle, so the start event fired at once and host Python time landed in the
  measurement: that was the ~7 us "overhead" at 15 us kernels.
- A 1-thread delay kernel (``--delay-us``, default 300) is queued first, so the start
  event, the launch and the end event are all queued behind it and the events time the
  GPU only. A rep whose host enqueue took longer than the delay is counted in
  ``unshielded_reps`` (its time may include host time).
- Buffers the kernels read-modify-write (counters, accumulators, in-place updates) are
  restored from a device copy before the delay kernel, outside the timed region.
- Interleaved A B A B ... after a warm-up, >= 200 reps; median, p99, the ratio of
  medians and the median of paired (same-rep) ratios.

Writes {"schema": 2, "device", "arch", "sms", "reps", "warmup", "delay_us", "target_pct",
"kernels": {"file:entry": {"grid", "block", "blocks", "blocks_per_sm": {"original",
"sliced"}, "waves", "regs": {...}, "original_us": {"median", "p99"}, "sliced_us": {...},
"median_overhead_pct", "paired_median_overhead_pct", "unshielded_reps"}},
"max_median_overhead_pct"}. Exit 2 without a usable GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import random
import statistics
import sys
import time
import zlib
from typing import Any

from harness import ROOT, write_result

from hbtui.engine.slicer import compile_cuda, full_grid_args, slice_ptx
from hbtui.engine.slicer.harness import Gpu, random_buffer

CORPUS = ROOT / "tests" / "slicer_corpus"
TARGET_PCT = 2.0
PATTERN = 1 << 16  # random elements generated on the host, then tiled on the device
CTYPE = {
    "float32": ctypes.c_float,
    "uint32": ctypes.c_uint32,
    "int32": ctypes.c_int32,
    "uint64": ctypes.c_uint64,
}


def ok(gpu: Gpu, ret: Any, what: str) -> Any:
    """A cuda.bindings result tuple: raise on an error, else its value(s)."""
    err, *rest = ret if isinstance(ret, tuple) else (ret,)
    if err != gpu.cu.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{what} failed: {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


DELAY_SRC = r"""
extern "C" __global__ void hb_delay(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}
"""


def _buf(dtype: str, count: int, **kw: Any) -> dict:
    return {"buf": dtype, "count": count, **kw}


def _s(dtype: str, value: float | int) -> dict:
    return {"scalar": dtype, "value": value}


def _sizes() -> dict[str, dict]:
    """Launches (manifest format) of >= ~1 GB of traffic each: >= ~0.5 ms on an H100.
    "reset": restored before every rep (read-modify-write or counter buffers)."""
    n27, n28 = 1 << 27, 1 << 28
    f, u = "float32", "uint32"
    w, h = 16384, 16384
    bw, bh = 16384, 8192
    nx, ny, nz = 1024, 1024, 256
    tiles = 1 << 20
    return {
        "vector_add.cu:vadd": {"grid": [n27 // 128, 1, 1], "block": [128, 1, 1], "args": [
            _buf(f, n27), _buf(f, n27), _buf(f, n27, out=True), _s("int32", n27)]},
        "grid_stride.cu:saxpy_gs": {"grid": [16384, 1, 1], "block": [128, 1, 1], "args": [
            _s("float32", 1.5), _buf(f, n27), _buf(f, n27, out=True, reset=True),
            _s("int32", n27)]},
        "stencil2d.cu:stencil5": {"grid": [w // 16, h // 8, 1], "block": [16, 8, 1], "args": [
            _buf(f, w * h), _buf(f, w * h, out=True), _s("int32", w), _s("int32", h)]},
        "grid3d.cu:fill3d": {"grid": [nx // 8, ny // 4, nz // 2], "block": [8, 4, 2], "args": [
            _buf(u, nx * ny * nz, out=True), _buf(u, nx * ny * nz), _s("int32", nx),
            _s("int32", ny), _s("int32", nz)]},
        "nctaid_math.cu:grid_math": {"grid": [256, 256, 64], "block": [64, 1, 1], "args": [
            _buf(u, n28, out=True), _buf(u, n28)]},
        "reduce_atomic.cu:reduce_sum": {"grid": [n28 // 256, 1, 1], "block": [256, 1, 1],
            "args": [_buf(u, n28), _buf("uint64", 1, out=True, init="zeros", reset=True),
                     _s("int32", n28)]},
        "multi_entry.cu:scale": {"grid": [n28 // 128, 1, 1], "block": [128, 1, 1], "args": [
            _buf(f, n28, out=True, reset=True), _s("float32", 1.25), _s("int32", n28)]},
        "multi_entry.cu:blend2d": {"grid": [bw // 16, bh // 16, 1], "block": [16, 16, 1],
            "args": [_buf(f, bw * bh), _buf(f, bw * bh), _buf(f, bw * bh, out=True),
                     _s("int32", bw), _s("int32", bh)]},
        "self_sched.cu:steal_tiles": {"grid": [tiles, 1, 1], "block": [128, 1, 1], "args": [
            _buf(u, 1, init="zeros", out=True, reset=True), _buf(f, tiles * 128),
            _buf(f, tiles * 128, out=True), _s("int32", tiles)]},
        "smid.cu:where_run": {"grid": [n27 // 128, 1, 1], "block": [128, 1, 1], "args": [
            _buf(f, n27, out=True), _buf(u, n27, skip_compare=True), _buf(f, n27),
            _s("int32", n27)]},
        "cluster.cu:cluster_rank": {"grid": [n28 // 128, 1, 1], "block": [128, 1, 1], "args": [
            _buf(f, n28, out=True), _buf(f, n28), _s("int32", n28)]},
        "triton_add2d.ptx:add2d_kernel": {"grid": [bw // 128, bh, 1], "block": [128, 1, 1],
            "args": [_buf(f, bw * bh), _buf(f, bw * bh), _buf(f, bw * bh, out=True),
                     _s("int32", bw), _s("uint64", 0)]},
    }  # fmt: skip


def _ptx(module: dict) -> str:
    path = CORPUS / module["file"]
    if path.suffix == ".ptx":
        return path.read_text()
    opts = module.get("nvrtc_options", [])
    return compile_cuda(path.read_text(), path.name, "compute_90", opts)


def _stats(us: list[float]) -> dict[str, float]:
    s = sorted(us)
    return {"median": statistics.median(s), "p99": s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]}


class Case:
    """Device buffers (random data tiled on the device), restorable copies of the
    read-modify-write ones, and prebuilt argument arrays for both variants."""

    def __init__(self, gpu: Gpu, spec: dict, seed: int) -> None:
        self.gpu = gpu
        cu = gpu.cu
        self.grid = tuple(spec["grid"])
        self.block = tuple(spec["block"])
        rng = random.Random(seed)
        self.allocs: list[int] = []
        self.restore: list[tuple[int, int, int]] = []  # (dst, pristine src, bytes)
        vals: list[Any] = []
        for a in spec["args"]:
            if "buf" not in a:
                vals.append(CTYPE[a["scalar"]](a["value"]))
                continue
            unit = random_buffer(a["buf"], min(a["count"], PATTERN), rng, a.get("init", "random"))
            esize = len(unit) // min(a["count"], PATTERN)
            nbytes = a["count"] * esize
            dptr = self._alloc(nbytes)
            gpu.upload(dptr, unit)
            done = len(unit)
            while done < nbytes:  # tile by doubling: log2(size) device copies
                n = min(done, nbytes - done)
                ok(gpu, cu.cuMemcpyDtoD(dptr + done, dptr, n), "cuMemcpyDtoD")
                done += n
            if a.get("reset"):
                copy = self._alloc(nbytes)
                ok(gpu, cu.cuMemcpyDtoD(copy, dptr, nbytes), "cuMemcpyDtoD")
                self.restore.append((dptr, copy, nbytes))
            vals.append(ctypes.c_uint64(dptr))
        self._keep_orig = vals
        self._keep_slice = vals + [ctypes.c_uint32(x) for x in full_grid_args(self.grid)]
        self.params_orig = self._array(self._keep_orig)
        self.params_slice = self._array(self._keep_slice)
        gpu.sync()

    def _alloc(self, nbytes: int) -> int:
        d = self.gpu.alloc(nbytes)
        self.allocs.append(d)
        return d

    @staticmethod
    def _array(vals: list[Any]) -> Any:
        return (ctypes.c_void_p * len(vals))(*(ctypes.addressof(v) for v in vals))

    def reset_async(self) -> None:
        for dst, src, n in self.restore:
            ok(
                self.gpu,
                self.gpu.cu.cuMemcpyDtoDAsync(dst, src, n, self.gpu.stream),
                "cuMemcpyDtoDAsync",
            )

    def free(self) -> None:
        for d in self.allocs:
            self.gpu.free(d)


def _fn_attr(gpu: Gpu, fn: Any, attr: str) -> int:
    a = getattr(gpu.cu.CUfunction_attribute, attr)
    return int(ok(gpu, gpu.cu.cuFuncGetAttribute(a, fn), "cuFuncGetAttribute"))


def _measure(gpu: Gpu, case: Case, fns: tuple[Any, Any], delay: tuple[Any, Any], delay_ns: int,
             reps: int, warmup: int) -> tuple[list[float], list[float], int]:  # fmt: skip
    """Interleaved A B A B: (original us, sliced us, reps whose enqueue outran the delay)."""
    cu, st = gpu.cu, gpu.stream
    ok = cu.CUresult.CUDA_SUCCESS
    ev0, ev1 = gpu.event(), gpu.event()
    g, b = case.grid, case.block
    params = (ctypes.addressof(case.params_orig), ctypes.addressof(case.params_slice))
    d_fn, d_params = delay
    out: tuple[list[float], list[float]] = ([], [])
    unshielded = 0
    clock = time.perf_counter_ns
    for i in range(warmup + reps):
        for v in (0, 1):
            case.reset_async()
            t0 = clock()
            r1 = cu.cuLaunchKernel(d_fn, 1, 1, 1, 1, 1, 1, 0, st, d_params, 0)[0]
            r2 = cu.cuEventRecord(ev0, st)[0]
            r3 = cu.cuLaunchKernel(fns[v], *g, *b, 0, st, params[v], 0)[0]
            r4 = cu.cuEventRecord(ev1, st)[0]
            t1 = clock()
            if not r1 == r2 == r3 == r4 == ok:
                raise RuntimeError(f"launch/record failed: {r1} {r2} {r3} {r4}")
            gpu.sync()
            if i >= warmup:
                out[v].append(gpu.elapsed_ms(ev0, ev1) * 1000.0)
                unshielded += t1 - t0 >= delay_ns
    return out[0], out[1], unshielded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="JSON output path")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--delay-us", type=float, default=300.0, help="queue-filling delay kernel")
    ap.add_argument("--manifest-sizes", action="store_true", help="the corpus's tiny launches")
    ap.add_argument("--only", action="append", default=[], metavar="FILE:ENTRY")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    try:
        gpu = Gpu()
    except Exception as exc:  # GpuUnavailable, DynamicLibNotFoundError, ...
        print(f"slicer_overhead: no usable GPU: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    sizes = _sizes()
    attr = gpu.cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    sms = int(ok(gpu, gpu.cu.cuDeviceGetAttribute(attr, gpu.dev), "cuDeviceGetAttribute"))
    delay_ns = int(args.delay_us * 1000)
    report: dict = {
        "schema": 2,
        "device": gpu.name,
        "arch": gpu.arch,
        "sms": sms,
        "reps": args.reps,
        "warmup": args.warmup,
        "delay_us": args.delay_us,
        "sizes": "manifest" if args.manifest_sizes else "scaled",
        "target_pct": TARGET_PCT,
        "kernels": {},
    }
    d_fn = gpu.function(gpu.load(compile_cuda(DELAY_SRC, "delay.cu", "compute_90")), "hb_delay")
    d_val = ctypes.c_uint64(delay_ns)
    d_arr = (ctypes.c_void_p * 1)(ctypes.addressof(d_val))
    delay = (d_fn, ctypes.addressof(d_arr))
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
                key = f"{module['file']}:{name}"
                if args.only and key not in args.only:
                    continue
                launch = spec["launch"] if args.manifest_sizes else sizes[key]
                sliced = slice_ptx(original, [name], allow_clusters="cluster" in spec)
                assert sliced[name].sliced, sliced[name].reason
                # both variants: nvJitLink cubin for this device, loaded the same way
                fns = (
                    gpu.function(gpu.load(original), name),
                    gpu.function(gpu.load(sliced.ptx), name),
                )
                case = Case(gpu, launch, zlib.crc32(key.encode()))
                try:
                    t_o, t_s, unshielded = _measure(
                        gpu, case, fns, delay, delay_ns, args.reps, args.warmup
                    )
                finally:
                    case.free()
                threads = case.block[0] * case.block[1] * case.block[2]
                bps = [
                    int(ok(gpu, gpu.cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(f, threads, 0),
                                "cuOccupancyMaxActiveBlocksPerMultiprocessor"))
                    for f in fns
                ]  # fmt: skip
                blocks = case.grid[0] * case.grid[1] * case.grid[2]
                o, s = _stats(t_o), _stats(t_s)
                paired = statistics.median(b / a - 1.0 for a, b in zip(t_o, t_s, strict=True))
                report["kernels"][key] = {
                    "grid": list(case.grid),
                    "block": list(case.block),
                    "blocks": blocks,
                    "blocks_per_sm": {"original": bps[0], "sliced": bps[1]},
                    "waves": blocks / max(1, bps[0] * sms),
                    "regs": {
                        "original": _fn_attr(gpu, fns[0], "CU_FUNC_ATTRIBUTE_NUM_REGS"),
                        "sliced": _fn_attr(gpu, fns[1], "CU_FUNC_ATTRIBUTE_NUM_REGS"),
                    },
                    "original_us": o,
                    "sliced_us": s,
                    "median_overhead_pct": (s["median"] / o["median"] - 1.0) * 100.0,
                    "paired_median_overhead_pct": paired * 100.0,
                    "unshielded_reps": unshielded,
                }
                k = report["kernels"][key]
                print(
                    f"{key:32s} {blocks:9d} blk {k['waves']:8.1f} waves  original "
                    f"{o['median']:9.2f} us  sliced {s['median']:9.2f} us  "
                    f"{k['median_overhead_pct']:+6.2f} %  "
                    f"(paired {k['paired_median_overhead_pct']:+6.2f} %)"
                    + (f"  [{unshielded} unshielded]" if unshielded else ""),
                    flush=True,
                )
    finally:
        gpu.close()
    pcts = [k["median_overhead_pct"] for k in report["kernels"].values()]
    report["max_median_overhead_pct"] = max(pcts) if pcts else None
    write_result(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
