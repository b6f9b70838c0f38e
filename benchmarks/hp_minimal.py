"""Minimal HP-only baseline: the HP request kernel sequence issued straight through
cuda.bindings (no engine, no scheduler), to bound "engine overhead within 5%".

The sequence is the first ``hp`` task of a TOML profile (``--profile``, default the
shipped ``default``) or ``--steps``. A step is a kernel preceded by a host gap
(``gap_us`` ± ``jitter``, busy-waited as the engine does). Kernels with ``builtin``
run their native kernel; others run the same spin stand-in the cuda backend uses
(``block_us`` per block, occupancy capped at ``blocks_per_sm``). Only NVRTC compile
and the kernels' argument layouts come from hbtui.engine.backends.native.

Two modes (``--arrivals``):

``closed`` (default): requests run closed-loop, one at a time, with ``--think-us`` idle
between them; ``--warmup`` is a request count. Reported (µs): host latency = arrival →
host sees the last kernel's completion event (cuEventQuery spin); gpu latency = event
recorded at arrival → event after the last kernel (CUDA event timing).

``profile``: open loop, the engine's HP input exactly. Arrivals come from
``engine.workload.Arrivals(task, seed, start)`` and each request's host gaps from
``request_gaps(task, seed, id)`` with ids 1, 2, 3… in arrival order, as
``engine.scheduler`` numbers them; ``--seed`` defaults to the profile's ``engine.seed``
as ``hbtui bench`` does. Requests are served FIFO, one at a time, as the scheduler does:
a request starts at max(arrival, previous request's completion as the host saw it);
step i waits its gap (busy-wait) from the request start (i = 0) or from the observed
completion of kernel i-1, launches the kernel, records an event and spins on
cuEventQuery. ``--warmup`` is seconds (default min(1 s, 10 % of ``--duration``), the
bench's); the measured window holds the requests that ARRIVE in
[warmup, warmup + duration) after the start; arrivals stop at its end and the queue is
drained. Reported (ms, p50/p99/max, p99 nearest-rank like the engine's histogram):

- ``host_latency_ms`` (PRIMARY): host-observed completion of the last kernel − arrival.
  The engine's latency ends at the last kernel's GPU end (%globaltimer mapped to
  perf_counter_ns), so this one is larger by the completion-detection delay (a few µs).
- ``event_latency_ms`` (secondary, approximate): (host time the first kernel was
  enqueued − arrival) + CUDA-event time from an event recorded just before the first
  kernel to the event after the last. An event AT the arrival is impossible in open
  loop (the GPU is idle then), so this one misses the first event's submission delay.
- ``host_latency_ms_done_in_window``: host latency of the requests that COMPLETE in the
  window, the set the engine's bench counts (it resets its stats after the warm-up).

JSON to ``--out``. ``--dry-run`` prints the start of the open-loop schedule (no CUDA).

    python3 benchmarks/hp_minimal.py --profile default --out hp_minimal.json
    python3 benchmarks/hp_minimal.py \\
        --steps "reduce:rows=64,cols=4096@20;gemm:m=64,n=4096,k=4096@100" --out x.json
    python3 benchmarks/hp_minimal.py --profile default --arrivals profile \\
        --seed 1 --duration 30 --out hp_open.json
    python3 benchmarks/hp_minimal.py --profile default --arrivals profile \\
        --seed 1 --duration 30 --dry-run
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import write_result

from hbtui.engine.backends import native
from hbtui.engine.model import Arrival, Task
from hbtui.engine.model import Step as TaskStep
from hbtui.engine.workload import Arrivals, request_gaps

# cuda.bindings.driver, imported by load_cuda() so that --dry-run needs no CUDA
cu: Any = None
OK: Any = None


def load_cuda() -> None:
    global cu, OK
    from cuda.bindings import driver

    cu = driver
    OK = driver.CUresult.CUDA_SUCCESS


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


@dataclass
class ProfileHp:
    """The first hp task of a profile: launch steps, the engine's Task (for
    engine.workload), the profile's seed, how many hp tasks it has and which reader."""

    source: str
    steps: list[Step]
    task: Task
    seed: int
    hp_tasks: int
    reader: str


def steps_from_profile(name: str) -> ProfileHp:
    try:
        from hbtui.engine import profile as prof_mod
    except ImportError:  # e.g. tomli_w missing where only reading is needed
        return _steps_from_toml(name)
    prof = prof_mod.load(prof_mod.resolve(name))
    hps = [t for t in prof.tasks if t.cls == "hp"]
    hp = hps[0]
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
    return ProfileHp(f"{prof.path}#{hp.name}", out, hp, prof.seed, len(hps), "engine.profile")


def _steps_from_toml(name: str) -> ProfileHp:
    """Read a profile's first hp task with tomllib alone (the profile schema, no checks)."""
    import tomllib

    path = Path(name)
    if not path.exists():
        path = Path(__file__).resolve().parents[1] / "hbtui" / "profiles" / f"{name}.toml"
    data = tomllib.loads(path.read_text())

    def dims(v, default):
        v = default if v is None else v
        v = [v] if isinstance(v, int) else list(v)
        return tuple(v + [1] * (3 - len(v)))

    hps = [t for t in data["tasks"] if t["class"] == "hp"]
    hp = hps[0]
    out = []
    task_steps = []
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
        task_steps.append(TaskStep(st["kernel"], st.get("gap_us", 0.0), st.get("jitter", 0.0)))
    task = Task(
        name=hp["name"],
        cls="hp",
        priority=hp.get("priority", 0),
        arrival=_arrival_from_toml(hp.get("arrival", {}), path.parent),
        steps=tuple(task_steps),
        paused=hp.get("paused", False),
    )
    seed = data.get("engine", {}).get("seed", 1)
    return ProfileHp(f"{path}#{hp['name']}", out, task, seed, len(hps), "tomllib")


def _arrival_from_toml(a: dict, base_dir: Path) -> Arrival:
    """engine.profile._arrival without the checks."""
    kind = a.get("kind", "")
    if kind in ("poisson", "periodic"):
        return Arrival(kind, rate_hz=a["rate_hz"])
    if kind == "closed":
        return Arrival(kind, outstanding=a.get("outstanding", 1), think_us=a.get("think_us", 0.0))
    if kind == "trace":
        tp = Path(a["path"])
        tp = tp if tp.is_absolute() else base_dir / tp
        times = tuple(float(x) for x in tp.read_text(encoding="utf-8").split())
        return Arrival(kind, times_ms=times, path=str(tp.resolve()))
    raise SystemExit(f"hp task arrival: unknown kind {kind!r}")


def open_loop_schedule(task: Task, seed: int, until_ns: int) -> list[tuple[int, int, tuple]]:
    """(request id, arrival ns after the run start, host gaps ns per step) of every arrival
    before ``until_ns``, drawn exactly as engine.scheduler draws them: one
    ``Arrivals(task, seed, start)`` stream (offsets do not depend on ``start``) and
    ``request_gaps(task, seed, id)`` with ids 1, 2, 3… in arrival order. No CUDA needed."""
    if task.arrival is None or task.arrival.kind == "closed":
        kind = None if task.arrival is None else task.arrival.kind
        raise SystemExit(
            f"--arrivals profile needs an open-loop arrival process (poisson, periodic, "
            f"trace); task {task.name!r} has {kind!r} (use --arrivals closed)"
        )
    if task.paused:
        raise SystemExit(
            f"task {task.name!r} is paused in the profile: the engine drops its arrivals"
        )
    arr = Arrivals(task, seed, 0)
    out = []
    rid = 0
    while True:
        t = arr.next()
        if t is None or t >= until_ns:
            return out
        rid += 1
        out.append((rid, t, request_gaps(task, seed, rid)))


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


def stats_ms(ns: list[int]) -> dict:
    """p50/p99/max in ms; percentiles nearest-rank (the engine's Histogram, less buckets)."""
    if not ns:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    v = sorted(ns)

    def pct(p: float) -> float:
        return round(v[max(0, math.ceil(p / 100 * len(v)) - 1)] / 1e6, 4)

    return {
        "n": len(v),
        "p50": pct(50),
        "p99": pct(99),
        "max": round(v[-1] / 1e6, 4),
        "mean": round(statistics.fmean(v) / 1e6, 4),
    }


def print_schedule(hp: ProfileHp, seed: int, sched: list, warm_ns: int, end_ns: int) -> None:
    a = hp.task.arrival
    print(f"profile {hp.source} (read by {hp.reader}), task {hp.task.name!r}, seed {seed}")
    print(f"arrival {a.kind} rate_hz={a.rate_hz}; steps: {', '.join(s.name for s in hp.steps)}")
    n_win = sum(1 for _, t, _ in sched if warm_ns <= t < end_ns)
    print(
        f"{len(sched)} arrivals before {end_ns / 1e9:g} s, {n_win} in the measured window "
        f"[{warm_ns / 1e9:g} s, {end_ns / 1e9:g} s)"
    )
    print(f"{'id':>4} {'arrival ms':>11}  host gaps µs (before each kernel)")
    for rid, t, gaps in sched[:8]:
        print(f"{rid:>4} {t / 1e6:11.4f}  {' '.join(f'{g / 1000:.3f}' for g in gaps)}")


def setup(device: int, steps: list[Step]):
    """Context, greatest-priority stream and prepared kernels; returns (name, stream, kernels)."""
    check(cu.cuInit(0), "cuInit")
    dev = check(cu.cuDeviceGet(device), "cuDeviceGet")
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
    return name, stream, kernels


def run_closed(args, steps: list[Step], kernels: list[Kernel], stream, seed: int) -> dict:
    """Closed loop: one request at a time, ``think_us`` between them."""
    warmup = 100 if args.warmup is None else int(args.warmup)
    ev0 = check(cu.cuEventCreate(0), "cuEventCreate")
    ev1 = check(cu.cuEventCreate(0), "cuEventCreate")
    rnd = random.Random(seed)
    clock = time.perf_counter_ns
    launch, record, query = cu.cuLaunchKernel, cu.cuEventRecord, cu.cuEventQuery
    NR = cu.CUresult.CUDA_ERROR_NOT_READY
    host_lat, gpu_lat, kernel_span = [], [], []
    for r in range(warmup + args.requests):
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
        if r >= warmup:
            host_lat.append(done - arrival)
            gpu_lat.append(int(ms * 1e6))
            kernel_span.append(done - t)
        t = clock()
        while clock() - t < args.think_us * 1000:
            pass
    return {
        "mode": "closed-loop",
        "seed": seed,
        "warmup_requests": warmup,
        "requests": args.requests,
        "think_us": args.think_us,
        "host_latency_us": stats_us(host_lat),
        "gpu_latency_us": stats_us(gpu_lat),
        "last_launch_to_seen_done_us": stats_us(kernel_span),
    }


STAMPS = False  # set from --stamps


def run_open(kernels: list[Kernel], stream, sched: list) -> tuple[int, list[tuple]]:
    """Serve ``sched`` as engine.scheduler serves one HP task (see the module docstring).

    Returns the start time and per request (arrival, start, first enqueue, seen done) in
    ns after the start, plus the CUDA-event time first-kernel → last-kernel end (-1 if
    unavailable).
    """
    clock = time.perf_counter_ns
    launch, record, query = cu.cuLaunchKernel, cu.cuEventRecord, cu.cuEventQuery
    elapsed = cu.cuEventElapsedTime
    NR = cu.CUresult.CUDA_ERROR_NOT_READY
    no_timing = cu.CUevent_flags.CU_EVENT_DISABLE_TIMING
    ev0 = check(cu.cuEventCreate(0), "cuEventCreate")
    # one completion event per kernel, timing off as in the engine's cuda backend; the
    # last one times the request on the GPU (ev0 → it)
    evs = [check(cu.cuEventCreate(no_timing), "cuEventCreate") for _ in kernels[1:]]
    evs.append(check(cu.cuEventCreate(0), "cuEventCreate"))
    plan = [(i, k.func, k.blocks, k.block, k.smem, k.addr, ev)
            for i, (k, ev) in enumerate(zip(kernels, evs, strict=True))]  # fmt: skip
    ev_last = evs[-1]
    if STAMPS:
        # As the engine's cuda backend does: each kernel stamps its start and end
        # (%globaltimer) into host-mapped memory and counts finished blocks on the device.
        host = int(check(cu.cuMemHostAlloc(16, cu.CU_MEMHOSTALLOC_DEVICEMAP), "cuMemHostAlloc"))
        dev_ts = int(check(cu.cuMemHostGetDevicePointer(host, 0), "cuMemHostGetDevicePointer"))
        cnt = int(check(cu.cuMemAlloc(4), "cuMemAlloc"))
        check(cu.cuMemsetD32(cnt, 0, 1), "cuMemsetD32")
        for k in kernels:
            k.vals[0].value, k.vals[1].value = dev_ts, cnt
    rows: list[tuple] = []
    t0 = clock()
    prev = t0  # the previous request's last completion, as seen by the host
    for _rid, off, gaps in sched:
        arrival = t0 + off
        t = arrival if arrival > prev else prev  # the request starts being served
        start = first = t
        for (i, func, blocks, b, smem, addr, ev), gap in zip(plan, gaps, strict=True):
            deadline = t + gap
            while clock() < deadline:
                pass
            if i == 0:
                first = clock()
                if record(ev0, stream)[0] != OK:
                    raise SystemExit("cuEventRecord failed")
            res = launch(func, blocks, 1, 1, b[0], b[1], b[2], smem, stream, addr, 0)
            if res[0] != OK:
                raise SystemExit(f"cuLaunchKernel failed: {res[0]}")
            if record(ev, stream)[0] != OK:
                raise SystemExit("cuEventRecord failed")
            while True:
                q = query(ev)[0]
                if q == OK:
                    break
                if q != NR:
                    raise SystemExit(f"cuEventQuery failed: {q}")
            t = clock()  # completion as observed: the next gap is timed from here
        prev = t
        r = elapsed(ev0, ev_last)
        gpu = int(r[1] * 1e6) if r[0] == OK else -1
        rows.append((off, start - t0, first - t0, t - t0, gpu))
    return t0, rows


def open_results(rows: list[tuple], warm_ns: int, end_ns: int) -> dict:
    win = [r for r in rows if warm_ns <= r[0] < end_ns]
    done_win = [r for r in rows if warm_ns <= r[3] < end_ns]
    return {
        "host_latency_ms": stats_ms([r[3] - r[0] for r in win]),
        "event_latency_ms": stats_ms([r[2] - r[0] + r[4] for r in win if r[4] >= 0]),
        "queue_wait_ms": stats_ms([r[1] - r[0] for r in win]),
        "host_latency_ms_done_in_window": stats_ms([r[3] - r[0] for r in done_win]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="HP-only baseline through cuda.bindings")
    ap.add_argument("--profile", default="default", help="profile name or path (first hp task)")
    ap.add_argument("--steps", help="instead of a profile: builtin:k=v,...@gap_us;...")
    ap.add_argument("--arrivals", choices=("closed", "profile"), default="closed",
                    help="closed: one request at a time with --think-us between; profile: "
                         "open loop, the engine's arrivals and gaps")  # fmt: skip
    ap.add_argument("--requests", type=int, default=2000, help="closed: measured requests")
    ap.add_argument("--stamps", action="store_true",
                    help="profile mode: kernels stamp start/end as in the engine")  # fmt: skip
    ap.add_argument("--warmup", type=float, default=None,
                    help="closed: requests (default 100); profile: seconds "
                         "(default min(1, 0.1 × duration), as hbtui bench)")  # fmt: skip
    ap.add_argument("--think-us", type=float, default=300.0, help="closed: idle between")
    ap.add_argument("--duration", type=float, default=None, help="profile: measured seconds")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--seed", type=int, default=None,
                    help="closed: gap jitter seed (default 1); profile: the engine's seed "
                         "(default the profile's engine.seed, as hbtui bench)")  # fmt: skip
    ap.add_argument("--dry-run", action="store_true",
                    help="profile: print the start of the schedule and exit (no CUDA)")  # fmt: skip
    ap.add_argument("--out", help="JSON result (required unless --dry-run)")
    args = ap.parse_args(argv)
    global STAMPS
    STAMPS = args.stamps
    hp: ProfileHp | None = None
    if args.steps:
        source, steps = "--steps", steps_from_arg(args.steps)
    else:
        hp = steps_from_profile(args.profile)
        source, steps = hp.source, hp.steps
    open_loop = args.arrivals == "profile"
    sched: list = []
    warm_ns = end_ns = 0
    if open_loop:
        if hp is None:
            ap.error("--arrivals profile needs a profile's hp task, not --steps")
        if args.duration is None:
            if not args.dry_run:
                ap.error("--arrivals profile needs --duration")
            args.duration = 10.0
        warm_s = min(1.0, 0.1 * args.duration) if args.warmup is None else args.warmup
        args.warmup = warm_s
        seed = hp.seed if args.seed is None else args.seed
        warm_ns = int(warm_s * 1e9)
        end_ns = warm_ns + int(args.duration * 1e9)
        sched = open_loop_schedule(hp.task, seed, end_ns)
        if hp.hp_tasks > 1:
            print(f"warning: the profile has {hp.hp_tasks} hp tasks; only {hp.task.name!r} "
                  f"runs here (the engine serves them all)", file=sys.stderr)  # fmt: skip
        if args.dry_run:
            print_schedule(hp, seed, sched, warm_ns, end_ns)
            return 0
    else:
        if args.dry_run:
            ap.error("--dry-run needs --arrivals profile")
        seed = 1 if args.seed is None else args.seed
    if not args.out:
        ap.error("--out is required")

    load_cuda()
    name, stream, kernels = setup(args.device, steps)
    res: dict[str, Any] = {
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
    }
    if open_loop:
        assert hp is not None
        t0, rows = run_open(kernels, stream, sched)
        a = hp.task.arrival
        res.update({
            "mode": "open-loop",
            "stamps": args.stamps,
            "arrivals": "profile",
            "profile": args.profile,
            "profile_reader": hp.reader,
            "task": hp.task.name,
            "arrival": {"kind": a.kind, "rate_hz": a.rate_hz, "path": a.path},
            "seed": seed,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "window": "requests arriving in [warmup_s, warmup_s + duration_s) after the start",
            "primary": "host_latency_ms",
            "requests_served": len(rows),
            "drain_s": round(max(0, rows[-1][3] - end_ns) / 1e9, 4) if rows else 0.0,
        })  # fmt: skip
        res.update(open_results(rows, warm_ns, end_ns))
        res["requests"] = res["host_latency_ms"]["n"]
        show = ("device", "source", "mode", "seed", "requests", "host_latency_ms",
                "event_latency_ms")  # fmt: skip
    else:
        res.update(run_closed(args, steps, kernels, stream, seed))
        show = ("device", "source", "host_latency_us", "gpu_latency_us")
    res["sum_gaps_us"] = round(sum(s.gap_us for s in steps), 1)
    write_result(args.out, res)
    print(json.dumps({k: res[k] for k in show}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
