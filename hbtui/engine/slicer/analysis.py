"""What each function reads and calls: the facts refusals and warnings are decided on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .ptx import Function, Module, Statement

GRID_REGS = ("%ctaid", "%nctaid")
CLUSTER_GRID_REGS = ("%clusterid", "%nclusterid")
CLUSTER_REGS = (
    "%cluster_ctarank",
    "%cluster_nctarank",
    "%cluster_ctaid",
    "%cluster_nctaid",
    "%clusterid",
    "%nclusterid",
    "%is_explicit_cluster",
)
# Cooperative groups' grid.sync() reads the driver's grid workspace from %envreg1/2
# (cooperative_groups/details/driver_abi.h, CUDA 11+); older toolkits called these.
GRID_SYNC_CALL = re.compile(r"^cudaCG")
# Dynamic parallelism: CDP1 names, and CUDA 12+/13 CDP2 ones (__cudaCDP2LaunchDeviceV2 ...).
DEVICE_LAUNCH_CALL = re.compile(r"LaunchDevice|GetParameterBuffer|cudaGraphLaunch|cudaCDP")
# Externals NVRTC/nvcc emit calls to that never read the grid position.
SAFE_EXTERNS = frozenset({"vprintf", "malloc", "free", "__assertfail", "__assert_fail"})
_CLUSTER_OPCODES = ("barrier.cluster", "mapa", "getctarank")
_INT16 = re.compile(r"\.[usb]16(\.|$)")


def reg_base(text: str) -> str:
    """`%ctaid.x` -> `%ctaid`."""
    return text.split(".", 1)[0]


@dataclass
class Facts:
    """Per-function summary (lines are 1-based source lines)."""

    sregs: dict[str, int] = field(default_factory=dict)  # special reg (with component) -> line
    calls: set[str] = field(default_factory=set)
    indirect_call_line: int | None = None
    address_taken: set[str] = field(default_factory=set)
    cluster_ops: dict[str, int] = field(default_factory=dict)
    narrow_grid_reads: list[int] = field(default_factory=list)  # 16-bit reads of %ctaid
    counter_atomics: list[tuple[int, str]] = field(default_factory=list)


def _callee(stmt: Statement) -> str | None:
    ops = [t for t in stmt.operands]
    i = 0
    if ops and ops[0].text == "(":  # `call (retval), f, (args);`
        depth = 0
        while i < len(ops):
            depth += {"(": 1, ")": -1}.get(ops[i].text, 0)
            i += 1
            if depth == 0:
                break
        if i < len(ops) and ops[i].text == ",":
            i += 1
    return ops[i].text if i < len(ops) else None


def _counter_atomics(stmts: list[Statement]) -> list[tuple[int, str]]:
    """Heuristic: `atom.{global|generic}.{add|inc}` whose returned old value is used later.

    That is the shape of `work = atomicAdd(&counter, 1)` self-scheduling; an atomic whose
    result is unused compiles to `red`, and shared-memory atomics are per block.
    """
    found = []
    for k, st in enumerate(stmts):
        op = st.opcode
        parts = op.split(".")
        if parts[0] != "atom" or any(p.startswith("shared") for p in parts):
            continue
        if not ({"add", "inc"} & set(parts)):
            continue
        ops = st.operands
        if not ops or not ops[0].text.startswith("%"):
            continue
        dest = ops[0].text
        for later in stmts[k + 1 :]:
            srcs = later.operands[1:] if later.operands else []
            if any(t.text == dest for t in srcs):
                found.append((st.line, op))
                break
    return found


def function_facts(fn: Function, function_names: set[str]) -> Facts:
    f = Facts()
    for st in fn.statements:
        op = st.opcode
        is_call = op.split(".")[0] == "call"
        if is_call:
            callee = _callee(st)
            if callee is None or callee.startswith("%"):
                f.indirect_call_line = f.indirect_call_line or st.line
            else:
                f.calls.add(callee)
        if op.startswith(_CLUSTER_OPCODES) or "::cluster" in op:
            f.cluster_ops.setdefault(op, st.line)
        for t in st.operands:
            if t.kind != "word":
                continue
            if t.text.startswith("%"):
                base = reg_base(t.text)
                if base in GRID_REGS and _INT16.search(op):
                    f.narrow_grid_reads.append(st.line)
                f.sregs.setdefault(t.text, st.line)
            elif not is_call and t.text in function_names:
                f.address_taken.add(t.text)
    f.counter_atomics = _counter_atomics(fn.statements)
    return f


_SPECIAL_BASES = frozenset({"%ctaid", "%nctaid", "%smid", "%nsmid", "%gridid", *CLUSTER_REGS})


def special_reads(facts: Facts) -> dict[str, int]:
    """The special registers a function reads (ordinary registers dropped)."""
    return {
        r: ln
        for r, ln in facts.sregs.items()
        if reg_base(r) in _SPECIAL_BASES or r.startswith("%envreg")
    }


def reachable(entry: Function, module: Module, facts: dict[str, Facts]) -> list[str]:
    """Names of functions an entry may call, transitively (indirect calls: any whose
    address is taken anywhere in the module)."""
    taken = set().union(*(f.address_taken for f in facts.values())) if facts else set()
    seen: list[str] = []
    todo = [entry.name]
    while todo:
        name = todo.pop()
        fa = facts.get(name)
        if fa is None:
            continue
        nxt = set(fa.calls)
        if fa.indirect_call_line is not None:
            nxt |= taken
        for callee in sorted(nxt):
            if callee not in seen and callee != entry.name:
                seen.append(callee)
                todo.append(callee)
    return seen
