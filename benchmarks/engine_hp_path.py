"""Where does the engine spend time per HP kernel? Closed loop, HP only (cuda backend).

Prints medians of: GPU end of a kernel -> launch call of the next one (turnaround),
GPU end -> wait() returning it (detection), launch call -> first block (issue->start),
and per-kernel run time. Usage: PYTHONPATH=. python3 benchmarks/engine_hp_path.py PROFILE
"""

import statistics
import sys
import time
from dataclasses import replace

from engine.backends import make_backend
from engine.profile import load
from engine.scheduler import Scheduler

prof = load(sys.argv[1])
be = make_backend("cuda", prof.sim, 0)
launches = []
orig = be.submit


def submit(x):
    orig(x)
    launches.append(x)


be.submit = submit
waits = []
ow = be.wait


def wait(u):
    r = ow(u)
    if r:
        waits.append((time.perf_counter_ns(), [x.id for x in r]))
    return r


be.wait = wait
s = Scheduler(prof.kernels, [replace(t) for t in prof.tasks if t.cls == "hp"], be, "exclusive", 1)
s.run_until(be.now_ns() + 2_000_000_000)
seen = {i: t for t, ids in waits for i in ids}
hp = [x for x in launches if x.end_ns > 0]
turn, detect, launch, run = [], [], [], []
for a, b in zip(hp, hp[1:], strict=False):
    if b.request == a.request:
        turn.append((b.issue_ns - a.end_ns) / 1e3)
        detect.append((seen[a.id] - a.end_ns) / 1e3)
for x in hp:
    launch.append((x.start_ns - x.issue_ns) / 1e3)
    run.append((x.end_ns - x.start_ns) / 1e3)


def med(v: list[float]) -> float:
    return round(statistics.median(v), 2)


print(
    "kernels",
    len(hp),
    "turnaround(end->next issue)",
    med(turn),
    "detect(end->wait returns)",
    med(detect),
    "issue->start",
    med(launch),
    "run",
    med(run),
)
by = {}
for x in hp:
    by.setdefault(x.kernel.name, []).append((x.end_ns - x.start_ns) / 1e3)
print({k: med(v) for k, v in by.items()})
