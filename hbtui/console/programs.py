"""How the console shows a program under ``hbtui run`` (an *attached* task).

An attached task is a row like a profile task, plus: a ⚙ marker on its name, its pid and
command (cut in the table, whole in the detail line under it), attached or detached,
kernels per second, launches held for a grant (LP) and the share of its GPU time in
kernels whose PTX is known, i.e. that the engine can slice ("PTX 35 %", "—" when there
is no data yet), and while its launches run as slices the share that did ("PTX 80 % ✂ 75").
The fields are ``hbtui.engine.protocol.AttachedInfo``'s.
"""

from __future__ import annotations

import shlex
from typing import Any

from rich.text import Text

from hbtui.console.model import TaskRow

MARK = "⚙"
CMD_CELL = 24  # characters of the command shown in the table
NAME_CELL = 40  # characters of a task name shown in the table (the key keeps it whole)

# (column key, label), added to the table once an engine reports an attached task.
COLUMNS = (
    ("program", "program"),
    ("kps", "kernels/s"),
    ("held", "held"),
    ("ptx", "PTX"),
)


def cut(s: str, n: int) -> str:
    """``s`` in at most ``n`` characters, an ellipsis marking a cut."""
    return s if len(s) <= n else s[: max(0, n - 1)] + "…"


def command(att: dict[str, Any]) -> str:
    """The command line as a shell would read it (arguments quoted where needed)."""
    cmd = att.get("cmd")
    if not isinstance(cmd, list) or not cmd:
        return ""
    return shlex.join(str(a) for a in cmd)


def pid_text(att: dict[str, Any]) -> str:
    pid = att.get("pid")
    return f"{MARK} pid {pid}" if isinstance(pid, int) and pid > 0 else f"{MARK} starting"


def status_text(row: TaskRow) -> str:
    """attached / detached, and what else an operator must know (ungated, paused)."""
    att = row.attached or {}
    bits = [str(att.get("status") or "attached")]
    if att.get("ungated"):
        bits.append("ungated")
    if row.paused:
        bits.append("paused")
    return ", ".join(bits)


def _pct(v: Any) -> str | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f"{min(1.0, max(0.0, v)) * 100:.0f}"
    return None


def ptx_text(att: dict[str, Any]) -> str:
    share, sliced = _pct(att.get("sliceable_share")), _pct(att.get("sliced_share"))
    if share is None:
        return "—"
    return f"PTX {share} %" + (f" ✂ {sliced}" if sliced is not None and att.get("slicing") else "")


def harvest_text(att: dict[str, Any]) -> str:
    """What LP inside this HP program's requests costs it (the engine's harvest guard)."""
    cost = att.get("harvest_cost")
    if not isinstance(cost, int | float) or isinstance(cost, bool):
        return ""
    held = " — LP kept out of its requests" if att.get("harvest_held_off") else ""
    g, b = att.get("lp_bubbles_per_request"), att.get("lp_bubble_cost_us")
    grants = f" ({g:.1f} bubbles with LP a request" if isinstance(g, int | float) else ""
    if grants and isinstance(b, int | float):
        grants += f", {b:+.0f} µs each to its next kernel"
    grants += ")" if grants else ""
    return f" · LP in its requests costs it {(cost - 1) * 100:+.1f} %{grants}{held}"


def cells(row: TaskRow) -> dict[str, Text]:
    """The program columns of one row ("–" for a profile task)."""
    att = row.attached
    if att is None:
        return {k: Text("–", justify="right" if k != "program" else "left") for k, _ in COLUMNS}
    kps = att.get("kernels_per_s")
    held = att.get("held")
    lp = row.cls == "lp"
    return {
        "program": Text.assemble(
            (pid_text(att), "bold"), " ", (cut(command(att), CMD_CELL), "dim")
        ),
        "kps": Text(f"{kps:.0f}" if isinstance(kps, int | float) else "–", justify="right"),
        "held": Text(
            str(held) if lp and isinstance(held, int) else "–",
            justify="right",
            style="yellow" if lp and isinstance(held, int) and held > 0 else "",
        ),
        "ptx": Text(ptx_text(att) if lp else "–", justify="right"),
    }


def detail(row: TaskRow) -> Text:
    """One line about the selected program: everything the table cuts or leaves out."""
    att = row.attached or {}
    t = Text.assemble((f"{pid_text(att)} ", "bold"), (row.name, "bold"))
    launcher = att.get("launcher_pid")
    if isinstance(launcher, int) and launcher > 0:
        t.append(f" (hbtui run pid {launcher})", style="dim")
    t.append("  ")
    t.append(command(att) or "(command not known yet)")
    t.append(f"  · {status_text(row)}")
    mps = att.get("mps")
    if isinstance(mps, bool):  # (measured: a switch between contexts costs ~130 us)
        t.append(" · under MPS" if mps else " · time-sliced (no MPS)")
        share = att.get("sm_percent")
        if mps and isinstance(share, int) and not isinstance(share, bool):
            t.append(f" on ≤ {share} % of the SMs")
    if row.cls == "lp":
        t.append(" · gated" if att.get("gated") else " · not gated")
        t.append(f" · {ptx_text(att)} sliceable")
    else:
        src = att.get("requests_from")
        if src == "bursts":
            idle = att.get("idle_ms")
            gap = f" (idle > {idle:g} ms)" if isinstance(idle, int | float) else ""
            t.append(f" · requests inferred from bursts{gap}")
        elif src == "markers":
            t.append(" · requests from hbtui.request() markers")
        every = att.get("completion_every_us")
        if isinstance(every, int) and not isinstance(every, bool) and every >= 0:
            span = f"{every / 1000:g} ms" if every >= 1000 else f"{every} µs"
            t.append(f" · completion writes coalesced to {span}" if every
                     else " · a completion write per launch")  # fmt: skip
        t.append(harvest_text(att), style="yellow" if att.get("harvest_held_off") else "")
    launches = att.get("launches")
    if isinstance(launches, int):
        t.append(f" · {launches} launches")
    shm = att.get("shm")
    if isinstance(shm, str) and shm:
        t.append(f" · shm {shm}", style="dim")
    return t
