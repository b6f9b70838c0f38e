"""The shared segment of one attached program: create and remove it (launcher side), and
``Attachment``, the engine's handle on it (data plane of docs/attach.md).

The engine calls, from its scheduling thread (one writer for the engine-written fields):

- ``heartbeat()`` at least every grace/4 (the interceptor stops gating when the beat is
  older than the grace period, default 2 s);
- ``set_gated(True)`` once it schedules the program (the launcher leaves PASS mode);
- ``launches()`` / ``modules()`` / ``functions()``: records published since the last call;
- ``done(launch)`` / ``completed(slot)``: GPU completion (HP and LP launches alike);
- ``pending()``: LP launches held right now, by seq; ``grant(seq)``: let every LP launch
  with seq <= ``seq`` go (a watermark; pre-granting ahead is allowed).

Memory order: engine-written fields are plain aligned 8/4-byte stores from ctypes, which
x86-64 (TSO) keeps in program order; ``grant`` always issues the futex wake (a
syscall: a full barrier) instead of skipping it when ``waiters`` reads 0, because
without an atomic read-modify-write the skip could race with a thread going to sleep.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hbtui.attach import layout as L

SHM_DIR = Path("/dev/shm")
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine(), 202)
_FUTEX_WAKE = 1
_INT_MAX = 2**31 - 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SegmentError(RuntimeError):
    """A segment that cannot be created, opened or is of another layout."""


def segment_name(pid: int | None = None) -> str:
    return f"/hbtui-{os.getuid()}-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}"


def _path(name: str) -> Path:
    if not name.startswith("/") or "/" in name[1:] or len(name) > 200:
        raise SegmentError(f"bad segment name {name!r}")
    return SHM_DIR / name[1:]


def create_segment(
    task: str,
    cls: int,
    *,
    grace_ms: int = 2000,
    spin_us: int = 20,
    flags: int = 0,
    name: str | None = None,
) -> str:
    """Create a fresh segment (mode 0600, PASS mode, no engine) and return its name."""
    name = name or segment_name()
    try:
        fd = os.open(_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise SegmentError(f"cannot create the segment {name}: {e}") from e
    try:
        os.ftruncate(fd, L.SHM_SIZE)
        with mmap.mmap(fd, L.SHM_SIZE) as mm:
            h = L.Header.from_buffer(mm)
            h.version, h.header_size, h.total_size = L.VERSION, ctypes.sizeof(L.Header), L.SHM_SIZE
            h.cls, h.launcher_pid = cls, os.getpid()
            h.launch_cap, h.module_cap, h.func_cap = L.LAUNCH_CAP, L.MODULE_CAP, L.FUNC_CAP
            h.pending_cap, h.comp_slots, h.name_max = L.PENDING_CAP, L.COMP_SLOTS, L.NAME_MAX
            h.task = task.encode()[:63]
            h.mode, h.grace_ms, h.spin_us, h.flags = L.MODE_PASS, grace_ms, spin_us, flags
            h.comp_fixed_us = -1  # (the interceptor says whether the program fixed it)
            struct.pack_into("<Q", mm, L.OFF_COMP_KEY, 2**64 - 1)  # slot 0: overflow
            h.magic = L.MAGIC  # last: a reader never sees a half-made header as valid
            del h
    except OSError as e:
        unlink_segment(name)
        raise SegmentError(f"cannot size the segment {name}: {e}") from e
    finally:
        os.close(fd)
    return name


def unlink_segment(name: str) -> bool:
    try:
        os.unlink(_path(name))
        return True
    except FileNotFoundError:
        return False


def sweep_stale() -> list[str]:
    """Remove this user's segments whose launcher is gone (a ``kill -9`` of ``hbtui run``)."""
    removed = []
    prefix = f"hbtui-{os.getuid()}-"
    try:
        entries = list(SHM_DIR.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith(prefix):
            continue
        try:
            pid = int(p.name[len(prefix) :].split("-")[0])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            if unlink_segment("/" + p.name):
                removed.append("/" + p.name)
        except PermissionError:
            pass
    return removed


@dataclass(frozen=True, slots=True)
class FuncName:
    func: int  # CUfunction / CUkernel handle
    name: str  # possibly truncated to NAME_MAX - 1 bytes (name_len is the full length)
    module: int
    module_hash: int
    api: int
    result: int
    name_len: int
    name_hash: int


class _Ring:
    def __init__(self, kind: str) -> None:
        self.cls, self.off, self.cap, self.head_field = L.RINGS[kind]
        self.size = ctypes.sizeof(self.cls)
        self.tail = 0
        self.lost = 0
        self._stall: tuple[int, float] | None = None
        self._head_at = 0.0  # when head() was last asked

    def read(self, mm: mmap.mmap, h: Any, limit: int) -> list:
        """Records published since the last call. Each record's ``pub`` says whether it is
        there, so the ring's head (``h``'s ``head_field``, on the interceptor's line, which
        every launch writes with an atomic add) is read only after a lap or every 100 ms:
        read on every poll, that line would go back and forth between the engine's core
        and the program's, a cache miss for each HP launch."""
        out: list = []
        while len(out) < limit:
            t = self.tail
            o = self.off + (t & (self.cap - 1)) * self.size
            (pub,) = struct.unpack_from("<Q", mm, o)
            if pub != t + 1:
                if pub > t + 1:  # overwritten by a later lap: skip to the oldest kept
                    skip = max(1, getattr(h, self.head_field) - self.cap - t)
                    self.lost += skip
                    self.tail += skip
                    continue
                # not yet written, or claimed and being written: ask the head at most
                # every 100 ms, to drop a record whose writer died after claiming it
                now = time.monotonic()
                if now - self._head_at < 0.1:
                    break
                self._head_at = now
                head = getattr(h, self.head_field)
                if head <= t:  # nothing claimed beyond: all read
                    self._stall = None
                    break
                if head - t > self.cap:  # lapped while its slot is being rewritten
                    self.lost += head - self.cap - t
                    self.tail = head - self.cap
                    continue
                if self._stall is None or self._stall[0] != t:
                    self._stall = (t, now)
                elif now - self._stall[1] > 0.1:
                    self.lost += 1
                    self.tail += 1
                    continue
                break
            rec = self.cls.from_buffer_copy(mm, o)
            (pub2,) = struct.unpack_from("<Q", mm, o)
            self.tail += 1
            if pub2 != t + 1:
                self.lost += 1
                continue
            out.append(rec)
        return out


_VAR_SIZE = ctypes.sizeof(L.Variant)


class Attachment:
    """The engine's view of one attached program's segment (see the module docstring)."""

    def __init__(self, name: str) -> None:
        path = _path(name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            raise SegmentError(f"cannot open the segment {name}: {e}") from e
        try:
            st = os.fstat(fd)
            if st.st_uid != os.getuid():
                raise SegmentError(f"segment {name} belongs to uid {st.st_uid}")
            if st.st_size < L.SHM_SIZE:
                raise SegmentError(f"segment {name} is {st.st_size} B, expected {L.SHM_SIZE}")
            self._mm = mmap.mmap(fd, L.SHM_SIZE)
        finally:
            os.close(fd)
        self.name = name
        self.h = L.Header.from_buffer(self._mm)
        if (self.h.magic, self.h.version, self.h.total_size) != (L.MAGIC, L.VERSION, L.SHM_SIZE):
            self.close()
            raise SegmentError(f"segment {name} has another layout (version mismatch)")
        base = ctypes.addressof(self.h)
        self._gate_addr = base + L.Header.gate_word.offset
        self._done = (ctypes.c_uint64 * L.COMP_SLOTS).from_buffer(self._mm, L.OFF_COMP_DONE)
        n = L.PENDING_CAP * ctypes.sizeof(L.Pending) // 8
        self._pend_words = (ctypes.c_uint64 * n).from_buffer(self._mm, L.OFF_PENDING)
        self._rings = {k: _Ring(k) for k in L.RINGS}
        # what is already in the rings when the engine attaches is read too (from 0)
        self.h.engine_pid = os.getpid()

    # -- engine-written fields --------------------------------------------------------
    def heartbeat(self, now_ns: int | None = None) -> None:
        """Beat (CLOCK_MONOTONIC ns, the interceptor's clock)."""
        self.h.heartbeat_ns = time.monotonic_ns() if now_ns is None else now_ns

    @property
    def grace_ns(self) -> int:
        """How stale the heartbeat may get before LP runs ungated (the interceptor may
        have set it from the program's HBTUI_GRACE_MS; 0 means its 2-s default)."""
        return (self.h.grace_ms or 2000) * 1_000_000

    def set_gated(self, gated: bool) -> None:
        """GATED: LP launches wait for grants. PASS: nothing waits (held ones are let go)."""
        if gated:
            self.heartbeat()
        self.h.mode = L.MODE_GATED if gated else L.MODE_PASS
        # bump the futex word too: a waiter that read the old mode but is not asleep yet
        # then finds the word changed and re-checks at once (else up to its 50-ms timeout)
        self.h.gate_word = (self.h.gate_word + 1) & 0xFFFFFFFF
        self._wake()

    def set_hp_comp_us(self, us: int, burst_us: int = 0) -> None:
        """HP: the completion-write coalescing the interceptor should use, and how long a
        quiet spell gives the next launch a write whatever the coalescing (the burst rule's
        idle threshold; 0: the coalescing's). Written only on a change: the interceptor
        reads this line on every launch."""
        if self.h.hp_comp_us != us:
            self.h.hp_comp_us = us
        if self.h.hp_burst_us != burst_us:
            self.h.hp_burst_us = burst_us

    def hp_comp_every_us(self) -> int | None:
        """HP: the completion-write period in force: the program's HBTUI_COMP_EVERY_US if it
        set one (0: a write per launch), else the engine's ask (None: not asked yet)."""
        fixed = int(self.h.comp_fixed_us)  # (the program's word: checked)
        return fixed if 0 <= fixed <= 1_000_000 else (int(self.h.hp_comp_us) or None)

    def grant(self, seq: int) -> int:
        """Let LP launches with seq <= ``seq`` go; returns the new watermark (never lowered)."""
        if seq > self.h.granted_seq:
            self.h.granted_seq = seq
            self.h.gate_word = (self.h.gate_word + 1) & 0xFFFFFFFF
            self._wake()
        return self.h.granted_seq

    def grant_pending(self) -> int:
        """Grant everything held right now (the simplest policy)."""
        return self.grant(self.h.next_seq)

    def _wake(self) -> None:
        r = _libc.syscall(
            ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(self._gate_addr),
            ctypes.c_int(_FUTEX_WAKE), ctypes.c_int(_INT_MAX), None, None, ctypes.c_int(0),
        )  # fmt: skip
        if r < 0 and ctypes.get_errno() not in (0, errno.EAGAIN):
            raise OSError(ctypes.get_errno(), "futex wake")

    # -- reads --------------------------------------------------------------------------
    @property
    def granted(self) -> int:
        return self.h.granted_seq

    @property
    def next_seq(self) -> int:
        """LP: the last seq the program handed out (its launches so far; an HP launch's
        seq is its ring index + 1 and leaves this at 0)."""
        return self.h.next_seq

    def launches(self, limit: int = 1 << 30) -> list[L.Launch]:
        """Launch records published since the last call (copies), in ring order."""
        return self._rings["launch"].read(self._mm, self.h, limit)

    def modules(self, limit: int = 1 << 30) -> list[L.Module]:
        return self._rings["module"].read(self._mm, self.h, limit)

    def functions(self, limit: int = 1 << 30) -> list[FuncName]:
        out = []
        for r in self._rings["func"].read(self._mm, self.h, limit):
            out.append(FuncName(
                r.func, r.name.decode(errors="replace"), r.module, r.module_hash, r.api,
                r.result, r.name_len, r.name_hash,
            ))  # fmt: skip
        return out

    def lost(self) -> dict[str, int]:
        """Records overwritten before they were read, per ring."""
        return {k: r.lost for k, r in self._rings.items()}

    @property
    def counters(self) -> ctypes.Array:
        """The completion counters, read in place (index = ``Launch.comp_slot``)."""
        return self._done

    @property
    def syncing(self) -> bool:
        """Whether an HP program thread is inside a wrapped sync now (coalesced tails)."""
        return self.h.syncing > 0

    @property
    def synced_ns(self) -> int:
        """HP: when a wrapped sync last returned having ended all the program's work."""
        return self.h.synced_ns

    def completed(self, slot: int) -> int:
        """The latest seq the GPU completed on the stream of completion ``slot``."""
        return self._done[slot]

    def done(self, launch: L.Launch) -> bool | None:
        """Whether a launch's work finished on the GPU; None: it carries no completion."""
        if launch.comp_slot == L.COMP_NONE:
            return None
        return self._done[launch.comp_slot] >= launch.seq

    def pending(self) -> list[L.Pending]:
        """LP launches held and not yet granted (at most PENDING_CAP), oldest seq first.

        A granted waiter stays in its slot until its thread wakes; listing it would
        let a scheduling loop grant (and count) the same launch twice."""
        out = []
        granted = self.h.granted_seq
        words = self._pend_words  # the slots' seq words, read in place (this runs every poll)
        stride = ctypes.sizeof(L.Pending) // 8
        for i in range(L.PENDING_CAP):
            s = words[i * stride]
            if s == 0 or s == 2**64 - 1 or s <= granted:
                continue
            o = L.OFF_PENDING + i * stride * 8
            rec = L.Pending.from_buffer_copy(self._mm, o)
            if words[i * stride] == s == rec.seq:
                out.append(rec)
        out.sort(key=lambda p: p.seq)
        return out

    # -- sliced variants (hbtui/native/intercept_slices.h) ------------------------------
    def set_slicing(self, on: bool) -> None:
        """Whether launches of functions with a published variant run as slices."""
        self.h.slice_on = 1 if on else 0

    def _variant_slot(self, func: int) -> tuple[int, int]:
        """(slot, its func) where ``func`` is or would go; (-1, 0) when the table is full."""
        i = L.variant_slot(func)
        for _ in range(L.VARIANT_CAP):
            (k,) = struct.unpack_from("<Q", self._mm, L.OFF_VARIANT + i * _VAR_SIZE)
            if k in (func, 0):
                return i, k
            i = (i + 1) & (L.VARIANT_CAP - 1)
        return -1, 0

    def variant(self, func: int) -> L.Variant | None:
        """A copy of the published variant entry of ``func``, or None."""
        i, k = self._variant_slot(func)
        if i < 0 or k != func:
            return None
        return L.Variant.from_buffer_copy(self._mm, L.OFF_VARIANT + i * _VAR_SIZE)

    def publish_variant(
        self, func: int, module_hash: int, name: str, nparams: int, param_bytes: int | None,
        slice_blocks: int = 0,
    ) -> int | None:  # fmt: skip
        """Let launches of ``func`` run as slices of the entry ``name`` of
        ``<module_hash>.sliced.ptx`` (its own ``nparams`` params, packed in ``param_bytes``;
        None: unknown, the packed-buffer form then runs whole). Returns the entry's slot
        (for ``set_slice_blocks``), or None when the table is full or the name too long
        (the function then runs whole)."""
        enc = name.encode()
        if not func or len(enc) >= L.NAME_MAX:
            return None
        i, k = self._variant_slot(func)
        if i < 0:
            return None
        if k == 0:
            v = L.Variant(0, module_hash, L.hash64(enc), nparams,
                          0xFFFFFFFF if param_bytes is None else param_bytes, slice_blocks, 0, 0,
                          0, enc)  # fmt: skip
            off = L.OFF_VARIANT + i * _VAR_SIZE
            self._mm[off + 8 : off + _VAR_SIZE] = bytes(v)[8:]
            # the key last: the interceptor takes the entry once it sees it (x86-64 keeps
            # the order of plain stores)
            struct.pack_into("<Q", self._mm, off, func)
        return i

    def set_slice_blocks(self, slot: int, blocks: int, forced: bool = False) -> None:
        """The live slice size (blocks) of the variant in ``slot``: rounded down to whole
        waves by the interceptor, or with ``forced`` exactly ``blocks`` (below a wave too)."""
        off = L.OFF_VARIANT + slot * _VAR_SIZE + L.Variant.slice_blocks.offset
        n = max(0, min(int(blocks), L.SLICE_FORCED - 1))
        struct.pack_into("<I", self._mm, off, n | (L.SLICE_FORCED if forced else 0))

    def stats(self) -> dict[str, int]:
        h = self.h
        keys = (
            "next_seq", "granted_seq", "launch_head", "module_head", "func_head", "waiters",
            "ungated", "ungated_events", "held_launches", "held_ns", "ungated_launches",
            "captured_launches", "comp_state", "comp_errors", "comp_overflow",
            "pending_overflow", "mode", "intercept_pid", "ptx_saved", "ptx_save_errors",
            "slice_on", "sliced_launches", "slice_launches", "slice_fallbacks",
        )  # fmt: skip
        return {k: int(getattr(h, k)) for k in keys}

    def close(self) -> None:
        """Unmap (the engine never unlinks: the launcher owns the segment). Idempotent."""
        mm = getattr(self, "_mm", None)
        if mm is None:
            return
        if getattr(self, "h", None) is not None and self.h.magic == L.MAGIC:
            self.h.engine_pid = 0
        self.h = None  # type: ignore[assignment]
        self._done = self._pend_words = None  # type: ignore[assignment]
        self._mm = None  # type: ignore[assignment]
        mm.close()

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
