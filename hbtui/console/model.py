"""The console's data model: pure Python, no Textual, testable on its own.

Telemetry arrives far faster than a terminal can show it (tens of thousands of slice
records per second). ``EngineModel.apply`` does O(1) work per envelope: it overwrites
the latest values, appends to bounded histories and remembers which task rows
changed. The UI then calls ``take_changes`` on its own ~10 Hz tick and updates only
those rows and charts, so the cost of drawing is independent of the message rate.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from hbtui.console import wire
from hbtui.console.rows import Changes, TaskRow
from hbtui.engine.protocol import (
    EventBody,
    GpuBody,
    RequestBody,
    SliceBody,
    StateBody,
    StatsBody,
    TaskState,
    TaskStats,
)

HISTORY = 120  # chart points kept per series (one per stats message, ≥ 1 Hz)
SLICE_BATCHES = 256  # recent slice batches kept for the timeline strip
EVENTS = 50
MARKS = 16  # profile-load markers kept for the charts

# Chart series names, in display order.
SERIES = ("attainment", "hp_p99_ms", "lp_norm", "harvest", "preempt_p99_us")

CONNECTING, LIVE, STALE, DISCONNECTED = "connecting", "live", "stale", "disconnected"


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


class EngineModel:
    """Latest known state of one engine, fed envelope by envelope."""

    def __init__(self, history: int = HISTORY) -> None:
        self.engine_id = ""
        self.backend = ""
        self.device = ""
        self.device_index: int | None = None  # which GPU of the engine's box (cuda)
        self.pci_bus_id = ""  # ... and its PCI bus id: tells identical GPUs apart
        self.hp_issue = ""  # "native" | "python" | "native (simulated)"
        self.policy = ""
        self.profile = ""
        self.phase = ""  # "calibrating" or "running"
        self.readonly = False
        self.tasks: dict[str, TaskRow] = {}
        self.gpu: dict[str, Any] | None = None
        self.gpu_busy: float | None = None
        self.harvest_ratio: float | None = None
        self.engine_dropped = 0  # drops the engine reports (publisher overload)
        self.bad_messages = 0  # messages refused by hbtui.console.wire (not applied)
        self.bad_frames = 0  # frames the subscriber could not decode (set by the link)
        self.last_bad = ""  # why the latest bad message was refused
        self.baseline_p99_ms: dict[str, float] = {}  # exclusive (HP alone) p99 per task
        self.baseline_attainment: dict[str, float] = {}  # exclusive attainment, if sent
        self.samples = 0  # chart points appended so far (the x of a profile-load marker)
        self.marks: deque[int] = deque(maxlen=MARKS)  # samples at which a profile loaded
        self.history: dict[str, deque[float]] = {s: deque(maxlen=history) for s in SERIES}
        self.slo_line_ms: float | None = None
        self.slices: deque[SliceBody] = deque(maxlen=SLICE_BATCHES)
        self.slice_records = 0
        self.last_end_ns = 0
        self.events: deque[EventBody] = deque(maxlen=EVENTS)
        # Sequence accounting: gaps are messages published but never received.
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.received = 0
        self.gaps = 0
        self.last_msg_at: float | None = None  # caller's clock (monotonic seconds)
        self.last_ts_ns = 0  # engine's publish time of the latest message (wall ns)
        self.connection = CONNECTING
        self.dirty = False  # unsaved changes made through this console
        self.charts_paused = False
        self._changes = Changes()

    # -- feeding -------------------------------------------------------------------------
    def apply(self, env: dict[str, Any], now: float) -> None:
        """Fold one decoded envelope in. Unknown types are counted and ignored; a message
        whose shape is wrong (``hbtui.console.wire``) is counted as bad and not applied."""
        try:
            wire.envelope(env)
        except wire.BadMessage as e:
            if isinstance(env.get("seq"), int) and isinstance(env.get("engine_id"), str):
                self._arrived(env, now)  # it came from the engine: the link is alive
            self.refuse(str(e))
            return
        self._arrived(env, now)
        body = env.get("body")
        if not isinstance(body, dict):
            return
        handler = getattr(self, f"_on_{env.get('type')}", None)
        if handler is not None:
            self._guarded(handler, body)

    def refuse(self, why: str) -> None:
        """Count one bad message and remember why (shown in the header)."""
        self.bad_messages += 1
        self.last_bad = why[:200]
        self._changes.header = True

    def _guarded(self, handler: Any, body: dict[str, Any]) -> None:
        # wire checked the shape; this is the last net: a bad message is never fatal.
        try:
            handler(body)
        except Exception as e:  # noqa: BLE001
            self.refuse(f"{type(e).__name__}: {wire.short(str(e), 80)}")

    def _arrived(self, env: dict[str, Any], now: float) -> None:
        seq = env.get("seq")
        eid = env.get("engine_id")
        if isinstance(eid, str) and eid and eid != self.engine_id:
            if self.engine_id:  # a restarted engine starts its seq again
                self.first_seq = self.last_seq = None
            self.engine_id = eid
            self._changes.header = True
        if isinstance(seq, int):
            if self.last_seq is not None and seq > self.last_seq + 1:
                self.gaps += seq - self.last_seq - 1
            if self.last_seq is None or seq < self.last_seq:
                self.first_seq = seq
            self.last_seq = seq
        self.received += 1
        self.last_msg_at = now
        ts = env.get("ts_ns")
        if isinstance(ts, int):
            self.last_ts_ns = ts
        if self.connection != LIVE:
            self.connection = LIVE
            self._changes.header = True

    def apply_state(self, body: StateBody) -> None:
        """A state snapshot from a control reply (get_state): not telemetry, so it does not
        count as a received message or prove the telemetry link alive."""
        if not isinstance(body, dict):
            self.refuse(f"get_state: {wire.short(body)} is not a map")
            return
        try:
            wire.state(dict(body))
        except wire.BadMessage as e:
            self.refuse(f"get_state: {e}")
            return
        self._guarded(self._on_state, dict(body))

    # Handlers read exactly the names engine.protocol declares for each body; anything
    # missing or mistyped is skipped (a bad message never raises here).
    def _on_state(self, b: StateBody) -> None:
        prof = b.get("profile")
        header = {
            "backend": b.get("backend"),
            "device": b.get("device"),
            "hp_issue": b.get("hp_issue"),
            "policy": b.get("policy"),
            "profile": prof.get("name") if isinstance(prof, dict) else None,
            "phase": b.get("phase"),
        }
        for key, v in header.items():
            if v is not None and str(v) != getattr(self, key):
                setattr(self, key, str(v))
                self._changes.header = True
        idx = b.get("device_index")
        idx = idx if isinstance(idx, int) and not isinstance(idx, bool) else None
        bus = b.get("pci_bus_id")
        bus = bus if isinstance(bus, str) else ""
        if (idx, bus) != (self.device_index, self.pci_bus_id):
            self.device_index, self.pci_bus_id = idx, bus
            self._changes.header = True
        ro = bool(b.get("readonly", False))
        if ro != self.readonly:
            self.readonly = ro
            self._changes.header = True
        eid = b.get("engine_id")
        if isinstance(eid, str) and eid != self.engine_id:
            self.engine_id = eid
            self._changes.header = True
        self._baselines(b)
        tasks = b.get("tasks")
        if not isinstance(tasks, list):
            return
        seen = set()
        for t in tasks:
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                seen.add(t["name"])
                self._task_state(t)
        for name in [n for n in self.tasks if n not in seen]:
            del self.tasks[name]
            self._changes.removed.append(name)
            self._changes.rows.discard(name)

    def _task_state(self, t: TaskState) -> None:
        row = self._row(t["name"])
        cls = t.get("class")
        if isinstance(cls, str):
            self._set(row, "cls", cls)
        prio = t.get("priority")
        if isinstance(prio, int):
            self._set(row, "priority", prio)
        self._set(row, "paused", bool(t.get("paused", False)))
        if row.cls == "hp":
            self._set(row, "slo_ms", _f(t.get("slo_ms")))
            self._set(row, "slo_factor", _f(t.get("slo_factor")))
            self._set(row, "slo_effective_ms", _f(t.get("slo_effective_ms")))
        else:
            self._set(row, "slice_us", _f(t.get("slice_us")))
            blocks = t.get("slice_blocks")
            self._set(row, "slice_blocks", blocks if isinstance(blocks, int) else None)
        self._attached(row, t.get("attached"))

    def _attached(self, row: TaskRow, att: Any) -> None:
        self._set(row, "attached", dict(att) if isinstance(att, dict) else None)

    def _baselines(self, b: StateBody | StatsBody) -> None:
        """The exclusive (HP alone) figures from calibration, when the body carries them."""
        for key in ("baseline_p99_ms", "baseline_attainment"):
            got = b.get(key)
            if not isinstance(got, dict):
                continue
            vals = {k: float(v) for k, v in got.items() if _f(v) is not None}
            if vals != getattr(self, key):
                setattr(self, key, vals)
                self._changes.header = True

    def _on_stats(self, b: StatsBody) -> None:
        self._baselines(b)
        tasks = b.get("tasks")
        hp_att: float | None = None
        hp_p99: float | None = None
        pre99: float | None = None
        lp_norm: float | None = None
        slo: float | None = None
        for name, s in (tasks if isinstance(tasks, dict) else {}).items():
            if not isinstance(name, str) or not isinstance(s, dict):
                continue
            row = self._task_stats(name, s)
            # Charts follow the highest-priority HP task and the sum over LP tasks.
            if row.cls == "hp" and hp_att is None:
                hp_att, hp_p99, pre99 = row.attainment, row.p99_ms, row.preempt_p99_us
                slo = row.slo_effective_ms or row.slo_ms
            elif row.cls == "lp" and row.throughput_norm is not None:
                lp_norm = (lp_norm or 0.0) + row.throughput_norm
        win = b.get("window")
        win = win if isinstance(win, dict) else {}  # the live view: the rolling window
        self.harvest_ratio = _f(win.get("harvest_ratio"))
        self.gpu_busy = _f(win.get("gpu_busy"))
        tel = b.get("telemetry")
        if isinstance(tel, dict):
            dropped = sum(
                v
                for k, v in tel.items()
                if k in ("dropped", "dropped_records") and isinstance(v, int)
            )
            if dropped != self.engine_dropped:
                self.engine_dropped = dropped
                self._changes.header = True
        if slo != self.slo_line_ms:
            self.slo_line_ms = slo
        if self.charts_paused:
            return
        for key, v in (
            ("attainment", hp_att),
            ("hp_p99_ms", hp_p99),
            ("lp_norm", lp_norm),
            ("harvest", self.harvest_ratio),
            ("preempt_p99_us", pre99),
        ):
            if v is not None and math.isfinite(v):
                self.history[key].append(v)
        self.samples += 1
        self._changes.charts = True

    def reset_figures(self) -> None:
        """After reset_stats: every figure blank and the charts empty until the engine's
        next `stats` (the table shows – at once: the reset is visible)."""
        for row in self.tasks.values():
            for attr in ("requests", "attainment", "p50_ms", "p99_ms", "preempt_p99_us",
                         "work_per_s", "throughput_norm"):  # fmt: skip
                self._set(row, attr, None)
        for h in self.history.values():
            h.clear()
        self.marks.clear()
        self._changes.charts = self._changes.header = True

    def mark_profile_load(self) -> None:
        """A profile was loaded now: the charts draw a marker at this point."""
        if not self.marks or self.marks[-1] != self.samples:
            self.marks.append(self.samples)
            self._changes.charts = True

    def marks_in_view(self, n: int) -> list[int]:
        """Marker positions among the last ``n`` chart points (0 = the oldest shown)."""
        first = self.samples - n
        return [s - first for s in self.marks if first <= s <= self.samples]

    def _task_stats(self, name: str, s: TaskStats) -> TaskRow:
        row = self._row(name)
        cls = s.get("class")
        if isinstance(cls, str):
            self._set(row, "cls", cls)
        win = s.get("window")
        # Live view: the engine's rolling window (last few s) over since-reset totals.
        f: dict[str, Any] = {**s, **win} if isinstance(win, dict) and win else dict(s)
        req = f.get("requests")
        self._set(row, "requests", req if isinstance(req, int) else None)
        self._set(row, "attainment", _f(f.get("slo_attainment")))
        self._set(row, "p50_ms", _f(f.get("p50_ms")))
        self._set(row, "p99_ms", _f(f.get("p99_ms")))
        pre = f.get("preemption_us")
        self._set(row, "preempt_p99_us", _f(pre.get("p99")) if isinstance(pre, dict) else None)
        self._set(row, "work_per_s", _f(f.get("work_per_s")))
        self._set(row, "throughput_norm", _f(f.get("throughput_norm")))
        if _f(f.get("slo_ms")) is not None and row.cls == "hp":
            self._set(row, "slo_effective_ms", _f(f.get("slo_ms")))
        if "attached" in s:
            self._attached(row, s.get("attached"))
        return row

    def _on_slice(self, b: SliceBody) -> None:
        ends = b.get("end_ns")
        if not isinstance(ends, list) or not ends:
            return
        if not all(isinstance(b.get(k), list) for k in ("start_ns", "cls")):
            return  # the timeline reads these three columns
        self.slice_records += len(ends)
        if self.charts_paused:
            return
        self.slices.append(b)  # kept columnar; only the timeline looks inside
        last = ends[-1]
        if isinstance(last, int) and last > self.last_end_ns:
            self.last_end_ns = last
        self._changes.timeline = True

    def _on_gpu(self, b: GpuBody) -> None:
        self.gpu = dict(b)
        self._changes.gpu = True

    def _on_event(self, b: EventBody) -> None:
        self.events.append(b)
        self._changes.events.append(b)
        policy = b.get("policy")  # a set_policy event carries its result's field
        if b.get("kind") == "set_policy" and isinstance(policy, str):
            self.policy = policy
            self._changes.header = True
        if b.get("kind") == "load_profile":
            self.mark_profile_load()

    def _on_request(self, b: RequestBody) -> None:
        pass  # per-request records: stats already aggregates them

    # -- connection bookkeeping ------------------------------------------------------------
    def set_connection(self, state: str) -> None:
        if state != self.connection:
            self.connection = state
            self._changes.header = True

    def set_bad_frames(self, n: int) -> None:
        if n != self.bad_frames:
            self.bad_frames = n
            self._changes.header = True

    def bad_total(self) -> int:
        """Messages that reached the console but could not be used: undecodable + bad."""
        return self.bad_frames + self.bad_messages

    def age(self, now: float) -> float | None:
        return None if self.last_msg_at is None else max(0.0, now - self.last_msg_at)

    def published(self) -> int:
        """Messages the engine published since we first heard it (from seq numbers)."""
        if self.first_seq is None or self.last_seq is None:
            return 0
        return self.last_seq - self.first_seq + 1

    def set_pending(self, task: str | None, text: str) -> None:
        if task and task in self.tasks:
            self.tasks[task].pending = text
            self._changes.rows.add(task)
        self._changes.header = True

    def mark_dirty(self, dirty: bool) -> None:
        if dirty != self.dirty:
            self.dirty = dirty
            self._changes.header = True

    # -- draining --------------------------------------------------------------------------
    def take_changes(self) -> Changes:
        ch, self._changes = self._changes, Changes()
        return ch

    def _row(self, name: str) -> TaskRow:
        row = self.tasks.get(name)
        if row is None:
            row = self.tasks[name] = TaskRow(name)
            self._changes.added.append(name)
        return row

    def _set(self, row: TaskRow, attr: str, value: Any) -> None:
        if getattr(row, attr) != value:
            setattr(row, attr, value)
            self._changes.rows.add(row.name)

    # -- views -----------------------------------------------------------------------------
    def timeline(self, width: int, span_ns: int) -> tuple[list[float], list[float]]:
        """Busy fraction of each of ``width`` columns for HP kernels and LP slices over the
        last ``span_ns`` of GPU time (ending at the latest slice end seen)."""
        hp = [0.0] * width
        lp = [0.0] * width
        if width <= 0 or span_ns <= 0 or not self.last_end_ns:
            return hp, lp
        t1 = self.last_end_ns
        t0 = t1 - span_ns
        col = span_ns / width
        for batch in reversed(self.slices):
            starts, ends, classes = batch["start_ns"], batch["end_ns"], batch["cls"]
            if ends and isinstance(ends[-1], int) and ends[-1] < t0:
                break  # batches arrive in time order: everything older is out of view
            for s, e, c in zip(starts, ends, classes, strict=False):
                if type(s) is not int or type(e) is not int or e <= t0 or s >= t1:
                    continue  # declared list[int]: anything else (NaN, str) is skipped
                row = hp if c == "hp" else lp
                s, e = max(s, t0), min(e, t1)
                i = int((s - t0) / col)
                while i < width and s < e:
                    cell_end = t0 + (i + 1) * col
                    seg = min(e, cell_end) - s
                    row[i] = min(1.0, row[i] + seg / col)
                    s = cell_end
                    i += 1
        return hp, lp
