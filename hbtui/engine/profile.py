"""Scheduling profiles: TOML, ``version = 1``. Load, validate, save atomically.

Validation errors name the file and the key path (``profiles/x.toml: tasks[1].slo_ms:
must be > 0``) and are raised as ``ProfileError``; callers print the message, never a
traceback. Saves write a temp file in the same directory, fsync it, then rename it over
the target, so a crash never leaves a half-written profile.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hbtui.engine.atomic import write_atomic
from hbtui.engine.backends.builtins import NativeError, builtin_launch_shape
from hbtui.engine.backends.simparams import SimParams
from hbtui.engine.checks import Checker, ProfileError
from hbtui.engine.model import CLASSES, HP, LP, Arrival, KernelSpec, Step, Task
from hbtui.engine.resources import shipped_profiles_dir
from hbtui.engine.slicer.user import (
    SCALAR_BYTES,
    UserKernelError,
    check_args,
    check_source,
    load_ptx_kernel,
)

VERSION = 1
ARRIVAL_KINDS = ("poisson", "periodic", "closed", "trace")
MAX_RATE_HZ = 1e6
MIN_TRACE_SPAN_MS = 0.1
BACKENDS = ("auto", "sim", "cuda")


class ProfileWarning(UserWarning):
    """A profile that loads but deserves a note (e.g. a user kernel the slicer refused)."""


# User-kernel args: element bytes of buffer dtypes, scalar bytes (and integer range).
BUFFER_DTYPES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i8": 1, "u8": 1, "i16": 2, "u16": 2,
                 "i32": 4, "u32": 4, "i64": 8, "u64": 8}  # fmt: skip
SCALAR_TYPES = SCALAR_BYTES
_INT_RANGE = {"i32": (-(2**31), 2**31 - 1), "u32": (0, 2**32 - 1),
              "i64": (-(2**63), 2**63 - 1), "u64": (0, 2**64 - 1)}  # fmt: skip
BUFFER_INITS = ("random", "zeros", "ones")


@dataclass
class Profile:
    name: str
    kernels: dict[str, KernelSpec]
    tasks: list[Task]
    backend: str = "auto"
    policy: str = "hummingbird"
    device: int = 0
    seed: int = 1
    sim: SimParams = field(default_factory=SimParams)
    description: str = ""
    path: str = ""


def shipped_dir() -> Path:
    return shipped_profiles_dir()


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hbtui" / "profiles"


def resolve(name_or_path: str) -> Path:
    """A path as given, else a user profile, else a shipped one (``default`` → default.toml)."""
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".toml" or os.sep in name_or_path:
        return p
    for d in (user_dir(), shipped_dir()):
        cand = d / f"{name_or_path}.toml"
        if cand.exists():
            return cand
    return p


def list_profiles() -> list[tuple[str, Path, str]]:
    """(name, path, origin) of every shipped and user profile; user ones shadow shipped."""
    found: dict[str, tuple[str, Path, str]] = {}
    for origin, d in (("shipped", shipped_dir()), ("user", user_dir())):
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found[p.stem] = (p.stem, p, origin)
    return sorted(found.values())


def load(path: str | os.PathLike[str]) -> Profile:
    p = Path(path)
    file = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{file}: no such profile file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{file}: cannot read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{file}: invalid TOML: {e}") from None
    prof = parse(data, file, base_dir=p.parent)
    prof.path = file
    return prof


def parse(data: dict[str, Any], file: str = "<profile>", base_dir: Path | None = None) -> Profile:
    c = Checker(file)
    c.keys(data, "", {"version", "name", "description", "engine", "kernels", "tasks"})
    if "version" not in data:
        raise c.fail("version", f"is required (this hbtui reads version = {VERSION})")
    if data["version"] != VERSION:
        raise c.fail("version", f"unsupported version {data['version']!r} (expected {VERSION})")
    eng = c.table(data.get("engine", {}), "engine")
    c.keys(eng, "engine", {"backend", "policy", "device", "seed", "sim"})
    from hbtui.engine.policies import POLICIES  # local: policies import nothing from here

    sim_t = c.table(eng.get("sim", {}), "engine.sim")
    c.keys(sim_t, "engine.sim",
           {"sms", "launch_latency_us", "launch_cost_us", "interference", "hp_chain",
            "loop_delay_us"})  # fmt: skip
    d = SimParams()
    hp_chain = sim_t.get("hp_chain", d.hp_chain)
    if not isinstance(hp_chain, bool):
        raise c.fail("engine.sim.hp_chain", f"must be true or false, got {hp_chain!r}")
    sim = SimParams(
        sms=c.num(sim_t, "sms", "engine.sim", d.sms, positive=True, integer=True),
        launch_latency_us=c.num(
            sim_t, "launch_latency_us", "engine.sim", d.launch_latency_us, minimum=0
        ),
        launch_cost_us=c.num(sim_t, "launch_cost_us", "engine.sim", d.launch_cost_us, minimum=0),
        loop_delay_us=c.num(sim_t, "loop_delay_us", "engine.sim", d.loop_delay_us, minimum=0),
        interference=c.num(sim_t, "interference", "engine.sim", d.interference, minimum=0),
        hp_chain=hp_chain,
    )
    kernels: dict[str, KernelSpec] = {}
    for kname, kt in c.table(data.get("kernels", {}), "kernels").items():
        path = f"kernels.{kname}"
        kt = c.table(kt, path)
        c.keys(kt, path, {"grid", "block", "smem", "blocks_per_sm", "block_us", "builtin",
                          "params", "sliceable", "source", "entry", "args"})  # fmt: skip
        bps = c.num(kt, "blocks_per_sm", path, 2, integer=True, positive=True)
        if bps > 8:
            raise c.fail(f"{path}.blocks_per_sm", f"must be 1..8, got {bps}")
        sliceable = kt.get("sliceable", True)
        if not isinstance(sliceable, bool):
            raise c.fail(f"{path}.sliceable", "must be true or false")
        builtin = c.str_(kt, "builtin", path)
        params = dict(c.table(kt.get("params", {}), f"{path}.params"))
        grid_default: Any = ...
        block_default: Any = 256
        if builtin:  # native kernels know their launch shape; a profile may omit it
            try:
                grid_default, block_default = builtin_launch_shape(builtin, params)
            except NativeError as e:
                raise c.fail(f"{path}.builtin", str(e)) from None
        user: dict[str, Any] = {}
        if "source" in kt or "entry" in kt or "args" in kt:
            if builtin or "params" in kt:
                raise c.fail(f"{path}.source", "a kernel is either builtin (params) or user "
                             "(source, entry, args), not both")  # fmt: skip
            user = _user_kernel(c, kt, path, base_dir, sliceable)
            sliceable = user.pop("sliceable")
        kernels[kname] = KernelSpec(
            name=kname,
            grid=c.dims(kt, "grid", path, list(grid_default) if builtin else ...),
            block=c.dims(kt, "block", path, list(block_default) if builtin else 256),
            smem=c.num(kt, "smem", path, 0, integer=True, minimum=0),
            blocks_per_sm=bps,
            block_us=c.num(kt, "block_us", path, 20.0, positive=True),
            builtin=builtin,
            params=params,
            sliceable=sliceable,
            **user,
        )
    tasks_raw = data.get("tasks", [])  # none: an engine for programs under `hbtui run` only
    if not isinstance(tasks_raw, list):
        raise c.fail("tasks", "must be an array of tables ([[tasks]])")
    tasks = [_task(c, t, i, kernels, base_dir) for i, t in enumerate(tasks_raw)]
    names = [t.name for t in tasks]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise c.fail(f"tasks[{i}].name", f"duplicate task name {n!r}")
    return Profile(
        name=c.str_(data, "name", "", Path(file).stem),
        description=data.get("description", "") if isinstance(data.get("description"), str) else "",
        kernels=kernels,
        tasks=tasks,
        backend=c.str_(eng, "backend", "engine", "auto", BACKENDS),
        policy=c.str_(eng, "policy", "engine", "hummingbird", tuple(POLICIES)),
        device=c.num(eng, "device", "engine", 0, integer=True, minimum=0),
        seed=c.num(eng, "seed", "engine", 1, integer=True),
        sim=sim,
    )


def _user_kernel(c: Checker, kt: dict[str, Any], path: str, base_dir: Path | None,
                 sliceable: bool) -> dict[str, Any]:  # fmt: skip
    """Validate a user kernel (source, entry, args): the KernelSpec fields. Never compiles.

    A ``.ptx`` source is read and sliced here (no compiler needed): the args are checked
    against the entry, and a kernel the slicer refuses is kept with sliceable = False (run
    whole under temporal gating) and a ProfileWarning; so are the slicer's warnings for
    sliced kernels. A ``.cu`` source needs NVRTC: those checks happen when a backend
    prepares it (engine.backends.user_kernels), with errors naming the same keys.
    """
    import warnings

    rel = c.str_(kt, "source", path, ...)
    src = Path(rel) if Path(rel).is_absolute() or base_dir is None else base_dir / rel
    entry = c.str_(kt, "entry", path)
    try:
        check_source(src)
    except UserKernelError as e:
        raise c.fail(f"{path}.{e.key}", str(e)) from None
    raw = kt.get("args", [])
    if not isinstance(raw, list):
        raise c.fail(f"{path}.args", "must be a list of {buffer = ...} / {scalar = ...} tables")
    args: list[tuple[Any, ...]] = []
    names: set[str] = set()
    for i, a in enumerate(raw):
        ap = f"{path}.args[{i}]"
        a = c.table(a, ap)
        if "buffer" in a:
            c.keys(a, ap, {"buffer", "dtype", "count", "init"})
            name = c.str_(a, "buffer", ap, ...)
            if name in names:
                raise c.fail(f"{ap}.buffer", f"duplicate buffer name {name!r}")
            names.add(name)
            dtype = c.str_(a, "dtype", ap, "f32", tuple(BUFFER_DTYPES))
            count = c.num(a, "count", ap, ..., positive=True, integer=True)
            init = c.str_(a, "init", ap, "random", BUFFER_INITS)
            args.append(("buffer", name, dtype, count, init))
        elif "scalar" in a:
            c.keys(a, ap, {"scalar", "value"})
            ty = c.str_(a, "scalar", ap, ..., tuple(SCALAR_TYPES))
            if "value" not in a:
                raise c.fail(f"{ap}.value", "is required")
            v = a["value"]
            if ty in _INT_RANGE:
                lo, hi = _INT_RANGE[ty]
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise c.fail(f"{ap}.value", f"must be an integer in {lo}..{hi} for {ty}, "
                                 f"got {v!r}")  # fmt: skip
            else:
                v = float(c.num(a, "value", ap, ...))
            args.append(("scalar", ty, v))
        else:
            raise c.fail(ap, "must be {buffer = NAME, dtype, count, init} or "
                         "{scalar = TYPE, value}")  # fmt: skip
    cooperative = False
    if src.suffix == ".ptx":
        try:
            uk = load_ptx_kernel(src, entry)
            check_args(uk, args)
        except UserKernelError as e:
            raise c.fail(f"{path}.{e.key}", str(e)) from None
        entry = uk.entry
        if sliceable and not uk.sliced:
            why = f"not sliceable, runs whole under temporal gating: {uk.reason}"
            warnings.warn(ProfileWarning(f"{c.file}: {path}: {why}"), stacklevel=4)
            sliceable = False
        elif sliceable:
            for w in uk.warnings:
                warnings.warn(ProfileWarning(f"{c.file}: {path}: {w}"), stacklevel=4)
        cooperative = uk.grid_sync
    return {"source": str(src.resolve()), "entry": entry, "args": tuple(args),
            "sliceable": sliceable, "cooperative": cooperative}  # fmt: skip


def _task(c: Checker, raw: Any, i: int, kernels: dict[str, KernelSpec],
          base_dir: Path | None) -> Task:  # fmt: skip
    path = f"tasks[{i}]"
    t = c.table(raw, path)
    c.keys(t, path, {"name", "class", "priority", "slo_ms", "slo_factor", "arrival", "kernels",
                     "slice_us", "slice_blocks", "paused"})  # fmt: skip
    name = c.str_(t, "name", path, ...)
    cls = c.str_(t, "class", path, ..., CLASSES)
    paused = t.get("paused", False)
    if not isinstance(paused, bool):
        raise c.fail(f"{path}.paused", "must be true or false")
    ks = t.get("kernels")
    if not isinstance(ks, list) or not ks:
        raise c.fail(f"{path}.kernels", "must be a non-empty list")
    task = Task(name=name, cls=cls, priority=c.num(t, "priority", path, 0, integer=True),
                paused=paused)  # fmt: skip
    if cls == HP:
        for key in ("slice_us", "slice_blocks"):
            if key in t:
                raise c.fail(f"{path}.{key}", "only lp tasks are sliced")
        if "slo_ms" in t and "slo_factor" in t:
            raise c.fail(f"{path}.slo_ms", "give slo_ms or slo_factor, not both")
        task.slo_ms = c.num(t, "slo_ms", path, None, positive=True)
        task.slo_factor = c.num(t, "slo_factor", path, None, positive=True)
        if task.slo_ms is None and task.slo_factor is None:
            task.slo_factor = 1.0  # the paper's definition: SLO = exclusive p99
        task.arrival = _arrival(c, t.get("arrival"), f"{path}.arrival", base_dir)
        steps = []
        for j, s in enumerate(ks):
            sp = f"{path}.kernels[{j}]"
            if isinstance(s, str):
                s = {"kernel": s}
            s = c.table(s, sp)
            c.keys(s, sp, {"kernel", "gap_us", "jitter"})
            k = c.str_(s, "kernel", sp, ...)
            if k not in kernels:
                raise c.fail(f"{sp}.kernel", f"unknown kernel {k!r} (define it under [kernels])")
            jitter = c.num(s, "jitter", sp, 0.0, minimum=0)
            if jitter > 1:
                raise c.fail(f"{sp}.jitter", f"must be in 0..1, got {jitter}")
            steps.append(Step(k, c.num(s, "gap_us", sp, 0.0, minimum=0), jitter))
        task.steps = tuple(steps)
    else:
        for key in ("slo_ms", "slo_factor", "arrival"):
            if key in t:
                raise c.fail(f"{path}.{key}", "only hp tasks have an SLO and arrivals")
        if "slice_us" in t and "slice_blocks" in t:
            raise c.fail(f"{path}.slice_us", "give slice_us or slice_blocks, not both")
        task.slice_us = c.num(t, "slice_us", path, None, positive=True)
        task.slice_blocks = c.num(t, "slice_blocks", path, None, positive=True, integer=True)
        for j, k in enumerate(ks):
            if not isinstance(k, str) or k not in kernels:
                raise c.fail(f"{path}.kernels[{j}]", f"unknown kernel {k!r}")
        task.kernels = tuple(ks)
    return task


def parse_task(raw: Any, kernels: dict[str, KernelSpec], file: str = "<task>",
               base_dir: Path | None = None) -> Task:  # fmt: skip
    """Validate one ``[[tasks]]`` table against ``kernels`` (live ``add_task``).

    Raises ProfileError naming ``file`` and the key path, exactly as ``parse`` would.
    """
    return _task(Checker(file), raw, 0, kernels, base_dir)


def _arrival(c: Checker, raw: Any, path: str, base_dir: Path | None) -> Arrival:
    if raw is None:
        raise c.fail(path, "is required for hp tasks")
    a = c.table(raw, path)
    kind = c.str_(a, "kind", path, ..., ARRIVAL_KINDS)
    allowed = {
        "poisson": {"kind", "rate_hz"},
        "periodic": {"kind", "rate_hz"},
        "closed": {"kind", "outstanding", "think_us"},
        "trace": {"kind", "path"},
    }[kind]
    c.keys(a, path, allowed)
    if kind in ("poisson", "periodic"):
        rate = c.num(a, "rate_hz", path, ..., positive=True)
        if rate > MAX_RATE_HZ:  # beyond this the loop would do nothing but accept arrivals
            raise c.fail(f"{path}.rate_hz", f"must be <= {MAX_RATE_HZ:g}, got {rate!r}")
        return Arrival(kind, rate_hz=rate)
    if kind == "closed":
        return Arrival(
            kind,
            outstanding=c.num(a, "outstanding", path, 1, positive=True, integer=True),
            think_us=c.num(a, "think_us", path, 0.0, minimum=0),
        )
    rel = c.str_(a, "path", path, ...)
    tp = Path(rel) if Path(rel).is_absolute() or base_dir is None else base_dir / rel
    try:
        lines = tp.read_text(encoding="utf-8").split()
        times = tuple(float(x) for x in lines)
    except OSError as e:
        raise c.fail(f"{path}.path", f"cannot read trace {str(tp)!r}: {e.strerror}") from None
    except ValueError as e:
        raise c.fail(f"{path}.path", f"trace {str(tp)!r}: not a list of ms offsets ({e})") from None
    if (
        not times
        or any(not math.isfinite(x) or x < 0 for x in times)
        or list(times) != sorted(times)
    ):
        raise c.fail(f"{path}.path", f"trace {str(tp)!r}: needs ascending non-negative ms offsets")
    if times[-1] < MIN_TRACE_SPAN_MS:  # the trace replays back to back: it must span time
        raise c.fail(
            f"{path}.path", f"trace {str(tp)!r}: must span >= {MIN_TRACE_SPAN_MS} ms (it repeats)"
        )
    return Arrival(kind, times_ms=times, path=str(tp.resolve()))  # absolute: saves can move


def to_dict(prof: Profile) -> dict[str, Any]:
    """The TOML document for ``prof`` (inverse of ``parse``)."""
    sim = prof.sim
    doc: dict[str, Any] = {"version": VERSION, "name": prof.name}
    if prof.description:
        doc["description"] = prof.description
    doc["engine"] = {
        "backend": prof.backend,
        "policy": prof.policy,
        "device": prof.device,
        "seed": prof.seed,
        "sim": {
            "sms": sim.sms,
            "launch_latency_us": sim.launch_latency_us,
            "launch_cost_us": sim.launch_cost_us,
            "loop_delay_us": sim.loop_delay_us,
            "interference": sim.interference,
            "hp_chain": sim.hp_chain,
        },
    }
    kd: dict[str, Any] = {}
    for k in prof.kernels.values():
        e: dict[str, Any] = {
            "grid": [x for x in k.grid],
            "block": [x for x in k.block],
            "smem": k.smem,
            "blocks_per_sm": k.blocks_per_sm,
            "block_us": k.block_us,
            "sliceable": k.sliceable,
        }
        if k.builtin:
            e["builtin"] = k.builtin
        if k.params:
            e["params"] = dict(k.params)
        if k.source:  # absolute, like trace paths: a saved copy may live elsewhere
            e["source"] = k.source
            if k.entry is not None:  # a .cu source's only entry is found when compiled
                e["entry"] = k.entry
            e["args"] = [
                {"buffer": a[1], "dtype": a[2], "count": a[3], "init": a[4]}
                if a[0] == "buffer"
                else {"scalar": a[1], "value": a[2]}
                for a in k.args
            ]
        kd[k.name] = e
    doc["kernels"] = kd
    doc["tasks"] = [_task_dict(t) for t in prof.tasks]
    return doc


def _task_dict(t: Task) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "class": t.cls, "priority": t.priority}
    if t.paused:
        d["paused"] = True
    if t.cls == HP:
        if t.slo_ms is not None:
            d["slo_ms"] = t.slo_ms
        else:
            d["slo_factor"] = t.slo_factor
        a = t.arrival
        assert a is not None
        if a.kind in ("poisson", "periodic"):
            d["arrival"] = {"kind": a.kind, "rate_hz": a.rate_hz}
        elif a.kind == "closed":
            d["arrival"] = {"kind": a.kind, "outstanding": a.outstanding, "think_us": a.think_us}
        else:
            d["arrival"] = {"kind": a.kind, "path": a.path}
        d["kernels"] = [
            {"kernel": s.kernel, "gap_us": s.gap_us, "jitter": s.jitter} for s in t.steps
        ]
    else:
        d["kernels"] = list(t.kernels)
        if t.slice_blocks is not None:
            d["slice_blocks"] = t.slice_blocks
        elif t.slice_us is not None:
            d["slice_us"] = t.slice_us
    assert t.cls in (HP, LP)
    return d


def save(prof: Profile, path: str | os.PathLike[str]) -> Path:
    """Write ``prof`` atomically (temp file + fsync + rename); returns the path written."""
    import tomli_w  # only saving needs it (GPU boxes may run engines without it)

    p = Path(path)
    text = tomli_w.dumps(to_dict(prof))
    parse(tomllib.loads(text), str(p), p.parent)  # never write what we could not read back
    return write_atomic(p, text)
