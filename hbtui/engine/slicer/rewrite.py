"""Make entries sliceable: append offset/grid params, redirect %ctaid and %nctaid reads.

Parameter convention (appended at the END of each sliced entry's parameter list, so
the packing of the kernel's own arguments is unchanged):

    .param .u32 __hbt_off_x, __hbt_off_y, __hbt_off_z     block offset of this sub-grid
    .param .u32 __hbt_grid_x, __hbt_grid_y, __hbt_grid_z  the full (original) grid dims

Inside the kernel every `%ctaid.c` read becomes `%ctaid.c + off_c` and every
`%nctaid.c` read becomes `grid_c`. A full-grid launch passes offsets 0 and its grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .analysis import (
    CLUSTER_GRID_REGS,
    CLUSTER_REGS,
    DEVICE_LAUNCH_CALL,
    GRID_REGS,
    GRID_SYNC_CALL,
    SAFE_EXTERNS,
    Facts,
    function_facts,
    reachable,
    reg_base,
    special_reads,
)
from .ptx import Function, Module, parse_module

AXES = ("x", "y", "z")
PARAM_NAMES = tuple(f"__hbt_off_{a}" for a in AXES) + tuple(f"__hbt_grid_{a}" for a in AXES)


class UnknownKernelError(KeyError):
    """A requested kernel name is not an entry of the module."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown kernel"


@dataclass(frozen=True)
class EntryResult:
    name: str
    status: Literal["sliced", "refused"]
    reason: str | None = None
    warnings: tuple[str, ...] = ()
    # Thread-block cluster shape every slice's offset and size must be a multiple of
    # (None: no cluster constraint). Only set when clusters were allowed.
    cluster_alignment: tuple[int, int, int] | None = None
    # Special registers the kernel reads that the rewrite redirected, e.g. ("%ctaid.x",).
    redirected: tuple[str, ...] = ()

    @property
    def sliced(self) -> bool:
        return self.status == "sliced"


@dataclass(frozen=True)
class SliceResult:
    ptx: str  # whole module; refused and unselected entries are left byte-identical
    entries: tuple[EntryResult, ...] = field(default_factory=tuple)

    def __getitem__(self, name: str) -> EntryResult:
        for e in self.entries:
            if e.name == name:
                return e
        raise UnknownKernelError(f"no entry named {name!r}")

    @property
    def all_sliced(self) -> bool:
        return all(e.sliced for e in self.entries)


@dataclass
class _Verdict:
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cluster: tuple[int, int, int] | None = None


def _cluster_dims(fn: Function) -> tuple[int, int, int] | None:
    args = fn.directive(".reqnctapercluster")
    if not args:
        return None
    dims = [int(a) for a in args if a.isdigit()] + [1, 1]
    return (dims[0], dims[1], dims[2])


def _judge(fn: Function, module: Module, facts: dict[str, Facts], allow_clusters: bool) -> _Verdict:
    v = _Verdict()
    own = special_reads(facts[fn.name])
    callees = reachable(fn, module, facts)
    defined = module.func_definitions()
    reads: dict[str, int] = dict(own)
    for name in callees:
        if name in facts:
            for reg, line in special_reads(facts[name]).items():
                reads.setdefault(reg, line)
                if reg_base(reg) in GRID_REGS + CLUSTER_GRID_REGS:
                    v.refusals.append(
                        f"calls .func {name}, which reads {reg} (line {line}); a .func "
                        "cannot see the entry's offset parameters"
                    )
    if fa_line := facts[fn.name].indirect_call_line:
        v.warnings.append(f"indirect call at line {fa_line}: callees resolved conservatively")

    envregs = sorted(r for r in reads if r.startswith("%envreg"))
    if envregs:
        v.refusals.append(
            f"grid-wide sync / cooperative launch: reads {', '.join(envregs)} (the "
            "cooperative-groups grid workspace used by this_grid().sync())"
        )
    for name in callees:
        if GRID_SYNC_CALL.search(name):
            v.refusals.append(f"grid-wide sync: calls {name}")
        elif DEVICE_LAUNCH_CALL.search(name):
            v.refusals.append(f"device-side launch: calls {name} (escapes host gating)")
        elif name not in defined and name not in SAFE_EXTERNS:
            v.warnings.append(
                f"calls external function {name} whose body is not in this module; "
                "if it reads %ctaid/%nctaid the slices are wrong"
            )
    for reg in reads:
        if reg in GRID_REGS:
            v.refusals.append(f"reads {reg} as a vector; only .x/.y/.z reads can be redirected")
    for name in [fn.name, *callees]:
        if name in facts and facts[name].narrow_grid_reads:
            line = facts[name].narrow_grid_reads[0]
            v.refusals.append(f"16-bit read of %ctaid/%nctaid at line {line} (legacy PTX)")

    _judge_clusters(fn, facts, callees, reads, allow_clusters, v)

    if smid := sorted(r for r in reads if reg_base(r) in ("%smid", "%nsmid")):
        v.warnings.append(
            f"reads {', '.join(smid)}: which SM runs a block differs between a whole and a "
            "sliced launch; results must not depend on it"
        )
    if "%gridid" in reads:
        v.warnings.append("reads %gridid: every slice is a separate grid with its own id")
    for name in [fn.name, *callees]:
        for line, op in facts[name].counter_atomics if name in facts else ():
            v.warnings.append(
                f"possible atomic-counter self-scheduling ({op} at line {line} returns a value "
                "that is used; heuristic): if blocks pick work from a counter, a slice's "
                "duration need not scale with its block count"
            )
    return v


def facts_names(module: Module) -> set[str]:
    return {f.name for f in module.functions}


def _judge_clusters(
    fn: Function,
    facts: dict[str, Facts],
    callees: list[str],
    reads: dict[str, int],
    allow_clusters: bool,
    v: _Verdict,
) -> None:
    dims = _cluster_dims(fn)
    explicit = fn.directive(".explicitcluster") is not None
    max_rank = fn.directive(".maxclusterrank") is not None
    cluster_regs = sorted(r for r in reads if reg_base(r) in CLUSTER_REGS)
    ops = sorted({op for n in [fn.name, *callees] if n in facts for op in facts[n].cluster_ops})
    if dims is None and not (explicit or max_rank or cluster_regs or ops):
        return
    what = []
    if dims is not None:
        what.append(".reqnctapercluster " + ",".join(map(str, dims)))
    if explicit:
        what.append(".explicitcluster")
    if max_rank:
        what.append(".maxclusterrank")
    what += cluster_regs + ops
    desc = "thread-block clusters (" + ", ".join(what) + ")"
    if not allow_clusters:
        v.refusals.append(f"{desc}: slices must be cluster-aligned (allow_clusters to accept)")
    elif dims is None:
        v.refusals.append(f"{desc}: cluster shape is chosen at launch time, unknown to the slicer")
    else:
        v.cluster = dims


def _unique_prefix(module: Module) -> str:
    words = {t.text.lstrip("%") for t in module.tokens if t.kind == "word"}
    for n in range(1000):
        prefix = f"__hbt{n or ''}"
        if not any(w.startswith(prefix + "_") for w in words):
            return prefix
    raise ValueError("no free identifier prefix for the slicer's names")


def _rewrite_entry(
    fn: Function, prefix: str, cluster: tuple[int, int, int] | None
) -> tuple[list[tuple[int, int, str]], tuple[str, ...]]:
    """Text edits (start, end, replacement) for one entry, and the registers redirected."""
    pnames = [n.replace("__hbt", prefix, 1) for n in PARAM_NAMES]
    redirect = GRID_REGS + (CLUSTER_GRID_REGS if cluster else ())
    used = sorted(
        {t.text for t in fn.body_tokens if t.kind == "word" and reg_base(t.text) in redirect}
    )
    edits: list[tuple[int, int, str]] = []
    new_params = ",\n".join(f"\t.param .u32 {n}" for n in pnames)
    if fn.params:
        pos = fn.params[-1].end
        edits.append((pos, pos, ",\n" + new_params))
    elif fn.params_open is not None and fn.params_close is not None:
        pos = fn.params_close.start
        edits.append((pos, pos, "\n" + new_params + "\n"))
    else:
        pos = fn.name_token.end
        edits.append((pos, pos, "(\n" + new_params + "\n)"))

    def reg(sreg: str) -> str:
        base, axis = sreg.split(".")
        return f"%{prefix}_{base.lstrip('%')}_{axis}"

    t = f"%{prefix}_t"  # scratch register, scoped to a { } block
    lines = [f"\t// {prefix}: sliced launch; blockIdx = %ctaid + offset, gridDim = full grid"]
    for sreg in used:
        base, axis = sreg.split(".")
        k = AXES.index(axis)
        r, off, grid = reg(sreg), pnames[k], pnames[3 + k]
        lines.append(f"\t.reg .b32 {r};")
        if base == "%ctaid":
            lines += [
                f"\tmov.u32 {r}, %ctaid.{axis};",
                f"\t{{ .reg .b32 {t}; ld.param.u32 {t}, [{off}]; add.u32 {r}, {r}, {t}; }}",
            ]
        elif base == "%nctaid":
            lines.append(f"\tld.param.u32 {r}, [{grid}];")
        elif base == "%clusterid":  # offsets are cluster-aligned, so this divides exactly
            c = cluster[k] if cluster else 1
            lines += [
                f"\tmov.u32 {r}, %clusterid.{axis};",
                f"\t{{ .reg .b32 {t}; ld.param.u32 {t}, [{off}]; div.u32 {t}, {t}, {c}; "
                f"add.u32 {r}, {r}, {t}; }}",
            ]
        else:  # %nclusterid
            c = cluster[k] if cluster else 1
            lines.append(
                f"\t{{ .reg .b32 {t}; ld.param.u32 {t}, [{grid}]; div.u32 {r}, {t}, {c}; }}"
            )
    assert fn.body_open is not None
    edits.append((fn.body_open.end, fn.body_open.end, "\n" + "\n".join(lines)))
    for t in fn.body_tokens:
        if t.kind == "word" and t.text in used:
            edits.append((t.start, t.end, reg(t.text)))
    return edits, tuple(used)


def slice_module(
    module: Module, kernels: Iterable[str] | None = None, *, allow_clusters: bool = False
) -> SliceResult:
    """Slice the selected entries (all when kernels is None) of a parsed module."""
    entries = module.entries()
    names = [e.name for e in entries]
    wanted = list(dict.fromkeys(kernels)) if kernels is not None else names
    for k in wanted:
        if k not in names:
            known = ", ".join(names) or "none"
            raise UnknownKernelError(f"no entry named {k!r} (entries: {known})")
    fnames = facts_names(module)
    facts = {f.name: function_facts(f, fnames) for f in module.functions if f.is_definition}
    prefix = _unique_prefix(module)
    edits: list[tuple[int, int, str]] = []
    results = []
    for fn in entries:
        if fn.name not in wanted:
            continue
        v = _judge(fn, module, facts, allow_clusters)
        warnings = tuple(dict.fromkeys(v.warnings))
        if v.refusals:
            reason = "; ".join(dict.fromkeys(v.refusals))
            results.append(EntryResult(fn.name, "refused", reason, warnings))
            continue
        e, used = _rewrite_entry(fn, prefix, v.cluster)
        edits += e
        results.append(EntryResult(fn.name, "sliced", None, warnings, v.cluster, used))
    return SliceResult(_apply(module.text, edits), tuple(results))


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    out, pos = [], 0
    for start, end, rep in sorted(edits, key=lambda x: (x[0], x[1])):
        out += [text[pos:start], rep]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def slice_ptx(
    ptx: str, kernels: Iterable[str] | None = None, *, allow_clusters: bool = False
) -> SliceResult:
    """Parse PTX and slice it. Raises PtxParseError or UnknownKernelError."""
    return slice_module(parse_module(ptx), kernels, allow_clusters=allow_clusters)
