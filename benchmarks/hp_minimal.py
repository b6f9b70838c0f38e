"""Minimal HP-only baseline: the HP request kernel sequence issued straight through
cuda.bindings (no engine, no scheduler), to bound "engine overhead within 5%".

The sequence is the first ``hp`` task of a TOML profile (``--profile``, default the
shipped ``default``) or ``--steps``. A step is a kernel preceded by a host gap
(``gap_us`` ± ``jitter``, busy-waited as the engine does). Kernels with ``builtin``
run their native kernel; others run the same spin stand-in the cuda backend uses
(``block_us`` per block, occupancy capped at ``blocks_per_sm``). Only NVRTC compile
and the kernels' argument layouts come from engine.backends.native.

Requests run closed-loop, one at a time, with ``--think-us`` idle between them.
Reported (µs): host latency = arrival → host sees the last kernel's completion event
(cuEventQuery spin); gpu latency = event recorded at arrival → event after the last
kernel (CUDA event timing). JSON to ``--out``.

    PYTHONPATH=. python3 benchmarks/hp_minimal.py --profile default --out hp_minimal.json
    PYTHONPATH=. python3 benchmarks/hp_minimal.py \\
        --steps "reduce:rows=64,cols=4096@20;gemm:m=64,n=4096,k=4096@100" --out x.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass

from cuda.bindings import driver as cu

from engine.backends import native

OK = cu.CUresult.CUDA_SUCCESS


def check(res, op: str):
    if res[0] != OK:
        raise SystemExit(f"{op} failed: {cu.cuGetErrorName(res[0])[1]}")
    return res[1] if len(res) == 2 else (res[1:] if len(res) > 2 else None)


@dataclass
class Step:
    name: str
    builtin: str | None
    params: dict
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    blocks_per_sm: int
    block_us: float
    gap_us: float
    jitter: float


def steps_from_profile(name: str) -> tuple[str, list[Step]]:
    try:
        from engine import profile as prof_mod
    except ImportError:  # e.g. tomli_w missing where only reading is needed
        return _steps_from_toml(name)
    prof = prof_mod.load(prof_mod.resolve(name))
    hp = next(t for t in prof.tasks if t.cls == "hp")
    out = []
    for st in hp.steps:
        k = prof.kernels[st.kernel]
        out.append(
            Step(
                k.name,
                k.builtin,
                dict(k.params),
                tuple(k.grid),
                tuple(k.block),
                k.blocks_per_sm,
                k.block_us,
                st.gap_us,
                st.jitter,
            )  # fmt: skip
        )
    return f"{prof.path}#{hp.name}", out


def _steps_from_toml(name: str) -> tuple[str, list[Step]]:
    """Read a profile's first hp task with tomllib alone (the profile schema, no checks)."""
    import tomllib
    from pathlib import Path

    path = Path(name)
    if not path.exists():
        path = Path(__file__).resolve().parents[1] / "profiles" / f"{name}.toml"
    data = tomllib.loads(path.read_text())

    def dims(v, default):
        v = default if v is None else v
        v = [v] if isinstance(v, int) else list(v)
        return tuple(v + [1] * (3 - len(v)))

    hp = next(t for t in data["tasks"] if t["class"] == "hp")
    out = []
    for st in hp["kernels"]:
        st = {"kernel": st} if isinstance(st, str) else st
        k = data["kernels"][st["kernel"]]
        params = dict(k.get("params", {}))
        if k.get("builtin") and "grid" not in k:
            grid, block = native.builtin_launch_shape(k["builtin"], params)
        else:
            grid, block = dims(k.get("grid"), 1), dims(k.get("block"), 256)
        out.append(
            Step(
                st["kernel"],
                k.get("builtin"),
                params,
                grid,
                block,
                k.get("blocks_per_sm", 2),
                k.get("block_us", 20.0),
                st.get("gap_us", 0.0),
                st.get("jitter", 0.0),
            )  # fmt: skip
        )
    return f"{path}#{hp['name']}", out


def steps_from_arg(text: str) -> list[Step]:
    """``builtin:key=v,key=v@gap_us;...``"""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        head, _, gap = part.partition("@")
        b, _, kv = head.partition(":")
        params = {}
        for item in filter(None, kv.split(",")):
            k, _, v = item.partition("=")
            params[k] = float(v) if "." in v else int(v)
        grid, block = native.builtin_launch_shape(b, params)
        out.append(Step(b, b, params, grid, block, 0, 0.0, float(gap or 0), 0.0))
    return out


class Kernel:
    def __init__(self, st: Step, funcs: dict, stream, attrs: dict) -> None:
        if st.builtin:
            lay = native.builtin_layout(st.builtin, st.params)
            smem = 0
        else:  # spin stand-in, as engine.backends.cuda does
            threads = st.block[0] * st.block[1] * st.block[2]
            lay0 = native.builtin_layout(
                "spin", {"us": st.block_us, "blocks": st.grid[0] * st.grid[1] * st.grid[2],
                         "threads": max(32, threads)})  # fmt: skip
            lay = native.ArgLayout("spin", lay0.source, lay0.function, st.grid, st.block,
                                   lay0.buffers, lay0.scalars)  # fmt: skip
            smem = min(attrs["optin"], attrs["per_sm"] // max(1, st.blocks_per_sm) - attrs["rsv"])
            smem = max(0, smem & ~1023)
        self.func = funcs[lay.function]
        self.block = lay.block
        self.blocks = lay.grid[0] * lay.grid[1] * lay.grid[2]
        self.smem = smem
        vals: list = [ctypes.c_uint64(0), ctypes.c_uint64(0), ctypes.c_uint32(0)]  # no stamps
        vals += [ctypes.c_uint32(x) for x in lay.grid]
        self.ptrs = []
        for i, b in enumerate(lay.buffers):
            ptr = int(check(cu.cuMemAlloc(max(4, b.nbytes)), "cuMemAlloc"))
            self.ptrs.append(ptr)
            fill(funcs, stream, ptr, b, 100 + i)
            vals.append(ctypes.c_uint64(ptr))
        ct = {"u32": ctypes.c_uint32, "u64": ctypes.c_uint64, "f32": ctypes.c_float}
        vals += [ct[t](v) for t, v in lay.scalars]
        self.vals = vals
        self.arr = (ctypes.c_void_p * len(vals))(*(ctypes.addressof(v) for v in vals))
        self.addr = ctypes.addressof(self.arr)


def fill(funcs, stream, ptr: int, b, seed: int) -> None:
    if b.output:
        check(cu.cuMemsetD32(ptr, 0xFFFFFFFF, b.nbytes // 4), "cuMemsetD32")
        return
    fn = funcs["hb_init_f16" if b.dtype == "f16" else "hb_init_f32"]
    vals = [ctypes.c_uint64(ptr), ctypes.c_uint64(b.count), ctypes.c_uint32(seed),
            ctypes.c_float(1.0)]  # fmt: skip
    arr = (ctypes.c_void_p * 4)(*(ctypes.addressof(v) for v in vals))
    grid = max(1, min(4096, (b.count + 255) // 256))
    check(cu.cuLaunchKernel(fn, grid, 1, 1, 256, 1, 1, 0, stream, ctypes.addressof(arr), 0),
          "cuLaunchKernel(init)")  # fmt: skip


def stats_us(ns: list[int]) -> dict:
    us = sorted(x / 1000 for x in ns)
    return {
        "n": len(us),
        "p50": round(statistics.median(us), 2),
        "p99": round(us[min(len(us) - 1, int(0.99 * len(us)))], 2),
        "max": round(us[-1], 2),
        "mean": round(statistics.fmean(us), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="HP-only baseline through cuda.bindings")
    ap.add_argument("--profile", default="default", help="profile name or path (first hp task)")
    ap.add_argument("--steps", help="instead of a profile: builtin:k=v,...@gap_us;...")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--think-us", type=float, default=300.0)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.steps:
        source, steps = "--steps", steps_from_arg(args.steps)
    else:
        source, steps = steps_from_profile(args.profile)

    check(cu.cuInit(0), "cuInit")
    dev = check(cu.cuDeviceGet(args.device), "cuDeviceGet")
    ctx = check(cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    check(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    name = check(cu.cuDeviceGetName(256, dev), "cuDeviceGetName").split(b"\0")[0].decode()
    A = cu.CUdevice_attribute

    def attr(a):
        return int(check(cu.cuDeviceGetAttribute(a, dev), "cuDeviceGetAttribute"))

    cc = (attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
          attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))  # fmt: skip
    attrs = {
        "per_sm": attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR),
        "optin": attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
        "rsv": attr(A.CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK),
    }
    _, greatest = check(cu.cuCtxGetStreamPriorityRange(), "cuCtxGetStreamPriorityRange")
    stream = check(
        cu.cuStreamCreateWithPriority(cu.CUstream_flags.CU_STREAM_NON_BLOCKING, greatest),
        "cuStreamCreateWithPriority",
    )
    target = native.target_for(cc)
    funcs = {}
    for comp in native.compile_all(target).values():
        mod = check(cu.cuModuleLoadData(comp.image), "cuModuleLoadData")
        for fn in ("hb_init_f32", "hb_init_f16", "hb_gemm", "hb_stream", "hb_reduce", "hb_gelu",
                   "hb_spin"):  # fmt: skip
            r = cu.cuModuleGetFunction(mod, fn.encode())
            if r[0] == OK:
                funcs[fn] = r[1]
    check(cu.cuFuncSetAttribute(
        funcs["hb_spin"], cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        attrs["optin"]), "cuFuncSetAttribute")  # fmt: skip
    kernels = [Kernel(st, funcs, stream, attrs) for st in steps]
    check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
    ev0 = check(cu.cuEventCreate(0), "cuEventCreate")
    ev1 = check(cu.cuEventCreate(0), "cuEventCreate")
    rnd = random.Random(args.seed)
    clock = time.perf_counter_ns
    launch, record, query = cu.cuLaunchKernel, cu.cuEventRecord, cu.cuEventQuery
    NR = cu.CUresult.CUDA_ERROR_NOT_READY
    host_lat, gpu_lat, kernel_span = [], [], []
    for r in range(args.warmup + args.requests):
        gaps = [int(s.gap_us * 1000 * (1 + s.jitter * (2 * rnd.random() - 1))) for s in steps]
        arrival = clock()
        record(ev0, stream)
        t = arrival
        for k, gap in zip(kernels, gaps, strict=True):
            while clock() - t < gap:
                pass
            res = launch(k.func, k.blocks, 1, 1, k.block[0], k.block[1], k.block[2], k.smem,
                         stream, k.addr, 0)  # fmt: skip
            if res[0] != OK:
                raise SystemExit(f"cuLaunchKernel failed: {res[0]}")
            t = clock()
        record(ev1, stream)
        while True:
            q = query(ev1)[0]
            if q == OK:
                break
            if q != NR:
                raise SystemExit(f"cuEventQuery failed: {q}")
        done = clock()
        ms = check(cu.cuEventElapsedTime(ev0, ev1), "cuEventElapsedTime")
        if r >= args.warmup:
            host_lat.append(done - arrival)
            gpu_lat.append(int(ms * 1e6))
            kernel_span.append(done - t)
        t = clock()
        while clock() - t < args.think_us * 1000:
            pass
    res = {
        "schema": 1,
        "device": name,
        "source": source,
        "steps": [
            {
                "kernel": s.name,
                "builtin": s.builtin,
                "params": s.params,
                "grid": s.grid,
                "block": s.block,
                "gap_us": s.gap_us,
                "jitter": s.jitter,
            }  # fmt: skip
            for s in steps
        ],
        "requests": args.requests,
        "think_us": args.think_us,
        "host_latency_us": stats_us(host_lat),
        "gpu_latency_us": stats_us(gpu_lat),
        "last_launch_to_seen_done_us": stats_us(kernel_span),
        "sum_gaps_us": round(sum(s.gap_us for s in steps), 1),
    }
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res[k] for k in ("device", "source", "host_latency_us",
                                          "gpu_latency_us")}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
