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
from hbtui.engine.limits import (
    MAX_DESCRIPTION,
    MAX_HP_KERNELS_PER_S,
    MAX_KERNELS,
    MAX_PARAMS,
    MAX_TASK_KERNELS,
    MAX_TASKS,
    MAX_TEXT,
    MAX_TOML_DEPTH,
    MAX_TRACE_BYTES,
    MAX_TRACE_POINTS,
    NAME_RE,
    hp_kernels_per_s,
)
from hbtui.engine.model import CLASSES, HP, LP, Arrival, KernelSpec, Step, Task
from hbtui.engine.profile_dirs import list_profiles, read_capped, resolve, shipped_dir, user_dir
from hbtui.engine.profile_kernels import (  # re-exported
    BUFFER_DTYPES,
    BUFFER_INITS,
    SCALAR_TYPES,
    ProfileWarning,
    user_kernel,
)

VERSION = 1
__all__ = ["BUFFER_DTYPES", "BUFFER_INITS", "SCALAR_TYPES", "ProfileError", "ProfileWarning",
           "list_profiles", "resolve", "shipped_dir", "user_dir"]  # fmt: skip
ARRIVAL_KINDS = ("poisson", "periodic", "closed", "trace")
MIN_TRACE_SPAN_MS = 0.1
BACKENDS = ("auto", "sim", "cuda")


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


def load(path: str | os.PathLike[str], *, echo: bool = True, file: str | None = None,
         follow: bool = True) -> Profile:  # fmt: skip
    """Read, parse and validate the profile at ``path`` (ProfileError naming ``file``).

    ``echo=False`` (loads asked for over the control socket): messages never carry file
    contents. ``follow=False``: a symlink is refused. Reads are capped (engine.limits)."""
    p = Path(path)
    file = str(path) if file is None else file
    text = read_capped(p, follow=follow)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{file}: invalid TOML: {_toml_where(e, echo)}") from None
    except RecursionError:
        raise ProfileError(f"{file}: invalid TOML: nested too deeply") from None
    if _depth(data) > MAX_TOML_DEPTH:
        raise ProfileError(f"{file}: arrays and tables nest deeper than {MAX_TOML_DEPTH} levels")
    prof = parse(data, file, base_dir=p.parent, echo=echo)
    prof.path = str(path)
    return prof


def _toml_where(e: tomllib.TOMLDecodeError, echo: bool) -> str:
    msg = str(e)
    if echo:
        return msg
    at = msg.rfind("(at ")  # tomllib: "<fixed text> (at line L, column C)"
    return msg[at:].strip("()") if at >= 0 else "cannot be parsed"


def _depth(obj: Any) -> int:
    """Nesting depth of lists and dicts, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict | list):
            deepest = max(deepest, d)
            if d <= MAX_TOML_DEPTH:
                stack.extend((x, d + 1) for x in (o.values() if isinstance(o, dict) else o))
    return deepest


def parse(data: dict[str, Any], file: str = "<profile>", base_dir: Path | None = None,
          echo: bool = True) -> Profile:  # fmt: skip
    c = Checker(file, echo)
    c.keys(data, "", {"version", "name", "description", "engine", "kernels", "tasks"})
    if "version" not in data:
        raise c.fail("version", f"is required (this hbtui reads version = {VERSION})")
    v = data["version"]
    if isinstance(v, bool) or not isinstance(v, int) or v != VERSION:
        raise c.fail("version", f"unsupported version {c.show(v)} (expected {VERSION})")
    desc = data.get("description", "")
    if not isinstance(desc, str) or len(desc) > MAX_DESCRIPTION:
        raise c.fail("description", f"must be a string of at most {MAX_DESCRIPTION} characters")
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
        **{k: c.num(sim_t, k, "engine.sim", getattr(d, k), rng=k)
           for k in ("sms", "launch_latency_us", "launch_cost_us", "loop_delay_us",
                     "interference")},
        hp_chain=hp_chain,
    )  # fmt: skip
    kernels: dict[str, KernelSpec] = {}
    ktable = c.table(data.get("kernels", {}), "kernels")
    if len(ktable) > MAX_KERNELS:
        raise c.fail("kernels", f"at most {MAX_KERNELS} kernels, got {len(ktable)}")
    for kname, kt in ktable.items():
        if not NAME_RE.match(kname):
            raise c.fail("kernels", f"a kernel name {c.name_rule(kname)}")
        path = f"kernels.{kname}"
        kt = c.table(kt, path)
        c.keys(kt, path, {"grid", "block", "smem", "blocks_per_sm", "block_us", "builtin",
                          "params", "sliceable", "source", "entry", "args"})  # fmt: skip
        bps = c.num(kt, "blocks_per_sm", path, 2, rng="blocks_per_sm")
        sliceable = kt.get("sliceable", True)
        if not isinstance(sliceable, bool):
            raise c.fail(f"{path}.sliceable", "must be true or false")
        builtin = c.name(kt, "builtin", path)
        params = _params(c, kt, f"{path}.params")
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
            user = user_kernel(c, kt, path, base_dir, sliceable)
            sliceable = user.pop("sliceable")
        kernels[kname] = KernelSpec(
            name=kname,
            grid=c.dims(kt, "grid", path, list(grid_default) if builtin else ...),
            block=c.dims(kt, "block", path, list(block_default) if builtin else 256, "block"),
            smem=c.num(kt, "smem", path, 0, rng="smem"),
            blocks_per_sm=bps,
            block_us=c.num(kt, "block_us", path, 20.0, rng="block_us"),
            builtin=builtin,
            params=params,
            sliceable=sliceable,
            **user,
        )
    tasks_raw = data.get("tasks", [])  # none: an engine for programs under `hbtui run` only
    if not isinstance(tasks_raw, list):
        raise c.fail("tasks", "must be an array of tables ([[tasks]])")
    if len(tasks_raw) > MAX_TASKS:
        raise c.fail("tasks", f"at most {MAX_TASKS} tasks, got {len(tasks_raw)}")
    tasks = [_task(c, t, i, kernels, base_dir) for i, t in enumerate(tasks_raw)]
    names = [t.name for t in tasks]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise c.fail(f"tasks[{i}].name", f"duplicate task name {n!r}")
    if (rate := hp_kernels_per_s(tasks)) > MAX_HP_KERNELS_PER_S:
        raise c.fail(
            "tasks",
            f"open-loop hp tasks ask for {rate:g} kernels/s (rate_hz x kernels, summed); "
            f"the engine serves at most {MAX_HP_KERNELS_PER_S:g}",
        )
    stem = Path(file).stem
    return Profile(
        name=c.name(data, "name", "", stem if NAME_RE.match(stem) else "profile"),
        description=desc,
        kernels=kernels,
        tasks=tasks,
        backend=c.str_(eng, "backend", "engine", "auto", BACKENDS),
        policy=c.str_(eng, "policy", "engine", "hummingbird", tuple(POLICIES)),
        device=c.num(eng, "device", "engine", 0, rng="device"),
        seed=c.num(eng, "seed", "engine", 1, rng="seed"),
        sim=sim,
    )


def _params(c: Checker, kt: dict[str, Any], path: str) -> dict[str, Any]:
    """A builtin kernel's params: a flat table of at most MAX_PARAMS numbers or strings."""
    params = dict(c.table(kt.get("params", {}), path))
    if len(params) > MAX_PARAMS:
        raise c.fail(path, f"at most {MAX_PARAMS} entries")
    for k, v in params.items():
        if not NAME_RE.match(k):
            raise c.fail(path, f"a key {c.name_rule(k)}")
        if isinstance(v, str):
            c.str_(params, k, path, max_len=MAX_TEXT)
        elif not isinstance(v, bool):
            c.num(params, k, path, rng="seed" if isinstance(v, int) else "scalar_float")
    return params


def _task(c: Checker, raw: Any, i: int, kernels: dict[str, KernelSpec],
          base_dir: Path | None) -> Task:  # fmt: skip
    path = f"tasks[{i}]"
    t = c.table(raw, path)
    c.keys(t, path, {"name", "class", "priority", "slo_ms", "slo_factor", "arrival", "kernels",
                     "slice_us", "slice_blocks", "paused"})  # fmt: skip
    name = c.name(t, "name", path, ...)
    cls = c.str_(t, "class", path, ..., CLASSES)
    paused = t.get("paused", False)
    if not isinstance(paused, bool):
        raise c.fail(f"{path}.paused", "must be true or false")
    ks = t.get("kernels")
    if not isinstance(ks, list) or not 1 <= len(ks) <= MAX_TASK_KERNELS:
        raise c.fail(f"{path}.kernels", f"must be a list of 1-{MAX_TASK_KERNELS} kernels")
    task = Task(name=name, cls=cls, priority=c.num(t, "priority", path, 0, rng="priority"),
                paused=paused)  # fmt: skip
    if cls == HP:
        for key in ("slice_us", "slice_blocks"):
            if key in t:
                raise c.fail(f"{path}.{key}", "only lp tasks are sliced")
        if "slo_ms" in t and "slo_factor" in t:
            raise c.fail(f"{path}.slo_ms", "give slo_ms or slo_factor, not both")
        task.slo_ms = c.num(t, "slo_ms", path, None, positive=True, rng="slo_ms")
        task.slo_factor = c.num(t, "slo_factor", path, None, positive=True, rng="slo_factor")
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
                raise c.fail(f"{sp}.kernel",
                             f"unknown kernel {c.show(k)} (define it under [kernels])")  # fmt: skip
            jitter = c.num(s, "jitter", sp, 0.0, minimum=0, rng="jitter")
            steps.append(Step(k, c.num(s, "gap_us", sp, 0.0, minimum=0, rng="gap_us"), jitter))
        task.steps = tuple(steps)
    else:
        for key in ("slo_ms", "slo_factor", "arrival"):
            if key in t:
                raise c.fail(f"{path}.{key}", "only hp tasks have an SLO and arrivals")
        if "slice_us" in t and "slice_blocks" in t:
            raise c.fail(f"{path}.slice_us", "give slice_us or slice_blocks, not both")
        task.slice_us = c.num(t, "slice_us", path, None, positive=True, rng="slice_us")
        task.slice_blocks = c.num(t, "slice_blocks", path, None, positive=True,
                                  rng="slice_blocks")  # fmt: skip
        for j, k in enumerate(ks):
            if not isinstance(k, str) or k not in kernels:
                raise c.fail(f"{path}.kernels[{j}]", f"unknown kernel {c.show(k)}")
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
        # rate_hz: the loop's budget (engine.limits.MAX_RATE_HZ says the numbers)
        return Arrival(kind, rate_hz=c.num(a, "rate_hz", path, ..., positive=True, rng="rate_hz"))
    if kind == "closed":
        return Arrival(
            kind,
            outstanding=c.num(a, "outstanding", path, 1, positive=True, rng="outstanding"),
            think_us=c.num(a, "think_us", path, 0.0, minimum=0, rng="think_us"),
        )
    rel = c.str_(a, "path", path, ...)
    tp = Path(rel) if Path(rel).is_absolute() or base_dir is None else base_dir / rel
    shown = repr(str(tp)) if c.echo else "file"  # the path and its tokens are file content
    try:
        words = read_capped(tp, "trace", MAX_TRACE_BYTES).split()
        if len(words) > MAX_TRACE_POINTS:
            raise c.fail(f"{path}.path", f"trace {shown}: more than {MAX_TRACE_POINTS} offsets")
        times = tuple(float(x) for x in words)
    except ProfileError as e:
        why = str(e).rsplit(": ", 1)[-1] if c.echo else "cannot be read"
        raise c.fail(f"{path}.path", f"cannot read trace {shown}: {why}") from None
    except ValueError as e:
        why = f" ({e})" if c.echo else ""
        raise c.fail(f"{path}.path", f"trace {shown}: not a list of ms offsets{why}") from None
    if (
        not times
        or any(not math.isfinite(x) or not 0 <= x <= 1e9 for x in times)
        or list(times) != sorted(times)
    ):
        raise c.fail(f"{path}.path", f"trace {shown}: needs ascending ms offsets in [0, 1e9]")
    if times[-1] < MIN_TRACE_SPAN_MS:  # the trace replays back to back: it must span time
        raise c.fail(
            f"{path}.path", f"trace {shown}: must span >= {MIN_TRACE_SPAN_MS} ms (it repeats)"
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


def save(prof: Profile, path: str | os.PathLike[str], make_dirs: bool = True) -> Path:
    """Write ``prof`` atomically (temp file + fsync + rename); returns the path written.
    ``make_dirs=False``: the directory must exist (saves asked for over the wire)."""
    import tomli_w  # only saving needs it (GPU boxes may run engines without it)

    p = Path(path)
    text = tomli_w.dumps(to_dict(prof))
    parse(tomllib.loads(text), str(p), p.parent)  # never write what we could not read back
    return write_atomic(p, text, make_dirs=make_dirs)
