"""CPU time of a headless engine while programs are attached (no GPU needed).

    python benchmarks/attach_engine_cpu.py [--seconds S] [--engine-arg ARG ...] [--out FILE]

Builds the fake libcuda and test program of tests/attach, starts
``hbtui engine --profile programs --backend sim``, measures the engine's CPU time
(``/proc/PID/stat``) over S seconds with nothing attached, then with one LP program held
under ``exclusive`` (its launch waits for a grant that never comes), then with one HP
program alone that keeps launching (bursts of 20 launches of 50-us fake kernels, 1 ms
apart: always inside a request). Prints each as a share of one core (``--out``: also as
JSON). ``--engine-arg`` passes engine flags, e.g. ``--engine-arg=--hp-poll-us=20`` (the
tick it used before the HP-only one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402
from engines import start_engine, stop, wait_running  # noqa: E402


def _cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(f[13]) + int(f[14])) / os.sysconf("SC_CLK_TCK")


def _share(pid: int, seconds: float) -> float:
    t0, c0 = time.monotonic(), _cpu_s(pid)
    time.sleep(seconds)
    return (_cpu_s(pid) - c0) / (time.monotonic() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measurement window (3)")
    ap.add_argument("--engine-arg", action="append", default=[], help="engine flag (repeatable)")
    ap.add_argument("--out", help="result JSON")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    fake, prog = d / "libcuda.so.1", d / "prog"
    cc = ["cc", "-O2", "-std=gnu11", "-pthread"]
    subprocess.run([*cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(fake),
                    str(ROOT / "tests/attach/fake_cuda.c")], check=True)  # fmt: skip
    subprocess.run([*cc, "-o", str(prog), str(ROOT / "tests/attach/prog.c"), "-ldl"], check=True)
    ctl, pub = f"ipc://{d}/ctl", f"ipc://{d}/pub"
    eng = start_engine("--profile", "programs", "--backend", "sim", "--ctl", ctl, "--pub", pub,
                       *a.engine_arg)  # fmt: skip
    c = wait_running(ctl)
    try:
        idle = _share(eng.pid, a.seconds)
        c.call("set_policy", {"policy": "exclusive"})
        env = {**os.environ, "HBTUI_REAL_LIBCUDA": str(fake), "LD_LIBRARY_PATH": str(d)}
        p = subprocess.Popen([sys.executable, "-m", "hbtui", "run", "--lp", "--task", "t",
                              "--engine", ctl, "--", str(prog), "dlsym", "launch:2"],
                             env=env, stdout=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1.5)
        held = _share(eng.pid, a.seconds)
        c.call("set_policy", {"policy": "temporal"})
        p.wait(10)
        # (an iteration takes ~1.1 ms: twice what the window needs; killed after it)
        steps = ["launch:20", "sleep:1"] * int((a.seconds + 3) * 1000 / 0.55)
        hp_env = {**env, "FAKE_KERNEL_US": "50"}
        p = subprocess.Popen([sys.executable, "-m", "hbtui", "run", "--hp", "--task", "svc",
                              "--engine", ctl, "--", str(prog), "dlsym", *steps],
                             env=hp_env, stdout=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1.5)
        hp = _share(eng.pid, a.seconds)
        p.kill()
        p.wait(10)
    finally:
        c.close()
        stop(eng)
    print(f"engine CPU: nothing attached {idle * 100:.1f} %, one held LP program "
          f"{held * 100:.1f} %, one busy HP program {hp * 100:.1f} % of a core")  # fmt: skip
    if a.out:
        harness.write_result(a.out, {
            "what": "a headless engine's CPU time as a share of one core (CPU, fake driver)",
            "settings": {"seconds": a.seconds, "engine_args": a.engine_arg},
            "nothing_attached": idle, "held_lp": held, "busy_hp_alone": hp,
        })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
