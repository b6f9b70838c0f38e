"""An HP inference service, written as an operator would: a plain PyTorch program that
knows nothing about hbtui (it never imports it unless ``--markers`` is given).

The model is a transformers Llama with random weights (nothing is downloaded), built on
the device from a config. Two request kinds (``--mode``):

- ``graph`` (GPU-bound): one forward of ``--batch`` x ``--seq`` tokens (default 4 x 128)
  captured once as a CUDA graph; a request is ``--replays`` (4) graph replays, then
  ``torch.cuda.synchronize()``.
- ``eager`` (host-bound): a prefill of ``--prefill`` (64) tokens, then ``--decode-steps``
  (4) greedy decode steps with the KV cache, through transformers' forward, eager; then
  ``torch.cuda.synchronize()``. Thousands of small kernels with GPU-idle gaps between.

Arrivals are open-loop Poisson at ``--load`` x the service's capacity (1 / service
time). The service time is ``--service-ms`` when given, else measured here: the median of
``--calib-requests`` warm requests served back to back. The arrival times depend only on
``--seed``, ``--load``, ``--service-ms`` and ``--duration``, so the same arguments give
the same arrivals in every scenario. One worker serves requests FIFO; a request's latency
is its completion (host saw the synchronize return) minus its scheduled arrival, so
queueing is included. Arrivals stop after ``--duration`` s; the queue is then drained for
at most ``--drain`` s; requests still unserved then are *censored*: their latency is
counted as (stop time - arrival), a lower bound, and as SLO misses.

Prints ``ready`` (one line, flushed) when warm and about to start the arrivals, writes
the JSON result to ``--out`` and exits 0. Times in the JSON named ``*_mono`` are
``time.monotonic()`` (CLOCK_MONOTONIC, shared by all processes of the machine), so an
orchestrator can line other processes' timestamps up with the measured window.

``--profile-requests N`` (after the window, so the measurement is not disturbed) runs N
requests under torch.profiler and sums the GPU time of their kernels: the per-request GPU
busy time and GPU-idle fraction (``gpu``), and the GPU-busy share of the window it implies.

Closed loop (``--closed N``, instead of ``--load``): no arrivals and no queue; after the
warm-up, ``--blocks`` blocks of ``--block-warmup`` unmeasured then N measured requests,
each started as soon as the one before returned (or ``--gap-ms`` later). A request's
figure is its service time. After each block one line ``block {json}`` goes to stdout
(index, monotonic start/end, every service time in ms). With ``--gate`` the service
prints ``ready`` and then waits for a line ``go`` on stdin before each block (``quit`` or
end of input ends it), so an orchestrator can alternate blocks between processes
(``benchmarks/hp_overhead_ab.py``). ``--cpus LIST`` pins the process (all its threads)
to those CPUs before torch is imported. ``--quiet-ab`` (under ``hbtui run --hp``) pairs
requests inside one process: a block alternates quiet requests (``hbtui_set_quiet``: the
interceptor passes every call straight through, as outside hbtui run) with observed
ones, so what the interceptor adds is measured without the differences between
processes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import inspect
import json
import math
import os
import random
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any


def log(msg: str) -> None:
    print(f"hp_service: {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("graph", "eager"), required=True)
    ap.add_argument("--load", type=float, default=None,
                    help="fraction of capacity (0-1.5]; required unless --closed")  # fmt: skip
    ap.add_argument("--closed", type=int, default=None, metavar="N",
                    help="closed loop: N measured requests per block, back to back, no "
                         "arrivals (instead of --load)")  # fmt: skip
    ap.add_argument("--blocks", type=int, default=1, help="closed: number of blocks")
    ap.add_argument("--block-warmup", type=int, default=0,
                    help="closed: unmeasured requests at the start of each block")  # fmt: skip
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="closed: idle time between requests (0: back to back)")  # fmt: skip
    ap.add_argument("--quiet-ab", action="store_true",
                    help="closed, under `hbtui run --hp`: each block serves 2N requests "
                         "alternating quiet (the interceptor passes straight through) and "
                         "observed; the block's service_ms are the observed ones, quiet_ms "
                         "the others")  # fmt: skip
    ap.add_argument("--gate", action="store_true",
                    help="closed: wait for a line 'go' on stdin before each block")  # fmt: skip
    ap.add_argument("--cpus", default=None,
                    help="pin the process to these CPUs (e.g. 4-7 or 4,6), before torch "
                         "is imported")  # fmt: skip
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of arrivals")
    ap.add_argument("--drain", type=float, default=10.0, help="max seconds to drain after")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--service-ms", type=float, default=None, help="skip calibration")
    ap.add_argument("--calib-requests", type=int, default=30)
    ap.add_argument("--warmup-requests", type=int, default=10)
    ap.add_argument("--slo-ms", type=float, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--markers", action="store_true", help="hbtui.request() per request")
    ap.add_argument("--probe", action="store_true",
                    help="start each request with a 1-thread probe kernel on its stream and "
                    "time, from the host, until the GPU ran it (preemption latency: the wait "
                    "beyond the HP-alone median of the same figure)")  # fmt: skip
    ap.add_argument("--profile-requests", type=int, default=0)
    ap.add_argument("--linger", type=float, default=0.0, help="seconds to stay after --out")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    # the model and the request shapes
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=None, help="graph: 4, eager: 1")
    ap.add_argument("--seq", type=int, default=128, help="graph: tokens per sequence")
    ap.add_argument("--replays", type=int, default=4, help="graph: replays per request")
    ap.add_argument("--prefill", type=int, default=64, help="eager: prompt tokens")
    ap.add_argument("--decode-steps", type=int, default=4, help="eager: decode steps")
    a = ap.parse_args(argv)
    if a.closed is not None:
        if a.load is not None:
            ap.error("--closed and --load exclude each other")
        if a.closed < 1 or a.blocks < 1 or a.block_warmup < 0:
            ap.error("--closed and --blocks must be >= 1, --block-warmup >= 0")
        if not (a.gap_ms >= 0 and math.isfinite(a.gap_ms)):
            ap.error(f"--gap-ms must be >= 0, got {a.gap_ms}")
    elif a.quiet_ab:
        ap.error("--quiet-ab needs --closed")
    elif a.load is None:
        ap.error("one of --load (open loop) or --closed (closed loop) is required")
    elif not 0 < a.load <= 1.5:
        ap.error(f"--load must be in (0, 1.5], got {a.load}")
    if a.cpus is not None:
        try:
            a.cpus = parse_cpus(a.cpus)
        except ValueError as e:
            ap.error(f"--cpus: {e}")
    if a.duration <= 0 or a.drain < 0:
        ap.error("--duration must be > 0 and --drain >= 0")
    if a.service_ms is not None and not (a.service_ms > 0 and math.isfinite(a.service_ms)):
        ap.error(f"--service-ms must be > 0, got {a.service_ms}")
    if a.batch is None:
        a.batch = 4 if a.mode == "graph" else 1
    return a


def parse_cpus(spec: str) -> list[int]:
    """``"4-7,9"`` -> [4, 5, 6, 7, 9] (sorted, unique); ValueError when malformed."""
    out: set[int] = set()
    for part in [x.strip() for x in spec.split(",") if x.strip()]:
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"bad CPU list {spec!r}")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"bad CPU range {part!r}")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError(f"empty CPU list {spec!r}")
    return sorted(out)


def arrival_offsets(seed: int, load: float, service_ms: float, duration_s: float) -> list[float]:
    """Poisson arrival offsets (s from the window start) in [0, duration_s)."""
    rate = load / (service_ms / 1e3)  # requests per second
    rng = random.Random(f"hp-arrivals-{seed}")
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        out.append(t)


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (the engine's convention); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def _cache_of(out: Any) -> Any:
    """The KV cache of a transformers output (``cache`` in 5.x, ``past_key_values`` before)."""
    for name in ("cache", "past_key_values"):
        c = getattr(out, name, None)
        if c is not None:
            return c
    raise SystemExit("hp_service: error: the model output carries no KV cache")


def wait_until(t: float) -> None:
    """Sleep to 0.5 ms before ``t`` (monotonic), then spin: sub-ms arrival accuracy."""
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        if left > 0.0015:
            time.sleep(left - 0.0005)


class Service:
    """The model and one request function (``serve``) for the chosen mode."""

    def __init__(self, a: argparse.Namespace) -> None:
        import torch

        self.torch = torch
        self.a = a
        self.dev = torch.device(a.device)
        self.cuda = self.dev.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit("hp_service: error: --device cuda but torch.cuda.is_available() "
                             "is False (no GPU or no CUDA build of torch)")  # fmt: skip
        if a.threads:
            torch.set_num_threads(a.threads)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
        self.model = self._build()
        self.graph: Any = None
        self.last_sync_ms = 0.0  # the last request's closing synchronize (end_request)
        self.serve: Callable[[], None] = self._graph_request if a.mode == "graph" else self._eager
        self._prepare()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def end_request(self) -> None:
        """A request's closing synchronize, timed: with the launches before it (the host
        part, ``service - sync``) this tells a slower host from GPU work finishing later."""
        t = time.perf_counter_ns()
        self.sync()
        self.last_sync_ms = (time.perf_counter_ns() - t) / 1e6

    def _build(self) -> Any:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM

        a, torch = self.a, self.torch
        if a.hidden % a.heads:
            raise SystemExit(f"hp_service: error: --hidden {a.hidden} not divisible by "
                             f"--heads {a.heads}")  # fmt: skip
        ctx_len = max(a.seq, a.prefill + a.decode_steps) + 8
        cfg = LlamaConfig(
            vocab_size=a.vocab,
            hidden_size=a.hidden,
            intermediate_size=a.intermediate,
            num_hidden_layers=a.layers,
            num_attention_heads=a.heads,
            num_key_value_heads=a.heads,
            max_position_embeddings=max(2048, ctx_len),
        )
        torch.manual_seed(a.seed)
        t0 = time.monotonic()
        with torch.device(self.dev):
            model = LlamaForCausalLM(cfg)
        model = model.to(device=self.dev, dtype=self.dtype).eval()
        model.requires_grad_(False)
        n = sum(p.numel() for p in model.parameters())
        self.info = {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "params_m": round(n / 1e6, 2),
            "attn_implementation": getattr(cfg, "_attn_implementation", None),
            "build_s": round(time.monotonic() - t0, 2),
        }
        log(f"model: Llama {a.layers}x{a.hidden} ({n / 1e6:.1f} M params, {a.dtype}) on "
            f"{self.dev} in {self.info['build_s']} s")  # fmt: skip
        return model

    def _prepare(self) -> None:
        a, torch = self.a, self.torch
        gen = torch.Generator(device="cpu").manual_seed(a.seed)
        if a.mode == "graph":
            ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=gen)
            self.ids = ids.to(self.dev)
            if self.cuda:
                self._capture()
        else:
            ids = torch.randint(0, a.vocab, (a.batch, a.prefill), generator=gen)
            self.ids = ids.to(self.dev)
            params = inspect.signature(self.model.forward).parameters
            self.cache_kw = "cache" if "cache" in params else "past_key_values"
            self._check_eager()

    def _forward_logits(self) -> Any:
        return self.model(input_ids=self.ids, use_cache=False).logits

    def _capture(self) -> None:
        torch = self.torch
        with torch.inference_mode():
            s = torch.cuda.Stream(self.dev)
            s.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(s):  # warm up off the default stream (PyTorch's recipe)
                for _ in range(3):
                    self._forward_logits()
            torch.cuda.current_stream(self.dev).wait_stream(s)
            self.sync()
            g = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(g):
                    self.static_out = self._forward_logits()
            except Exception as e:
                raise SystemExit(
                    f"hp_service: error: CUDA graph capture of the Llama forward failed "
                    f"({type(e).__name__}: {e}); transformers "
                    f"{self.info['transformers']}, torch {self.info['torch']}"
                ) from e
            self.sync()
        self.graph = g
        log("captured the forward as a CUDA graph")

    def _graph_request(self) -> None:
        if self.graph is not None:
            for _ in range(self.a.replays):
                self.graph.replay()
        else:  # cpu (smoke): the forward itself, same shapes
            with self.torch.inference_mode():
                for _ in range(self.a.replays):
                    self._forward_logits()
        self.end_request()

    def _eager_once(self) -> Any:
        """One request: prefill, then greedy decode steps through the KV cache."""
        kw = self.cache_kw
        with self.torch.inference_mode():
            out = self.model(input_ids=self.ids, use_cache=True)
            cache = _cache_of(out)
            tok = out.logits[:, -1:].argmax(-1)
            for _ in range(self.a.decode_steps):
                out = self.model(input_ids=tok, use_cache=True, **{kw: cache})
                cache = _cache_of(out)
                tok = out.logits[:, -1:].argmax(-1)
        self.end_request()
        return cache

    def _eager(self) -> None:
        self._eager_once()

    def _check_eager(self) -> None:
        """The decode steps really extend the KV cache (transformers renamed its cache
        argument across versions: a silently ignored one would make every step a fresh
        1-token prompt)."""
        cache = self._eager_once()
        want = self.a.prefill + self.a.decode_steps
        got = None
        try:
            got = int(cache.get_seq_length())
        except Exception as e:  # noqa: BLE001 - an old tuple cache: count its length
            try:
                got = int(cache[0][0].shape[-2])
            except Exception:  # noqa: BLE001
                log(f"warning: cannot read the KV cache length ({e}); not checked")
                return
        if got != want - 1 and got != want:
            raise SystemExit(f"hp_service: error: KV cache holds {got} tokens after a "
                             f"{self.a.prefill}-token prefill and {self.a.decode_steps} decode "
                             f"steps (expected {want - 1}): the cache is not passed through "
                             f"(argument {self.cache_kw!r})")  # fmt: skip
        log(f"eager: KV cache {got} tokens after a request (argument {self.cache_kw!r})")

    def gpu_profile(self, n: int) -> dict[str, Any] | None:
        """GPU time of the kernels (and memcpy/memset) of ``n`` requests, via
        torch.profiler; None where it cannot be had (cpu, profiler failure)."""
        if not self.cuda or n <= 0:
            return None
        try:
            from torch.autograd import DeviceType
            from torch.profiler import ProfilerActivity, profile

            self.sync()
            t0 = time.monotonic()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(n):
                    self.serve()
            wall_ms = (time.monotonic() - t0) * 1e3
            busy_us, kernels = 0.0, 0
            for e in prof.events():
                if getattr(e, "device_type", None) == DeviceType.CUDA:
                    busy_us += e.time_range.elapsed_us()
                    kernels += 1
        except Exception as e:  # noqa: BLE001 - profiling is a bonus; never fail the run
            log(f"warning: GPU profiling failed: {type(e).__name__}: {e}")
            return None
        per_req_ms = busy_us / 1e3 / n
        if kernels == 0 or per_req_ms <= 0:
            log("warning: the profiler saw no GPU activity; GPU busy time unknown")
            return None
        return {
            "requests": n,
            "kernels_per_request": kernels / n,
            "gpu_ms_per_request": per_req_ms,
            "wall_ms_per_request_profiled": wall_ms / n,
        }


class Probe:
    """A 1-thread kernel that writes a number into mapped pinned memory, launched on the
    service's stream at a request's start; the host spins (<= 5 s) until the number shows:
    the time from the launch call to then is how long an arriving request waited for the
    GPU (plus the launch and the PCIe write, which the HP-alone median carries too)."""

    def __init__(self, torch: Any) -> None:
        import cupy as cp
        import numpy as np

        self.cp, self.torch = cp, torch
        rt = cp.cuda.runtime
        self.host = rt.hostAlloc(8, rt.hostAllocMapped | rt.hostAllocPortable)
        # Unified addressing (every 64-bit Linux CUDA context): a mapped pinned buffer's
        # device address is its host address (CuPy has no cudaHostGetDevicePointer).
        self.dev = self.host
        self.flag = np.ctypeslib.as_array((ctypes.c_int64 * 1).from_address(self.host))
        self.flag[0] = 0
        self.k = cp.RawKernel(
            r"""extern "C" __global__ void hb_probe(volatile long long* f,
            long long v) { *f = v; __threadfence_system(); }""",
            "hb_probe",
        )
        self.n = 0

    def fire(self) -> float:
        """Microseconds from the launch call until the probe's write was seen."""
        self.n += 1
        stream = self.cp.cuda.ExternalStream(self.torch.cuda.current_stream().cuda_stream)
        t0 = time.perf_counter_ns()
        self.k((1,), (1,), (self.dev, self.cp.int64(self.n)), stream=stream)
        deadline = t0 + 5_000_000_000
        while self.flag[0] != self.n:
            if time.perf_counter_ns() > deadline:
                raise SystemExit("hp_service: error: the probe kernel did not run in 5 s")
        return (time.perf_counter_ns() - t0) / 1e3


def thread_sched() -> tuple[int, int, int, int] | None:
    """The calling thread's ns on a CPU, ns runnable but waiting for one
    (``/proc/thread-self/schedstat``) and voluntary / involuntary context switches: how a
    slower request splits into CPU time, waiting for a CPU (host contention) and the
    rest (blocked). None where Linux's schedstat is missing."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run_ns, wait_ns, _ = (int(x) for x in f.read().split())
        import resource

        ru = resource.getrusage(resource.RUSAGE_THREAD)
        return run_ns, wait_ns, ru.ru_nvcsw, ru.ru_nivcsw
    except (OSError, ValueError, AttributeError):
        return None


def host_figures(sums: list[int] | None, served: int) -> dict[str, float] | None:
    """Per served request: the serving thread's on-CPU ms, run-queue ms and switches."""
    if sums is None or served <= 0:
        return None
    on_cpu, runq, vol, invol = sums
    return {"on_cpu_ms": on_cpu / 1e6 / served, "runqueue_ms": runq / 1e6 / served,
            "voluntary_switches": vol / served, "involuntary_switches": invol / served}  # fmt: skip


def _markers(a: argparse.Namespace) -> tuple[Callable[[], Any], str]:
    if not a.markers:
        return nullcontext, "off"
    try:
        import hbtui  # optional: only with --markers

        return hbtui.request, "on"
    except Exception as e:  # noqa: BLE001
        log(f"warning: --markers but hbtui is not importable ({e}); no markers")
        return nullcontext, "unavailable"


def _model_info(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "layers": a.layers,
        "hidden": a.hidden,
        "intermediate": a.intermediate,
        "heads": a.heads,
        "vocab": a.vocab,
        "batch": a.batch,
        **(
            {"seq": a.seq, "replays": a.replays}
            if a.mode == "graph"
            else {"prefill": a.prefill, "decode_steps": a.decode_steps}
        ),
    }


def _process_info(a: argparse.Namespace) -> dict[str, Any]:
    """Where and how this process ran: under hbtui or not, CPUs, threads."""
    pre = os.environ.get("LD_PRELOAD", "")
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "under_hbtui": os.environ.get("HBTUI_CLASS"),
        "hbtui_task": os.environ.get("HBTUI_TASK"),
        "hbtui_shm": bool(os.environ.get("HBTUI_SHM")),
        "ld_preload": pre or None,
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads_arg": a.threads,
    }
    with contextlib.suppress(Exception):
        import torch

        out["torch_threads"] = torch.get_num_threads()
    return out


def quiet_switch() -> Callable[[int], int]:
    """The interceptor's hbtui_set_quiet (the process runs under ``hbtui run --hp``)."""
    try:
        fn = ctypes.CDLL(None).hbtui_set_quiet
    except AttributeError:
        raise SystemExit("hp_service: error: --quiet-ab: no hbtui interceptor in this "
                         "process (run it under `hbtui run --hp`)") from None  # fmt: skip
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    if fn(0) < 0:
        raise SystemExit("hp_service: error: --quiet-ab: the interceptor refused "
                         "(not attached as HP)")  # fmt: skip
    return fn


def self_time() -> Callable[[], tuple[int, int]] | None:
    """The interceptor's own ns and launches so far (HBTUI_SELF_TIME=1), else None."""
    if os.environ.get("HBTUI_SELF_TIME") != "1":
        return None
    fn = getattr(ctypes.CDLL(None), "hbtui_self_ns", None)
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.POINTER(ctypes.c_uint64)], ctypes.c_uint64
    n = ctypes.c_uint64()

    def read() -> tuple[int, int]:
        return int(fn(ctypes.byref(n))), int(n.value)

    return read


def run_closed(a: argparse.Namespace, svc: Service, t_start: float) -> dict[str, Any]:
    """Closed loop: blocks of back-to-back requests (see the module docstring)."""
    markers, marker_state = _markers(a)
    quiet = quiet_switch() if a.quiet_ab else None
    own = self_time()
    for _ in range(a.warmup_requests):
        svc.serve()
    gap = a.gap_ms / 1e3
    print("ready", flush=True)
    t_ready = time.monotonic()
    blocks: list[dict[str, Any]] = []
    for i in range(a.blocks):
        if a.gate:
            line = sys.stdin.readline()
            if not line or line.strip() == "quit":
                break
            if line.strip() != "go":
                raise SystemExit(f"hp_service: error: expected 'go' or 'quit', got {line!r}")
        for _ in range(a.block_warmup):
            svc.serve()
            if gap:
                time.sleep(gap)
        times: list[float] = []
        quiet_ms: list[float] = []
        self_us: list[float] = []  # the interceptor's own time per observed request
        self_n: list[int] = []  # ... and its observed launches
        t0 = time.monotonic()
        for j in range(a.closed * (2 if quiet else 1)):
            q = quiet is not None and (i + j) % 2 == 0  # even blocks start quiet, odd observed
            if quiet is not None:
                quiet(int(q))
            o0 = own() if own and not q else None
            s = time.monotonic()
            with markers():
                svc.serve()
            (quiet_ms if q else times).append((time.monotonic() - s) * 1e3)
            if own and o0 is not None:
                o1 = own()
                self_us.append((o1[0] - o0[0]) / 1e3)
                self_n.append(o1[1] - o0[1])
            if gap:
                time.sleep(gap)
        if quiet is not None:
            quiet(0)
        t1 = time.monotonic()
        blk = {"index": i, "start_mono": t0, "end_mono": t1, "n": len(times),
               "median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
               "service_ms": [round(x, 5) for x in times]}  # fmt: skip
        if quiet_ms:
            blk |= {"quiet_median_ms": statistics.median(quiet_ms),
                    "quiet_mean_ms": statistics.fmean(quiet_ms),
                    "quiet_ms": [round(x, 5) for x in quiet_ms]}  # fmt: skip
        if self_us:
            blk |= {"self_median_us": statistics.median(self_us),
                    "self_launches_median": statistics.median(self_n)}  # fmt: skip
        blocks.append(blk)
        print("block " + json.dumps(blk), flush=True)
    every = [x for b in blocks for x in b["service_ms"]]
    res: dict[str, Any] = {
        "mode": a.mode,
        "closed": a.closed,
        "seed": a.seed,
        "gap_ms": a.gap_ms,
        "block_warmup": a.block_warmup,
        "quiet_ab": a.quiet_ab,
        "blocks": blocks,
        "count": len(every),
        "service_p50_ms": pct(every, 50),
        "service_p99_ms": pct(every, 99),
        "service_mean_ms": statistics.fmean(every) if every else None,
        "startup_s": round(t_ready - t_start, 2),
        "markers": marker_state,
        "mps_pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
        "device": a.device,
        "device_name": svc.torch.cuda.get_device_name(svc.dev) if svc.cuda else None,
        "dtype": a.dtype,
        "model": _model_info(a),
        **svc.info,
        **_process_info(a),
    }
    res["gpu"] = svc.gpu_profile(a.profile_requests)
    return res


def run(a: argparse.Namespace) -> dict[str, Any]:
    t_start = time.monotonic()
    svc = Service(a)
    if a.closed is not None:
        return run_closed(a, svc, t_start)
    markers, marker_state = _markers(a)
    probe = Probe(svc.torch) if a.probe and svc.cuda else None
    for _ in range(a.warmup_requests):
        if probe is not None:
            probe.fire()
        svc.serve()
    if a.service_ms is None:
        times = []
        for _ in range(max(5, a.calib_requests)):
            t0 = time.monotonic()
            svc.serve()
            times.append((time.monotonic() - t0) * 1e3)
        service_ms, source = round(statistics.median(times), 6), "measured"
        log(f"alone service time: median {service_ms:.3f} ms over {len(times)} requests "
            f"(min {min(times):.3f}, max {max(times):.3f})")  # fmt: skip
    else:
        service_ms, source, times = a.service_ms, "given", []
    offs = arrival_offsets(a.seed, a.load, service_ms, a.duration)
    if not offs:
        raise SystemExit("hp_service: error: no arrivals in the window (duration too short)")
    print("ready", flush=True)
    t_ready = time.monotonic()
    t0 = t_ready + 0.05
    stop_at = t0 + a.duration + a.drain
    lat: list[float] = []
    svc_ms: list[float] = []
    sync_ms: list[float] = []  # of which the closing synchronize
    starts: list[float] = []
    probe_us: list[float] = []
    served = 0
    sched: list[int] | None = [0, 0, 0, 0]  # summed over the requests (thread_sched)
    for off in offs:
        arr = t0 + off
        now = time.monotonic()
        if now >= stop_at:
            break
        if now < arr:
            wait_until(arr)
        b = thread_sched() if sched is not None else None  # (outside the timed request)
        s = time.monotonic()
        with markers():
            if probe is not None:
                probe_us.append(round(probe.fire(), 2))
            svc.serve()
        e = time.monotonic()
        f = thread_sched() if b is not None else None
        if sched is not None and b is not None and f is not None:
            sched = [x + (y1 - y0) for x, y0, y1 in zip(sched, b, f, strict=True)]
        else:
            sched = None
        starts.append(s)
        lat.append((e - arr) * 1e3)
        svc_ms.append((e - s) * 1e3)
        sync_ms.append(svc.last_sync_ms)
        served += 1
    t_end = time.monotonic()
    host = host_figures(sched, served)
    censored = [(t_end - (t0 + off)) * 1e3 for off in offs[served:]]
    all_lat = lat + censored
    window_s = a.duration
    res: dict[str, Any] = {
        "mode": a.mode,
        "load": a.load,
        "seed": a.seed,
        "service_ms": service_ms,
        "service_ms_source": source,
        "calib_ms": times,
        "duration_s": a.duration,
        "drain_s": a.drain,
        "arrivals": len(offs),
        "count": len(all_lat),
        "completed": served,
        "unfinished": len(censored),
        "latencies_ms": [round(x, 4) for x in all_lat],
        "p50_ms": pct(all_lat, 50),
        "p99_ms": pct(all_lat, 99),
        "max_ms": max(all_lat),
        "mean_ms": statistics.fmean(all_lat),
        "service_p50_ms": pct(svc_ms, 50),
        "service_p99_ms": pct(svc_ms, 99),
        "service_mean_ms": statistics.fmean(svc_ms) if svc_ms else None,
        # a request = host part (its launches and Python) + its closing synchronize
        "sync_p50_ms": pct(sync_ms, 50),
        "host_part_p50_ms": pct([x - y for x, y in zip(svc_ms, sync_ms, strict=True)], 50),
        "host_busy_fraction": sum(svc_ms) / 1e3 / max(1e-9, t_end - t0),
        "host_per_request": host,
        "offered_rps": len(offs) / window_s,
        "window_start_mono": t0,
        "window_end_mono": t0 + window_s,
        "last_completion_mono": t_end,
        "startup_s": round(t_ready - t_start, 2),
        "slo_ms": a.slo_ms,
        "slo_attainment": None,
        "markers": marker_state,
        "probe_wait_us": probe_us if probe is not None else None,
        "under_hbtui": os.environ.get("HBTUI_CLASS"),
        "mps_pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
        "device": a.device,
        "device_name": None,
        "dtype": a.dtype,
        "model": _model_info(a),
        **svc.info,
    }
    if svc.cuda:
        res["device_name"] = svc.torch.cuda.get_device_name(svc.dev)
    if a.slo_ms:
        res["slo_attainment"] = sum(1 for x in all_lat if x <= a.slo_ms) / len(all_lat)
    gpu = svc.gpu_profile(a.profile_requests)
    if gpu is not None:
        gpu["idle_fraction_per_request"] = max(0.0, 1 - gpu["gpu_ms_per_request"] / service_ms)
        # GPU-busy share of the arrival window: every request of the window, at its GPU time
        gpu["window_busy_fraction"] = min(1.0, len(offs) * gpu["gpu_ms_per_request"] / 1e3
                                          / window_s)  # fmt: skip
    res["gpu"] = gpu
    return res


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run finally blocks, exit 143
    if a.cpus is not None:  # before torch starts its thread pools
        try:
            os.sched_setaffinity(0, a.cpus)
        except (OSError, AttributeError) as e:
            raise SystemExit(f"hp_service: error: --cpus {a.cpus}: {e}") from None
    try:
        res = run(a)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        log("error: the service failed (traceback above)")
        return 1
    tmp = f"{a.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, a.out)
    if a.closed is not None:
        p50 = res["service_p50_ms"]
        log(f"closed loop: {len(res['blocks'])} blocks, {res['count']} requests, service "
            f"p50 {'-' if p50 is None else f'{p50:.3f}'} ms ({res['mode']}); "
            f"wrote {a.out}")  # fmt: skip
    else:
        log(f"{res['completed']}/{res['count']} requests, p50 {res['p50_ms']:.3f} ms, "
            f"p99 {res['p99_ms']:.3f} ms, service {res['service_ms']:.3f} ms ({res['mode']} "
            f"@ {res['load']}); wrote {a.out}")  # fmt: skip
    if a.linger > 0:
        time.sleep(a.linger)  # lets an engine's once-a-second stats see the last requests
    return 0


if __name__ == "__main__":
    sys.exit(main())
