"""Slices of an attached LP program's kernels (issue 16; docs/attach.md, "Slices").

For every function of the program whose module the slicer rewrote, the engine publishes
a variant entry in the segment (``Attachment.publish_variant``); while the engine's
policy is ``hummingbird`` (and slicing is on) the interceptor then runs each launch of
it as consecutive slices, every slice gated and recorded like a launch of its own.

The slice size is the engine's: per function, the GPU time of one block is learned
online from the completed slices (the same completion timing the gate uses for whole
kernels), and ``slice_blocks`` is written so that a slice lasts about the target (half
the task's in-flight budget: one slice running and one queued fit in it). The
interceptor rounds it down to whole waves (SMs x resident blocks per SM, which it asks
the driver for), at least one wave; until a block time is known a slice is one wave.

An operator's block count (``set_slice`` with ``blocks``) replaces all of that: every
sliced function's slices are exactly that many blocks, below a wave too (the interceptor
then does no wave rounding: ``layout.SLICE_FORCED``; whole rows still), inside requests
as outside. A slice below a wave takes about one block's lifetime however few blocks it
has, so the block-time model does not hold for it: the gate predicts a forced slice from
the slices seen at that size (their own average, restarted at every new size; slices
issued before a change teach neither model), and until one was seen a bubble is judged
by the whole-kernel rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hbtui.attach import layout as L
from hbtui.attach.segment import Attachment
from hbtui.engine.attached.variants import EntryInfo

SLICED_BUDGET_US = 100.0  # the default in-flight budget of a program whose kernels are sliced
EWMA = 0.25
PLAN_EVERY_NS = 20_000_000  # slice sizes are revisited this often
REWRITE_RATIO = 0.1  # ... and written when they move by more than this
MAX_WAVES = 1 << 16  # a bubble-sized slice's waves at most (bounds the search)
# functions revisited per plan (round robin): the plan runs on the engine's scheduling
# thread, and reading a variant's state costs a few us; a compiled model has hundreds
PLAN_BATCH = 32


class Slices:
    """The sliced functions of one attached LP program and their slice sizes."""

    def __init__(self, att: Attachment) -> None:
        self.att = att
        self.slots: dict[int, int] = {}  # func -> its variant's slot in the segment
        self.ns_per_block: dict[int, float] = {}  # func -> learned GPU time of one block
        self.blocks: dict[int, tuple[int, bool]] = {}  # func -> slice_blocks written, forced
        self.planned: dict[int, int] = {}  # func -> slice_blocks for the budget (plan)
        self.wave: dict[int, int] = {}  # func -> blocks per wave (the interceptor's figure)
        self.on = False
        self.forced: int | None = None  # the operator's exact blocks a slice (None: planned)
        self.forced_ns: dict[int, float] = {}  # func -> GPU time of its slices at that size
        self._size_since_ns = 0  # CLOCK_MONOTONIC of the last set_forced: older slices had
        # the size before it and teach neither model
        self.sliced_ns = 0.0  # GPU time of completed slices
        self.slices = 0
        self.names: dict[int, str] = {}  # func -> entry name (published functions)
        self.counts: dict[int, list[int]] = {}  # func -> [launches run as slices, slices]
        self.failed: set[int] = set()  # funcs whose variant the interceptor marked failed
        self._planned_at = -PLAN_EVERY_NS
        self._resized: set[int] = set()  # funcs whose slice size a bubble set (restore)
        self._order: list[int] = []  # published funcs, in publish order (the plan's round)
        self._next = 0

    def publish(self, func: int, module_hash: int, entry: EntryInfo) -> bool:
        """Let ``func`` (the program's handle of ``entry`` in module ``module_hash``) run
        as slices from its next launch on."""
        if func in self.slots:
            return True
        if entry.params is None:
            return False
        forced = 0 if self.forced is None else self.forced | L.SLICE_FORCED
        slot = self.att.publish_variant(func, module_hash, entry.name, entry.params,
                                        entry.param_bytes, slice_blocks=forced)  # fmt: skip
        if slot is None:  # table full or a name too long: it runs whole
            return False
        self.slots[func] = slot
        self.names[func] = entry.name
        self._order.append(func)
        if self.forced is not None:
            self.blocks[func] = (self.forced, True)  # published with it
        return True

    def set_forced(self, blocks: int | None) -> None:
        """Every slice exactly ``blocks`` blocks (the operator's); None: the planned sizes
        again (those not planned yet go back to one wave)."""
        self.forced = blocks
        self.forced_ns.clear()
        self._size_since_ns = time.monotonic_ns()  # the interceptor's clock (issue_ns)
        self._resized.clear()
        for func in self.slots:
            self._write(func, blocks if blocks is not None else self.planned.get(func, 0))

    def on_slice(self, func: int, first: bool) -> None:
        """A slice record (``first``: the launch's first slice)."""
        c = self.counts.setdefault(func, [0, 0])
        c[0] += first
        c[1] += 1

    def by_kernel(self) -> dict[str, dict[str, int]]:
        """Per sliced kernel name: launches run as slices and slices (summed over handles)."""
        out: dict[str, dict[str, int]] = {}
        for func, (launches, slices) in self.counts.items():
            d = out.setdefault(self.names.get(func, f"0x{func:x}"), {"launches": 0, "slices": 0})
            d["launches"] += launches
            d["slices"] += slices
        return out

    def set_on(self, on: bool) -> None:
        if on != self.on:
            self.on = on
            self.att.set_slicing(on)

    def learn(self, func: int, blocks: int, share_ns: float, issued_ns: int | None = None) -> None:
        """A slice of ``blocks`` blocks of ``func`` (issued at ``issued_ns``, CLOCK_MONOTONIC)
        took about ``share_ns`` on the GPU."""
        self.sliced_ns += share_ns
        self.slices += 1
        if blocks <= 0 or (issued_ns is not None and issued_ns < self._size_since_ns):
            return
        if self.forced is not None:  # its own average: the block model does not hold below a wave
            old = self.forced_ns.get(func)
            self.forced_ns[func] = share_ns if old is None else old + EWMA * (share_ns - old)
            return
        x = share_ns / blocks
        old = self.ns_per_block.get(func)
        self.ns_per_block[func] = x if old is None else old + EWMA * (x - old)

    def duration_ns(self, func: int) -> float | None:
        """The predicted GPU time of the next slice of ``func``; None: not sliced or
        nothing learned yet (the gate then uses its whole-kernel estimate)."""
        if not self.on or func not in self.slots or func in self.failed:
            return None  # (failed: its launches run whole)
        per = self.ns_per_block.get(func)
        wave = self.wave.get(func, 0)
        if self.forced is not None and func in self.forced_ns:
            return self.forced_ns[func]
        if per is None or wave <= 0:
            return None
        if self.forced is not None:  # none seen at this size yet: its waves, at least one
            return per * wave * -(-self.forced // wave)
        want = self.blocks.get(func, (0, False))[0]
        return per * max(wave, want // wave * wave)

    def plan(self, now_ns: int, target_ns: float) -> None:
        """Write sliced functions' slice sizes for ``target_ns`` slices (up to
        ``PLAN_BATCH`` functions a call, round robin)."""
        if not self.on or now_ns - self._planned_at < PLAN_EVERY_NS or not self._order:
            return
        self._planned_at = now_ns
        n = len(self._order)
        batch = [self._order[(self._next + i) % n] for i in range(min(PLAN_BATCH, n))]
        self._next = (self._next + len(batch)) % n
        for func in batch:
            v = self.att.variant(func)
            if v is not None and v.state == L.VAR_FAILED:
                self.failed.add(func)  # never ready again in this program (the interceptor's)
            if v is not None and v.wave_blocks:
                self.wave[func] = int(v.wave_blocks)
            per = self.ns_per_block.get(func)
            if per is None or per <= 0 or self.forced is not None:
                continue
            want = max(1, int(target_ns / per))
            old = self.planned.get(func, 0)
            if not old or abs(want - old) > REWRITE_RATIO * old:
                self.planned[func] = want
                self._write(func, want)

    def _write(self, func: int, blocks: int) -> None:
        """``blocks`` a slice of ``func`` from its next slice on (exactly, when forced)."""
        key = (blocks, self.forced is not None)
        if self.blocks.get(func) != key:
            self.att.set_slice_blocks(self.slots[func], blocks, forced=self.forced is not None)
            self.blocks[func] = key

    def restore(self) -> None:
        """Outside HP requests: the budget's slice sizes again for the functions whose
        slices were sized to a bubble (this runs every poll: it touches only those)."""
        while self._resized:
            func = self._resized.pop()
            if func in self.planned:
                self._write(func, self.planned[func])

    def fit_blocks(self, func: int, fits: Callable[[float], bool], cap_ns: float) -> int | None:
        """Inside an HP request: the largest slice of ``func`` (whole waves, within
        ``cap_ns``) whose predicted duration ``fits`` the bubble now, written as the
        next slice's size; 0 when not even one wave fits; None when ``func`` does not
        run as slices or its block time or wave is not known yet. With the operator's
        size: that size when its slices' time fits, else 0; None while none was seen."""
        if not self.on or func not in self.slots or func in self.failed:
            return None
        if self.forced is not None:  # the operator's size, never resized to the bubble
            d = self.forced_ns.get(func)
            if d is None:  # none seen at this size (or it runs whole): the whole-kernel rule
                return None
            return self.forced if d <= cap_ns and fits(d) else 0
        per, wave = self.ns_per_block.get(func), self.wave.get(func, 0)
        if per is None or per <= 0 or wave <= 0:
            return None
        wave_ns = per * wave
        if not fits(wave_ns):
            return 0
        lo, hi = 1, min(MAX_WAVES, max(1, int(cap_ns // wave_ns)))  # fits(lo) holds
        while lo < hi:  # binary search: a longer slice never fits better (survival)
            mid = (lo + hi + 1) // 2
            if fits(mid * wave_ns):
                lo = mid
            else:
                hi = mid - 1
        self._write(func, lo * wave)
        self._resized.add(func)
        return lo * wave

    def states(self) -> dict[str, int]:
        """Published variants by the interceptor's state (``ready``/``failed``/``untried``)."""
        names = {0: "untried", 1: "ready", 2: "failed"}
        out: dict[str, int] = {}
        for func in self.slots:
            v = self.att.variant(func)
            k = names.get(int(v.state), "untried") if v is not None else "untried"
            out[k] = out.get(k, 0) + 1
        return out
