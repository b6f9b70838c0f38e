"""Sliceable variants of an attached LP program's modules, made once and cached on disk.

For each module an LP program loads (by image hash), a background worker finds its PTX
(PTX images: ``<hash>.ptx`` written by the interceptor into the module directory,
``hbtui.attach.modcache``; fat binaries: ``<hash>.fatbin`` there, whose PTX entry for the
device's arch or the newest older one is taken, ``engine.attached.fatbin``; cubins: the
``.ptx`` beside the matching ``.cubin`` in Triton's cache, ``engine.attached.triton``),
runs the slicer on it and writes, beside the images:

- ``<hash>.sliced.ptx``: the module with every sliceable entry rewritten (only when at
  least one entry was sliced; docs/slicer.md for the six appended params);
- ``<hash>.json``: ``{format, hash, kind, status, reason, source, sliced_ptx, entries:
  [{name, status, reason, params, param_bytes}]}`` (``params``: the entry's own parameter
  count; ``param_bytes``: where the six slice params start in a packed parameter buffer).

Both appear whole (temp file + rename), the JSON last; a module whose JSON exists is
never sliced again (a second run of the same program compiles nothing). Results that
depend on the moment (PTX not found, queue full, I/O errors) are not cached.

The scheduling thread only calls ``request`` (non-blocking; bounded queue) and ``take``
(finished results). Slicing is CPU-heavy Python, so by default it runs in one child
process (``spawn``): a thread alone would hold the GIL for long stretches against the
engine's 20-us poll. Nothing here raises into the poll: failures become a status.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hbtui.attach import layout as L
from hbtui.attach import modcache
from hbtui.attach.modcache import ensure_module_dir, ptx_name
from hbtui.engine.atomic import write_atomic
from hbtui.engine.attached.triton import triton_roots

log = logging.getLogger("hbtui.engine")

FORMAT = 2  # of the JSON; another value is ignored (sliced again). 2: param_bytes
MAX_BYTES = 16 << 20  # PTX larger than this is not sliced
MAX_FATBIN_BYTES = 256 << 20  # fat binaries larger than this are not read (nor hashed)
MAX_QUEUED = 256  # modules waiting for the worker; beyond: status "skipped"
JOB_TIMEOUT_S = 300.0

OK, ERROR, MISSING, UNSUPPORTED, TOO_BIG, SKIPPED = (
    "ok", "error", "missing", "unsupported", "too_big", "skipped",
)  # fmt: skip
KINDS = {L.IMG_PTX: "ptx", L.IMG_CUBIN: "cubin", L.IMG_FATBIN: "fatbin"}


@dataclass(frozen=True, slots=True)
class EntryInfo:
    name: str
    status: str  # "sliced" | "refused" (the slicer's verdict)
    reason: str | None = None
    params: int | None = None  # the entry's own params (the slice params come after)
    param_bytes: int | None = None  # offset of the first slice param in a packed buffer


@dataclass(frozen=True, slots=True)
class ModuleVariant:
    """What became of one module (by image hash)."""

    hash: int
    status: str  # OK (the slicer ran; see entries) or ERROR/MISSING/UNSUPPORTED/...
    reason: str | None = None
    kind: str = ""
    entries: tuple[EntryInfo, ...] = ()
    source: str | None = None  # the PTX file sliced
    sliced_ptx: str | None = None  # <hash>.sliced.ptx; None when no entry was sliced
    compiled: bool = False  # the slicer ran for this result (False: from the disk cache)
    arch: int | None = None  # fatbin: the device arch its PTX entry was chosen for

    def sliced_names(self) -> frozenset[str]:
        return frozenset(e.name for e in self.entries if e.status == "sliced")

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "hash": f"{self.hash:016x}", "kind": self.kind,
                "status": self.status, "reason": self.reason, "source": self.source,
                "sliced_ptx": self.sliced_ptx, "arch": self.arch,
                "entries": [{"name": e.name, "status": e.status, "reason": e.reason,
                             "params": e.params, "param_bytes": e.param_bytes}
                            for e in self.entries]}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModuleVariant:
        entries = tuple(EntryInfo(str(e["name"]), str(e["status"]), e.get("reason"),
                                  e.get("params"), e.get("param_bytes"))
                        for e in d["entries"])  # fmt: skip
        arch = d.get("arch")
        return cls(int(d["hash"], 16), str(d["status"]), d.get("reason"), str(d["kind"]),
                   entries, d.get("source"), d.get("sliced_ptx"), False,
                   int(arch) if arch is not None else None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Job:
    hash: int
    kind: int  # layout.IMG_*
    size: int  # image bytes (from the module record)
    module_dir: str
    triton_roots: tuple[str, ...] = ()
    seen_ns: int = 0  # when the module record was read (CLOCK_MONOTONIC)
    arch: int = 90  # the device's compute capability (90: sm_90), to pick a fatbin's PTX


def fatbin_name(image_hash: int) -> str:
    """The file name the interceptor gives the fat binary image with this hash."""
    return f"{image_hash & 0xFFFFFFFFFFFFFFFF:016x}.fatbin"


def json_path(module_dir: str | Path, image_hash: int) -> Path:
    return Path(module_dir) / f"{image_hash:016x}.json"


def read_cached(
    module_dir: str | Path, image_hash: int, arch: int | None = None
) -> ModuleVariant | None:
    """The cached result for this module, if a complete one of this FORMAT is there (and,
    given ``arch``, a fat binary's was chosen for that device arch: a module directory in
    a shared home may serve GPUs of several archs)."""
    try:
        d = json.loads(json_path(module_dir, image_hash).read_text())
        if d.get("format") != FORMAT or int(d["hash"], 16) != image_hash:
            return None
        v = ModuleVariant.from_json(d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if v.sliced_ptx is not None and not Path(v.sliced_ptx).is_file():
        return None
    if arch is not None and v.arch is not None and v.arch != arch:
        return None
    return v


_TRITON: dict[tuple[str, ...], Any] = {}  # roots -> TritonIndex (one per worker process)


def _triton_ptx(job: Job) -> Path | None:
    from hbtui.engine.attached.triton import TritonIndex

    idx = _TRITON.get(job.triton_roots)
    if idx is None:
        idx = _TRITON[job.triton_roots] = TritonIndex([Path(r) for r in job.triton_roots])
    return idx.ptx_for(job.hash, job.seen_ns or None)


def build_variant(job: Job, max_bytes: int = MAX_BYTES) -> ModuleVariant:
    """Find, slice and cache one module (the worker runs this, in its child process).
    Returns a status for every failure."""
    cached = read_cached(job.module_dir, job.hash, job.arch)
    if cached is not None:
        return cached
    kind = KINDS.get(job.kind, "unknown")

    def fail(status: str, reason: str) -> ModuleVariant:
        return ModuleVariant(job.hash, status, reason, kind)

    if job.kind == L.IMG_FATBIN:
        return _from_fatbin(job, max_bytes)
    if job.kind not in (L.IMG_PTX, L.IMG_CUBIN):
        return fail(UNSUPPORTED, "unknown image kind")
    if job.kind == L.IMG_PTX and job.size > max_bytes + 1:
        return fail(TOO_BIG, f"PTX of {job.size} bytes (limit {max_bytes})")
    if job.kind == L.IMG_PTX:
        src: Path | None = Path(job.module_dir) / ptx_name(job.hash)
        if not src.is_file():
            return fail(MISSING, f"{src} not written (the interceptor saves LP programs' PTX)")
    else:
        src = _triton_ptx(job) if job.triton_roots else None
        if src is None:
            return fail(MISSING, "no .ptx beside a matching .cubin in Triton's cache")
    try:
        if src.stat().st_size > max_bytes:
            return fail(TOO_BIG, f"{src}: larger than {max_bytes} bytes")
        data = src.read_bytes()
    except OSError as e:
        return fail(ERROR, f"cannot read {src}: {e.strerror}")
    if job.kind == L.IMG_PTX and L.hash64(data + b"\0") != job.hash:
        return fail(ERROR, f"{src} does not hash to its name")
    return _slice_and_store(job, kind, src, data)


def _nothing_to_slice(job: Job) -> bool:
    """``build_variant`` will return at once (no PTX to read): no need for the child."""
    if job.kind == L.IMG_PTX:
        return not (Path(job.module_dir) / ptx_name(job.hash)).is_file()
    if job.kind == L.IMG_FATBIN:
        return not (Path(job.module_dir) / fatbin_name(job.hash)).is_file()
    return job.kind != L.IMG_CUBIN or not any(Path(r).is_dir() for r in job.triton_roots)


def _from_fatbin(job: Job, max_bytes: int) -> ModuleVariant:
    """The PTX entry of ``<hash>.fatbin`` to JIT on ``job.arch``, sliced. The file is the
    whole fat binary (header and entries) the interceptor hashed for the module record."""
    from hbtui.engine.attached import fatbin as F

    def fail(status: str, reason: str, store: bool = False) -> ModuleVariant:
        v = ModuleVariant(job.hash, status, reason, "fatbin", (), str(src), arch=job.arch)
        if store:  # a property of these (verified) bytes: the same next run
            _store(Path(job.module_dir), v, None)
        return v

    src = Path(job.module_dir) / fatbin_name(job.hash)
    if job.size > MAX_FATBIN_BYTES:
        return fail(TOO_BIG, f"fat binary of {job.size} bytes (limit {MAX_FATBIN_BYTES})")
    if not src.is_file():
        return fail(MISSING, f"{src} not written (the interceptor saves LP programs' fatbins)")
    try:
        if src.stat().st_size != job.size:
            return fail(ERROR, f"{src} is not the {job.size} bytes the module record says")
        data = src.read_bytes()
    except OSError as e:
        return fail(ERROR, f"cannot read {src}: {e.strerror}")
    if len(data) != job.size or L.hash64(data) != job.hash:
        return fail(ERROR, f"{src} does not hash to its name")
    try:
        found = [e for e in F.entries(data) if e.is_ptx]
        if not found:
            return fail(UNSUPPORTED, "no PTX in the fat binary (SASS only)", store=True)
        entry = F.select_ptx(found, job.arch)
        if entry is None:
            have = ", ".join(sorted({e.target for e in found}))
            return fail(UNSUPPORTED, f"no PTX the JIT can use on sm_{job.arch} in the fat "
                                     f"binary (it has {have})", store=True)  # fmt: skip
        text = F.ptx_text(data, entry, max_bytes)
    except F.UnsupportedCompression as e:
        return fail(UNSUPPORTED, str(e))  # not stored: another host may have the codec
    except F.PtxTooBig as e:
        return fail(TOO_BIG, str(e))
    except F.FatbinError as e:
        return fail(ERROR, f"malformed fat binary: {e}", store=True)
    source = f"{src} ({entry.target} PTX at byte {entry.offset})"
    return _slice_and_store(job, "fatbin", src, text.encode(), source, job.arch)


def _slice_and_store(
    job: Job, kind: str, src: Path, data: bytes, source: str | None = None, arch: int | None = None
) -> ModuleVariant:
    from hbtui.engine.slicer import PtxParseError, parse_module
    from hbtui.engine.slicer.rewrite import slice_module

    out = Path(job.module_dir)
    try:
        module = parse_module(data.decode("utf-8"))
        res = slice_module(module)
    except (PtxParseError, UnicodeDecodeError) as e:
        v = ModuleVariant(job.hash, ERROR, f"cannot parse the PTX: {e}", kind, (),
                          source or str(src), None, True, arch)  # fmt: skip
        _store(out, v, None)  # the same bytes fail the same way next run
        return v
    params = {f.name: (len(f.params), packed_bytes(f.params)) for f in module.entries()}
    entries = tuple(EntryInfo(e.name, e.status, e.reason, *params.get(e.name, (None, None)))
                    for e in res.entries)  # fmt: skip
    sliced = any(e.status == "sliced" for e in entries)
    spath = out / f"{job.hash:016x}.sliced.ptx"
    v = ModuleVariant(job.hash, OK, None, kind, entries, source or str(src),
                      str(spath) if sliced else None, True, arch)  # fmt: skip
    _store(out, v, res.ptx if sliced else None)
    return v


def packed_bytes(params: Sequence[Any]) -> int | None:
    """Where the first appended ``.u32`` slice param lands when the entry's own params are
    packed (each at its alignment: ``.align N``, else its element size; a ``.ptr``'s
    ``.align`` is its pointee's): the end of the
    last one, rounded up to 4. None when a param's type is unknown."""
    from hbtui.engine.slicer.user import UserKernelError, param_info

    off = 0
    for p in params:
        try:
            info = param_info(p)
        except UserKernelError:
            return None
        texts = [t.text for t in p.tokens]
        align = info.nbytes if "[" not in texts else 1
        if ".align" in texts and ".ptr" not in texts:  # `.ptr .align N`: the pointee's
            try:
                align = int(texts[texts.index(".align") + 1])
            except (IndexError, ValueError):
                return None
        align = max(1, align)
        off = (off + align - 1) // align * align + info.nbytes
    return (off + 3) // 4 * 4


def _store(out: Path, v: ModuleVariant, sliced_text: str | None) -> None:
    if not ensure_module_dir(out):
        return  # still a result, just not cached
    try:
        if sliced_text is not None and v.sliced_ptx is not None:
            write_atomic(v.sliced_ptx, sliced_text, make_dirs=False)
        write_atomic(
            json_path(out, v.hash), json.dumps(v.to_json(), indent=1) + "\n", make_dirs=False
        )
    except OSError as e:
        log.warning("cannot cache the slicer's result in %s: %s", out, e)


class VariantWorker:
    """One background thread (and, with ``processes``, one child process) turning
    requested modules into ``ModuleVariant`` results."""

    def __init__(
        self,
        *,
        processes: bool = True,
        max_bytes: int = MAX_BYTES,
        max_queued: int = MAX_QUEUED,
        job_timeout_s: float = JOB_TIMEOUT_S,
    ) -> None:
        self.processes = processes
        self.max_bytes = max_bytes
        self.job_timeout_s = job_timeout_s
        self._q: queue.Queue[Job | None] = queue.Queue(maxsize=max_queued)
        self._done: queue.SimpleQueue[ModuleVariant] = queue.SimpleQueue()
        self._seen: set[tuple[str, int]] = set()  # requested (caller's thread only)
        self._thread: threading.Thread | None = None
        self._pool: Any = None
        self._closed = threading.Event()
        self.compiled = 0  # modules the slicer ran on (not read from the cache)
        self.cached = 0  # results read from the disk cache
        self.compile_s = 0.0  # the slicer's wall time on the compiled ones
        self.busy = False

    def request(self, job: Job) -> bool:
        """Queue ``job`` unless already requested; never blocks. False: nothing queued."""
        key = (job.module_dir, job.hash)
        if key in self._seen or self._closed.is_set():
            return False
        self._seen.add(key)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hbtui-slicer", daemon=True)
            self._thread.start()
        try:
            self._q.put_nowait(job)
        except queue.Full:
            self._seen.discard(key)  # asked again when the module is seen again
            self._done.put(ModuleVariant(job.hash, SKIPPED, "slicer queue full",
                                         KINDS.get(job.kind, "unknown")))  # fmt: skip
            return False
        return True

    def take(self) -> list[ModuleVariant]:
        """Results finished since the last call (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def idle(self) -> bool:
        return self._q.empty() and not self.busy

    def summary(self) -> dict[str, Any]:
        """Modules sliced (and the slicer's seconds on them) and read from the disk cache."""
        return {"compiled": self.compiled, "compile_s": round(self.compile_s, 3),
                "cached": self.cached}  # fmt: skip

    def close(self) -> None:
        self._closed.set()
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        self._stop_pool()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    # -- the worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        while not self._closed.is_set():
            job = self._q.get()
            if job is None:
                return
            self.busy = True
            t0 = time.monotonic()
            try:
                v = read_cached(job.module_dir, job.hash, job.arch)
                if v is not None:
                    self.cached += 1
                else:
                    v = self._build(job)
            except Exception as e:  # noqa: BLE001 - a status, never an exception in the poll
                v = ModuleVariant(job.hash, ERROR, f"{type(e).__name__}: {e}",
                                  KINDS.get(job.kind, "unknown"))  # fmt: skip
            if v.compiled:
                self.compiled += 1
                self.compile_s += time.monotonic() - t0
            if v.status not in (OK, UNSUPPORTED):
                log.info("slicer: module %016x: %s (%s)", v.hash, v.status, v.reason)
            self._done.put(v)
            self.busy = False

    def _build(self, job: Job) -> ModuleVariant:
        if not self.processes or _nothing_to_slice(job):
            return build_variant(job, self.max_bytes)
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures import TimeoutError as FutTimeout
        from multiprocessing import get_context

        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
        t0 = time.monotonic()
        try:
            return self._pool.submit(build_variant, job, self.max_bytes).result(self.job_timeout_s)
        except FutTimeout:
            self._stop_pool()
            return ModuleVariant(job.hash, ERROR, f"slicer took over {time.monotonic() - t0:.0f} s",
                                 KINDS.get(job.kind, "unknown"))  # fmt: skip
        except Exception:
            self._stop_pool()  # a broken pool (the child died): a fresh one next time
            raise

    def _stop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs: Sequence[Any] = list((getattr(pool, "_processes", None) or {}).values())
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # a slice in progress is not waited for
            try:
                p.terminate()
            except (OSError, AttributeError):
                pass
        # The pool's manager thread closes its wake-up pipe as it ends; until it has, the
        # interpreter's exit hook may write to that pipe as it closes (Python 3.11:
        # "OSError: Bad file descriptor" on the engine's stderr at exit, seen 1 run in 25)
        if manager is not None and manager is not threading.current_thread():
            manager.join(timeout=2.0)


def program_dirs(pid: int) -> tuple[str, tuple[str, ...]]:
    """Where an LP program's PTX images go and where its Triton cache is, from its own
    environment (``/proc/PID/environ``; the engine's when that cannot be read)."""
    env: dict[str, str] | None = None
    if pid > 0:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                raw = f.read(1 << 20)
            pairs = (kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)
            env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
        except OSError:
            env = None
    mdir = modcache.module_dir(env if env and env.get(modcache.ENV) else None)
    return str(mdir), tuple(str(r) for r in triton_roots(env))
