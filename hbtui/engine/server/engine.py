"""The engine: backend and scheduler lifecycle (calibrate, run, reload, final) and the
tick cadence the scheduler calls between iterations.

One thread runs everything (design.md: HP and LP issue share a thread; the console is
another process). The scheduler calls ``Engine.tick`` at least every ~1 ms; the tick
polls the ROUTER without blocking (≤ 64 frames, every ~0.5 ms) and flushes telemetry at
~50 Hz. Ops live in ``server.ops``, message bodies in ``server.reports``.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from hbtui.engine import profile as profiles
from hbtui.engine.attached import AttachedSet
from hbtui.engine.backends import make_backend
from hbtui.engine.backends.base import Backend
from hbtui.engine.calibrate import Calibration, calibrate, drain
from hbtui.engine.model import HP, LP
from hbtui.engine.protocol import (
    INTERNAL,
    ProtocolError,
    encode,
    parse_request,
    reply_err,
    reply_ok,
)
from hbtui.engine.scheduler import ControlError, Scheduler
from hbtui.engine.server.deferred import Deferred
from hbtui.engine.server.ops import run as run_op
from hbtui.engine.server.reports import final_summary, state_body, stats_body
from hbtui.engine.telemetry import Publisher, SubscriberReports, TelemetryListener
from hbtui.engine.window import Window

log = logging.getLogger("hbtui.engine")

CTL_POLL_NS = 500_000  # control is polled every 0.5 ms of wall time
CTL_BATCH = 64  # frames handled per poll: a flood delays control, never scheduling
FLUSH_NS = 20_000_000  # telemetry flush period (50 Hz)
STATS_NS = 1_000_000_000
STATE_NS = 1_000_000_000
CHUNK_NS = 50_000_000  # run_until horizon: stop/reload requests are seen within 50 ms
ATTACHED_CHUNK_NS = 2_000_000  # with programs attached: the tick period adapts this often
MAX_WAIT_NS = 1_000_000


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hbtui")
    except Exception:
        return "0.0.0"


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
        self.sub_reports = SubscriberReports()
        self.backend: Backend = self._new_backend(prof)
        self.sched: Scheduler | None = None
        self.attached = AttachedSet(self.policy_name)  # programs under `hbtui run`
        self.attached.listeners.append(self.tel)
        self.attached.other_hp = lambda: any(  # (while calibrating: the profile's tasks)
            t.cls == HP for t in (self.sched.tasks.values() if self.sched else self.prof.tasks)
        )
        self.cal = Calibration()
        self.phase = "calibrating"
        self.stopping = False
        self.parent_pid: int | None = None  # stop when this process is gone (--exit-with-parent)
        self.orphaned = False
        self.pending: profiles.Profile | None = None  # load_profile: swapped in by run()
        self.profile_dirs: list[Path] = []  # --profile-dir: where load_profile also looks
        self.deferred: list[tuple[list[bytes], Deferred]] = []  # ops still on a worker
        self.started_wall = time.monotonic_ns()
        self.ctl_received = self.ctl_errors = self.ctl_dropped = 0
        now = time.monotonic_ns()
        self._last_tick = now
        self._next_ctl = self._next_flush = now
        self._next_stats = now + STATS_NS
        self._next_state = now
        self.gap_max = 0  # longest wall gap between ticks since the last stats
        self.lag_max = 0
        self.pace0 = (now, 0)  # (wall, backend) origin for the lag figure
        self.stats_mark = (now, 0)  # (wall, decisions) at the last stats

    # -- backend / scheduler lifecycle ---------------------------------------------
    def _new_backend(self, prof: profiles.Profile) -> Backend:
        be = make_backend(self.kind, prof.sim, self.device_index, realtime=True)
        be.start_gpu_sampling()  # NVML's start stalls the caller: not while scheduling
        log.info("backend %s on %s, HP issued by %s", be.name, be.device, be.hp_issue)
        if note := getattr(be, "hp_issue_note", ""):
            log.warning("%s", note)
        return be

    def policy_name(self) -> str:
        return self.sched.policy.name if self.sched is not None else self.prof.policy

    def task_names(self) -> set[str]:
        """Every task name in use (profile, live and attached tasks share one namespace)."""
        names = {t.name for t in self.prof.tasks} | set(self.attached.tasks)
        if self.sched is not None:
            names |= set(self.sched.tasks)
        return names

    @property
    def paced(self) -> bool:
        return self.kind == "sim"

    def start(self, prof: profiles.Profile) -> None:
        """Calibrate for ``prof`` and start its scheduler (tick keeps serving meanwhile)."""
        self.phase = "calibrating"
        self.prof = prof
        self.tel.state_dirty = True
        t0 = time.monotonic()
        self._last_tick, self.gap_max = time.monotonic_ns(), 0
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
        self.window.clear(now, self.mark())
        self.pace0 = (time.monotonic_ns(), now)
        self.lag_max = 0
        # the loop's longest stall while calibrating: a stall there inflates the SLO base
        stall_ms, self.gap_max = self.gap_max / 1e6, 0
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
            if self.pending is not None:
                self._reload()
                continue
            sched = self.sched
            assert sched is not None
            now = self.backend.now_ns()
            # attached programs are polled every tick: tick often while one is active
            if self.attached:
                sched.run_until(now + ATTACHED_CHUNK_NS, self.attached.poll_ns, self.tick)
            else:
                sched.run_until(now + CHUNK_NS, MAX_WAIT_NS, self.tick)

    def request_reload(self, prof: profiles.Profile) -> None:
        """Swap to ``prof`` once the current control batch is answered (see ``run``)."""
        self.pending = prof
        self.phase = "calibrating"  # from now on: mutating ops get `busy` until running
        self.tel.state_dirty = True

    def _reload(self) -> None:
        prof, self.pending = self.pending, None
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
        self.attached.close()  # attached LP programs run on, ungated
        stats = stats_body(self) if self.sched is not None else None
        self._flush_all(force_state=True)
        if stats is not None:
            self.pub.publish("stats", stats)
        return final_summary(self, stats)

    # -- the tick (called from inside the scheduling loop) -------------------------
    def tick(self) -> None:
        w = time.monotonic_ns()
        gap = w - self._last_tick
        self._last_tick = w
        if gap > self.gap_max:
            self.gap_max = gap
        if self.attached:
            self.attached.poll(w)
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
            lag = (w - self.pace0[0]) - (now - self.pace0[1])
            if self.paced and lag > self.lag_max:
                self.lag_max = lag
            self.window.advance(now, self.mark)
        self.tel.flush()
        if w >= self._next_stats:
            self._next_stats = w + STATS_NS
            if sched is not None:
                stats = stats_body(self)
                self.pub.publish("stats", stats)
                if self.metrics is not None:
                    self.metrics.update(stats, self)
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
        self.pub.publish("state", state_body(self))

    def mark(self) -> dict[str, Any]:
        """The cumulative figures the rolling window differences (engine.window.Mark)."""
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

    # -- control -------------------------------------------------------------------
    def _serve_control(self) -> None:
        sock = self.ctl
        if self.deferred:  # ops whose worker finished are answered first
            for item in [x for x in self.deferred if x[1].done()]:
                self.deferred.remove(item)
                self._reply(item[0], self._finish(item[1]))
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
            reply = self.handle_frame(frames[-1])
            if isinstance(reply, Deferred):  # answered once its worker is done
                self.deferred.append((frames[:-1], reply))
                continue
            self._reply(frames[:-1], reply)

    def _reply(self, route: list[bytes], reply: dict[str, Any]) -> None:
        """Encode and send; a reply that cannot be encoded becomes an ``internal`` error."""
        try:
            data = encode(reply)
        except (TypeError, ValueError, OverflowError) as e:
            log.error("cannot encode a control reply (%s): sent an internal error instead", e)
            reply = reply_err(reply.get("id"), INTERNAL, "internal error: reply not encodable")
            data = encode(reply)
        if not reply["ok"]:
            self.ctl_errors += 1
        try:
            self.ctl.send_multipart([*route, data], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.ctl_dropped += 1

    def _finish(self, d: Deferred) -> dict[str, Any]:
        """The reply of a deferred op whose worker is done (on the loop thread)."""
        self.tel.request_id = d.request_id
        try:
            return reply_ok(d.request_id, d.result())
        except ControlError as e:
            return reply_err(d.request_id, e.code, str(e))
        except Exception as e:  # a bug: report it, keep the engine alive
            log.error("internal error in %s:\n%s", d.op, traceback.format_exc())
            return reply_err(d.request_id, INTERNAL, f"{d.op}: internal error ({type(e).__name__})")
        finally:
            self.tel.request_id = None

    def handle_frame(self, payload: bytes) -> dict[str, Any] | Deferred:
        """One control frame → its reply, or the ``Deferred`` of an op still on a worker;
        never raises (a bug becomes ``internal``)."""
        try:
            rid, op, args = parse_request(payload)
        except ProtocolError as e:
            return reply_err(getattr(e, "request_id", None), e.code, e.message)
        self.tel.request_id = rid  # events the op causes echo it
        try:
            res = run_op(self, op, args)
            if isinstance(res, Deferred):
                res.request_id = rid
                return res
            return reply_ok(rid, res)
        except ControlError as e:
            return reply_err(rid, e.code, str(e))
        except Exception as e:  # a bug: report it, keep the engine alive
            log.error("internal error in %s:\n%s", op, traceback.format_exc())
            self.tel.event("error", "error", message=f"{op}: internal error: {e!r}")
            return reply_err(rid, INTERNAL, f"{op}: internal error ({type(e).__name__})")
        finally:
            self.tel.request_id = None
