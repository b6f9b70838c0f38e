"""Microbenchmark of the CUDA backend's dispatch path (JSON out).

Measures: host cost of submit() and of the raw driver calls under it, event-poll
cost, enqueue → GPU-start latency on an idle GPU, HP wait (HP issue → HP start) while
one-wave LP slices run on a least-priority stream with the HP kernel on the
greatest-priority stream (sync-each vs pre-issued LP), clock calibration bounds and
drift, NVML sample cost. The backend is driven through its public methods only; the raw
driver calls are timed on a stream of their own (``bench_driver_calls``).

    python3 benchmarks/cuda_dispatch.py --out cuda_dispatch.json
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import random
import statistics
import sys
import time

from harness import write_result

from hbtui.engine.backends.cuda import CudaBackend
from hbtui.engine.backends.native import builtin_launch_shape
from hbtui.engine.model import KernelSpec, Launch

_ids = itertools.count()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary_us(ns: list[int]) -> dict[str, float]:
    us = [x / 1000 for x in ns]
    return {
        "n": len(us),
        "p50": round(statistics.median(us), 3),
        "p90": round(pct(us, 0.90), 3),
        "p99": round(pct(us, 0.99), 3),
        "max": round(max(us), 3),
        "mean": round(statistics.fmean(us), 3),
    }


def spec(name: str, builtin: str, **params) -> KernelSpec:
    grid, block = builtin_launch_shape(builtin, params)
    return KernelSpec(name=name, grid=grid, block=block, builtin=builtin, params=params)


def drain(be: CudaBackend, n: int) -> list[Launch]:
    got: list[Launch] = []
    while len(got) < n:
        got += be.wait(be.now_ns() + 100_000_000)
    return got


def bench_host_costs(be: CudaBackend, n: int) -> dict:
    """Host cost of the backend's submit() and of one wait() pass with nothing done."""
    tiny = spec("tiny", "spin", us=0, blocks=1, threads=32)
    be.prepare(tiny)
    out = {}
    costs = []
    for _ in range(n // 50):
        for _ in range(50):
            la = Launch(next(_ids), "b", "lp", tiny, 0, 1, 1)
            t0 = time.perf_counter_ns()
            be.submit(la)
            costs.append(time.perf_counter_ns() - t0)
        drain(be, 50)
    out["submit"] = summary_us(costs)
    long = spec("long", "spin", us=200_000, blocks=1, threads=32)
    be.prepare(long)
    be.submit(Launch(next(_ids), "b", "lp", long, 0, 1, 1))
    wc = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        be.wait(0)  # one poll pass, nothing done
        wc.append(time.perf_counter_ns() - t0)
    out["wait_pass_nothing_done"] = summary_us(wc)
    drain(be, 1)
    return out


DRIVER_SRC = r"""
extern "C" __global__ void hb_null(unsigned long long x) {
  if (x == 1ull) asm volatile("trap;");
}
extern "C" __global__ void hb_delay(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}
"""


def bench_driver_calls(n: int) -> dict:
    """The raw driver calls under submit() (cuLaunchKernel with its args by pointer,
    cuEventRecord with timing disabled, cuEventQuery done and pending), on a stream of their
    own in device 0's primary context (the slicer's GPU harness), one-block kernels."""
    from hbtui.engine.slicer import compile_cuda
    from hbtui.engine.slicer.harness import Gpu

    gpu = Gpu()
    cu, st = gpu.cu, gpu.stream

    def ok(ret: tuple, what: str):  # noqa: ANN202
        if ret[0] != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"{what} failed: {ret[0]}")
        return ret[1] if len(ret) > 1 else None

    try:
        mod = gpu.load(compile_cuda(DRIVER_SRC, "dispatch.cu", "compute_" + gpu.arch[3:]))
        null, delay = gpu.function(mod, "hb_null"), gpu.function(mod, "hb_delay")
        arg = ctypes.c_uint64(0)
        arr = (ctypes.c_void_p * 1)(ctypes.addressof(arg))
        params = ctypes.addressof(arr)
        no_timing = cu.CUevent_flags.CU_EVENT_DISABLE_TIMING
        ev = ok(cu.cuEventCreate(no_timing), "cuEventCreate")
        launch, record, query = cu.cuLaunchKernel, cu.cuEventRecord, cu.cuEventQuery
        lc, rc = [], []
        for _ in range(n // 50):
            for _ in range(50):
                t0 = time.perf_counter_ns()
                launch(null, 1, 1, 1, 32, 1, 1, 0, st, params, 0)
                t1 = time.perf_counter_ns()
                record(ev, st)
                t2 = time.perf_counter_ns()
                lc.append(t1 - t0)
                rc.append(t2 - t1)
            gpu.sync()
        qd = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            query(ev)
            qd.append(time.perf_counter_ns() - t0)
        ns = ctypes.c_uint64(200_000_000)  # 200 ms: the event stays pending throughout
        darr = (ctypes.c_void_p * 1)(ctypes.addressof(ns))
        ok(launch(delay, 1, 1, 1, 1, 1, 1, 0, st, ctypes.addressof(darr), 0), "cuLaunchKernel")
        ok(record(ev, st), "cuEventRecord")
        qp = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            query(ev)
            qp.append(time.perf_counter_ns() - t0)
        gpu.sync()
        cu.cuEventDestroy(ev)
    finally:
        gpu.close()
    return {
        "cuLaunchKernel": summary_us(lc),
        "cuEventRecord": summary_us(rc),
        "cuEventQuery_done": summary_us(qd),
        "cuEventQuery_pending": summary_us(qp),
    }


def bench_idle_latency(be: CudaBackend, n: int) -> dict:
    tiny = spec("tiny", "spin", us=0, blocks=1, threads=32)
    be.prepare(tiny)
    lat, dur, seen = [], [], []
    for _ in range(n):
        la = Launch(next(_ids), "b", "hp", tiny, 0, 1, 0)
        be.submit(la)
        (d,) = drain(be, 1)
        seen.append(be.now_ns() - d.end_ns)
        lat.append(d.start_ns - d.issue_ns)
        dur.append(d.end_ns - d.start_ns)
        t = be.now_ns()
        while be.now_ns() - t < 20_000:  # let the GPU go idle between samples
            pass
    return {
        "issue_to_start": summary_us(lat),
        "start_to_end": summary_us(dur),
        "calibrated_launch_latency_us": be.launch_latency_ns() / 1000,
    }


def bench_hp_behind_lp(
    be: CudaBackend, slice_us: float, depth: int, seconds: float, hp_kernel: KernelSpec
) -> dict:
    """LP: one-wave spin slices of slice_us, `depth` in flight (1 = sync each, 2 = next
    pre-issued), not issued while HP is in flight. HP: Poisson arrivals (mean 500 µs)."""
    probe = spec(f"lp{slice_us}", "spin", us=slice_us, blocks=1 << 20, threads=128)
    bps = be.prepare(probe)
    wave = be.sms * bps
    total = probe.total_blocks
    rnd = random.Random(7)
    lp_in = 0
    nxt = 0
    hp_pending: Launch | None = None
    hp_wait, lp_durs = [], []
    lp_done = 0
    now = be.now_ns()
    end = now + int(seconds * 1e9)
    next_hp = now + int(rnd.expovariate(1 / 500e3))
    t_start = now
    while now < end:
        if hp_pending is None and now >= next_hp:
            hp_pending = Launch(next(_ids), "hp", "hp", hp_kernel, 0, hp_kernel.total_blocks, 0)
            be.submit(hp_pending)
        while hp_pending is None and lp_in < depth:
            s0 = nxt
            nxt = (nxt + wave) % (total - total % wave)
            be.submit(Launch(next(_ids), "lp", "lp", probe, s0, s0 + wave, 1))
            lp_in += 1
        until = next_hp if hp_pending is None else now + 1_000_000
        for la in be.wait(min(until, end)):
            if la.cls == "lp":
                lp_in -= 1
                lp_done += 1
                lp_durs.append(la.end_ns - la.start_ns)
            else:
                hp_wait.append(la.start_ns - la.issue_ns)
                hp_pending = None
                next_hp = be.now_ns() + int(rnd.expovariate(1 / 500e3))
        now = be.now_ns()
    drain(be, lp_in + (hp_pending is not None))
    wall = be.now_ns() - t_start
    return {
        "slice_us": slice_us,
        "lp_in_flight": depth,
        "wave_blocks": wave,
        "hp_issue_to_start": summary_us(hp_wait) if hp_wait else None,
        "lp_slices_per_s": round(lp_done / (wall / 1e9), 1),
        "lp_busy_fraction": round(sum(lp_durs) / wall, 4),
        "lp_slice_duration": summary_us(lp_durs) if lp_durs else None,
    }


KERNEL_SET = [
    ("gemm", {"m": 4096, "n": 4096, "k": 4096}),
    ("gemm", {"m": 64, "n": 4096, "k": 4096}),
    ("gemm", {"m": 64, "n": 28672, "k": 4096}),
    ("stream", {"n": 1 << 26}),
    ("stream", {"n": 262144}),
    ("reduce", {"rows": 4096, "cols": 4096}),
    ("reduce", {"rows": 64, "cols": 4096}),
    ("gelu", {"n": 1 << 24}),
    ("spin", {"us": 20, "blocks": 4224}),
]


def bench_kernels(be: CudaBackend, reps: int = 7) -> list[dict]:
    """Whole-kernel durations on an idle GPU (HP stream): µs, per-wave µs, rates."""
    out = []
    for i, (b, params) in enumerate(KERNEL_SET):
        k = spec(f"k{i}", b, **params)
        bps = be.prepare(k)
        durs = []
        for r in range(reps + 1):
            be.submit(Launch(next(_ids), "b", "hp", k, 0, k.total_blocks, 0))
            (d,) = drain(be, 1)
            if r:
                durs.append(d.end_ns - d.start_ns)
        med = statistics.median(durs)
        waves = k.total_blocks / (be.sms * bps)
        row = {"builtin": b, "params": params, "grid": list(k.grid), "blocks_per_sm": bps,
               "waves": round(waves, 2), "us": round(med / 1000, 2),
               "us_per_wave": round(med / 1000 / max(1.0, waves), 2)}  # fmt: skip
        if b == "gemm":
            row["tflops"] = round(2 * params["m"] * params["n"] * params["k"] / med / 1e3, 1)
        if b == "stream":
            row["gb_per_s"] = round(12 * params["n"] / med, 1)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--n", type=int, default=2000, help="samples per host-cost measurement")
    ap.add_argument("--seconds", type=float, default=1.5, help="per HP-behind-LP config")
    args = ap.parse_args(argv)
    t_init = time.perf_counter()
    be = CudaBackend(device=args.device)
    init_s = time.perf_counter() - t_init
    res: dict = {
        "device": be.device,
        "sms": be.sms,
        "cc": list(be.cc),
        "priority_range": list(be.priority_range),
        "backend_init_s": round(init_s, 3),
        "clock_at_start": be.clock_info(),
    }
    try:
        import cuda.bindings as cb
        from cuda.bindings import driver

        res["cuda_bindings"] = cb.__version__
        res["driver_api_version"] = int(driver.cuDriverGetVersion()[1])
    except Exception:  # noqa: BLE001
        pass
    g = be.gpu_sample()
    res["nvml_sample"] = g
    if g is not None:
        t = time.perf_counter_ns()
        for _ in range(20):
            be.gpu_sample()
        res["nvml_sample_cost_us"] = round((time.perf_counter_ns() - t) / 20 / 1000, 1)
    res["kernels"] = bench_kernels(be)
    res["host_costs_us"] = bench_host_costs(be, args.n)
    if args.device == 0:  # the harness opens device 0
        res["host_costs_us"].update(bench_driver_calls(args.n))
    res["idle_hp_latency_us"] = bench_idle_latency(be, 500)
    hp_tiny = spec("hp_tiny", "spin", us=0, blocks=1, threads=32)
    be.prepare(hp_tiny)
    alone = bench_hp_behind_lp(be, 20, 0, args.seconds, hp_tiny)
    res["hp_alone_poisson"] = alone
    res["hp_behind_lp"] = [
        bench_hp_behind_lp(be, s, depth, args.seconds, hp_tiny)
        for s in (20, 50, 100)
        for depth in (1, 2)
    ]
    res["clock_drift"] = be.recalibrate()
    res["clock_at_end"] = be.clock_info()
    be.close()
    write_result(args.out, res)
    for row in res["kernels"]:
        print(json.dumps(row))
    print(json.dumps(res["host_costs_us"], indent=None))
    print("idle", json.dumps(res["idle_hp_latency_us"]))
    print("alone", json.dumps(alone["hp_issue_to_start"]))
    for r in res["hp_behind_lp"]:
        print(
            f"slice {r['slice_us']:>5} us depth {r['lp_in_flight']}: HP wait "
            f"{r['hp_issue_to_start']}  LP {r['lp_slices_per_s']}/s busy {r['lp_busy_fraction']}"
        )
    print("drift", res["clock_drift"], "clock", res["clock_at_end"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
