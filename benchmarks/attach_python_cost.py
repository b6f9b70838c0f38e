"""The interceptor's added cost per HP launch inside a Python program, on a CPU with the
fake driver (tests/attach/fake_cuda.c): a stand-in for hp_overhead_ab.py's in-process
figure (observed over quiet requests of one process) that needs no GPU, to compare
interceptor builds. CPU only: the fake driver's launch costs tens of ns, not the real
driver's microseconds, so only the difference between builds means something.

    python benchmarks/attach_python_cost.py [--requests N] [--launches L] [--work-kb K]
        [--blocks B] [--reader-us N] [--so LIB] [--out FILE]

A child process runs under the interceptor (LD_PRELOAD, an HP segment made here, no
engine). A "request" is L launches of cuLaunchKernel through ctypes with Python work
between them that walks K KiB of objects (as PyTorch's dispatch does between an eager
service's kernels: the interceptor then runs with the caches the program left it). Each
block alternates quiet requests (``hbtui_set_quiet(1)``: the interceptor passes calls
straight through) and observed ones; per block the ratio of their medians. Prints the
median ratio over blocks and the added ns per launch; ``--self-time`` also the
interceptor's own time per launch (``hbtui_self_ns``). ``--reader-us N``: a thread of this
process, on another CPU, reads the launch ring every N us as the engine does (whose reads
leave the records' lines shared, which the program pays for on the next lap).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(a: argparse.Namespace) -> int:
    os.sched_setaffinity(0, {a.cpu})  # (the reader, if any, on another CPU)
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuInit(0)
    launch = cuda.cuLaunchKernel
    u = ctypes.c_uint
    launch.argtypes = [ctypes.c_void_p, u, u, u, u, u, u, u, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p]  # fmt: skip
    me = ctypes.CDLL(None)
    quiet = me.hbtui_set_quiet
    quiet.argtypes, quiet.restype = [ctypes.c_int], ctypes.c_int
    if quiet(0) < 0:
        raise SystemExit("attach_python_cost: not under the interceptor as HP")
    own = getattr(me, "hbtui_self_ns", None) if a.self_time else None
    if own is not None:
        own.argtypes, own.restype = [ctypes.POINTER(ctypes.c_uint64)], ctypes.c_uint64
    n_own = ctypes.c_uint64()
    # the program's own objects, walked between launches (K KiB of small ints in lists)
    work = [list(range(256)) for _ in range(max(1, a.work_kb * 1024 // (256 * 36)))]
    fn, stream = ctypes.c_void_p(0xF00), ctypes.c_void_p(0x100)

    def request() -> int:
        t0 = time.perf_counter_ns()
        acc = 0
        for i in range(a.launches):
            for row in work[i % 4 :: 4]:
                acc += row[i & 255]
            launch(fn, 8, 1, 1, 128, 1, 1, 0, stream, None, None)
        return time.perf_counter_ns() - t0 + (acc & 0)

    for _ in range(20):
        request()
    blocks = []
    for b in range(a.blocks):
        obs, qui, own_ns = [], [], []
        for j in range(2 * a.requests):
            q = (b + j) % 2 == 0
            quiet(int(q))
            o0 = own(ctypes.byref(n_own)) if own is not None and not q else 0
            (qui if q else obs).append(request())
            if own is not None and not q:
                own_ns.append(own(ctypes.byref(n_own)) - o0)
        quiet(0)
        blk = {"observed_ns": statistics.median(obs), "quiet_ns": statistics.median(qui)}
        if own_ns:
            blk["self_ns"] = statistics.median(own_ns)
        blocks.append(blk)
    print(json.dumps(blocks))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40, help="observed (and quiet) per block")
    ap.add_argument("--launches", type=int, default=200, help="launches per request")
    ap.add_argument("--work-kb", type=int, default=256, help="KiB walked between launches")
    ap.add_argument("--blocks", type=int, default=20)
    ap.add_argument("--self-time", action="store_true", help="HBTUI_SELF_TIME=1 in the child")
    ap.add_argument("--reader-us", type=int, default=0,
                    help="read the launch ring every N us from another CPU, as the engine "
                    "does (0: nobody reads it)")  # fmt: skip
    ap.add_argument("--so", default=None, help="interceptor library (default: build it)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    import harness  # puts the repository root on sys.path

    from hbtui.attach import build, segment
    from hbtui.attach import layout as L

    tmp = Path(tempfile.mkdtemp())
    fake = tmp / "libcuda.so.1"
    build.compile_c([ROOT / "tests" / "attach" / "fake_cuda.c"], fake,
                    ("-O2", "-std=gnu11", "-shared", "-fPIC", "-pthread",
                     "-Wl,-soname,libcuda.so.1"), ())  # fmt: skip
    so = a.so or str(build.build())
    shm = segment.create_segment("cost", L.CLASS_HP)
    env = {**os.environ, "LD_PRELOAD": so, "HBTUI_SHM": shm, "HBTUI_CLASS": "hp",
           "HBTUI_TASK": "cost", "HBTUI_REAL_LIBCUDA": str(fake), "FAKE_GPU": "inline",
           "LD_LIBRARY_PATH": str(tmp)}  # fmt: skip
    if a.self_time:
        env["HBTUI_SELF_TIME"] = "1"
    argv = [sys.executable, __file__, "--child", "--requests", str(a.requests),
            "--launches", str(a.launches), "--work-kb", str(a.work_kb),
            "--blocks", str(a.blocks)] + (["--self-time"] if a.self_time else [])  # fmt: skip
    stop = threading.Event()
    reads, polls, failed = [0], [0], []
    cpus = sorted(os.sched_getaffinity(0))  # the child on the first, the reader on the last
    if a.reader_us and len(cpus) < 2:
        ap.error("--reader-us needs 2 CPUs (the reader would share the program's)")

    def reader() -> None:  # the engine's side: drain the ring every reader_us
        os.sched_setaffinity(0, cpus[-1:])  # (this thread only)
        try:
            with segment.Attachment(shm) as att:
                while not stop.is_set():
                    reads[0] += len(att.launches())
                    polls[0] += 1
                    time.sleep(a.reader_us / 1e6)
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            failed.append(e)

    t = threading.Thread(target=reader, daemon=True)
    if a.reader_us:
        t.start()
    t_run = time.monotonic()
    try:
        r = subprocess.run([*argv, "--cpu", str(cpus[0])], env=env, capture_output=True,
                           text=True, timeout=1800)  # fmt: skip
    finally:
        stop.set()
        if a.reader_us:
            t.join()
        segment.unlink_segment(shm)
    if failed:
        raise SystemExit(f"attach_python_cost: the ring reader failed: {failed[0]!r}")
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return 1
    blocks = json.loads(r.stdout.strip().splitlines()[-1])
    ratio = statistics.median(b["observed_ns"] / b["quiet_ns"] for b in blocks)
    added = statistics.median((b["observed_ns"] - b["quiet_ns"]) / a.launches for b in blocks)
    quiet_per = statistics.median(b["quiet_ns"] / a.launches for b in blocks)
    doc = {
        "what": "interceptor cost per HP launch in a Python program, CPU, fake driver",
        "interceptor": so,
        "settings": {k: v for k, v in vars(a).items() if k != "child"},
        "observed_over_quiet": ratio,
        "added_ns_per_launch": added,
        "quiet_ns_per_launch": quiet_per,
        "blocks": blocks,
        "records_read": reads[0],
        "reader_polls": polls[0],  # (a sleep of reader_us lasts longer: count the polls)
        "run_s": time.monotonic() - t_run,
        "cpus": {"program": cpus[0], "reader": cpus[-1] if a.reader_us else None},
    }
    if blocks and "self_ns" in blocks[0]:
        doc["self_ns_per_launch"] = statistics.median(b["self_ns"] for b in blocks) / a.launches
    line = (f"observed/quiet {(ratio - 1) * 100:+.2f} %, added {added:.0f} ns a launch "
            f"(quiet {quiet_per:.0f} ns a launch with the work)")  # fmt: skip
    if "self_ns_per_launch" in doc:
        line += f", the interceptor's own {doc['self_ns_per_launch']:.0f} ns"
    print(line)
    if a.out:
        harness.write_result(a.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
