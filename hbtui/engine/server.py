"""``hbtui engine``: the headless engine — scheduler loop + ZeroMQ telemetry and control.

One thread runs everything (design.md: HP and LP issue share a thread; the console is
another process). The scheduler calls ``Engine.tick`` between iterations, at least
every ~1 ms; the tick polls the ROUTER without blocking (≤ 64 frames, every ~0.5 ms)
and flushes telemetry at ~50 Hz. Wire spec: docs/protocol.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from hbtui.engine import profile as profiles
from hbtui.engine.atomic import write_atomic
from hbtui.engine.backends import BackendError, make_backend, resolve_backend
from hbtui.engine.backends.base import Backend
from hbtui.engine.calibrate import Calibration, calibrate, drain
from hbtui.engine.model import HP, LP, Task
from hbtui.engine.policies import POLICIES
from hbtui.engine.protocol import (
    BAD_ARGS,
    BAD_VALUE,
    BUSY,
    DEFAULT_CTL,
    DEFAULT_PUB,
    INTERNAL,
    MAX_CONTROL_BYTES,
    MUTATING_OPS,
    PROFILE_ERROR,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    READONLY,
    ProtocolError,
    arg_int,
    arg_pos,
    arg_str,
    check_keys,
    encode,
    parse_request,
    reply_err,
    reply_ok,
)
from hbtui.engine.scheduler import ControlError, Scheduler
from hbtui.engine.telemetry import SNDHWM, Publisher, TelemetryListener
from hbtui.engine.window import Window

log = logging.getLogger("hbtui.engine")

CTL_POLL_NS = 500_000  # control is polled every 0.5 ms of wall time
CTL_BATCH = 64  # frames handled per poll: a flood delays control, never scheduling
FLUSH_NS = 20_000_000  # telemetry flush period (50 Hz)
STATS_NS = 1_000_000_000
STATE_NS = 1_000_000_000
CHUNK_NS = 50_000_000  # run_until horizon: stop/reload requests are seen within 50 ms
MAX_WAIT_NS = 1_000_000
MAX_TASKS = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hbtui")
    except Exception:
        return "0.0.0"


class UsageError(Exception):
    """A start-up problem reported as one line with exit code 2."""


# -- endpoints and security ---------------------------------------------------------
def is_loopback(endpoint: str) -> bool:
    """True for ipc/inproc and tcp endpoints bound to a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    m = re.match(r"^tcp://(.+):(\d+|\*)$", endpoint)
    if not m:
        return False
    host = m.group(1).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', interface names, host names: treat as exposed


class _AllowList:
    """ZAP credentials callback: only listed client public keys may connect."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def _bind(sock: zmq.Socket, endpoint: str, what: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise UsageError(f"cannot bind {what} {endpoint}: {e.strerror}") from None


# -- the engine -------------------------------------------------------------------
class Engine:
    def __init__(
        self,
        prof: profiles.Profile,
        backend_kind: str,
        device: int,
        pub: zmq.Socket,
        ctl: zmq.Socket,
        readonly: bool = False,
        calibrate_s: float = 1.0,
        metrics: Any = None,
    ) -> None:
        self.engine_id = secrets.token_hex(4)
        self.version = _version()
        self.prof = prof
        self.kind = backend_kind
        self.device_index = device
        self.ctl = ctl
        self.readonly = readonly
        self.calibrate_s = calibrate_s
        self.metrics = metrics
        self.pub = Publisher(pub, self.engine_id)
        self.window = Window()
        self.tel = TelemetryListener(self.pub, self.window)
        self.backend: Backend = self._new_backend(prof)
        self.sched: Scheduler | None = None
        self.cal = Calibration()
        self.phase = "calibrating"
        self.stopping = False
        self.parent_pid: int | None = None  # stop when this process is gone (--exit-with-parent)
        self.orphaned = False
        self._pending: profiles.Profile | None = None
        self.started_wall = time.monotonic_ns()
        self.ctl_received = self.ctl_errors = self.ctl_dropped = 0
        now = time.monotonic_ns()
        self._last_tick = now
        self._next_ctl = self._next_flush = now
        self._next_stats = now + STATS_NS
        self._next_state = now
        self._gap_max = 0
        self._lag_max = 0
        self._pace0 = (now, 0)  # (wall, backend) origin for the lag figure
        self._last_stats: dict[str, Any] | None = None
        self._stats_mark = (now, 0)

    # -- backend / scheduler lifecycle ---------------------------------------------
    def _new_backend(self, prof: profiles.Profile) -> Backend:
        be = make_backend(self.kind, prof.sim, self.device_index, realtime=True)
        be.start_gpu_sampling()  # NVML's start stalls the caller: not while scheduling
        log.info("backend %s on %s, HP issued by %s", be.name, be.device, be.hp_issue)
        if note := getattr(be, "hp_issue_note", ""):
            log.warning("%s", note)
        return be

    @property
    def paced(self) -> bool:
        return self.kind == "sim"

    def start(self, prof: profiles.Profile) -> None:
        """Calibrate for ``prof`` and start its scheduler (tick keeps serving meanwhile)."""
        self.phase = "calibrating"
        self.prof = prof
        self.tel.state_dirty = True
        t0 = time.monotonic()
        self._last_tick, self._gap_max = time.monotonic_ns(), 0
        self.cal = calibrate(
            prof,
            lambda: self.backend,
            self.tick,
            self.calibrate_s,
            self.calibrate_s / 2,
            lambda: self.stopping,
        )
        factor_tasks = [t.name for t in prof.tasks if t.cls == HP and t.slo_ms is None]
        missing = [n for n in factor_tasks if n not in self.cal.baseline_p99_ms]
        tasks = [replace(t) for t in prof.tasks]
        sched = Scheduler(
            prof.kernels, tasks, self.backend, prof.policy, prof.seed, self.cal.baseline_p99_ms
        )
        sched.metrics.preempt_baseline_ns = dict(self.cal.wait_medians_ns)
        self.tel.baseline_ns = dict(self.cal.wait_medians_ns)
        sched.listeners.append(self.tel)
        self.sched = sched
        self.phase = "running"
        now = self.backend.now_ns()
        self.window.clear(now, self._mark())
        self._pace0 = (time.monotonic_ns(), now)
        self._lag_max = 0
        # the loop's longest stall while calibrating: a stall there inflates the SLO base
        stall_ms, self._gap_max = self._gap_max / 1e6, 0
        self.tel.event(
            "calibrated",
            baseline_p99_ms=self.cal.baseline_p99_ms,
            lp_alone=self.cal.lp_alone,
            seconds=round(time.monotonic() - t0, 3),
            loop_stall_max_ms=round(stall_ms, 3),
        )
        log.info(
            "calibrated in %.2fs: exclusive p99 %s ms, LP alone %s blocks/s, longest loop "
            "stall %.1f ms; policy %s",
            time.monotonic() - t0,
            {k: round(v, 4) for k, v in self.cal.baseline_p99_ms.items()},
            {k: round(v) for k, v in self.cal.lp_alone.items()},
            stall_ms,
            sched.policy.name,
        )
        if missing:
            msg = f"no exclusive baseline for {', '.join(missing)}: slo_factor SLO unknown"
            self.tel.event("warning", "warning", message=msg)
            log.warning(msg)
        self.tel.state_dirty = True

    def run(self, duration_s: float | None) -> None:
        end_wall = None if duration_s is None else time.monotonic() + duration_s
        self.tel.event("started", engine_id=self.engine_id, profile=self.prof.name)
        self.start(self.prof)
        while not self.stopping:
            if end_wall is not None and time.monotonic() >= end_wall:
                break
            if self._pending is not None:
                self._reload()
                continue
            sched = self.sched
            assert sched is not None
            now = self.backend.now_ns()
            sched.run_until(now + CHUNK_NS, MAX_WAIT_NS, self.tick)

    def _reload(self) -> None:
        prof, self._pending = self._pending, None
        assert prof is not None and self.sched is not None
        old = self.sched
        old.listeners.remove(self.tel)
        drain(old, self.tick)
        self.sched = None
        if self.paced:  # a fresh paced sim with the new profile's parameters
            self.backend.close()
            self.backend = self._new_backend(prof)
        self.start(prof)

    def final(self) -> dict[str, Any]:
        """Flush everything and return the final summary (also published as stats)."""
        self.tel.event("stopping", engine_id=self.engine_id)
        stats = self._stats() if self.sched is not None else None
        self._flush_all(force_state=True)
        if stats is not None:
            self.pub.publish("stats", stats)
        return {
            "schema": 1,
            "engine_id": self.engine_id,
            "profile": self.prof.name,
            "backend": self.backend.name,
            "device": self.backend.device,
            "paced": self.paced,
            "policy": self.sched.policy.name if self.sched else self.prof.policy,
            "calibration": {
                "baseline_p99_ms": self.cal.baseline_p99_ms,
                "preempt_baseline_us": {k: v / 1e3 for k, v in self.cal.wait_medians_ns.items()},
                "lp_alone": self.cal.lp_alone,
                "exclusive_s": self.cal.exclusive_s,
                "lp_alone_s": self.cal.lp_alone_s,
            },
            "stats": stats,
        }

    # -- the tick (called from inside the scheduling loop) -------------------------
    def tick(self) -> None:
        w = time.monotonic_ns()
        gap = w - self._last_tick
        self._last_tick = w
        if gap > self._gap_max:
            self._gap_max = gap
        if w >= self._next_ctl:
            self._next_ctl = w + CTL_POLL_NS
            self._serve_control()
        if w >= self._next_flush:
            self._next_flush = w + FLUSH_NS
            self._flush(w)
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                log.warning("parent process %d is gone: stopping", self.parent_pid)
                self.orphaned = self.stopping = True

    def _flush(self, w: int) -> None:
        sched = self.sched
        if sched is not None:
            now = self.backend.now_ns()
            lag = (w - self._pace0[0]) - (now - self._pace0[1])
            if self.paced and lag > self._lag_max:
                self._lag_max = lag
            self.window.advance(now, self._mark)
        self.tel.flush()
        if w >= self._next_stats:
            self._next_stats = w + STATS_NS
            if sched is not None:
                stats = self._stats()
                self.pub.publish("stats", stats)
                if self.metrics is not None:
                    self.metrics.update(stats)
            sample = self.backend.gpu_sample()
            if sample is not None:
                self.pub.publish("gpu", sample)
        if self.tel.state_dirty or w >= self._next_state:
            self._publish_state(w)

    def _flush_all(self, force_state: bool = False) -> None:
        self.tel.flush()
        if force_state:
            self._publish_state(time.monotonic_ns())

    def _publish_state(self, w: int) -> None:
        self.tel.state_dirty = False
        self._next_state = w + STATE_NS
        self.pub.publish("state", self.state())

    def _mark(self) -> dict[str, Any]:
        assert self.sched is not None
        m = self.sched.metrics
        now = self.backend.now_ns()
        blocks = {n: ts.blocks for n, ts in m.tasks.items() if ts.cls == LP}
        slices = {n: ts.slices for n, ts in m.tasks.items() if ts.cls == LP}
        return {
            "busy": m.gpu_busy.total(now),
            "hp": m.hp_active.total(now),
            "lpu": m.lp_busy_or_hp.total(now),
            "blocks": blocks,
            "slices": slices,
        }

    # -- telemetry bodies ------------------------------------------------------------
    def _stats(self) -> dict[str, Any]:
        sched = self.sched
        assert sched is not None
        now = self.backend.now_ns()
        s = sched.summary(self.cal.lp_alone)
        hp = [n for n, t in sched.tasks.items() if t.cls == HP]
        lp = [n for n, t in sched.tasks.items() if t.cls == LP]
        win = self.window.figures(now, self._mark(), hp, lp, self.cal.lp_alone)
        tasks = s["tasks"]
        for name, fig in win.pop("tasks").items():
            if name in tasks:
                tasks[name]["window"] = fig
        for name in list(tasks):
            if name not in sched.tasks:  # removed tasks keep metrics but leave stats
                del tasks[name]
        w = time.monotonic_ns()
        lag = (w - self._pace0[0]) - (now - self._pace0[1]) if self.paced else 0
        w0, d0 = self._stats_mark
        dps = (sched.decisions - d0) / max(1e-9, (w - w0) / 1e9) if d0 <= sched.decisions else 0
        self._stats_mark = (w, sched.decisions)
        s.update(
            phase=self.phase,
            policy=sched.policy.name,
            window=win,
            baseline_p99_ms=self.cal.baseline_p99_ms,
            lp_alone=self.cal.lp_alone,
            telemetry={
                "sent": self.pub.sent,
                "dropped": self.pub.dropped,
                "dropped_records": self.tel.dropped_records,
                "control_received": self.ctl_received,
                "control_errors": self.ctl_errors,
                "control_dropped": self.ctl_dropped,
            },
            loop={
                "lag_ms": max(0, lag) / 1e6,
                "lag_max_ms": self._lag_max / 1e6,
                "tick_gap_max_ms": self._gap_max / 1e6,
                "decisions_per_s": dps,
            },
        )
        self._gap_max = 0
        self._last_stats = s
        return s

    def state(self) -> dict[str, Any]:
        sched = self.sched
        kernels = sched.kernels if sched is not None else self.prof.kernels
        waves = sched.waves.snapshot() if sched is not None else {}
        if sched is not None:
            tasks = [sched.task_state(t) for t in sched.tasks.values()]
            policy = sched.policy.name
        else:
            tasks = [_static_task_state(t) for t in self.prof.tasks]
            policy = self.prof.policy
        return {
            "engine_id": self.engine_id,
            "version": self.version,
            "protocol": PROTOCOL_VERSION,
            "protocol_minor": PROTOCOL_MINOR,
            "backend": self.backend.name,
            "device": self.backend.device,
            "device_index": self.device_index,
            "pci_bus_id": self.backend.pci_bus_id,
            "hp_issue": self.backend.hp_issue,
            "paced": self.paced,
            "policy": policy,
            "readonly": self.readonly,
            "phase": self.phase,
            "profile": {"name": self.prof.name, "path": self.prof.path},
            "tasks": tasks,
            "kernels": {
                k.name: {
                    "grid": list(k.grid),
                    "block": list(k.block),
                    "blocks_per_sm": k.blocks_per_sm,
                    "block_us": k.block_us,
                    "sliceable": k.sliceable,
                    **waves.get(k.name, {}),
                }
                for k in kernels.values()
            },
            "policies": list(POLICIES),
            "baseline_p99_ms": self.cal.baseline_p99_ms,
            "lp_alone": self.cal.lp_alone,
            "backend_now_ns": self.backend.now_ns(),
            "uptime_s": (time.monotonic_ns() - self.started_wall) / 1e9,
        }

    # -- control -------------------------------------------------------------------
    def _serve_control(self) -> None:
        sock = self.ctl
        for _ in range(CTL_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                self.ctl_dropped += 1
                continue
            self.ctl_received += 1
            if not 2 <= len(frames) <= 4:  # [identity, (empty,) payload]
                self.ctl_dropped += 1
                continue
            reply = self._handle_frame(frames[-1])
            if not reply["ok"]:
                self.ctl_errors += 1
            try:
                sock.send_multipart([*frames[:-1], encode(reply)], zmq.NOBLOCK)
            except zmq.ZMQError:
                self.ctl_dropped += 1

    def _handle_frame(self, payload: bytes) -> dict[str, Any]:
        try:
            rid, op, args = parse_request(payload)
        except ProtocolError as e:
            return reply_err(getattr(e, "request_id", None), e.code, e.message)
        try:
            if op in MUTATING_OPS:
                if self.readonly:
                    raise ProtocolError(READONLY, f"{op}: engine is read-only (--readonly)")
                if self.phase != "running" or self.sched is None or self._pending is not None:
                    raise ProtocolError(BUSY, f"{op}: engine is calibrating; retry shortly")
            self.tel.request_id = rid
            return reply_ok(rid, getattr(self, f"_op_{op}")(op, args))
        except ProtocolError as e:
            return reply_err(rid, e.code, e.message)
        except ControlError as e:
            return reply_err(rid, e.code, str(e))
        except Exception as e:  # a bug: report it, keep the engine alive
            log.error("internal error in %s:\n%s", op, traceback.format_exc())
            self.tel.event("error", "error", message=f"{op}: internal error: {e!r}")
            return reply_err(rid, INTERNAL, f"{op}: internal error ({type(e).__name__})")
        finally:
            self.tel.request_id = None

    def _task_arg(self, op: str, args: dict[str, Any], cls: str | None = None) -> Task:
        assert self.sched is not None
        name = arg_str(op, args, "task")
        task = self.sched.tasks.get(name)
        if task is None:
            raise ControlError("unknown_task", f"{op}: no task named {name!r}")
        if cls is not None and task.cls != cls:
            raise ControlError("bad_task", f"{op}: task {name!r} is {task.cls}, not {cls}")
        return task

    def _op_ping(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, set(), set())
        return {
            "engine_version": self.version,
            "protocol": PROTOCOL_VERSION,
            "protocol_minor": PROTOCOL_MINOR,
            "engine_id": self.engine_id,
            "phase": self.phase,
            "readonly": self.readonly,
        }

    def _op_get_state(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, set(), set())
        return self.state()

    def _op_set_priority(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"task", "priority"}, set())
        task = self._task_arg(op, args)
        prio = arg_int(op, args, "priority", -1_000_000, 1_000_000)
        self.sched.set_priority(task.name, prio)  # type: ignore[union-attr]
        return {"task": task.name, "priority": task.priority}

    def _op_set_slice(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"task"}, {"us", "blocks"})
        task = self._task_arg(op, args, LP)
        if ("us" in args) == ("blocks" in args):
            raise ProtocolError(BAD_ARGS, f"{op}: give exactly one of 'us' or 'blocks'")
        if "us" in args:
            self.sched.set_slice(task.name, us=arg_pos(op, args, "us", 1e6))  # type: ignore[union-attr]
        else:
            blocks = arg_int(op, args, "blocks", 1, 2**31)
            self.sched.set_slice(task.name, blocks=blocks)  # type: ignore[union-attr]
        return {"task": task.name, "us": task.slice_us, "blocks": task.slice_blocks}

    def _op_set_policy(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"policy"}, set())
        name = arg_str(op, args, "policy", 64)
        if name not in POLICIES:
            raise ProtocolError(
                BAD_VALUE, f"{op}: unknown policy {name!r} (choose from {', '.join(POLICIES)})"
            )
        self.sched.set_policy(name)  # type: ignore[union-attr]
        return {"policy": name}

    def _op_set_slo(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"task"}, {"ms", "factor"})
        task = self._task_arg(op, args, HP)
        if ("ms" in args) == ("factor" in args):
            raise ProtocolError(BAD_ARGS, f"{op}: give exactly one of 'ms' or 'factor'")
        if "ms" in args:
            self.sched.set_slo(task.name, ms=arg_pos(op, args, "ms", 1e6))  # type: ignore[union-attr]
        else:
            self.sched.set_slo(task.name, factor=arg_pos(op, args, "factor", 1000))  # type: ignore[union-attr]
        return {"task": task.name, "slo_ms": task.slo_ms, "slo_factor": task.slo_factor}

    def _op_pause_task(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"task"}, set())
        task = self._task_arg(op, args)
        self.sched.set_paused(task.name, True)  # type: ignore[union-attr]
        return {"task": task.name, "paused": True}

    def _op_resume_task(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"task"}, set())
        task = self._task_arg(op, args)
        self.sched.set_paused(task.name, False)  # type: ignore[union-attr]
        return {"task": task.name, "paused": False}

    def _op_add_task(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"task"}, set())
        sched = self.sched
        assert sched is not None
        raw = args["task"]
        if not isinstance(raw, dict):
            raise ProtocolError(BAD_ARGS, f"{op}: 'task' must be a map (a [[tasks]] table)")
        arrival = raw.get("arrival")
        if isinstance(arrival, dict) and arrival.get("kind") == "trace":
            raise ProtocolError(PROFILE_ERROR, f"{op}: trace arrivals cannot be added remotely")
        if len(sched.tasks) >= MAX_TASKS:
            raise ProtocolError(BAD_VALUE, f"{op}: at most {MAX_TASKS} tasks")
        try:
            task = profiles.parse_task(raw, sched.kernels, file=op)
        except profiles.ProfileError as e:
            raise ProtocolError(PROFILE_ERROR, str(e)) from None
        sched.add_task(task)
        return {"task": sched.task_state(sched.tasks[task.name])}

    def _op_remove_task(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, {"task"}, set())
        task = self._task_arg(op, args)
        self.sched.remove_task(task.name)  # type: ignore[union-attr]
        return {"task": task.name}

    def _op_load_profile(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, set(), {"path", "name"})
        if ("path" in args) == ("name" in args):
            raise ProtocolError(BAD_ARGS, f"{op}: give exactly one of 'path' or 'name'")
        if "path" in args:
            path = Path(arg_str(op, args, "path", 4096))
        else:
            name = arg_str(op, args, "name", 64)
            if not _NAME_RE.match(name):
                raise ProtocolError(BAD_VALUE, f"{op}: 'name' must match {_NAME_RE.pattern}")
            path = profiles.resolve(name)
        try:
            prof = profiles.load(path)
        except profiles.ProfileError as e:
            raise ProtocolError(PROFILE_ERROR, f"{op}: {e}") from None
        self._pending = prof
        self.phase = "calibrating"  # from now on: mutating ops get `busy` until running
        self.tel.state_dirty = True
        self.tel.event("load_profile", profile=prof.name, path=str(path))
        return {"profile": prof.name, "path": str(path), "tasks": [t.name for t in prof.tasks]}

    def _op_save_profile(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, set(), {"path", "name"})
        sched = self.sched
        assert sched is not None
        name = self.prof.name
        if "name" in args:
            name = arg_str(op, args, "name", 64)
            if not _NAME_RE.match(name):
                raise ProtocolError(BAD_VALUE, f"{op}: 'name' must match {_NAME_RE.pattern}")
        if "path" in args:
            path = Path(arg_str(op, args, "path", 4096))
            if path.suffix != ".toml":
                raise ProtocolError(BAD_VALUE, f"{op}: 'path' must end in .toml")
        else:
            path = profiles.user_dir() / f"{name}.toml"
        prof = replace(
            self.prof,
            name=name,
            kernels=dict(sched.kernels),
            tasks=[replace(t) for t in sched.tasks.values()],
            policy=sched.policy.name,
        )
        try:
            written = profiles.save(prof, path)
        except (profiles.ProfileError, OSError) as e:
            raise ProtocolError(PROFILE_ERROR, f"{op}: {e}") from None
        self.tel.event("save_profile", path=str(written), name=name)
        return {"path": str(written), "name": name}

    def _op_reset_stats(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        check_keys(op, args, set(), set())
        sched = self.sched
        assert sched is not None
        sched.reset_stats()
        self.window.clear(self.backend.now_ns(), self._mark())
        return {}


def _static_task_state(t: Task) -> dict[str, Any]:
    """A task's state before its scheduler exists (while calibrating)."""
    d: dict[str, Any] = {"name": t.name, "class": t.cls, "priority": t.priority,
                         "paused": t.paused}  # fmt: skip
    if t.cls == HP:
        d.update(slo_ms=t.slo_ms, slo_factor=t.slo_factor, slo_effective_ms=t.slo_ms)
    else:
        d.update(slice_us=t.slice_us if t.slice_blocks is None else None,
                 slice_blocks=t.slice_blocks)  # fmt: skip
    return d


# -- command line -------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hbtui engine", description="Run the headless engine (ZeroMQ telemetry + control)."
    )
    ap.add_argument("--profile", required=True, help="profile name or path")
    ap.add_argument("--backend", choices=("auto", "sim", "cuda"), default="auto")
    ap.add_argument("--device", type=int, default=None, help="CUDA device index")
    ap.add_argument(
        "--hp-issue",
        choices=("auto", "native", "python"),
        default=None,
        help="cuda: who issues HP kernels (default: $HBTUI_HP_ISSUE or auto)",
    )
    ap.add_argument("--pub", default=DEFAULT_PUB, help=f"telemetry endpoint ({DEFAULT_PUB})")
    ap.add_argument("--ctl", default=DEFAULT_CTL, help=f"control endpoint ({DEFAULT_CTL})")
    ap.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    ap.add_argument("--summary-json", default=None, help="write the final summary here")
    ap.add_argument("--readonly", action="store_true", help="refuse every mutating op")
    ap.add_argument(
        "--insecure", action="store_true", help="allow non-loopback binds without CURVE"
    )
    ap.add_argument("--curve-secret", default=None, help="server secret key file")
    ap.add_argument("--curve-allow", nargs="+", default=None, help="allowed client public keys")
    ap.add_argument("--metrics", default=None, metavar="HOST:PORT", help="Prometheus exporter")
    ap.add_argument(
        "--sndhwm",
        type=int,
        default=SNDHWM,
        metavar="N",
        help=f"telemetry messages queued per subscriber before dropping ({SNDHWM})",
    )
    ap.add_argument(
        "--calibrate",
        type=float,
        default=1.0,
        metavar="S",
        help="exclusive calibration seconds (LP alone runs S/2); 0 skips it",
    )
    ap.add_argument(
        "--exit-with-parent",
        type=int,
        default=None,
        metavar="PID",
        help="stop cleanly when process PID (the console that spawned us) is gone",
    )
    ap.add_argument(
        "--owned-dir",
        default=None,
        metavar="DIR",
        help="with --exit-with-parent: remove DIR (the private socket dir) if the parent died",
    )
    return ap


def _setup_logging() -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("hbtui engine: %(levelname)s %(message)s"))
    log.handlers[:] = [h]
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hbtui engine``; returns the exit code (2: usage/bind/profile)."""
    _setup_logging()
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    ctx = zmq.Context()
    auth = prom = engine = None
    socks: list[zmq.Socket] = []
    try:
        try:
            prof = profiles.load(profiles.resolve(args.profile))
        except profiles.ProfileError as e:
            raise UsageError(str(e)) from None
        try:
            kind = resolve_backend(args.backend)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args.backend == "auto":
            log.info("backend auto -> %s", kind)
        device = prof.device if args.device is None else args.device
        if args.hp_issue:
            os.environ["HBTUI_HP_ISSUE"] = args.hp_issue  # read by the cuda backend
        if args.calibrate < 0:
            raise UsageError("--calibrate must be >= 0")

        exposed = [e for e in (args.pub, args.ctl) if not is_loopback(e)]
        curve = None
        if args.curve_secret or args.curve_allow:
            if not (args.curve_secret and args.curve_allow):
                raise UsageError("CURVE needs both --curve-secret and --curve-allow")
            from hbtui.engine.keys import load_allowed, load_secret

            try:
                curve = load_secret(args.curve_secret)
                allowed = load_allowed(args.curve_allow)
            except (OSError, ValueError) as e:
                raise UsageError(f"CURVE keys: {e}") from None
        if exposed and curve is None:
            if not args.insecure:
                raise UsageError(
                    f"refusing to bind {', '.join(exposed)} (not loopback) without CURVE: "
                    "pass --curve-secret/--curve-allow (see `hbtui keys generate`) or --insecure"
                )
            log.warning(
                "!!! INSECURE: %s bound without authentication or encryption; anyone who can "
                "reach it can read telemetry and steer the GPU !!!",
                ", ".join(exposed),
            )
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            auth = ThreadAuthenticator(ctx)
            auth.start()
            auth.configure_curve_callback("*", credentials_provider=_AllowList(allowed))

        pub = ctx.socket(zmq.PUB)
        ctl = ctx.socket(zmq.ROUTER)
        socks += [pub, ctl]
        pub.sndhwm = max(1, args.sndhwm)
        pub.linger = 200  # give the final summary a moment to leave on shutdown
        ctl.maxmsgsize = MAX_CONTROL_BYTES
        ctl.rcvhwm = 1000
        ctl.sndhwm = 1000
        ctl.linger = 0
        for s in (pub, ctl):
            if curve is not None:
                s.curve_server = True
                s.curve_publickey, s.curve_secretkey = curve
        _bind(pub, args.pub, "--pub")
        _bind(ctl, args.ctl, "--ctl")

        if args.metrics:
            m = re.match(r"^(.*):(\d+)$", args.metrics)
            if not m:
                raise UsageError(f"--metrics wants HOST:PORT, got {args.metrics!r}")
            host = m.group(1).strip("[]") or "127.0.0.1"
            if not is_loopback(f"tcp://{host}:1"):
                log.warning("Prometheus metrics exposed on %s (no authentication)", host)
            from hbtui.engine.prom import PromExporter

            try:
                prom = PromExporter(host, int(m.group(2)))
            except OSError as e:
                raise UsageError(f"cannot serve --metrics {args.metrics}: {e.strerror}") from None

        try:
            engine = Engine(prof, kind, device, pub, ctl, args.readonly, args.calibrate, prom)
        except (BackendError, ValueError) as e:
            raise UsageError(f"backend {kind}: {e}") from None
        log.info(
            "engine %s: profile %s on %s (%s%s), pub %s, ctl %s%s",
            engine.engine_id,
            prof.name,
            engine.backend.device,
            kind,
            ", wall-clock paced" if engine.paced else "",
            args.pub,
            args.ctl,
            ", read-only" if args.readonly else "",
        )

        def _stop(signum: int, _frame: Any) -> None:
            engine.stopping = True

        engine.parent_pid = args.exit_with_parent
        old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        rc = 0
        try:
            engine.run(args.duration)
        except BackendError as e:  # the device failed: report, flush, exit non-zero
            log.error("backend failure: %s", e)
            engine.tel.event("error", "error", message=f"backend failure: {e}")
            rc = 1
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        summary = engine.final()
        engine.backend.close()  # stops the cuda backend's native HP thread first
        _report(summary)
        if args.summary_json:
            _write_json(args.summary_json, summary)
        if engine.orphaned and args.owned_dir:  # nobody else will clean up our sockets
            shutil.rmtree(args.owned_dir, ignore_errors=True)
        return rc
    except UsageError as e:
        print(f"hbtui engine: error: {e}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            try:
                engine.backend.close()  # idempotent; here for the error paths
            except Exception as e:  # noqa: BLE001 - closing after a device failure
                log.warning("closing the backend: %s", e)
        if prom is not None:
            prom.close()
        for s in socks:
            s.close()
        if auth is not None:
            auth.stop()
        ctx.term()


def _report(summary: dict[str, Any]) -> None:
    st = summary.get("stats") or {}
    log.info(
        "stopped: %s policy %s, %.1fs measured, gpu busy %.3f, harvest %.3f",
        summary["profile"],
        summary["policy"],
        st.get("wall_s", 0.0),
        st.get("gpu_busy", 0.0),
        st.get("harvest_ratio", 0.0),
    )
    for name, t in (st.get("tasks") or {}).items():
        if t["class"] == HP:
            att = t.get("slo_attainment")
            log.info(
                "  %s (hp): %d requests, SLO %s ms, attainment %s, p99 %.3f ms, preempt p99 %.1f us"
                "",
                name,
                t["requests"],
                t.get("slo_ms"),
                "-" if att is None else f"{att:.4f}",
                t["p99_ms"],
                t["preemption_us"]["p99"],
            )
        else:
            norm = t.get("throughput_norm")
            log.info(
                "  %s (lp): %.0f blocks/s, normalised %s, %d slices",
                name,
                t["work_per_s"],
                "-" if norm is None else f"{norm:.3f}",
                t["slices"],
            )
    tel = st.get("telemetry") or {}
    if tel:
        log.info("  telemetry: %d sent, %d dropped, %d records dropped",
                 tel["sent"], tel["dropped"], tel["dropped_records"])  # fmt: skip


def _write_json(path: str, obj: Any) -> None:
    import json

    write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def keys_main(argv: list[str] | None = None) -> int:
    """Entry point of ``hbtui keys`` (lives in engine.keys)."""
    from hbtui.engine.keys import keys_main as _keys_main

    return _keys_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
