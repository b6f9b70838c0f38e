"""Real programs under hbtui (issue 15, item 10): an unmodified PyTorch HP service beside
an unmodified ResNet-50 training job, in every way of sharing one GPU, on identical
arrivals. How to run it and what each figure means: docs/benchmarks/real-programs.md.

HP configurations (``--pairs``, ``MODE@LOAD``): ``graph@0.4`` (the CUDA-graph Llama
service at 40 % load), ``eager@0.4`` and ``eager@0.7`` (the eager, host-bound one).
LP: ``benchmarks/apps/lp_train.py`` (ResNet-50, AMP, batch 128).

Scenarios (``--scenarios``):

- ``hp-alone``: the service alone; measures its service time (passed to every other
  scenario as ``--service-ms``, so every scenario sees the same arrival times), its SLO
  (= its p99 here), and the GPU-idle fraction under it (for the LP ceiling).
- ``lp-alone``: the training job alone (the first window of the ``plain`` LP process).
- ``plain``: both as plain processes (the driver time-slices their contexts).
- ``mps``: both under an MPS control daemon started (and always stopped) here.
- ``hbtui-POLICY`` (``temporal``, ``hummingbird``, also ``exclusive``/``spatial``): a
  headless engine (sim backend: it runs no GPU work itself) with that policy; the LP under
  ``hbtui run --lp``, the HP under ``hbtui run --hp --slo``. ``hbtui-POLICY+mps``: the
  same with both programs under MPS.
- ``hp-hbtui`` (not in the default set): the service alone under ``hbtui run --hp`` with a
  ``hummingbird`` engine, for "HP-alone latency under hbtui run within 2 %".

One LP process serves every pair of a scenario (it starts first and warms up; then the
HP runs of the pairs follow one after the other); its rate is counted inside each HP
run's arrival window from its per-iteration completion timestamps (CLOCK_MONOTONIC).
Every subprocess has a timeout, the whole run a budget (``--budget``): work that no
longer fits is skipped and recorded as such. A failed scenario is recorded with its
error and the tail of its log; the run goes on. The JSON (``--out``) is rewritten after
every step, so an interrupted run still leaves what it measured.

    python3 benchmarks/real_programs.py --out docs/benchmarks/h200-real-programs.json
    python3 benchmarks/real_programs.py --smoke --out /tmp/rp-smoke.json   # CPU plumbing
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness  # puts the repository root on sys.path
from apps.hp_service import pct  # nearest rank, the engine's convention (stdlib at import)
from harness import Mps, Proc, StepError, kill_all, log

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = HERE / "apps"
HP_APP = APPS / "hp_service.py"
LP_APP = APPS / "lp_train.py"

DEFAULT_PAIRS = "graph@0.4,eager@0.4,eager@0.7"
DEFAULT_SCENARIOS = "hp-alone,lp-alone,plain,mps,hbtui-temporal,hbtui-hummingbird"
POLICIES = ("exclusive", "spatial", "temporal", "hummingbird")
LP_TASK = "train"
GRACE_S = 20.0  # how far past the budget a running step may go before it is killed

SMOKE_HP = ["--device", "cpu", "--layers", "1", "--hidden", "64", "--intermediate", "128",
            "--heads", "4", "--vocab", "1000", "--seq", "16", "--prefill", "8",
            "--dtype", "fp32", "--threads", "1", "--calib-requests", "10",
            "--warmup-requests", "2"]  # fmt: skip
SMOKE_LP = ["--device", "cpu", "--model", "tiny", "--batch", "4", "--size", "32",
            "--threads", "1", "--warmup", "2"]  # fmt: skip


class BudgetExceeded(Exception):
    pass


# -- configuration --------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    mode: str
    load: float

    @property
    def name(self) -> str:
        return f"{self.mode}@{self.load:g}"

    @property
    def task(self) -> str:  # engine task names: [A-Za-z0-9_.-]
        return f"svc-{self.mode}-{self.load:g}"

    @property
    def tag(self) -> str:
        return f"{self.mode}-{self.load:g}"


def parse_pairs(s: str) -> list[Pair]:
    out = []
    for item in [x.strip() for x in s.split(",") if x.strip()]:
        m = re.fullmatch(r"(graph|eager)@([0-9]*\.?[0-9]+)", item)
        if not m or not 0 < float(m.group(2)) <= 1.5:
            raise argparse.ArgumentTypeError(
                f"bad pair {item!r}: want MODE@LOAD, MODE graph|eager, 0 < LOAD <= 1.5"
            )
        p = Pair(m.group(1), float(m.group(2)))
        if p not in out:
            out.append(p)
    if not out:
        raise argparse.ArgumentTypeError("no pairs")
    return out


@dataclass(frozen=True)
class Env:
    """How a co-located scenario runs its programs."""

    name: str
    policy: str | None  # None: no hbtui; else the engine's policy
    mps: bool
    lp: bool = True
    whole: bool = False  # hummingbird with slicing off (--slice-programs off): whole kernels
    noguard: bool = False  # the engine's harvest guard off (--harvest-guard 0)


SCENARIO_RE = r"hbtui-([a-z]+)(-whole)?(-noguard)?(\+mps)?"


REPEAT_RE = r"-r[2-9][0-9]*$"  # a co-located scenario again: NAME-r2, NAME-r3, ...


def base_name(name: str) -> str:
    """The scenario a repeat (``NAME-rK``) runs again."""
    return re.sub(REPEAT_RE, "", name)


def parse_scenarios(s: str) -> list[str]:
    names = [x.strip() for x in s.split(",") if x.strip()]
    for n in names:
        if n in ("hp-alone", "lp-alone"):
            continue
        n = base_name(n)
        if n in ("plain", "mps", "hp-hbtui", "hp-hbtui+mps"):
            continue
        m = re.fullmatch(SCENARIO_RE, n)
        if (
            not m
            or m.group(1) not in POLICIES
            or ((m.group(2) or m.group(3)) and m.group(1) != "hummingbird")
        ):
            raise argparse.ArgumentTypeError(
                f"unknown scenario {n!r}: hp-alone, lp-alone, plain, mps, hp-hbtui[+mps], "
                f"hbtui-POLICY[+mps] with POLICY in {', '.join(POLICIES)}, "
                "hbtui-hummingbird[-whole][-noguard][+mps] (no slicing, no harvest guard); "
                "a co-located one again as NAME-r2, NAME-r3, ..."
            )
    if not names:
        raise argparse.ArgumentTypeError("no scenarios")
    return list(dict.fromkeys(names))


def with_repeats(names: list[str], n: int) -> list[str]:
    """Each co-located scenario ``n`` times: NAME, NAME-r2, ..., NAME-rN, in turn."""
    co = [s for s in names if s not in ("hp-alone", "lp-alone")]
    extra = [f"{s}-r{k}" for k in range(2, n + 1) for s in co if base_name(s) == s]
    return list(dict.fromkeys([*names, *extra]))


def env_of(name: str) -> Env:
    base = base_name(name)
    if base == "plain":
        return Env(name, None, False)
    if base == "mps":
        return Env(name, None, True)
    if base in ("hp-hbtui", "hp-hbtui+mps"):  # (+mps: does MPS itself slow the HP?)
        return Env(name, "hummingbird", base.endswith("+mps"), lp=False)
    m = re.fullmatch(SCENARIO_RE, base)
    assert m, name
    return Env(name, m.group(1), bool(m.group(4)), whole=bool(m.group(2)),
               noguard=bool(m.group(3)))  # fmt: skip


def run_order(scenarios: list[str]) -> list[str]:
    """Co-located scenarios in the order they run: the ones the issue's "done when" needs
    first (a run cut short by its budget loses the comparisons measured before)."""
    co = [s for s in scenarios if s not in ("hp-alone", "lp-alone")]

    def key(s: str) -> int:
        # hbtui first (the issue's targets), then HP alone under hbtui run (the 2 % check),
        # then the baselines the issue already measured once (plain, MPS)
        order = ["hbtui-hummingbird", "hbtui-hummingbird+mps", "hbtui-hummingbird-whole",
                 "hbtui-hummingbird-noguard", "hbtui-temporal", "hp-hbtui", "plain"]  # fmt: skip
        if s in order:
            return order.index(s)
        return 10 if s.startswith("hbtui-") else 20  # mps last

    return sorted(co, key=key)


# -- small helpers ----------------------------------------------------------------------------
PIN = "import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); os.execvp(sys.argv[2], sys.argv[2:])"  # noqa: E501


def cpu_split(
    cpus: set[int] | None = None, siblings: dict[int, str] | None = None
) -> tuple[list[int], list[int]]:
    """--pin: whole physical cores (every SMT sibling) for the HP process tree, a quarter
    of them (at least one), and the rest for the engine, the LP and MPS; so no busy
    thread of theirs shares a core with the HP's serving thread."""
    cpus = cpus if cpus is not None else os.sched_getaffinity(0)
    cores: dict[str, list[int]] = {}
    for c in sorted(cpus):
        f = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list")
        if siblings is not None:
            key = siblings[c]
        else:
            key = f.read_text().strip() if f.exists() else str(c)
        cores.setdefault(key, []).append(c)
    groups = list(cores.values())
    if len(groups) < 2:
        raise SystemExit("--pin: fewer than two physical cores to split")
    n = max(1, len(groups) // 4)
    return sorted(c for g in groups[:n] for c in g), sorted(c for g in groups[n:] for c in g)


def pinned(cmd: list[str], cpus: list[int] | None, py: str) -> list[str]:
    """``cmd`` started on ``cpus`` (inherited by everything it starts); unchanged if None."""
    return cmd if not cpus else [py, "-c", PIN, ",".join(map(str, cpus)), *cmd]


def rate_in(ends: list[float], a: float, b: float) -> tuple[int, float]:
    """Iterations that completed in (a, b] and their rate (per s)."""
    n = sum(1 for t in ends if a < t <= b)
    return n, n / max(1e-9, b - a)


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    os.replace(tmp, path)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        self.end = self.t0 + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def cap(self, timeout: float) -> float:
        """A step's timeout, never past the budget (+ a grace to end the step cleanly)."""
        return max(1.0, min(timeout, self.left() + GRACE_S))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


# -- NVML (GPU utilisation over time) --------------------------------------------------------
class Nvml:
    """Samples nvmlDeviceGetUtilizationRates (percent of the last sample period in which a
    kernel ran) every ``period`` s in a thread; ``mean(a, b)`` over a monotonic window."""

    def __init__(self, index: int, period: float = 0.05) -> None:
        self.samples: list[tuple[float, int]] = []
        self.error: str | None = None
        self.name: str | None = None
        self._stop = threading.Event()
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._nv = pynvml
            self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
            nm = pynvml.nvmlDeviceGetName(self._h)
            self.name = nm.decode() if isinstance(nm, bytes) else str(nm)
        except Exception as e:  # noqa: BLE001 - no NVML: the figure is just missing
            self.error = f"{type(e).__name__}: {e}"
            self._nv = None
            return
        self._t = threading.Thread(target=self._run, args=(period,), daemon=True, name="nvml")
        self._t.start()

    def _run(self, period: float) -> None:
        nv = self._nv
        while not self._stop.wait(period):
            try:
                u = nv.nvmlDeviceGetUtilizationRates(self._h)
            except Exception as e:  # noqa: BLE001
                self.error = f"{type(e).__name__}: {e}"
                continue
            self.samples.append((time.monotonic(), int(u.gpu)))

    def mean(self, a: float, b: float) -> dict[str, Any] | None:
        vals = [u for t, u in self.samples if a <= t <= b]
        if not vals:
            return None
        return {"mean_pct": statistics.fmean(vals), "samples": len(vals)}

    def close(self) -> None:
        self._stop.set()
        if self._nv is not None:
            self._t.join(2)
            with contextlib.suppress(Exception):
                self._nv.nvmlShutdown()


class CpuBusy:
    """Samples CPU time in a thread: the machine's (``/proc/stat``, every ``period`` s)
    and, per watched role (``watch``), that of a process and all its descendants
    (``/proc/PID/stat``: own and reaped children's time, every ``role_period`` s: a scan
    of /proc costs ~10 us a process). ``mean(a, b)``: the share of all CPUs busy over a
    monotonic window; ``roles(a, b)``: CPUs each role used there (is the HP host
    contended, by whom?). Quietly empty where /proc is missing."""

    def __init__(self, period: float = 0.1, role_period: float = 0.5) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (mono, busy jiffies, all jiffies)
        self.role_samples: list[tuple[float, dict[str, int]]] = []  # (mono, role -> jiffies)
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.role_period = role_period
        self._roots: dict[str, int] = {}
        self._last: dict[tuple[str, int], int] = {}  # highest total seen (a root exits)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(period,), daemon=True, name="cpu")
        self._t.start()

    def watch(self, role: str, pid: int) -> None:
        self._roots = {**self._roots, role: pid}

    def _tree_jiffies(self) -> dict[str, int]:
        parent: dict[int, int] = {}
        used: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    raw = f.read()
                v = raw[raw.rindex(b")") + 1 :].split()  # (the name may hold ')' or spaces)
                # utime, stime and the waited-for children's: an exited child stays counted
                parent[int(d)], used[int(d)] = int(v[1]), sum(int(x) for x in v[11:15])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or unreadable: skip this one
        out = {}
        for role, root in self._roots.items():
            total = 0
            for pid, t in used.items():
                q, hops = pid, 0
                while q not in (0, 1, root) and hops < 64:
                    q, hops = parent.get(q, 0), hops + 1
                total += t if q == root else 0
            key = (role, root)
            out[role] = self._last[key] = max(total, self._last.get(key, 0))
        return out

    def _run(self, period: float) -> None:
        next_roles = 0.0
        while True:
            try:
                with open("/proc/stat") as f:
                    v = [int(x) for x in f.readline().split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
                now = time.monotonic()
                self.samples.append((now, sum(v) - idle, sum(v)))
                if self._roots and now >= next_roles:
                    next_roles = now + self.role_period
                    self.role_samples.append((now, self._tree_jiffies()))
            except FileNotFoundError:
                return  # no /proc here
            except (OSError, ValueError, IndexError):
                pass  # one bad sample: skip it
            if self._stop.wait(period):
                return

    def mean(self, a: float, b: float) -> float | None:
        inside = [x for x in self.samples if a <= x[0] <= b]
        if len(inside) < 2 or inside[-1][2] <= inside[0][2]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])

    def roles(self, a: float, b: float) -> dict[str, float]:
        """CPUs used by each watched role over the window (1.0: one CPU all the time)."""
        inside = [x for x in self.role_samples if a <= x[0] <= b]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return {}
        (t0, j0), (t1, j1) = inside[0], inside[-1]
        return {r: (j1[r] - j0[r]) / self.hz / (t1 - t0) for r in j1 if r in j0}

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)


# -- MPS ------------------------------------------------------------------------------------
# -- the engine -------------------------------------------------------------------------------
def policy_profile(policy: str, dst: Path) -> Path:
    """hbtui/profiles/programs.toml with ``[engine] policy`` set."""
    src = ROOT / "hbtui" / "profiles" / "programs.toml"
    text = src.read_text()
    new, n = re.subn(r'(?m)^(\s*policy\s*=\s*)"[^"]*"', rf'\g<1>"{policy}"', text, count=1)
    if n == 0:
        if "[engine]" not in text:
            raise StepError(f"{src}: no [engine] table to set the policy in")
        new = text.replace("[engine]", f'[engine]\npolicy = "{policy}"', 1)
    dst.write_text(new)
    return dst


class Engine:
    """``python -m hbtui engine`` (sim backend) on ipc sockets in a private directory, plus
    a thread that keeps its telemetry (``stats`` once a second, ``event``)."""

    def __init__(self, policy: str, py: str, env: dict[str, str], logdir: Path, life_s: float,
                 extra: list[str], cpus: list[int] | None = None,
                 scenario: str | None = None) -> None:  # fmt: skip
        self.policy = policy
        self.dir = Path(tempfile.mkdtemp(prefix="hbrp-"))  # short: ipc paths are <= 107 bytes
        self.ctl, self.pub = f"ipc://{self.dir}/ctl", f"ipc://{self.dir}/pub"
        self.summary_path = self.dir / "summary.json"
        prof = policy_profile(policy, self.dir / f"programs-{policy}.toml")
        cmd = [py, "-m", "hbtui", "engine", "--profile", str(prof), "--backend", "sim",
               "--ctl", self.ctl, "--pub", self.pub, "--calibrate", "0",
               "--summary-json", str(self.summary_path), "--exit-with-parent", str(os.getpid()),
               "--duration", f"{life_s:.0f}", *extra]  # fmt: skip
        self.stats: deque[tuple[float, dict[str, Any]]] = deque(maxlen=3600)
        self.last_by_task: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.watch_error: str | None = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        # one log per scenario (two scenarios of one policy must not share a file)
        self.proc = Proc(f"engine-{scenario or policy}", pinned(cmd, cpus, py), env, logdir)

    def client(self, timeout: float = 2.0) -> Any:
        from hbtui.engine.client import EngineClient

        return EngineClient(self.ctl, timeout=timeout)

    def wait_up(self, timeout: float = 60.0) -> dict[str, Any]:
        from hbtui.engine.client import ClientError

        deadline = time.monotonic() + timeout
        with self.client(0.5) as c:
            while True:
                try:
                    if c.ping().get("phase") == "running":
                        break
                except ClientError:
                    pass
                if not self.proc.alive():
                    raise StepError(f"engine exited with {self.proc.p.returncode} at start-up",
                                    self.proc.tail_text())  # fmt: skip
                if time.monotonic() > deadline:
                    raise StepError(f"engine not running after {timeout:.0f} s",
                                    self.proc.tail_text())  # fmt: skip
                time.sleep(0.1)
            st = c.get_state()
        if st.get("policy") != self.policy:
            raise StepError(f"engine runs policy {st.get('policy')!r}, wanted {self.policy!r}")
        self._watch = threading.Thread(target=self._watch_loop, daemon=True, name="engine-sub")
        self._watch.start()
        log(f"engine up: policy {self.policy}, ctl {self.ctl}")
        return st

    def _watch_loop(self) -> None:
        try:
            from hbtui.engine.client import Subscriber

            with Subscriber(self.pub, topics=("stats", "event")) as sub:
                while not self._stop.is_set():
                    msg = sub.recv(timeout=0.2)
                    if msg is None:
                        continue
                    now = time.monotonic()
                    if msg.type == "stats" and isinstance(msg.body, dict):
                        self.stats.append((now, msg.body))
                        for name, t in (msg.body.get("tasks") or {}).items():
                            self.last_by_task[name] = {"at_mono": now, **t}
                    elif msg.type == "event" and len(self.events) < 500:
                        self.events.append({"at_mono": now, "body": msg.body})
        except Exception as e:  # noqa: BLE001 - the engine figures are extras
            self.watch_error = f"{type(e).__name__}: {e}"

    def state(self) -> dict[str, Any] | None:
        try:
            with self.client(2.0) as c:
                return c.get_state()
        except Exception as e:  # noqa: BLE001
            log(f"engine get_state failed: {e}")
            return None

    def task_stats_near(self, name: str, t: float) -> dict[str, Any] | None:
        """The task's stats entry from the stats message closest to monotonic time t."""
        best = None
        for at, body in self.stats:
            tasks = body.get("tasks") or {}
            if name in tasks and (best is None or abs(at - t) < abs(best[0] - t)):
                best = (at, tasks[name])
        return None if best is None else {"at_mono": best[0], **best[1]}

    def stop(self) -> dict[str, Any]:
        rc = self.proc.stop(30)
        self._stop.set()
        if self._watch is not None:
            self._watch.join(3)
        summary = None
        with contextlib.suppress(OSError, ValueError):
            summary = json.loads(self.summary_path.read_text())
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"rc": rc, "summary": summary, "events": self.events,
                "watch_error": self.watch_error, "log": str(self.proc.log_path),
                "log_tail": self.proc.tail_text(15)}  # fmt: skip


# -- the benchmark ---------------------------------------------------------------------------
@dataclass
class Ctx:
    args: argparse.Namespace
    budget: Budget
    workdir: Path  # the programs' result files (kept, beside the logs)
    tmp: Path  # short-lived private dirs (MPS pipes: short paths)
    logdir: Path
    out: Path
    doc: dict[str, Any]
    nvml: Nvml | None
    hp_startups: list[float] = field(default_factory=list)
    lp_startups: list[float] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # pair -> hp-alone
    lp_alone: dict[str, Any] | None = None
    cpu: CpuBusy | None = None
    pin: tuple[list[int], list[int]] | None = None  # --pin: (HP cpus, everyone else's)

    def pin_for(self, role: str) -> list[int] | None:
        return None if self.pin is None else self.pin[0 if role == "hp" else 1]

    def save(self) -> None:
        self.doc["elapsed_s"] = round(self.budget.elapsed(), 1)
        write_json(self.out, self.doc)

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        pp = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + pp if pp else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    @property
    def hp_startup_est(self) -> float:  # a guess before the first run, then the worst seen
        return max(self.hp_startups) + 3 if self.hp_startups else 30.0

    @property
    def lp_startup_est(self) -> float:
        return max(self.lp_startups) + 3 if self.lp_startups else 30.0

    def hp_need(self, colocated: bool) -> float:
        a = self.args
        return self.hp_startup_est + a.duration + (a.drain if colocated else 2.0) + 10.0


def hp_cmd(
    ctx: Ctx,
    pair: Pair,
    out: Path,
    *,
    service_ms: float | None,
    slo_ms: float | None,
    profile: int,
    linger: float,
    drain: float,
) -> list[str]:
    a = ctx.args
    cmd = [a.python, str(HP_APP), "--mode", pair.mode, "--load", f"{pair.load:g}",
           "--duration", f"{a.duration:g}", "--drain", f"{drain:g}", "--seed", str(a.seed),
           "--out", str(out)]  # fmt: skip
    if service_ms is not None:
        cmd += ["--service-ms", f"{service_ms:.6f}"]
    if slo_ms is not None:
        cmd += ["--slo-ms", f"{slo_ms:.6f}"]
    if profile:
        cmd += ["--profile-requests", str(profile)]
    if linger:
        cmd += ["--linger", f"{linger:g}"]
    if a.markers:
        cmd.append("--markers")
    if a.smoke:
        cmd += SMOKE_HP
    return cmd + list(a.hp_arg or [])


def lp_cmd(ctx: Ctx, out: Path, life_s: float) -> list[str]:
    a = ctx.args
    cmd = [a.python, str(LP_APP), "--duration", f"{life_s:.0f}", "--out", str(out)]
    if a.smoke:
        cmd += SMOKE_LP
    return cmd + list(a.lp_arg or [])


def under_hbtui(ctx: Ctx, eng: Engine, cls: str, task: str, slo_ms: float | None,
                cmd: list[str], mps: bool = False) -> list[str]:  # fmt: skip
    a = ctx.args
    pre = [a.python, "-m", "hbtui", "run", f"--{cls}", "--task", task, "--engine", eng.ctl,
           "--attach-timeout", "5"]  # fmt: skip
    if slo_ms is not None:
        pre += ["--slo", f"{slo_ms:.4f}"]
    if cls == "hp" and a.hp_idle_ms is not None:
        pre += ["--idle-ms", f"{a.hp_idle_ms:g}"]
    if cls == "lp" and mps and a.lp_sm_percent is not None:
        pre += ["--sm-percent", str(a.lp_sm_percent)]
    return [*pre, "--", *cmd]


def hp_summary(r: dict[str, Any], slo_ms: float | None) -> dict[str, Any]:
    lat = r.get("latencies_ms") or []
    att = None
    if slo_ms and lat:
        att = sum(1 for x in lat if x <= slo_ms) / len(lat)
    keys = ("p50_ms", "p99_ms", "mean_ms", "max_ms", "count", "completed", "unfinished",
            "arrivals", "service_ms", "service_ms_source", "service_p50_ms", "service_p99_ms",
            "service_mean_ms", "host_busy_fraction", "startup_s", "markers", "under_hbtui",
            "mps_pipe", "device_name", "torch", "transformers", "window_start_mono",
            "window_end_mono", "last_completion_mono", "gpu", "probe_wait_us",
            "host_per_request", "sync_p50_ms", "host_part_p50_ms")  # fmt: skip
    return {**{k: r.get(k) for k in keys}, "slo_ms": slo_ms, "slo_attainment": att}


def preemption(probe_us: list[float] | None, alone_median_us: float | None) -> dict | None:
    """The probe's wait beyond the HP-alone median (clamped at 0): p50/p99/max in us."""
    if not probe_us or alone_median_us is None:
        return None
    w = [max(0.0, x - alone_median_us) for x in probe_us]
    return {"p50": pct(w, 50), "p99": pct(w, 99), "max": max(w), "n": len(w),
            "alone_median_us": alone_median_us}  # fmt: skip


def run_hp(ctx: Ctx, pair: Pair, scen: str, env: dict[str, str], eng: Engine | None,
           colocated: bool) -> dict[str, Any]:  # fmt: skip
    """One HP run; returns the scenario record's HP part (raises StepError)."""
    a = ctx.args
    alone = scen == "hp-alone"
    base = ctx.baselines.get(pair.name)
    if not alone and base is None:
        raise StepError(f"no hp-alone result for {pair.name}: run hp-alone first (or pass "
                        "--from a JSON that has it)")  # fmt: skip
    service_ms = None if alone else base["service_ms"]
    slo_ms = None if alone else base["slo_ms"]
    drain = a.drain if colocated else max(2.0, a.drain)
    out = ctx.workdir / harness.file_name(f"hp-{scen}-{pair.tag}.json")
    cmd = hp_cmd(ctx, pair, out, service_ms=service_ms, slo_ms=slo_ms,
                 profile=a.profile_requests if alone else 0,
                 linger=1.5 if eng is not None else 0.0, drain=drain)  # fmt: skip
    if eng is not None:
        cmd = under_hbtui(ctx, eng, "hp", pair.task, slo_ms, cmd)
    need = ctx.hp_need(colocated)
    if ctx.budget.left() < need:
        raise BudgetExceeded(f"{need:.0f} s needed, {ctx.budget.left():.0f} s left")
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    cmd = pinned(cmd, ctx.pin_for("hp"), a.python)
    p = Proc(f"hp-{scen}-{pair.tag}", cmd, env, ctx.logdir)
    if ctx.cpu is not None:
        ctx.cpu.watch("hp", p.p.pid)
    rec: dict[str, Any] = {"log": str(p.log_path), "command": shlex.join(cmd)}
    try:
        startup = p.wait_ready(ctx.budget.cap(a.ready_timeout))
        ctx.hp_startups.append(startup)
        rec["startup_s"] = round(startup, 1)
        t_ready = time.monotonic()
        if eng is not None:  # mid-window: is the HP attached (and the LP still gated)?
            time.sleep(min(a.duration / 2, 5.0))
            rec["engine_state_mid"] = eng.state()
        limit = a.duration + drain + 60 + (a.profile_requests * 5 if alone else 0)
        rc = p.wait(ctx.budget.cap(max(1.0, limit - (time.monotonic() - t_ready))))
    except BaseException:
        p.kill()
        raise
    if rc != 0:
        raise StepError(f"{p.name} exited with {rc}", p.tail_text())
    try:
        r = json.loads(out.read_text())
    except (OSError, ValueError) as e:
        raise StepError(f"{p.name}: no result in {out}: {e}", p.tail_text()) from None
    if alone:
        slo_ms = r["p99_ms"]
    rec["hp"] = hp_summary(r, slo_ms)
    rec["hp_latencies_ms"] = r.get("latencies_ms")
    w0, w1 = r["window_start_mono"], r["window_end_mono"]
    rec["window_mono"] = [w0, w1]
    if ctx.nvml is not None:
        rec["gpu_util_nvml"] = ctx.nvml.mean(w0, w1)
    if ctx.cpu is not None:
        rec["cpu_busy"] = ctx.cpu.mean(w0, w1)
        rec["cpus_used"] = ctx.cpu.roles(w0, w1)  # per role: engine, lp, hp
    if eng is not None:
        st = rec.get("engine_state_mid") or {}
        tasks = {t.get("name"): t for t in st.get("tasks") or []}
        hp_t = tasks.get(pair.task)
        rec["hp_attached"] = bool(hp_t and (hp_t.get("attached") or {}).get("status")
                                  == "attached")  # fmt: skip
        if not rec["hp_attached"]:
            rec.setdefault("warnings", []).append(
                f"HP task {pair.task!r} not attached mid-window: ran unobserved"
            )
        rec["engine_hp"] = eng.last_by_task.get(pair.task)
        lp0, lp1 = eng.task_stats_near(LP_TASK, w0), eng.task_stats_near(LP_TASK, w1)
        rec["engine_lp_window"] = {"start": lp0, "end": lp1}
        if lp0 and lp1 and lp1["at_mono"] > lp0["at_mono"]:
            dt = lp1["at_mono"] - lp0["at_mono"]
            rec["engine_lp_kernels_per_s"] = (lp1.get("slices", 0) - lp0.get("slices", 0)) / dt
    return rec


def lp_figures(ctx: Ctx, lp_res: dict[str, Any] | None, w0: float, w1: float) -> dict[str, Any]:
    if not lp_res:
        return {"it_per_s": None}
    ends = lp_res.get("iter_end_mono") or []
    n, r = rate_in(ends, w0, w1)
    d: dict[str, Any] = {"iterations": n, "window_s": w1 - w0, "it_per_s": r}
    if lp_res.get("end_mono") is not None and lp_res["end_mono"] < w1:
        d["warning"] = "the LP ended before the window did"
    return d


def run_hp_alone(ctx: Ctx, pairs: list[Pair]) -> None:
    env = ctx.base_env()
    for pair in pairs:
        key = f"{pair.name} hp-alone"
        entry = ctx.doc["results"].setdefault(pair.name, {})
        try:
            rec = run_hp(ctx, pair, "hp-alone", env, None, colocated=False)
        except BudgetExceeded as e:
            entry["hp-alone"] = {"skipped": f"budget: {e}"}
            log(f"{key}: skipped ({e})")
            continue
        except StepError as e:
            entry["hp-alone"] = {"error": str(e), "tail": e.tail}
            log(f"{key}: FAILED: {e}\n{e.tail}")
            ctx.save()
            continue
        except Exception as e:  # noqa: BLE001 - a bug here must not lose the other pairs
            entry["hp-alone"] = {"error": f"{type(e).__name__}: {e}",
                                 "tail": traceback.format_exc()}  # fmt: skip
            log(f"{key}: FAILED (bug): {traceback.format_exc()}")
            ctx.save()
            continue
        entry["hp-alone"] = rec
        hp = rec["hp"]
        gpu = hp.get("gpu") or {}
        idle_prof = 1 - gpu["window_busy_fraction"] if "window_busy_fraction" in gpu else None
        nv = rec.get("gpu_util_nvml")
        idle_nvml = 1 - nv["mean_pct"] / 100 if nv else None
        idle = idle_prof if idle_prof is not None else idle_nvml
        ctx.baselines[pair.name] = {
            "service_ms": hp["service_ms"], "slo_ms": hp["p99_ms"], "p50_ms": hp["p50_ms"],
            "p99_ms": hp["p99_ms"], "slo_attainment": hp["slo_attainment"],
            "service_p50_ms": hp["service_p50_ms"], "gpu_idle_fraction": idle,
            "gpu_idle_source": ("profiler" if idle_prof is not None else
                                "nvml" if idle_nvml is not None else None),
            "gpu_idle_fraction_profiler": idle_prof, "gpu_idle_fraction_nvml": idle_nvml,
            "gpu_ms_per_request": gpu.get("gpu_ms_per_request"),
            "kernels_per_request": gpu.get("kernels_per_request"),
            "gpu_idle_fraction_per_request": gpu.get("idle_fraction_per_request"),
            "probe_median_us": (statistics.median(hp["probe_wait_us"])
                                if hp.get("probe_wait_us") else None),
        }  # fmt: skip
        ctx.doc["baselines"][pair.name] = ctx.baselines[pair.name]
        log(
            f"{key}: p50 {hp['p50_ms']:.2f} ms p99 {hp['p99_ms']:.2f} ms (= SLO), service "
            f"{hp['service_ms']:.2f} ms, GPU idle {idle if idle is None else round(idle, 3)}"
        )
        ctx.save()


def run_session(ctx: Ctx, env_spec: Env, pairs: list[Pair], lp_alone: bool) -> None:
    """One co-located scenario: (MPS), (engine), one LP process, one HP run per pair."""
    a = ctx.args
    scen = env_spec.name if env_spec.name != "lp-alone" else "plain"
    sess: dict[str, Any] = {"scenario": env_spec.name, "errors": []}
    ctx.doc["sessions"].append(sess)
    env = ctx.base_env()
    lp_out = ctx.workdir / harness.file_name(f"lp-{env_spec.name}.json")
    lp_proc: Proc | None = None
    lp_res: dict[str, Any] | None = None
    runs: dict[str, dict[str, Any]] = {}
    windows: list[tuple[str, float, float]] = []  # (what, start, end) for LP rates
    eng: Engine | None = None
    mps: Mps | None = None
    first_need = ctx.lp_startup_est + (a.duration if lp_alone else a.pre_window)
    first_need += ctx.hp_need(True) if pairs else 0
    skip = None
    if env_spec.mps and a.smoke and not os.environ.get("HBTUI_MPS_CONTROL"):
        skip = "--smoke: no MPS (set HBTUI_MPS_CONTROL to a stand-in to test the plumbing)"
    elif ctx.budget.left() < first_need:
        skip = f"budget: {first_need:.0f} s needed, {ctx.budget.left():.0f} s left"
    if skip:
        sess["skipped"] = skip
        log(f"{env_spec.name}: skipped ({sess['skipped']})")
        for pair in pairs:
            ctx.doc["results"].setdefault(pair.name, {})[scen] = {"skipped": sess["skipped"]}
        ctx.save()
        return
    try:
        if env_spec.mps:
            mps = Mps(ctx.tmp)
            mps.start()
            env.update(mps.env)
        if env_spec.policy is not None:
            life = ctx.budget.left() + 120
            extra = list(a.engine_arg or [])
            if env_spec.whole:
                extra += ["--slice-programs", "off"]
            if env_spec.noguard:
                extra += ["--harvest-guard", "0"]
            eng = Engine(env_spec.policy, a.python, env, ctx.logdir, life, extra,
                         ctx.pin_for("engine"), env_spec.name)  # fmt: skip
            if ctx.cpu is not None:
                ctx.cpu.watch("engine", eng.proc.p.pid)
            sess["engine_state_start"] = eng.wait_up(ctx.budget.cap(60))
        if env_spec.lp:
            cmd = lp_cmd(ctx, lp_out, ctx.budget.left() + 120)
            lp_env = dict(env)
            if eng is not None:
                cmd = under_hbtui(ctx, eng, "lp", LP_TASK, None, cmd, env_spec.mps)
            elif env_spec.mps and a.lp_sm_percent is not None:  # (plain MPS: the variable)
                lp_env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(a.lp_sm_percent)
            with contextlib.suppress(FileNotFoundError):
                lp_out.unlink()
            cmd = pinned(cmd, ctx.pin_for("lp"), a.python)
            lp_proc = Proc(f"lp-{env_spec.name}", cmd, lp_env, ctx.logdir)
            if ctx.cpu is not None:
                ctx.cpu.watch("lp", lp_proc.p.pid)  # (under hbtui: the launcher and the job)
            sess["lp_command"] = shlex.join(cmd)
            sess["lp_log"] = str(lp_proc.log_path)
            startup = lp_proc.wait_ready(ctx.budget.cap(a.ready_timeout))
            ctx.lp_startups.append(startup)
            sess["lp_startup_s"] = round(startup, 1)
            if eng is not None:
                st = eng.state() or {}
                lp_t = {t.get("name"): t for t in st.get("tasks") or []}.get(LP_TASK)
                att = (lp_t or {}).get("attached") or {}
                sess["lp_attached"] = att
                # no HP program attached yet: only exclusive holds LP (the others let it
                # run ungated until the HP attaches)
                want_gated = env_spec.policy == "exclusive"
                if att.get("status") != "attached" or bool(att.get("gated")) != want_gated:
                    raise StepError(f"LP not attached as expected (gated should be "
                                    f"{want_gated}): {att or 'no task ' + LP_TASK!r}",
                                    lp_proc.tail_text())  # fmt: skip
                if a.lp_slice_blocks is not None:
                    from hbtui.engine.client import ClientError

                    try:
                        with eng.client() as c:
                            got = c.set_slice(LP_TASK, blocks=a.lp_slice_blocks)
                    except ClientError as e:
                        raise StepError(f"set_slice blocks={a.lp_slice_blocks}: {e}") from None
                    sess["lp_slice_blocks"] = got.get("blocks")
            pre = a.duration if lp_alone else a.pre_window
            if pre > 0:
                t0 = time.monotonic()
                time.sleep(pre)
                windows.append(("lp-alone" if lp_alone else "pre", t0, time.monotonic()))
        for pair in pairs:
            if lp_proc is not None and not lp_proc.alive():
                raise StepError(f"the LP exited with {lp_proc.p.returncode} mid-scenario",
                                lp_proc.tail_text())  # fmt: skip
            try:
                rec = run_hp(ctx, pair, scen, env, eng, colocated=env_spec.lp)
            except BudgetExceeded as e:
                runs[pair.name] = {"skipped": f"budget: {e}"}
                log(f"{pair.name} {scen}: skipped ({e})")
                continue
            except StepError as e:
                runs[pair.name] = {"error": str(e), "tail": e.tail}
                log(f"{pair.name} {scen}: FAILED: {e}\n{e.tail}")
                continue
            except Exception as e:  # noqa: BLE001
                runs[pair.name] = {"error": f"{type(e).__name__}: {e}",
                                   "tail": traceback.format_exc()}  # fmt: skip
                log(f"{pair.name} {scen}: FAILED (bug): {traceback.format_exc()}")
                continue
            runs[pair.name] = rec
            windows.append((pair.name, *rec["window_mono"]))
            hp = rec["hp"]
            log(
                f"{pair.name} {scen}: p50 {hp['p50_ms']:.2f} ms p99 {hp['p99_ms']:.2f} ms, "
                f"attainment {hp['slo_attainment']}, unfinished {hp['unfinished']}"
            )
    except StepError as e:
        sess["errors"].append({"error": str(e), "tail": e.tail})
        log(f"{env_spec.name}: FAILED: {e}\n{e.tail}")
    except Exception as e:  # noqa: BLE001 - a bug here must not lose the other scenarios
        sess["errors"].append({"error": f"{type(e).__name__}: {e}",
                               "tail": traceback.format_exc()})  # fmt: skip
        log(f"{env_spec.name}: FAILED (bug): {traceback.format_exc()}")
    except BaseException:  # interrupted: clean up and keep what was measured, then go on up
        sess["errors"].append({"error": "interrupted"})
        raise
    finally:
        lp_res = _end_session(sess, lp_proc, lp_out, eng, mps)
        _record_session(ctx, sess, scen, pairs, runs, windows, lp_res)


def _end_session(sess: dict[str, Any], lp_proc: Proc | None, lp_out: Path,
                 eng: Engine | None, mps: Mps | None) -> dict[str, Any] | None:  # fmt: skip
    """Stop the LP, then the engine, then MPS (each step even if one before failed)."""
    lp_res = None
    if lp_proc is not None:
        try:
            rc = lp_proc.stop(60)
            sess["lp_rc"] = rc
            try:
                lp_res = json.loads(lp_out.read_text())
            except (OSError, ValueError) as e:
                sess["errors"].append({"error": f"LP wrote no result ({e}); rc {rc}",
                                       "tail": lp_proc.tail_text()})  # fmt: skip
        except Exception as e:  # noqa: BLE001
            sess["errors"].append({"error": f"stopping the LP: {type(e).__name__}: {e}"})
    if eng is not None:
        try:
            sess["engine"] = eng.stop()
        except Exception as e:  # noqa: BLE001
            sess["errors"].append({"error": f"stopping the engine: {type(e).__name__}: {e}"})
    if mps is not None:
        try:
            problem = mps.stop()
            sess["mps_log_tail"] = mps.log_tail()[-3000:]
            if problem:
                sess["errors"].append({"error": problem})
        except Exception as e:  # noqa: BLE001
            sess["errors"].append({"error": f"stopping MPS: {type(e).__name__}: {e}"})
    return lp_res


def _record_session(ctx: Ctx, sess: dict[str, Any], scen: str, pairs: list[Pair],
                    runs: dict[str, dict[str, Any]], windows: list[tuple[str, float, float]],
                    lp_res: dict[str, Any] | None) -> None:  # fmt: skip
    """The LP's rate in each window, and every pair's record of this scenario."""
    if lp_res is not None:
        sess["lp"] = {k: v for k, v in lp_res.items() if k != "iter_end_mono"}
    for what, w0, w1 in windows:
        fig = lp_figures(ctx, lp_res, w0, w1)
        if ctx.nvml is not None:
            fig["gpu_util_nvml"] = ctx.nvml.mean(w0, w1)
        if what in ("lp-alone", "pre"):
            sess[what] = fig
            if what == "lp-alone" and fig.get("it_per_s"):
                ctx.lp_alone = fig
                ctx.doc["lp_alone"] = fig
        else:
            runs[what]["lp"] = fig
    first = sess["errors"][0]["error"] if sess["errors"] else "?"
    for pair in pairs:
        r = runs.get(pair.name) or {"error": f"not run: the scenario failed before it: {first}"}
        if sess["errors"] and "hp" in r and r.get("lp", {}).get("it_per_s") is None:
            r.setdefault("warnings", []).append(f"LP figures missing: {first}")
        ctx.doc["results"].setdefault(pair.name, {})[scen] = r
    ctx.save()


# -- analysis ---------------------------------------------------------------------------------
def analyse(ctx: Ctx, pairs: list[Pair], scenarios: list[str]) -> list[dict[str, Any]]:
    """One row per pair and scenario with the derived figures (also stored in each record)."""
    rows = []
    lp_alone = (ctx.lp_alone or {}).get("it_per_s")
    for pair in pairs:
        base = ctx.baselines.get(pair.name)
        res = ctx.doc["results"].get(pair.name, {})
        ceiling = None
        if lp_alone and base and base.get("gpu_idle_fraction") is not None:
            ceiling = lp_alone * base["gpu_idle_fraction"]
            base["lp_ceiling_it_s"] = ceiling
        for scen in ["hp-alone", *run_order(scenarios)]:
            if scen not in scenarios and not (scen == "hp-alone" and base):
                continue
            rec = res.get(scen)
            row: dict[str, Any] = {"pair": pair.name, "scenario": scen}
            if rec is None:
                if scen == "hp-alone" and base:
                    row.update(
                        note="from --from",
                        hp_p50_ms=base["p50_ms"],
                        hp_p99_ms=base["p99_ms"],
                        slo_attainment=base["slo_attainment"],
                    )
                    rows.append(row)
                continue
            if "hp" not in rec:
                if rec.get("skipped"):
                    row["note"] = f"skipped ({rec['skipped']})"
                else:
                    row["note"] = f"FAILED: {rec.get('error')}"
                rows.append(row)
                continue
            hp = rec["hp"]
            row.update(hp_p50_ms=hp["p50_ms"], hp_p99_ms=hp["p99_ms"],
                       slo_attainment=hp["slo_attainment"], service_p50_ms=hp["service_p50_ms"],
                       unfinished=hp["unfinished"], count=hp["count"],
                       hp_host_part_ms=hp.get("host_part_p50_ms"),
                       hp_sync_ms=hp.get("sync_p50_ms"))  # fmt: skip
            lp = rec.get("lp") or {}
            it = lp.get("it_per_s")
            row["lp_it_s"] = it
            if it is not None and lp_alone:
                row["lp_frac_alone"] = it / lp_alone
            if it is not None and ceiling:
                row["lp_frac_ceiling"] = it / ceiling
            nv = rec.get("gpu_util_nvml")
            row["gpu_util_pct"] = nv["mean_pct"] if nv else None
            cpu = rec.get("cpu_busy")
            row["cpu_busy_pct"] = cpu * 100 if cpu is not None else None
            row["cpus_used"] = rec.get("cpus_used") or None
            win = rec.get("engine_lp_window") or {}
            a, b = win.get("start") or {}, win.get("end") or {}
            wa, wb = (
                (a.get("attached") or {}).get("waited"),
                (b.get("attached") or {}).get("waited"),
            )
            if wa and wb and b["at_mono"] > a["at_mono"]:  # LP threads' time waiting for grants
                row["lp_wait_share"] = (wb[1] - wa[1]) / (b["at_mono"] - a["at_mono"])
            guard = (rec.get("engine_hp") or {}).get("attached") or {}  # the harvest guard
            row["harvest_cost"] = guard.get("harvest_cost")
            row["harvest_held_off"] = guard.get("harvest_held_off")
            row["lp_bubbles_per_request"] = guard.get("lp_bubbles_per_request")
            row["lp_bubble_cost_us"] = guard.get("lp_bubble_cost_us")
            host = hp.get("host_per_request") or {}
            row["hp_on_cpu_ms"] = host.get("on_cpu_ms")
            row["hp_runqueue_ms"] = host.get("runqueue_ms")
            pre = preemption(hp.get("probe_wait_us"), (base or {}).get("probe_median_us"))
            if pre is not None:
                row["preemption_us"] = pre
            eng_st = (rec.get("engine_state_mid") or {}).get("tasks") or []
            lp_att = {t.get("name"): t for t in eng_st}.get(LP_TASK, {}).get("attached") or {}
            if lp_att:
                row["lp_sliced_share"] = lp_att.get("sliced_share")
                row["lp_sliceable_share"] = lp_att.get("sliceable_share")
            if base and scen != "hp-alone":
                row["p99_vs_alone"] = hp["p99_ms"] / base["p99_ms"] if base["p99_ms"] else None
                if hp["slo_attainment"] is not None and base["slo_attainment"] is not None:
                    row["attainment_delta_pts"] = 100 * (hp["slo_attainment"]
                                                         - base["slo_attainment"])  # fmt: skip
            eh = rec.get("engine_hp") or {}
            if eh:
                row["engine_hp"] = {k: eh.get(k) for k in ("requests", "slo_attainment",
                                    "p50_ms", "p99_ms", "preemption_us")}  # fmt: skip
            if "engine_lp_kernels_per_s" in rec:
                row["engine_lp_kernels_per_s"] = rec["engine_lp_kernels_per_s"]
            warn = list(rec.get("warnings") or []) + ([lp["warning"]] if "warning" in lp else [])
            if hp.get("unfinished"):
                warn.append(f"{hp['unfinished']} unfinished at the drain limit (p99 is a "
                            "lower bound)")  # fmt: skip
            if warn:
                row["note"] = "; ".join(warn)
            rec["derived"] = {k: v for k, v in row.items() if k not in ("pair", "scenario")}
            rows.append(row)
    return rows


def done_when(ctx: Ctx, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's "done when" checks that these results can decide."""
    by = {(r["pair"], r["scenario"]): r for r in rows}
    checks = []

    def add(what: str, ok: bool | None, detail: str) -> None:
        checks.append({"check": what, "ok": ok, "detail": detail})

    for pname, base in ctx.baselines.items():
        hb = by.get((pname, "hbtui-hummingbird"))
        if hb and hb.get("hp_p99_ms") is not None:
            att, batt = hb.get("slo_attainment"), base.get("slo_attainment")
            if att is not None and batt is not None:
                add(
                    f"{pname} hummingbird attainment >= alone - 1 pt",
                    att >= batt - 0.01,
                    f"{100 * att:.2f} % vs alone {100 * batt:.2f} %",
                )
            ratio = hb["hp_p99_ms"] / base["p99_ms"]
            add(
                f"{pname} hummingbird p99 <= 1.10 x alone",
                ratio <= 1.10,
                f"{hb['hp_p99_ms']:.2f} ms = {ratio:.2f} x alone {base['p99_ms']:.2f} ms",
            )
        if pname.startswith("graph") and hb and hb.get("lp_frac_alone") is not None:
            add(
                f"{pname} hummingbird LP >= 40 % of alone",
                hb["lp_frac_alone"] >= 0.40,
                f"{100 * hb['lp_frac_alone']:.1f} %",
            )
        tp = by.get((pname, "hbtui-temporal"))
        if (
            pname.startswith("eager")
            and hb
            and tp
            and None not in (hb.get("lp_it_s"), tp.get("lp_it_s"))
        ):
            add(
                f"{pname} hummingbird LP >= temporal LP",
                hb["lp_it_s"] >= tp["lp_it_s"],
                f"{hb['lp_it_s']:.2f} vs {tp['lp_it_s']:.2f} it/s",
            )
    return checks


def fmt(v: Any, spec: str = ".2f", scale: float = 1.0) -> str:
    if v is None:
        return "-"
    try:
        return format(v * scale, spec)
    except (TypeError, ValueError):
        return str(v)


def table(rows: list[dict[str, Any]], lp_alone: dict[str, Any] | None) -> str:
    head = ["pair", "scenario", "p50 ms", "p99 ms", "att %", "svc p50", "host/sync", "LP it/s",
            "LP/alone", "LP/ceil", "GPU %", "CPU %", "HP cpu/runq ms", "pre p50/p99/max us",
            "sliced", "note"]  # fmt: skip
    lines = [head]
    for r in rows:
        pre = r.get("preemption_us") or {}
        pre_s = "/".join(fmt(pre.get(k), ".0f") for k in ("p50", "p99", "max")) if pre else "-"
        lines.append([r["pair"], r["scenario"], fmt(r.get("hp_p50_ms")), fmt(r.get("hp_p99_ms")),
                      fmt(r.get("slo_attainment"), ".1f", 100), fmt(r.get("service_p50_ms")),
                      f"{fmt(r.get('hp_host_part_ms'), '.1f')}/{fmt(r.get('hp_sync_ms'), '.1f')}",
                      fmt(r.get("lp_it_s")), fmt(r.get("lp_frac_alone"), ".0%"),
                      fmt(r.get("lp_frac_ceiling"), ".0%"), fmt(r.get("gpu_util_pct"), ".0f"),
                      fmt(r.get("cpu_busy_pct"), ".0f"),
                      f"{fmt(r.get('hp_on_cpu_ms'), '.1f')}/{fmt(r.get('hp_runqueue_ms'), '.2f')}",
                      pre_s, fmt(r.get("lp_sliced_share"), ".0%"),
                      (r.get("note") or "")[:70]])  # fmt: skip
    w = [max(len(x[i]) for x in lines) for i in range(len(head) - 1)]
    out = ["  ".join(c.ljust(w[i]) for i, c in enumerate(x[:-1])) + "  " + x[-1] for x in lines]
    out.insert(1, "-" * len(out[0]))
    for r in rows:
        if r.get("cpus_used"):
            used = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpus_used"].items()))
            out.append(f"{r['pair']} {r['scenario']}: CPUs used in the window: {used}")
        if r.get("lp_wait_share") is not None:
            out.append(f"{r['pair']} {r['scenario']}: LP threads waited for grants "
                       f"{r['lp_wait_share']:.0%} of the window")  # fmt: skip
        if r.get("harvest_cost") is not None:
            held = ", LP held off its requests at the end" if r.get("harvest_held_off") else ""
            g = r.get("lp_bubbles_per_request")
            held += f", LP in {g:.1f} bubbles of each request" if g is not None else ""
            c = r.get("lp_bubble_cost_us")
            held += f", each {c:+.0f} us to the HP's next kernel" if c is not None else ""
            out.append(f"{r['pair']} {r['scenario']}: the engine measured LP in HP requests "
                       f"costing the HP {(r['harvest_cost'] - 1) * 100:+.1f} %{held}")  # fmt: skip
    if lp_alone:
        out.append(
            f"LP alone: {fmt(lp_alone.get('it_per_s'))} it/s "
            f"({lp_alone.get('iterations')} it in {fmt(lp_alone.get('window_s'), '.1f')} s)"
        )
    return "\n".join(out)


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="real_programs.py",
        description="HP service + LP training under plain, MPS and hbtui sharing "
                    "(docs/benchmarks/real-programs.md)",
    )  # fmt: skip
    ap.add_argument("--pairs", type=parse_pairs, default=None, help=f"({DEFAULT_PAIRS})")
    ap.add_argument("--scenarios", type=parse_scenarios, default=None,
                    help=f"({DEFAULT_SCENARIOS}); also hp-hbtui[+mps], "
                         "hbtui-POLICY+mps")  # fmt: skip
    ap.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of HP arrivals per run = the measured window (10; smoke 3)",
    )
    ap.add_argument(
        "--drain",
        type=float,
        default=None,
        help="max seconds to drain the HP queue after the window (4; smoke 2)",
    )
    ap.add_argument("--pre-window", type=float, default=None,
                    help="LP-alone seconds in each co-located scenario before its first HP "
                         "(LP rate in that environment; 2; smoke 1; 0: none)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1, help="arrival seed (same in every scenario)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run; steps that no longer fit are skipped "
                         "(540: under the lent machine's 10-minute command limit)")  # fmt: skip
    ap.add_argument(
        "--ready-timeout",
        type=float,
        default=240.0,
        help="max seconds for a program to build its model and warm up",
    )
    ap.add_argument("--profile-requests", type=int, default=3,
                    help="hp-alone: requests profiled after the window for GPU busy time "
                         "(0: none; the GPU-idle figure then comes from NVML)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run each co-located scenario N times (NAME, NAME-r2, ...): the "
                         "eager service varies by ~20 %% from process to process")  # fmt: skip
    ap.add_argument("--lp-sm-percent", type=int, default=None, metavar="N",
                    help="MPS scenarios: the LP runs on at most N %% of the SMs (`hbtui run "
                         "--sm-percent`; plain MPS: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), the "
                         "rest left free for the HP's kernels")  # fmt: skip
    ap.add_argument("--lp-slice-blocks", type=int, default=None, metavar="N",
                    help="hbtui scenarios: once the LP attached, set every slice of its "
                         "sliced kernels to exactly N blocks (set_slice blocks; below a "
                         "wave too), for the eager service's short host gaps")  # fmt: skip
    ap.add_argument("--pin", action="store_true",
                    help="pin the HP's process tree to whole physical cores of its own (a "
                         "quarter) and the engine, the LP and MPS to the rest")  # fmt: skip
    ap.add_argument("--markers", action="store_true",
                    help="the HP marks requests with hbtui.request() (else the engine infers "
                         "them from bursts)")  # fmt: skip
    ap.add_argument("--hp-idle-ms", type=float, default=None, help="hbtui run --idle-ms for HP")
    ap.add_argument("--hp-arg", action="append", help="extra hp_service argument (repeatable)")
    ap.add_argument("--lp-arg", action="append", help="extra lp_train argument (repeatable)")
    ap.add_argument("--engine-arg", action="append", help="extra hbtui engine argument")
    ap.add_argument(
        "--from",
        dest="from_json",
        default=None,
        help="reuse hp-alone baselines and LP-alone from an earlier run's JSON",
    )
    ap.add_argument("--device-index", type=int, default=0, help="NVML device index")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the children")
    ap.add_argument("--out", default=None, help="result JSON (default real-programs-DATE.json)")
    ap.add_argument("--logs", default=None, help="log directory (default OUT-logs/)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU plumbing test: tiny models on cpu, no MPS, engine scenarios "
                         "with CPU programs (nothing to gate)")  # fmt: skip
    a = ap.parse_args(argv)
    a.pairs = a.pairs or parse_pairs(DEFAULT_PAIRS)
    a.scenarios = a.scenarios or parse_scenarios(DEFAULT_SCENARIOS)
    if not 1 <= a.repeat <= 9:
        ap.error("--repeat: 1 to 9")
    if a.lp_sm_percent is not None and not 1 <= a.lp_sm_percent <= 100:
        ap.error("--lp-sm-percent: 1 to 100")
    if a.lp_slice_blocks is not None and not 1 <= a.lp_slice_blocks < 2**31:
        ap.error("--lp-slice-blocks: a whole number of blocks, 1 or more")
    a.scenarios = with_repeats(a.scenarios, a.repeat)
    defaults = {"duration": (10.0, 3.0), "drain": (4.0, 2.0), "pre_window": (2.0, 1.0),
                "budget": (540.0, 600.0)}  # fmt: skip
    for k, (gpu, smoke) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, smoke if a.smoke else gpu)
    if a.duration <= 0 or a.drain < 0 or a.pre_window < 0 or a.budget <= 0:
        ap.error("--duration and --budget must be > 0, --drain and --pre-window >= 0")
    if a.out is None:
        a.out = f"real-programs-{datetime.date.today().isoformat()}.json"
    return a


def estimate_s(a: argparse.Namespace, hp_start: float = 18.0, lp_start: float = 18.0) -> float:
    """A rough run time: start-ups (model build, warm-up) + windows + drains."""
    n = len(a.pairs)
    t = 0.0
    if "hp-alone" in a.scenarios:
        t += n * (hp_start + a.duration + 2 + 1)
    co = run_order(a.scenarios)
    if "lp-alone" in a.scenarios and "plain" not in co:
        t += lp_start + a.duration
    for scen in co:
        e = env_of(scen)
        t += (lp_start if e.lp else 0) + (3 if e.policy else 0) + (2 if e.mps else 0)
        t += a.duration if scen == "plain" and "lp-alone" in a.scenarios else a.pre_window
        t += n * (hp_start + a.duration + (0.5 * a.drain if e.lp else 1) + (2 if e.policy else 0))
    return t + 10


def load_from(ctx: Ctx, path: str) -> None:
    try:
        prev = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"real_programs: error: --from {path}: {e}") from None
    for name, b in (prev.get("baselines") or {}).items():
        ctx.baselines[name] = b
        ctx.doc["baselines"][name] = b
    if prev.get("lp_alone"):
        ctx.lp_alone = prev["lp_alone"]
        ctx.doc["lp_alone"] = prev["lp_alone"]
    ctx.doc["from"] = {
        "path": path,
        "commit": prev.get("commit"),
        "date": prev.get("date"),
        "baselines": sorted(ctx.baselines),
        "lp_alone": bool(ctx.lp_alone),
    }
    log(
        f"--from {path}: baselines for {sorted(ctx.baselines) or 'none'}, LP alone "
        f"{'yes' if ctx.lp_alone else 'no'}"
    )


def preflight(a: argparse.Namespace) -> list[str]:
    """Problems found before anything starts (each one line)."""
    probs = []
    for f in (HP_APP, LP_APP):
        if not f.exists():
            probs.append(f"missing {f}")
    needs_engine = any(s.startswith(("hbtui-", "hp-hbtui")) for s in a.scenarios)
    if needs_engine:
        r = subprocess.run([a.python, "-c", "import zmq, msgpack, hbtui.engine.client"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep
                                + os.environ.get("PYTHONPATH", "")})  # fmt: skip
        if r.returncode != 0:
            probs.append("hbtui scenarios need pyzmq + msgpack importable by "
                         f"{a.python}: {r.stderr.strip().splitlines()[-1:]}")  # fmt: skip
        if not shutil.which("cc") and not shutil.which("gcc"):
            probs.append("hbtui run needs a C compiler (cc) to build its interceptor")
    if not a.smoke:
        r = subprocess.run([a.python, "-c", "import torch, sys; sys.exit(0 if "
                            "torch.cuda.is_available() else 3)"], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        if r.returncode != 0:
            probs.append(
                f"{a.python}: torch with a usable CUDA GPU is needed (rc "
                f"{r.returncode}: {r.stderr.strip()[-300:]}); or pass --smoke"
            )
    return probs


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = Path(a.out).resolve()
    logdir = Path(a.logs).resolve() if a.logs else out.with_name(out.stem + "-logs")
    logdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="hbrp-"))
    g = harness.git_commit()
    doc: dict[str, Any] = {
        "schema": 1,
        "benchmark": "real-programs",
        "commit": g["commit"],
        "commit_dirty": g["dirty"],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": harness.command(),
        "argv": sys.argv,
        "machine": harness.machine(),
        "smoke": a.smoke,
        "settings": {k: v for k, v in vars(a).items() if k not in ("pairs", "scenarios")}
        | {"pairs": [p.name for p in a.pairs], "scenarios": a.scenarios},
        "baselines": {},
        "lp_alone": None,
        "results": {},
        "sessions": [],
        "logs": str(logdir),
    }
    budget = Budget(a.budget)
    nvml = None if a.smoke else Nvml(a.device_index)
    if nvml is not None:
        doc["machine"]["nvml_gpu"] = nvml.name
        if nvml.error:
            doc["machine"]["nvml_error"] = nvml.error
            log(f"NVML unavailable ({nvml.error}): no GPU utilisation figures")
    ctx = Ctx(a, budget, logdir, tmp, logdir, out, doc, nvml, cpu=CpuBusy())
    if a.pin:
        ctx.pin = cpu_split()
        doc["pin"] = {"hp": ctx.pin[0], "others": ctx.pin[1]}
        os.sched_setaffinity(0, ctx.pin[1])  # (what this starts unwrapped, MPS too, inherits it)
        log(f"pinned: HP on CPUs {ctx.pin[0]}, engine/LP/MPS on {ctx.pin[1]}")
    if a.from_json:
        load_from(ctx, a.from_json)

    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)
    rc = 0
    try:
        probs = preflight(a)
        if probs:
            for p in probs:
                log(f"preflight: {p}")
            doc["preflight"] = probs
            ctx.save()
            if any("torch with a usable CUDA" in p or "missing" in p for p in probs):
                return 2
            if any("hbtui scenarios" in p or "C compiler" in p for p in probs):
                for s in [s for s in a.scenarios if s.startswith(("hbtui-", "hp-hbtui"))]:
                    a.scenarios.remove(s)
                    for pair in a.pairs:
                        doc["results"].setdefault(pair.name, {})[s] = {
                            "error": "not run: " + "; ".join(probs)
                        }
        est = estimate_s(a)
        doc["estimate_s"] = round(est)
        log(
            f"pairs {[p.name for p in a.pairs]}, scenarios {a.scenarios}, window "
            f"{a.duration:g} s, budget {a.budget:g} s, estimate ~{est:.0f} s; logs in {logdir}"
        )
        if est > a.budget:
            log(
                f"warning: the estimate exceeds --budget {a.budget:g} s: the last steps (mps "
                "first) will be skipped; split the run (docs/benchmarks/real-programs.md)"
            )
        if "hp-alone" in a.scenarios:
            run_hp_alone(ctx, a.pairs)
        co = run_order(a.scenarios)
        if "lp-alone" in a.scenarios:  # lp-alone is the first window of the plain LP process
            plain = "plain" in co
            run_session(ctx, Env("plain" if plain else "lp-alone", None, False), a.pairs
                        if plain else [], lp_alone=True)  # fmt: skip
            co = [s for s in co if s != "plain"]
        for scen in co:
            run_session(ctx, env_of(scen), a.pairs, lp_alone=False)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}): cleaning up, writing what was measured")
        doc["interrupted"] = str(e) or "KeyboardInterrupt"
        rc = 130
    finally:
        kill_all()
        if nvml is not None:
            nvml.close()
        if ctx.cpu is not None:
            ctx.cpu.close()
        rows = analyse(ctx, a.pairs, a.scenarios)
        doc["table"] = rows
        doc["done_when"] = done_when(ctx, rows)
        gpu_names = {r.get("hp", {}).get("device_name") for res in doc["results"].values()
                     for r in res.values() if isinstance(r, dict)} - {None}  # fmt: skip
        doc["machine"]["gpu_from_torch"] = sorted(gpu_names)
        ctx.save()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows, ctx.lp_alone))
    for sess in doc["sessions"]:
        pre = sess.get("pre") or sess.get("lp-alone") or {}
        if pre.get("it_per_s") is not None:
            print(f"LP alone inside {sess['scenario']}: {pre['it_per_s']:.2f} it/s "
                  f"(before its first HP run)")  # fmt: skip
    for c in doc["done_when"]:
        print(f"{'PASS' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    n_err = sum(1 for res in doc["results"].values() for r in res.values()
                if isinstance(r, dict) and "error" in r)  # fmt: skip
    n_err += sum(len(s.get("errors", [])) for s in doc["sessions"])
    print(f"wrote {out} ({budget.elapsed():.0f} s, {n_err} errors; logs in {logdir})")
    return rc or (1 if n_err else 0)


if __name__ == "__main__":
    sys.exit(main())
