"""HP service alone vs under ``hbtui run --hp``: a closed-loop, CPU-pinned, interleaved A/B
built to decide issue 15's "HP-alone latency under hbtui run within 2 % of without"
(docs/benchmarks/real-programs.md has the open-loop runs this replaces for the eager,
host-bound service, whose run-to-run noise was larger than 2 %).

Design (what each piece removes):

- **Closed loop** (``hp_service.py --closed``): requests back to back, no arrival process
  and no queue, so a request's figure is its service time alone.
- **Resident processes, alternating blocks.** A *round* starts, at the same time and with
  the same arguments and seed, one plain service (``alone``), one under ``hbtui run --hp``
  attached to a headless ``hummingbird`` engine (``hbtui``) and, with ``--null`` (the
  default), a second plain one (``alone2``). Each waits on stdin (``--gate``); the
  orchestrator then lets one at a time serve a block (``--block-warmup`` unmeasured, then
  ``--requests`` measured requests). A *cycle* is one block of each, in an order that
  runs through every permutation (``alone,hbtui`` then ``hbtui,alone``; with ``alone2``
  the 6 orders of 3), so slow drift of the machine falls on both sides alike and the
  blocks being compared are seconds apart. Fresh processes per round expose what differs
  between two processes of the same program (memory layout, allocator, which CPU), which
  no number of blocks inside one process would show.
- **The null comparison** ``alone2 / alone`` is two plain processes measured the same
  way: its spread is the resolution of this set-up. A 2 % claim needs the ``hbtui``
  ratio's interval inside 2 % *and* a null interval narrower than that.
- **In one process** (``--quiet-ab``, on by default): the ``hbtui`` process's blocks
  alternate quiet requests (``hbtui_set_quiet``: the interceptor passes every call
  straight through, as outside ``hbtui run``) with observed ones; ``hbtui/quiet`` is the
  ratio of their block medians. It carries no difference between processes (the null
  above is ±20 % for the eager service on the lent VMs) and leaves out only the
  pass-through call itself (a function-pointer hop per call) and the launcher process.
- **Where the in-process cost goes** (``--diag N``, with ``--no-alone`` to skip the plain
  process): the ``hbtui`` process's interceptor is built with ``-DHB_DIAG=N``, which takes
  one part of observing an HP launch out (1: the launch record, 2: the engine reading
  them, the records going to a private ring instead, 3: the completion writes); the
  in-process figure of each build against the normal one's says what that part costs.
- **CPU pinning**: every service process pins itself to the same ``--svc-cpus`` (whole
  physical cores, chosen from the top of the allowed set by default) before torch
  starts; this orchestrator, the engine and the ``hbtui run`` launchers run on
  ``--host-cpus`` (other whole cores); torch intra-op threads are fixed (``--threads``,
  also ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``).

Figures: per block the median (and mean) service time; per cycle the paired ratios of
block medians ``hbtui/alones`` (the primary figure: the ``hbtui`` block over the
geometric mean of the two plain blocks of the cycle; ``hbtui/alone`` without ``--null``),
``hbtui/alone``, ``hbtui/alone2`` and the null ``alone2/alone``; per round the median over
its cycles; per mode the median over every cycle of every round with a 95 % interval
from a two-level bootstrap (rounds resampled, then cycles within each), the per-round
min/max, and the verdict: PASS when the interval's upper end is <= 1 + ``--limit``
(0.02), FAIL when its lower end is above it, else UNDECIDED. The set-up *resolves* the
limit when the null's interval lies within 1 +- limit. The engine's view of the
``hbtui`` process (attached, launches seen per request) is recorded as a check that the
interceptor really observed it.

Every child has a timeout and the run a budget (``--budget``, default 540 s: one lent
machine's 10-minute command, model builds included); rounds alternate between modes
(eager r1, graph r1, eager r2, ...) so a budget cut keeps both modes; a round that no
longer fits is skipped and recorded, a round cut short keeps its complete cycles. The
JSON (``--out``) is rewritten after every round.

    python3 benchmarks/hp_overhead_ab.py --out docs/benchmarks/h200-hp-overhead-ab.json
    python3 benchmarks/hp_overhead_ab.py --smoke --out /tmp/ab-smoke.json   # CPU plumbing
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import queue
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import harness  # puts the repository root on sys.path
from apps.hp_service import parse_cpus, pct  # (stdlib only at import)
from harness import Proc, StepError, kill_all, log

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HP_APP = HERE / "apps" / "hp_service.py"
PROGRAMS_TOML = ROOT / "hbtui" / "profiles" / "programs.toml"

MODES = ("eager", "graph")
ALONE, HBTUI, ALONE2 = "alone", "hbtui", "alone2"
PRIMARY = "hbtui/alones"  # hbtui over the geometric mean of alone and alone2
# hbtui/quiet: inside the hbtui process, its observed requests over its quiet ones
# (--quiet-ab: the interceptor passing straight through), blocks' medians
IN_PROCESS = "hbtui/quiet"
RATIO_KEYS = (PRIMARY, "hbtui/alone", "hbtui/alone2", "alone2/alone", IN_PROCESS)
# measured requests per block, unmeasured at each block's start, a first guess at the
# service time (ms) for the budget before anything is measured
MODE_DEFAULTS = {"eager": (40, 3, 45.0), "graph": (200, 10, 8.0)}
SMOKE_DEFAULTS = {"eager": (6, 1, 5.0), "graph": (6, 1, 5.0)}
# the same tiny CPU model as real_programs.py's SMOKE_HP
SMOKE_HP = ["--device", "cpu", "--layers", "1", "--hidden", "64", "--intermediate", "128",
            "--heads", "4", "--vocab", "1000", "--seq", "16", "--prefill", "8",
            "--dtype", "fp32", "--warmup-requests", "2"]  # fmt: skip
END_RESERVE_S = 20.0  # kept for teardown (quit, engine stop, JSON) at the end of the budget


# -- pure helpers (tested without a GPU or torch) ----------------------------------------------
def cpu_list(cpus: list[int]) -> str:
    """[4, 5, 6, 7, 9] -> ``"4-7,9"``."""
    out, run = [], []
    for c in sorted(set(cpus)):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def cpu_cores(cpus: list[int], sysfs: Path = Path("/sys/devices/system/cpu")) -> list[list[int]]:
    """The allowed CPUs grouped by physical core (hyperthread siblings together), in CPU
    order; one group per CPU where the topology cannot be read."""
    groups: dict[tuple[int, int], list[int]] = {}
    for c in sorted(cpus):
        try:
            topo = sysfs / f"cpu{c}" / "topology"
            key = (int((topo / "physical_package_id").read_text()),
                   int((topo / "core_id").read_text()))  # fmt: skip
        except (OSError, ValueError):
            key = (-1, c)
        groups.setdefault(key, []).append(c)
    return sorted(groups.values(), key=lambda g: g[0])


def choose_cpus(cores: list[list[int]], svc_n: int, host_n: int) -> tuple[list[int], list[int]]:
    """Service CPUs: whole cores from the top until at least ``svc_n`` CPUs; host CPUs:
    whole cores from the bottom until ``host_n``, never a core of the service. With a
    single core both get it (no isolation possible; recorded as such)."""
    if len(cores) < 2:
        every = [c for g in cores for c in g]
        return every, every
    svc: list[int] = []
    rest = list(cores)
    while rest and len(svc) < svc_n and len(rest) > 1:
        svc = rest.pop() + svc
    host: list[int] = []
    while rest and len(host) < host_n:
        host += rest.pop(0)
    return sorted(svc), sorted(host)


def cycle_orders(conds: list[str], cycles: int, round_index: int) -> list[tuple[str, ...]]:
    """The block order of each cycle of a round: through every permutation of ``conds``,
    starting at a different one in each round."""
    perms = list(itertools.permutations(conds))
    return [perms[(c + round_index) % len(perms)] for c in range(cycles)]


def bootstrap_ci(groups: list[list[float]], n: int, seed: int,
                 level: float = 0.95) -> tuple[float, float] | None:  # fmt: skip
    """Interval of the median of all values by a two-level bootstrap: groups (rounds)
    resampled with replacement, then values (cycles) within each chosen group."""
    groups = [g for g in groups if g]
    if not groups or n <= 0:
        return None
    rng = random.Random(f"hp-overhead-ab-{seed}")
    meds = []
    for _ in range(n):
        vals: list[float] = []
        for _g in groups:
            g = groups[rng.randrange(len(groups))]
            vals.extend(g[rng.randrange(len(g))] for _ in g)
        meds.append(statistics.median(vals))
    lo = pct(meds, 100 * (1 - level) / 2)
    hi = pct(meds, 100 * (1 + level) / 2)
    assert lo is not None and hi is not None
    return lo, hi


def verdict(ci: tuple[float, float] | None, limit: float) -> str:
    """PASS: the interval lies at or below 1 + limit; FAIL: entirely above; else UNDECIDED."""
    if ci is None:
        return "NO DATA"
    if ci[1] <= 1 + limit:
        return "PASS"
    if ci[0] > 1 + limit:
        return "FAIL"
    return "UNDECIDED"


def ratio_stats(groups: list[list[float]], boot: int, seed: int) -> dict[str, Any] | None:
    """Median, bootstrap interval, min/max, per-group medians of paired ratios."""
    every = [x for g in groups for x in g]
    if not every:
        return None
    ci = bootstrap_ci(groups, boot, seed)
    per_group = [statistics.median(g) for g in groups if g]
    return {
        "median": statistics.median(every),
        "ci95": list(ci) if ci else None,
        "min": min(every),
        "max": max(every),
        "above_1": sum(1 for x in every if x > 1),
        "n": len(every),
        "round_medians": per_group,
        "round_min": min(per_group),
        "round_max": max(per_group),
    }


def summarise(rounds: list[dict[str, Any]], mode: str, limit: float, boot: int,
              seed: int) -> dict[str, Any]:  # fmt: skip
    """The per-mode summary from the rounds' cycles (complete cycles only)."""
    rs = [r for r in rounds if r["mode"] == mode and r.get("cycles")]
    out: dict[str, Any] = {"mode": mode, "rounds": len(rs),
                           "cycles": sum(len(r["cycles"]) for r in rs)}  # fmt: skip
    for key in RATIO_KEYS:
        for stat in ("median", "mean"):
            groups = [[c["ratios"][stat][key] for c in r["cycles"] if key in c["ratios"][stat]]
                      for r in rs]  # fmt: skip
            st = ratio_stats(groups, boot, seed)
            if st is not None:
                out.setdefault("ratios", {}).setdefault(stat, {})[key] = st
    for cond in (ALONE, HBTUI, ALONE2):
        every = [x for r in rs for c in r["cycles"] if cond in c["blocks"]
                 for x in c["blocks"][cond]["service_ms"]]  # fmt: skip
        if every:
            out.setdefault("service_ms", {})[cond] = {
                "p50": pct(every, 50), "p90": pct(every, 90),
                "p99": pct(every, 99), "mean": statistics.fmean(every),
                "n": len(every),
            }  # fmt: skip
    own = [(c["blocks"][HBTUI]["self_median_us"], c["blocks"][HBTUI]["self_launches_median"],
            c["blocks"][HBTUI].get("quiet_median_ms") or c["blocks"][HBTUI]["median_ms"])
           for r in rs for c in r["cycles"]
           if "self_median_us" in c["blocks"].get(HBTUI, {})]  # fmt: skip
    if own:  # --self-time: the interceptor's own time per observed request
        out["self_time"] = {
            "per_request_us": statistics.median(o[0] for o in own),
            "launches_per_request": statistics.median(o[1] for o in own),
            "ns_per_launch": statistics.median([o[0] * 1e3 / o[1] for o in own if o[1]] or [0]),
            # of a quiet request (--no-quiet-ab: of an observed one)
            "share_of_quiet_request": statistics.median(o[0] / 1e3 / o[2] for o in own),
            "blocks": len(own),
        }
    med = (out.get("ratios") or {}).get("median") or {}
    out["primary"] = PRIMARY if PRIMARY in med else "hbtui/alone"
    prim, null = med.get(out["primary"]), med.get("alone2/alone")
    ci = tuple(prim["ci95"]) if prim and prim["ci95"] else None
    out["verdict"] = verdict(ci, limit)  # type: ignore[arg-type]
    inp = med.get(IN_PROCESS)
    if inp and inp["ci95"]:
        out["in_process_verdict"] = verdict(tuple(inp["ci95"]), limit)  # type: ignore[arg-type]
    out["limit"] = limit
    if null and null["ci95"]:
        lo, hi = null["ci95"]
        out["resolves_limit"] = 1 - limit <= lo and hi <= 1 + limit
    return out


# -- processes ------------------------------------------------------------------------------
class Child(Proc):
    """A service process (maybe under ``hbtui run``) whose stdin is a pipe (``go`` / end of
    input) and whose stdout says ``ready`` and, per block served, ``block {json}``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], logdir: Path) -> None:
        self.blocks: queue.Queue[dict[str, Any]] = queue.Queue()  # (before the reader runs)
        super().__init__(name, cmd, env, logdir, stdin_pipe=True)

    def on_line(self, s: str) -> None:
        if s.startswith("block "):
            with contextlib.suppress(ValueError):  # a torn line stays in the log only
                self.blocks.put(json.loads(s[6:]))

    def block(self, timeout: float) -> dict[str, Any]:
        """Let it serve one block; its ``block`` record."""
        assert self.p.stdin is not None
        try:
            self.p.stdin.write("go\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise StepError(f"{self.name}: gone (exit {self.p.poll()})",
                            self.tail_text()) from None  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.blocks.get(timeout=0.2)
            except queue.Empty:
                pass
            if self.p.poll() is not None:
                self.reader.join(2)
                with contextlib.suppress(queue.Empty):
                    return self.blocks.get_nowait()
                raise StepError(f"{self.name} exited with {self.p.returncode} mid-block",
                                self.tail_text())  # fmt: skip
            if time.monotonic() > deadline:
                self.kill()
                raise StepError(f"{self.name}: block not done after {timeout:.0f} s (killed)",
                                self.tail_text())  # fmt: skip

    def finish(self, timeout: float) -> int | None:
        """End of input (the service writes its JSON and exits), then the exit code;
        killed after ``timeout``."""
        if self.p.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.p.stdin.close()
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: no exit {timeout:.0f} s after end of input: killing")
            self.kill()
        self.reader.join(5)
        self._forget()
        return self.p.returncode


class Engine:
    """``python -m hbtui engine --profile programs --backend sim`` (policy hummingbird) on
    ipc sockets in a private directory; log to a file."""

    def __init__(
        self, py: str, env: dict[str, str], logdir: Path, life_s: float, extra: list[str]
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hbab-"))  # short: ipc paths <= 107 bytes
        self.ctl, self.pub = f"ipc://{self.dir}/ctl", f"ipc://{self.dir}/pub"
        self.summary_path = self.dir / "summary.json"
        self.log_path = logdir / "engine.log"
        self.cmd = [py, "-m", "hbtui", "engine", "--profile", str(PROGRAMS_TOML),
                    "--backend", "sim", "--ctl", self.ctl, "--pub", self.pub,
                    "--calibrate", "0", "--summary-json", str(self.summary_path),
                    "--exit-with-parent", str(os.getpid()), "--duration",
                    f"{life_s:.0f}", *extra]  # fmt: skip
        log(f"start engine: {shlex.join(self.cmd)}")
        self.logf = open(self.log_path, "w", buffering=1)  # noqa: SIM115 - closed in stop
        self.p = subprocess.Popen(self.cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                  stdout=self.logf, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip

    def tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def wait_up(self, timeout: float) -> dict[str, Any]:
        from hbtui.engine.client import ClientError, EngineClient

        deadline = time.monotonic() + timeout
        with EngineClient(self.ctl, timeout=0.5) as c:
            while True:
                try:
                    if c.ping().get("phase") == "running":
                        break
                except ClientError:
                    pass
                if self.p.poll() is not None:
                    raise StepError(f"engine exited with {self.p.returncode} at start-up",
                                    self.tail())  # fmt: skip
                if time.monotonic() > deadline:
                    raise StepError(f"engine not running after {timeout:.0f} s", self.tail())
                time.sleep(0.1)
            st = c.get_state()
        if st.get("policy") != "hummingbird":
            raise StepError(f"engine runs policy {st.get('policy')!r}, wanted 'hummingbird'")
        return {k: st.get(k) for k in ("engine_id", "version", "protocol", "backend",
                                       "policy", "profile")}  # fmt: skip

    def task(self, name: str) -> dict[str, Any] | None:
        """The ``attached`` map of task ``name`` in ``get_state`` (None: not there)."""
        from hbtui.engine.client import EngineClient

        try:
            with EngineClient(self.ctl, timeout=2.0) as c:
                st = c.get_state()
        except Exception as e:  # noqa: BLE001 - a check, recorded as such
            return {"error": f"{type(e).__name__}: {e}"}
        for t in st.get("tasks") or []:
            if t.get("name") == name:
                return {"at_mono": time.monotonic(), **(t.get("attached") or {})}
        return None

    def stop(self) -> dict[str, Any]:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)
        with contextlib.suppress(OSError):
            self.logf.close()
        summary = None
        with contextlib.suppress(OSError, ValueError):
            summary = json.loads(self.summary_path.read_text())
        shutil.rmtree(self.dir, ignore_errors=True)
        return {"rc": self.p.returncode, "log": str(self.log_path), "log_tail": self.tail(15),
                "summary_departed": (summary or {}).get("attached_departed")
                if isinstance(summary, dict) else None}  # fmt: skip


# -- the benchmark ----------------------------------------------------------------------------
class Run:
    def __init__(self, a: argparse.Namespace, out: Path, logdir: Path, doc: dict[str, Any]):
        self.a = a
        self.out = out
        self.logdir = logdir
        self.doc = doc
        self.t0 = time.monotonic()
        self.end = self.t0 + a.budget
        self.startups: list[float] = []
        self.engine: Engine | None = None
        self.svc_ms: dict[str, float] = {m: a.mode_cfg[m][2] for m in a.modes}

    def left(self) -> float:
        return self.end - time.monotonic()

    def cap(self, timeout: float) -> float:
        return max(1.0, min(timeout, self.left() + 10.0))

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, default=str) + "\n")
        os.replace(tmp, self.out)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        pp = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + pp if pp else "")
        env["PYTHONUNBUFFERED"] = "1"
        t = str(self.a.threads)
        env.update(OMP_NUM_THREADS=t, MKL_NUM_THREADS=t)
        return env

    # estimates for the budget
    def startup_est(self) -> float:
        if self.startups:
            return max(self.startups) + 10.0
        return 30.0 if self.a.smoke else 40.0  # three processes build at once

    def block_est(self, mode: str) -> float:
        n, w, _ = self.a.mode_cfg[mode]
        return (n + w) * (self.svc_ms[mode] + self.a.gap_ms) / 1e3 + 0.3

    def conds(self) -> list[str]:
        if not self.a.alone:
            return [HBTUI]
        return [ALONE, HBTUI] + ([ALONE2] if self.a.null else [])

    def cycle_blocks(self) -> int:
        """A cycle's length in blocks (with --quiet-ab the hbtui block serves twice)."""
        return len(self.conds()) + (1 if self.a.quiet_ab else 0)

    def hp_cmd(self, mode: str, out: Path, quiet_ab: bool = False) -> list[str]:
        a = self.a
        n, w, _ = a.mode_cfg[mode]
        cmd = [a.python, str(HP_APP), "--mode", mode, "--closed", str(n),
               "--blocks", str(a.cycles), "--block-warmup", str(w), "--gate",
               "--seed", str(a.seed), "--threads", str(a.threads), "--out", str(out)]  # fmt: skip
        if a.gap_ms:
            cmd += ["--gap-ms", f"{a.gap_ms:g}"]
        if quiet_ab:
            cmd += ["--quiet-ab"]
        if a.svc_cpus:
            cmd += ["--cpus", cpu_list(a.svc_cpus)]
        if a.smoke:
            cmd += SMOKE_HP
        return cmd + list(a.hp_arg or [])

    def under_hbtui(self, task: str, cmd: list[str]) -> list[str]:
        assert self.engine is not None
        return [self.a.python, "-m", "hbtui", "run", "--hp", "--task", task, "--slo",
                f"{self.a.slo_ms:g}", "--engine", self.engine.ctl, "--attach-timeout", "5",
                "--", *cmd]  # fmt: skip

    def run_round(self, mode: str, r: int) -> dict[str, Any]:
        a = self.a
        conds = self.conds()
        n, w, _ = a.mode_cfg[mode]
        rec: dict[str, Any] = {"mode": mode, "round": r + 1, "procs": {}, "cycles": [],
                               "errors": []}  # fmt: skip
        need_min = self.startup_est() + 2 * self.cycle_blocks() * self.block_est(mode)
        need_min += END_RESERVE_S
        if self.left() < need_min:
            rec["skipped"] = f"budget: {need_min:.0f} s needed, {self.left():.0f} s left"
            log(f"{mode} round {r + 1}: skipped ({rec['skipped']})")
            return rec
        task = f"ab-{mode}-r{r + 1}"
        children: dict[str, Child] = {}
        outs = {c: self.logdir / f"{mode}-r{r + 1}-{c}.json" for c in conds}
        start_order = conds[r % len(conds) :] + conds[: r % len(conds)]
        rec["start_order"] = start_order
        try:
            for c in start_order:
                with contextlib.suppress(FileNotFoundError):
                    outs[c].unlink()
                cmd = self.hp_cmd(mode, outs[c], quiet_ab=c == HBTUI and a.quiet_ab)
                if c == HBTUI:
                    cmd = self.under_hbtui(task, cmd)
                env = self.env()
                if c == HBTUI and a.self_time:
                    env["HBTUI_SELF_TIME"] = "1"
                if c == HBTUI and a.diag:  # a build of its own (the flag is in the cache key)
                    env["CC"] = f"{env.get('CC') or 'cc'} -DHB_DIAG={a.diag}"
                children[c] = Child(f"{mode}-r{r + 1}-{c}", cmd, env, self.logdir)
                rec["procs"][c] = {"command": shlex.join(cmd),
                                   "log": str(children[c].log_path)}  # fmt: skip
            for c in start_order:
                s = children[c].wait_ready(self.cap(a.ready_timeout))
                self.startups.append(s)
                rec["procs"][c]["startup_s"] = round(s, 2)
            if HBTUI in children:
                att = self.engine.task(task) if self.engine else None
                rec["engine_before"] = att
                if not att or att.get("status") != "attached":
                    raise StepError(f"the hbtui process is not attached to the engine as "
                                    f"{task!r}: {att}", children[HBTUI].tail_text())  # fmt: skip
            ups = ", ".join(f"{c} {rec['procs'][c]['startup_s']} s" for c in start_order)
            log(f"{mode} round {r + 1}: all ready (start-up {ups})")
            for ci, order in enumerate(cycle_orders(conds, a.cycles, r)):
                cyc_need = self.cycle_blocks() * self.block_est(mode) + END_RESERVE_S
                if self.left() < cyc_need:
                    rec["cut"] = (f"budget: {ci} of {a.cycles} cycles ({cyc_need:.0f} s "
                                  f"needed, {self.left():.0f} s left)")  # fmt: skip
                    log(f"{mode} round {r + 1}: stopped after {ci} cycles ({rec['cut']})")
                    break
                blocks: dict[str, dict[str, Any]] = {}
                for c in order:
                    to = self.cap(a.block_timeout + 10 * self.block_est(mode))
                    blk = children[c].block(to)
                    if blk.get("n") != n:
                        raise StepError(f"{c}: block of {blk.get('n')} requests, wanted {n}")
                    blocks[c] = blk
                    self.svc_ms[mode] = max(self.svc_ms[mode] * 0.5, blk["mean_ms"])
                rec["cycles"].append({"index": ci, "order": list(order), "blocks": blocks,
                                      "ratios": cycle_ratios(blocks)})  # fmt: skip
            if HBTUI in children:
                rec["engine_after"] = self.engine.task(task) if self.engine else None
        except StepError as e:
            rec["errors"].append({"error": str(e), "tail": e.tail})
            log(f"{mode} round {r + 1}: FAILED: {e}\n{e.tail}")
        finally:
            for c, ch in children.items():
                rc = ch.finish(self.cap(30))
                rec["procs"][c]["rc"] = rc
                try:
                    res = json.loads(outs[c].read_text())
                except (OSError, ValueError):
                    res = None
                if res is not None:
                    rec["procs"][c]["result"] = {k: v for k, v in res.items() if k != "blocks"}
        # (on the CPU the programs launch nothing; --diag 1 and 2 hide every launch)
        check_round(rec, n, w, expect=None if a.smoke else a.diag not in (1, 2))
        return rec

    def run(self) -> None:
        a = self.a
        self.engine = Engine(a.python, self.env(), self.logdir, a.budget + 120, a.engine_arg or [])
        self.doc["engine"] = {"command": shlex.join(self.engine.cmd),
                              "state": self.engine.wait_up(self.cap(60))}  # fmt: skip
        log(f"engine up (hummingbird, sim backend): {self.engine.ctl}")
        failed = dict.fromkeys(a.modes, 0)  # rounds in a row with an error and no cycle
        for r in range(a.rounds):
            for mode in a.modes:
                if self.left() < END_RESERVE_S:
                    break
                if failed[mode] >= 2:
                    rec = {"mode": mode, "round": r + 1, "cycles": [],
                           "skipped": "two rounds in a row failed"}  # fmt: skip
                    self.doc["rounds"].append(rec)
                    continue
                try:
                    rec = self.run_round(mode, r)
                except Exception as e:  # noqa: BLE001 - a bug here must not lose the rest
                    rec = {"mode": mode, "round": r + 1, "cycles": [],
                           "errors": [{"error": f"{type(e).__name__}: {e}",
                                       "tail": traceback.format_exc()}]}  # fmt: skip
                    log(f"{mode} round {r + 1}: FAILED (bug): {traceback.format_exc()}")
                self.doc["rounds"].append(rec)
                failed[mode] = failed[mode] + 1 if rec.get("errors") and not rec["cycles"] else 0
                self.doc["summary"] = self.summary()
                self.save()
                if rec.get("cycles"):
                    print_round(rec)

    def summary(self) -> dict[str, Any]:
        a = self.a
        return {m: summarise(self.doc["rounds"], m, a.limit, a.bootstrap, a.seed)
                for m in a.modes}  # fmt: skip


def cycle_ratios(blocks: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {"median": {}, "mean": {}}
    for stat in ("median", "mean"):
        v = {c: b[f"{stat}_ms"] for c, b in blocks.items()}
        for num, den in ((HBTUI, ALONE), (ALONE2, ALONE), (HBTUI, ALONE2)):
            if num in v and den in v and v[den] > 0:
                out[stat][f"{num}/{den}"] = v[num] / v[den]
        if HBTUI in v and ALONE in v and ALONE2 in v and v[ALONE] > 0 and v[ALONE2] > 0:
            out[stat][PRIMARY] = v[HBTUI] / math.sqrt(v[ALONE] * v[ALONE2])
        quiet = (blocks.get(HBTUI) or {}).get(f"quiet_{stat}_ms")
        if HBTUI in v and quiet:
            out[stat][IN_PROCESS] = v[HBTUI] / quiet
    return out


def check_round(rec: dict[str, Any], n: int, w: int, expect: bool | None) -> None:
    """Validity checks: each process ran as labelled, and the engine saw the hbtui one's
    launches if ``expect``, none if False (a diagnostic build that hides them: proof that
    it was the one used), either if None (launches per measured request, from the
    engine's counter before and after the cycles; the process launches nothing between
    blocks)."""
    checks: list[str] = []
    for c, p in rec["procs"].items():
        res = p.get("result")
        if res is None:
            continue
        under = res.get("under_hbtui")
        if (c == HBTUI) != (under == "hp"):
            checks.append(f"{c}: HBTUI_CLASS={under!r}")
        if c == HBTUI and not res.get("ld_preload"):
            checks.append("hbtui: no LD_PRELOAD in the service")
    before, after = rec.get("engine_before") or {}, rec.get("engine_after") or {}
    if "launches" in before and "launches" in after and rec["cycles"]:
        served = len(rec["cycles"]) * (n + w)
        d = after["launches"] - before["launches"]
        rec["engine_launches_in_cycles"] = d
        rec["engine_launches_per_request"] = d / served
        if d <= 0 and expect:
            checks.append("the engine saw no launches of the hbtui process in its blocks")
        if d > 0 and expect is False:
            checks.append(f"the engine saw {d} launches: not the diagnostic build")
    rec["checks"] = checks
    for x in checks:
        log(f"{rec['mode']} round {rec['round']}: CHECK: {x}")


# -- output -----------------------------------------------------------------------------------
def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def round_key(rec: dict[str, Any]) -> str:
    """The ratio a round's line shows: against the plain processes, or (--no-alone) the
    in-process one."""
    first = rec["cycles"][0]["ratios"]["median"]
    return next((k for k in (PRIMARY, "hbtui/alone") if k in first), IN_PROCESS)


def print_round(rec: dict[str, Any]) -> None:
    meds: dict[str, list[float]] = {}
    for c in rec["cycles"]:
        for k, b in c["blocks"].items():
            meds.setdefault(k, []).append(b["median_ms"])
    key = round_key(rec)
    rat = [c["ratios"]["median"].get(key) for c in rec["cycles"]]
    rat = [x for x in rat if x is not None]
    log(f"{rec['mode']} round {rec['round']}: block medians ms "
        + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in meds.items())
        + (f"; {key} median {statistics.median(rat):.4f} [{min(rat):.4f}, "
           f"{max(rat):.4f}]" if rat else ""))  # fmt: skip


def ratio_head(doc: dict[str, Any]) -> str:
    done = [r for r in doc["rounds"] if r.get("cycles")]
    if done and all(round_key(r) == IN_PROCESS for r in done):
        return "hbtui/quiet [min, max]"
    return "hbtui/alone(s) [min, max]"


def table(doc: dict[str, Any]) -> str:
    hdr = (f"{'mode':<6} {'round':>5} {'cyc':>3} {'alone ms':>9} {'hbtui ms':>9} "
           f"{'alone2 ms':>9}  {ratio_head(doc):<26} "
           f"{'alone2/alone [min, max]':<26}")  # fmt: skip
    lines = [hdr, "-" * len(hdr)]

    def rr(vals: list[float]) -> str:
        if not vals:
            return "-"
        return f"{statistics.median(vals):.4f} [{min(vals):.4f}, {max(vals):.4f}]"

    for rec in doc["rounds"]:
        if not rec.get("cycles"):
            why = rec.get("skipped") or "; ".join(e["error"] for e in rec.get("errors", []))
            lines.append(f"{rec['mode']:<6} {rec['round']:>5}   - {why[:90]}")
            continue
        med = {}
        for k in (ALONE, HBTUI, ALONE2):
            v = [c["blocks"][k]["median_ms"] for c in rec["cycles"] if k in c["blocks"]]
            med[k] = statistics.median(v) if v else None
        key = round_key(rec)
        hb = [c["ratios"]["median"][key] for c in rec["cycles"]
              if key in c["ratios"]["median"]]  # fmt: skip
        nu = [c["ratios"]["median"]["alone2/alone"] for c in rec["cycles"]
              if "alone2/alone" in c["ratios"]["median"]]  # fmt: skip
        lines.append(f"{rec['mode']:<6} {rec['round']:>5} {len(rec['cycles']):>3} "
                     f"{_f(med[ALONE]):>9} {_f(med[HBTUI]):>9} {_f(med[ALONE2]):>9}  "
                     f"{rr(hb):<26} {rr(nu):<26}")  # fmt: skip
    lines.append("")
    for mode, s in (doc.get("summary") or {}).items():
        rat = (s.get("ratios") or {}).get("median") or {}
        key = s.get("primary", "hbtui/alone")
        p, nu = rat.get(key), rat.get("alone2/alone")
        mean_p = ((s.get("ratios") or {}).get("mean") or {}).get(key)

        def pc(x: float) -> str:
            return f"{(x - 1) * 100:+.2f} %"

        inp = rat.get(IN_PROCESS)
        if p is None and inp is not None and inp["ci95"]:  # --no-alone
            ci = inp["ci95"]
            lines.append(
                f"{mode}: in one process (observed / quiet requests, {inp['n']} blocks over "
                f"{s['rounds']} rounds) {pc(inp['median'])} (95 % CI {pc(ci[0])} .. "
                f"{pc(ci[1])}; rounds {pc(inp['round_min'])} .. {pc(inp['round_max'])}): "
                f"within {s['limit'] * 100:g} %: {s.get('in_process_verdict')}"
            )
            continue
        if p is None:
            lines.append(f"{mode}: no complete cycle")
            continue

        ci = p["ci95"]
        ind = " " * len(mode)
        lines.append(
            f"{mode}: under hbtui run {pc(p['median'])} ({key}: median of {p['n']} paired "
            f"block-median ratios over {s['rounds']} rounds; 95 % CI {pc(ci[0])} .. "
            f"{pc(ci[1])}; rounds {pc(p['round_min'])} .. {pc(p['round_max'])}; "
            f"{p['above_1']}/{p['n']} cycles slower)"
            if ci
            else f"{mode}: under hbtui run {pc(p['median'])} ({key})"
        )
        others = [f"{k} {pc(rat[k]['median'])}" for k in ("hbtui/alone", "hbtui/alone2")
                  if k in rat and k != key]  # fmt: skip
        if mean_p is not None:
            others.append(f"ratio of block means {pc(mean_p['median'])}")
        if others:
            lines.append(f"{ind}  also: {', '.join(others)}")
        if nu is not None and nu["ci95"]:
            lines.append(
                f"{ind}  null alone2/alone {pc(nu['median'])} (95 % CI "
                f"{pc(nu['ci95'][0])} .. {pc(nu['ci95'][1])}): the set-up resolves "
                f"{'better' if s.get('resolves_limit') else 'NOT better'} than "
                f"±{s['limit'] * 100:g} %"
            )
        lines.append(f"{ind}  within {s['limit'] * 100:g} % of alone: "
                     f"{s['verdict']}")  # fmt: skip
        own = s.get("self_time")
        if own:
            lines.append(
                f"{ind}  interceptor's own time: {own['per_request_us']:.0f} us per observed "
                f"request ({own['share_of_quiet_request'] * 100:.2f} % of a quiet one), "
                f"{own['ns_per_launch']:.0f} ns x {own['launches_per_request']:.0f} launches"
            )
        if inp is not None and inp["ci95"]:
            lines.append(
                f"{ind}  in one process (observed / quiet requests, {inp['n']} blocks): "
                f"{pc(inp['median'])} (95 % CI {pc(inp['ci95'][0])} .. {pc(inp['ci95'][1])})"
                f": within {s['limit'] * 100:g} %: {s.get('in_process_verdict')}"
            )
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="hp_overhead_ab.py",
        description="HP service alone vs under `hbtui run --hp`: closed-loop, CPU-pinned, "
                    "interleaved A/B (issue 15's 2 %% check)",
    )  # fmt: skip
    ap.add_argument("--modes", default="eager,graph", help="eager,graph (both)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per mode, each with fresh processes (4; smoke 2)")  # fmt: skip
    ap.add_argument("--cycles", type=int, default=None,
                    help="cycles per round, each one block per process (6; smoke 2)")  # fmt: skip
    ap.add_argument("--requests", type=int, default=None,
                    help="measured requests per block (eager 40, graph 200; smoke 6)")  # fmt: skip
    ap.add_argument("--block-warmup", type=int, default=None,
                    help="unmeasured requests at each block's start (eager 3, graph 10; "
                         "smoke 1)")  # fmt: skip
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="idle ms between requests (0: back to back)")  # fmt: skip
    ap.add_argument("--null", action=argparse.BooleanOptionalAction, default=True,
                    help="a second plain process per round: the null comparison (on)")  # fmt: skip
    ap.add_argument("--alone", action=argparse.BooleanOptionalAction, default=True,
                    help="a plain process per round beside the hbtui one (on); --no-alone "
                         "leaves only the in-process comparison (needs --quiet-ab; implies "
                         "--no-null)")  # fmt: skip
    ap.add_argument("--diag", type=int, choices=(1, 2, 3), default=None,
                    help="the hbtui process's interceptor built with -DHB_DIAG=N (intercept.c"
                         "): 1 no launch records, 2 records into a private ring nobody "
                         "reads, 3 no completion writes; what each part costs (the engine "
                         "then sees no launches, 1-2, or no completions, 3; CC reaches the "
                         "service too: harmless for hp_service, which compiles "
                         "nothing)")  # fmt: skip
    ap.add_argument("--quiet-ab", action=argparse.BooleanOptionalAction, default=True,
                    help="the hbtui process alternates quiet and observed requests in "
                         "each block (hp_service --quiet-ab): the in-process comparison "
                         "(on)")  # fmt: skip
    ap.add_argument(
        "--self-time",
        action="store_true",
        help="the hbtui process sums the interceptor's own time per observed "
        "request (HBTUI_SELF_TIME=1: one more clock read a launch)",
    )
    ap.add_argument("--svc-cpus", default=None,
                    help="CPUs of the service processes (default: whole cores from the top, "
                         ">= 4 CPUs; smoke 1); 'none': no pinning")  # fmt: skip
    ap.add_argument("--host-cpus", default=None,
                    help="CPUs of this script, the engine and the hbtui run launchers "
                         "(default: whole cores from the bottom, >= 4 CPUs)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    ap.add_argument("--slo-ms", type=float, default=100.0, help="hbtui run --slo (100)")
    ap.add_argument("--limit", type=float, default=0.02, help="the check's limit (0.02)")
    ap.add_argument("--bootstrap", type=int, default=4000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (540: under a 10-minute command)")  # fmt: skip
    ap.add_argument("--ready-timeout", type=float, default=240.0,
                    help="max seconds for a service to build its model and warm up")  # fmt: skip
    ap.add_argument("--block-timeout", type=float, default=60.0,
                    help="max seconds for one block beyond its expected time")  # fmt: skip
    ap.add_argument("--hp-arg", action="append", help="extra hp_service argument (repeatable)")
    ap.add_argument("--engine-arg", action="append",
                    help="extra `hbtui engine` argument (repeatable), e.g. "
                         "--engine-arg=--hp-poll-us=20")  # fmt: skip
    ap.add_argument("--python", default=sys.executable, help="interpreter for the children")
    ap.add_argument("--out", default=None, help="result JSON (default hp-overhead-ab-DATE.json)")
    ap.add_argument("--logs", default=None, help="log directory (default OUT-logs/)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU plumbing test: tiny model on the CPU (the programs touch no "
                         "CUDA, so the interceptor only passes calls through)")  # fmt: skip
    a = ap.parse_args(argv)
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not a.modes or any(m not in MODES for m in a.modes):
        ap.error(f"--modes: a comma list of {', '.join(MODES)}")
    a.modes = list(dict.fromkeys(a.modes))
    if not a.alone:
        if not a.quiet_ab:
            ap.error("--no-alone needs --quiet-ab (nothing would be compared)")
        a.null = False
    for k, gpu, smoke in (("rounds", 4, 2), ("cycles", 6, 2), ("budget", 540.0, 400.0)):
        if getattr(a, k) is None:
            setattr(a, k, smoke if a.smoke else gpu)
    if a.rounds < 1 or a.cycles < 1 or a.budget <= 0 or a.threads < 1:
        ap.error("--rounds, --cycles, --threads must be >= 1 and --budget > 0")
    if (a.requests is not None and a.requests < 1) or (a.block_warmup or 0) < 0:
        ap.error("--requests must be >= 1 and --block-warmup >= 0")
    if not (a.gap_ms >= 0 and a.limit > 0):
        ap.error("--gap-ms must be >= 0 and --limit > 0")
    base = SMOKE_DEFAULTS if a.smoke else MODE_DEFAULTS
    a.mode_cfg = {m: (a.requests or base[m][0],
                      base[m][1] if a.block_warmup is None else a.block_warmup,
                      base[m][2]) for m in MODES}  # fmt: skip
    try:
        a.svc_cpus, a.host_cpus, a.cpu_note = pick_cpus(a)
    except ValueError as e:
        ap.error(str(e))
    if a.out is None:
        a.out = f"hp-overhead-ab-{datetime.date.today().isoformat()}.json"
    return a


def pick_cpus(a: argparse.Namespace) -> tuple[list[int] | None, list[int] | None, str]:
    allowed = sorted(os.sched_getaffinity(0))
    if a.svc_cpus == "none":
        return None, None, "no pinning (--svc-cpus none)"
    cores = cpu_cores(allowed)
    if a.svc_cpus is None:
        want = 1 if a.smoke else 4
        svc, host = choose_cpus(cores, want, 4)
        if a.host_cpus is not None:
            host = parse_cpus(a.host_cpus)
        note = "auto: whole cores, service from the top, host from the bottom"
    else:
        svc = parse_cpus(a.svc_cpus)
        host = (parse_cpus(a.host_cpus) if a.host_cpus is not None
                else [c for c in allowed if c not in svc])  # fmt: skip
        note = "given"
    for name, cs in (("--svc-cpus", svc), ("--host-cpus", host)):
        bad = [c for c in cs if c not in allowed]
        if bad or not cs:
            raise ValueError(f"{name}: {cpu_list(cs) if cs else 'empty'} not within the "
                             f"allowed CPUs {cpu_list(allowed)}")  # fmt: skip
    if set(svc) & set(host):
        note += "; WARNING: service and host CPUs overlap (too few CPUs to isolate)"
    return svc, host, note


def preflight(a: argparse.Namespace) -> list[str]:
    probs = []
    if not HP_APP.exists():
        probs.append(f"missing {HP_APP}")
    if not PROGRAMS_TOML.exists():
        probs.append(f"missing {PROGRAMS_TOML}")
    r = subprocess.run([a.python, "-c", "import zmq, msgpack, hbtui.engine.client"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep
                            + os.environ.get("PYTHONPATH", "")})  # fmt: skip
    if r.returncode != 0:
        probs.append(f"the engine and hbtui run need pyzmq + msgpack importable by {a.python}: "
                     f"{r.stderr.strip().splitlines()[-1:]}")  # fmt: skip
    if not shutil.which("cc") and not shutil.which("gcc"):
        probs.append("hbtui run needs a C compiler (cc) to build its interceptor")
    return probs


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = Path(a.out).resolve()
    logdir = Path(a.logs).resolve() if a.logs else out.with_name(out.stem + "-logs")
    logdir.mkdir(parents=True, exist_ok=True)
    allowed = sorted(os.sched_getaffinity(0))
    if a.host_cpus:
        os.sched_setaffinity(0, a.host_cpus)  # inherited by the engine and the launchers
    g = harness.git_commit()
    settings = {k: v for k, v in vars(a).items() if k not in ("mode_cfg",)}
    settings["per_mode"] = {m: {"requests": a.mode_cfg[m][0], "block_warmup": a.mode_cfg[m][1]}
                            for m in a.modes}  # fmt: skip
    doc: dict[str, Any] = {
        "schema": 1,
        "benchmark": "hp-overhead-ab",
        "commit": g["commit"],
        "commit_dirty": g["dirty"],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": harness.command(),
        "argv": sys.argv,
        # the interceptor's and engine's knobs set for this run (HBTUI_COMP_EVERY_US, ...)
        "hbtui_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("HBTUI_")},
        "machine": harness.machine(
            cpu_cores=cpu_cores(list(range(os.cpu_count() or 1))),
            svc_cpus=a.svc_cpus,
            host_cpus=a.host_cpus,
            cpu_pinning=a.cpu_note,
            allowed_cpus=allowed,
        ),  # fmt: skip
        "smoke": a.smoke,
        "settings": settings,
        "design": (
            "closed loop; per round fresh processes alone/hbtui(/alone2) resident "
            "together, one block at a time in permuted order; ratios of block "
            "medians paired within a cycle"
        ),
        "rounds": [],
        "summary": {},
        "logs": str(logdir),
    }
    run = Run(a, out, logdir, doc)
    est = a.rounds * len(a.modes) * (run.startup_est() + 10) + sum(
        a.rounds * a.cycles * run.cycle_blocks() * run.block_est(m) for m in a.modes
    )
    doc["estimate_s"] = round(est)
    log(f"modes {a.modes}, {a.rounds} rounds x {a.cycles} cycles, conditions {run.conds()}, "
        f"service CPUs {cpu_list(a.svc_cpus) if a.svc_cpus else '-'}, host CPUs "
        f"{cpu_list(a.host_cpus) if a.host_cpus else '-'}, budget {a.budget:g} s, estimate "
        f"~{est:.0f} s from first guesses (rounds that no longer fit are skipped); logs in "
        f"{logdir}")  # fmt: skip

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
            run.save()
            return 2
        run.run()
    except StepError as e:
        doc.setdefault("errors", []).append({"error": str(e), "tail": e.tail})
        log(f"FAILED: {e}\n{e.tail}")
        rc = 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}): cleaning up, writing what was measured")
        doc["interrupted"] = str(e) or "KeyboardInterrupt"
        rc = 130
    finally:
        kill_all()
        if run.engine is not None:
            doc.setdefault("engine", {})["stop"] = run.engine.stop()
        doc["summary"] = run.summary()
        gpus = {p.get("result", {}).get("device_name") for rec in doc["rounds"]
                for p in rec.get("procs", {}).values()} - {None}  # fmt: skip
        doc["machine"]["gpu_from_torch"] = sorted(gpus)
        run.save()
    print(table(doc))
    n_err = sum(len(r.get("errors", [])) + len(r.get("checks", [])) for r in doc["rounds"])
    print(f"wrote {out} ({time.monotonic() - run.t0:.0f} s, {n_err} errors/check failures; "
          f"logs in {logdir})")  # fmt: skip
    empty = [m for m, s in doc["summary"].items() if not s.get("cycles")]
    if empty:
        print(f"no complete cycle for {', '.join(empty)}")
    return rc or (1 if n_err or empty else 0)


if __name__ == "__main__":
    sys.exit(main())
