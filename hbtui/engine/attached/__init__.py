"""Programs under ``hbtui run`` as engine tasks (docs/attach.md, "Scheduler integration").

``AttachedSet`` holds one ``AttachedTask`` per attached segment and is polled from the
engine's loop (``poll``, every tick; the loop ticks every ``POLL_NS`` while programs are
attached). Each poll: heartbeat every segment, read new launch/module/function records,
update HP busy/requests from the completion counters, then let each LP program's
launches go as the engine's policy says:

- ``exclusive``: LP held entirely; ``spatial``: LP ungated (mode PASS, nothing waits);
- ``temporal``: LP granted only while no HP request is in flight (and HP idle);
- ``hummingbird``: as temporal, and inside HP requests a held LP kernel goes into a
  bubble (HP GPU-idle) when, of the recent bubbles that lasted as long as this one has,
  90 % also lasted its learned duration + a margin (engine.attached.hp.bubble_fits),
  unless the harvest guard measured that LP in that program's requests slows it more
  than its target (engine.attached.guard).

Between HP requests granted-but-unfinished LP work is kept within the task's budget
(``slice_us``), which bounds how long an arriving HP request can wait behind LP
(engine.attached.lp). With no HP program attached (and no HP profile task in the
engine) ``temporal`` and ``hummingbird`` let LP run ungated, as without hbtui; an HP
program's attach gates it again before the reply. HP programs are only observed
(engine.attached.hp).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from hbtui.attach import layout as L
from hbtui.attach.segment import Attachment, SegmentError
from hbtui.engine.attached.hp import HpTracker
from hbtui.engine.attached.lp import DEFAULT_BUDGET_US, LpGate
from hbtui.engine.attached.slices import SLICED_BUDGET_US
from hbtui.engine.attached.task import AttachedTask, AttachError
from hbtui.engine.attached.tuning import (
    BEAT_NS,
    BUBBLE_MARGIN_NS,
    DEAD_CHECK_NS,
    DEFAULT_HARVEST_GUARD,
    DEFAULT_IDLE_MS,
    HP_COMP_COARSE_US,
    HP_COMP_FINE_US,
    HP_POLL_NS,
    IDLE_POLL_NS,
    MAX_ATTACHED,
    POLL_NS,
    SWITCH_COST_NS,
)
from hbtui.engine.attached.variants import (
    EntryInfo,
    Job,
    ModuleVariant,
    VariantWorker,
    program_dirs,
)
from hbtui.engine.metrics import TaskStats
from hbtui.engine.model import HP, LP, Task
from hbtui.engine.scheduler import ControlError

log = logging.getLogger("hbtui.engine")


def _fine_timer_slack() -> None:
    """Sleep precisely: Linux adds 50 us of timer slack to every sleep by default, which
    would stretch the 20-us poll of attached programs to ~70 us. Best effort."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 us
        except (OSError, AttributeError):
            pass


def _fits_all(open_hps: list[HpTracker], now: int, margin_ns: float, duration_ns: float) -> bool:
    need = duration_ns + margin_ns
    # a bubble starts no earlier than its request (the time between marker requests is
    # not part of any bubble, as in the bubble history)
    return all(
        h.bubble_fits(now - max(h.bubble_start, h.open[-1].arrival_ns), need) for h in open_hps
    )


class AttachedSet:
    """The engine's attached programs (one scheduling thread calls everything here)."""

    def __init__(
        self, policy: Any, baseline_p99_ms: Any = None, variants: VariantWorker | None = None
    ) -> None:
        self.policy = policy  # () -> the engine's current policy name
        # LP programs' modules are sliced in the background (engine.attached.variants)
        self.variants = variants if variants is not None else VariantWorker()
        self.variant_results: dict[int, ModuleVariant] = {}  # image hash -> result
        self._sliced_names: dict[int, dict[int, EntryInfo]] = {}  # image hash -> name hash -> entry
        self.slicing = True  # hummingbird runs sliceable LP kernels as slices (--slice-programs)
        self.bubble_margin_ns = BUBBLE_MARGIN_NS
        self.switch_cost_ns = SWITCH_COST_NS
        self.hp_poll_ns = HP_POLL_NS  # --hp-poll-us
        self.harvest_guard = DEFAULT_HARVEST_GUARD  # --harvest-guard (fraction; 0: off)
        self.bubble_quiet_ns = 0  # --bubble-quiet-us (0: off): predicted in-request bubbles
        self.tasks: dict[str, AttachedTask] = {}
        self.by_shm: dict[str, AttachedTask] = {}
        self.listeners: list[Any] = []  # on_request(task, req, latency_ns, slo_ok)
        self._dead_check = 0
        self.departed: dict[str, dict[str, Any]] = {}  # last stats of detached programs
        self.poll_ns = IDLE_POLL_NS  # how often the engine's loop should tick for them now
        # the engine's own HP profile tasks share the GPU (then LP stays paced even with
        # no HP program attached)
        self.other_hp: Callable[[], bool] = lambda: False

    def __bool__(self) -> bool:
        return bool(self.tasks)

    def task(self, name: str) -> Task | None:
        t = self.tasks.get(name)
        return t.task if t is not None else None

    # -- attach / detach --------------------------------------------------------------
    def attach(
        self, *, task: str, cls: str, shm: str, launcher_pid: int, cmd: list[str], layout: int,
        slo_ms: float | None, idle_ms: float | None, taken: set[str], mps: bool = False,
        sm_percent: int | None = None,
    ) -> AttachedTask:  # fmt: skip
        if layout != L.VERSION:
            raise AttachError("bad_value", f"segment layout {layout}, this engine speaks "
                                           f"{L.VERSION}: upgrade hbtui on one side")  # fmt: skip
        if shm in self.by_shm:
            raise AttachError("bad_value", f"segment {shm!r} is already attached")
        if task in taken or task in self.tasks:
            raise AttachError("bad_value", f"a task named {task!r} already exists")
        if len(self.tasks) >= MAX_ATTACHED:
            raise AttachError("bad_value", f"at most {MAX_ATTACHED} programs attached")
        try:
            att = Attachment(shm)
        except SegmentError as e:
            raise AttachError("bad_value", str(e)) from None
        want = L.CLASS_HP if cls == HP else L.CLASS_LP
        if att.h.cls != want:
            att.close()
            raise AttachError("bad_value", f"segment {shm!r} was made for the other class")
        t = Task(task, cls, slo_ms=slo_ms)
        if cls == LP:
            t.slice_us = DEFAULT_BUDGET_US
        at = AttachedTask(t, att, shm, launcher_pid, list(cmd), idle_ms or DEFAULT_IDLE_MS)
        at.stats = TaskStats(task, cls)
        at.mps = mps
        at.sm_percent = sm_percent if mps and cls == LP else None  # (else it means nothing)
        if cls == HP:
            at.hp = HpTracker(int(at.idle_ms * 1e6))
            at.hp.guard.target = self.harvest_guard
            att.heartbeat()
            # LP that ran free (no HP) is paced before the reply (what it queued until now
            # still runs ahead of the HP's first requests, once)
            for o in self.tasks.values():
                if o.lp is not None:
                    self._set_mode(o, self.policy(), free=False)
        else:
            at.lp = LpGate(att)
            policy = self.policy()  # (before the reply: the first launch already obeys it)
            hp_here = any(o.hp is not None for o in self.tasks.values())
            self._set_mode(at, policy, self._free(policy, hp_here))
        at.rate_mark = (time.monotonic_ns(), 0)
        if not self.tasks:
            _fine_timer_slack()
        self.tasks[task] = at
        self.by_shm[shm] = at
        log.info("attached %s (%s) pid %d%s: %s", task, cls, launcher_pid,
                 " under MPS" if mps else "", " ".join(cmd)[:200])  # fmt: skip
        return at

    def detach(self, shm: str, exit_code: int | None = None) -> AttachedTask | None:
        at = self.by_shm.pop(shm, None)
        if at is None:
            return None
        self.tasks.pop(at.name, None)
        at.detached, at.exit_code = True, exit_code
        last = self._stats_of(at, time.monotonic_ns())
        last["exit_code"] = exit_code
        if at.lp is not None:  # the final summary lists every sliced kernel
            last["sliced_kernels"] = at.lp.slices.by_kernel()
        self.departed[at.name] = last
        while len(self.departed) > MAX_ATTACHED:  # bounded: the oldest go first
            self.departed.pop(next(iter(self.departed)))
        try:
            if at.lp is not None:
                at.att.set_slicing(False)  # whole kernels again, as without hbtui
                at.att.set_gated(False)  # anything still held goes now
            at.att.close()
        except (OSError, ValueError):
            pass
        log.info("detached %s (exit %s)", at.name, exit_code)
        return at

    def close(self) -> None:
        for shm in list(self.by_shm):
            self.detach(shm)
        self.variants.close()

    # -- live control (ops route edits of attached tasks here) -------------------------
    def _get(self, name: str) -> AttachedTask:
        at = self.tasks.get(name)
        if at is None:
            raise ControlError("unknown_task", f"no attached task named {name!r}")
        return at

    def set_priority(self, name: str, priority: int) -> None:
        self._get(name).task.priority = int(priority)

    def set_slice(self, name: str, us: float | None = None, blocks: int | None = None) -> None:
        """``us``: the budget of LP work in flight (slices are sized from it); ``blocks``:
        every slice of the program's sliced kernels exactly that many blocks, below a
        wave too (its whole kernels are not affected; the budget stays)."""
        at = self._get(name)
        if at.lp is None or (blocks or 0) > L.SLICE_MAX_BLOCKS:
            why = "is not an LP program" if at.lp is None else "takes at most 2^30 blocks a slice"
            raise ControlError("bad_value", f"set_slice: {name!r} {why}, got {blocks}")
        if blocks is None:
            at.task.slice_us = us
        at.task.slice_blocks = None if blocks is None else int(blocks)
        at.lp.slices.set_forced(at.task.slice_blocks)

    def set_slo(self, name: str, ms: float | None = None, factor: float | None = None) -> None:
        t = self._get(name).task
        if factor is not None:
            raise ControlError("bad_value", f"set_slo: {name!r} has no exclusive baseline; "
                                            "give 'ms'")  # fmt: skip
        t.slo_ms = ms

    def set_paused(self, name: str, paused: bool) -> None:
        self._get(name).task.paused = paused

    # -- the poll ---------------------------------------------------------------------
    def poll(self, now_ns: int | None = None) -> None:
        if not self.tasks:
            return
        now = time.monotonic_ns() if now_ns is None else now_ns
        if now - self._dead_check > DEAD_CHECK_NS:
            self._dead_check = now
            self._drop_dead()
        self._take_variants()
        hps, lps, hp_atts = [], [], []
        fresh = False
        for at in self.tasks.values():
            att = at.att
            if now - at.beat_ns >= at.beat_every_ns:
                at.beat_ns, at.beat_every_ns = now, min(BEAT_NS, att.grace_ns // 4)
                att.heartbeat(now)
            self._read_names(at)
            recs = att.launches()
            fresh = fresh or bool(recs)
            if at.hp is not None:
                hp = at.hp
                for r in recs:
                    hp.on_launch(r, now)
                hp.slo_ns = at.task.slo_ns(None)
                hp.poll(att.counters, now, lambda a=att: a.syncing, lambda a=att: a.synced_ns)
                self._requests_done(at)
                hps.append(hp)
                hp_atts.append(att)
            else:
                lp = at.lp
                assert lp is not None
                for r in recs:
                    lp.on_launch(r)
                lp.poll(now, at.sliceable)
                lps.append(at)
        if lps:
            self._gate(lps, hps, now)
        policy = self.policy()
        fine = bool(lps) and policy in ("temporal", "hummingbird")
        predict = self.bubble_quiet_ns if lps and policy == "hummingbird" else 0
        for att, hp in zip(hp_atts, hps, strict=True):
            att.set_hp_comp_us(HP_COMP_FINE_US if fine else HP_COMP_COARSE_US, hp.idle_ns // 1000)
            hp.bubble_quiet_ns = predict  # (predicted bubbles serve only hummingbird's grants)
            if not predict:
                hp.predicted_since = 0
        active = (
            fresh
            or any(h.busy or h.open for h in hps)
            or any(at.lp is not None and at.lp.inflight for at in lps)
        )
        self.poll_ns = (POLL_NS if lps else self.hp_poll_ns) if active else IDLE_POLL_NS

    def _gate(self, lps: list[AttachedTask], hps: list[HpTracker], now: int) -> None:
        policy = self.policy()
        in_request = any(h.in_request for h in hps)
        free = self._free(policy, bool(hps))
        bubble = self._bubble(policy, hps, now) if in_request else None
        for at in lps:
            lp = at.lp
            assert lp is not None
            if not self._set_mode(at, policy, free) or policy == "exclusive" or at.task.paused:
                continue
            budget = (at.task.slice_us or self.default_budget_us(at)) * 1e3
            lp.slices.plan(now, budget / 2)  # a slice running and one queued fit the budget
            if not in_request:
                lp.slices.restore()
                lp.grant_within(budget)
            elif bubble is not None:
                open_hps, fits, slack = bubble
                cap = min(budget, slack)  # (no SLO slack left: no LP)
                if cap > 0 and lp.grant_in_bubble(fits, cap):
                    for h in open_hps:
                        h.on_grant()
        if in_request and any(at.lp is not None and at.lp.inflight for at in lps):
            # LP still running in a bubble (granted before the request, or in an earlier
            # bubble): the HP's next kernel pays for it as for a grant made in it
            for h in hps:
                if h.open and h.gpu_idle:
                    h.on_grant()

    def _free(self, policy: str, hp_attached: bool) -> bool:
        """No HP to protect: LP runs as without hbtui (pacing it within the budget cost a
        compiled GPT-2 a quarter of its speed) until an HP program attaches."""
        return not hp_attached and policy != "exclusive" and not self.other_hp()

    def _set_mode(self, at: AttachedTask, policy: str, free: bool) -> bool:
        """One LP program's gate and slicing for the policy; True when it is gated."""
        lp = at.lp
        assert lp is not None
        # slices under hummingbird only (spatial too runs whole: slices only cost launches)
        lp.slices.set_on(policy == "hummingbird" and self.slicing and not free)
        lp.set_gated(not ((policy == "spatial" or free) and not at.task.paused))
        return lp.gated

    def _bubble(
        self, policy: str, hps: list[HpTracker], now: int
    ) -> tuple[list[HpTracker], Callable[[float], bool], float] | None:
        """Inside HP requests under hummingbird, while HP is GPU-idle: the open requests'
        programs, what an LP launch must fit (the bubble rule) and the SLO slack it may
        take; None when LP may not go in now (HP busy, the guard holding LP off, or the
        requests' share of what LP in their bubbles costs them spent)."""
        open_hps = [h for h in hps if h.open]
        if (
            policy != "hummingbird"
            or not all(h.gpu_idle for h in hps)
            or not all(h.guard.allowed(now) for h in open_hps)
        ):
            return None
        switch = self.switch_ns()
        if self.harvest_guard and not all(
            h.may_grant(self.harvest_guard, h.grant_cost_ns(switch)) for h in open_hps
        ):
            return None
        fits = partial(_fits_all, open_hps, now, self.bubble_margin_ns + switch)
        slack = [s for h in hps if (s := h.slack_ns(now, h.slo_ns)) is not None]
        return open_hps, fits, min(slack, default=math.inf)

    def switch_ns(self) -> float:
        """What an in-request grant costs the HP in a switch back to its context: the
        measured cost on a time-sliced GPU, 0 when every program shares one MPS context."""
        return 0.0 if all(t.mps for t in self.tasks.values()) else self.switch_cost_ns

    @staticmethod
    def default_budget_us(at: AttachedTask) -> float:
        """LP work in flight when the operator set none: small once most of the program's
        GPU time is in kernels that have sliced variants (an arriving HP request waits for
        what is in flight), larger while most of it is whole kernels (cuDNN/cuBLAS: a small
        budget would run them one at a time, a poll apart, and they block HP for their
        length anyway). Sliceable, not sliced: under 500 us most kernels fit one slice and
        run whole (a compiled GPT-2: 66 % sliceable, 12 % sliced), which would keep it."""
        lp = at.lp
        if lp is None or not lp.slices.on or lp.sliceable_ns < 0.5 * max(1.0, lp.busy_ns):
            return DEFAULT_BUDGET_US
        return SLICED_BUDGET_US

    def _publish(self, at: AttachedTask, func: int, module_hash: int) -> None:
        """A function the slicer sliced: the program may run it as slices."""
        entry = self._sliced_names.get(module_hash, {}).get(at.func_names.get(func))
        if entry is None:
            return
        at.sliceable.add(func)
        if at.lp is not None:
            at.lp.slices.publish(func, module_hash, entry)

    def _read_names(self, at: AttachedTask) -> None:
        for m in at.att.modules():
            if m.result != 0:
                continue
            if at.lp is not None and m.hash and m.hash not in at.modules:
                self._want_variant(at, m)
        for f in at.att.functions():
            if f.result == 0:
                at.funcs[f.func] = f.module_hash
                at.func_names[f.func] = f.name_hash  # names in the ring may be truncated
                if f.name_hash in self._sliced_names.get(f.module_hash, ()):
                    self._publish(at, f.func, f.module_hash)

    def _want_variant(self, at: AttachedTask, m: L.Module) -> None:
        """An LP program loaded a module: have its sliceable variant made (or read)."""
        known = self.variant_results.get(m.hash)
        at.modules[m.hash] = known.status if known is not None else "pending"
        if at.dirs is None:
            at.dirs = program_dirs(int(at.att.h.intercept_pid))
        mdir, roots = at.dirs
        cc = int(at.att.h.device_cc) or 90  # (unknown: sm_90, the lent GPUs)
        self.variants.request(Job(m.hash, m.image_kind, m.size, mdir, roots, time.monotonic_ns(),
                                  arch=cc))  # fmt: skip

    def _take_variants(self) -> None:
        """Finished slicer results: mark the functions they make sliceable."""
        for v in self.variants.take():
            self.variant_results[v.hash] = v
            names = {L.hash64(e.name.encode()): e for e in v.entries if e.status == "sliced"}
            self._sliced_names[v.hash] = names
            for at in self.tasks.values():
                if v.hash not in at.modules:
                    continue
                at.modules[v.hash] = v.status
                for func, mh in at.funcs.items():
                    if mh == v.hash and at.func_names.get(func) in names:
                        self._publish(at, func, mh)

    def _requests_done(self, at: AttachedTask) -> None:
        assert at.hp is not None and at.stats is not None
        done = at.hp.take_done()
        if not done:
            return
        slo = at.task.slo_ns(None)
        for req, lat in done:
            ok = None if slo is None else lat <= slo
            at.stats.requests += 1
            at.stats.latency.add(lat)
            if ok:
                at.stats.slo_hits += 1
            for listener in self.listeners:
                listener.on_request(at.name, req, lat, ok)

    def _drop_dead(self) -> None:
        for at in list(self.tasks.values()):
            try:
                os.kill(at.launcher_pid, 0)
            except (ProcessLookupError, OverflowError, ValueError):  # gone, or never a pid
                log.warning("launcher %d of %s is gone: detaching", at.launcher_pid, at.name)
                self.detach(at.shm)
            except PermissionError:
                pass

    # -- reports ---------------------------------------------------------------------------
    def task_state(self, at: AttachedTask) -> dict[str, Any]:
        t = at.task
        d: dict[str, Any] = {"name": t.name, "class": t.cls, "priority": t.priority,
                             "paused": t.paused}  # fmt: skip
        if t.cls == HP:
            d.update(slo_ms=t.slo_ms, slo_factor=None, slo_effective_ms=t.slo_ms)
        else:
            d.update(slice_us=t.slice_us, slice_blocks=t.slice_blocks,
                     slice_default_us=DEFAULT_BUDGET_US)  # fmt: skip
        d["attached"] = at.info()
        return d

    def task_states(self) -> list[dict[str, Any]]:
        return [self.task_state(at) for at in self.tasks.values()]

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-task ``stats`` entries (the profile tasks' shape, plus ``attached``)."""
        now = time.monotonic_ns()
        out: dict[str, dict[str, Any]] = {}
        for at in self.tasks.values():
            t0, n0 = at.rate_mark
            n = at.launches()
            at.kernels_per_s = (n - n0) / max(1e-9, (now - t0) / 1e9)
            at.rate_mark = (now, n)
            out[at.name] = self._stats_of(at, now)
        return out

    def _stats_of(self, at: AttachedTask, now: int) -> dict[str, Any]:
        assert at.stats is not None
        wall = max(1, now - at.attached_ns)
        s = at.stats.summary(at.task.slo_ns(None), wall, None, {})
        if at.lp is not None:
            s.update(work_per_s=at.lp.completed / (wall / 1e9), slices=at.lp.completed)
        else:  # the engine sees no HP kernel start times: no preemption figure
            s.pop("preemption_us", None)
        s["attached"] = at.info()
        return s

    def reset_stats(self) -> None:
        """``reset_stats``: attached programs' figures start over too."""
        now = time.monotonic_ns()
        for at in self.tasks.values():
            at.stats = TaskStats(at.name, at.cls)
            at.attached_ns = now
            at.rate_mark = (now, at.launches())
            if at.lp is not None:
                at.lp.completed = 0
                at.lp.busy_ns = at.lp.sliceable_ns = 0.0
            if at.hp is not None:
                at.hp.reset()
        self.departed.clear()
