"""Core vocabulary: kernels, tasks, requests and launches (see docs/ARCHITECTURE.md).

Times inside the engine are integer nanoseconds on the backend's clock; public
configuration (profiles, control ops) is in µs or ms and converted at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HP = "hp"
LP = "lp"
CLASSES = (HP, LP)


@dataclass(frozen=True)
class KernelSpec:
    """A launchable kernel: grid, block, shared memory and a cost model for the sim.

    Slices are contiguous ranges of the linearised block index (x fastest), so a
    2-D or 3-D grid can be cut anywhere; the kernel still sees its full grid.
    """

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int] = (256, 1, 1)
    smem: int = 0
    blocks_per_sm: int = 2  # resident blocks per SM (occupancy)
    block_us: float = 20.0  # sim: duration of one block with the GPU to itself
    builtin: str | None = None  # cuda: name of a kernel under native/
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    sliceable: bool = True
    # User kernel (profile ``source``/``entry``/``args``); None/() for built-ins and stand-ins.
    source: str | None = None  # absolute path of the .cu or .ptx file
    entry: str | None = None  # entry (kernel) name inside it
    # One tuple per kernel parameter, in order (hashable, so the spec stays frozen):
    # ("buffer", name, dtype, count, init) or ("scalar", dtype, value).
    args: tuple[tuple[Any, ...], ...] = ()
    cooperative: bool = False  # grid-wide sync: launch whole with cuLaunchCooperativeKernel

    @property
    def total_blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


@dataclass(frozen=True)
class Step:
    """One kernel of an HP request, preceded by a host gap (the host preparing it)."""

    kernel: str
    gap_us: float = 0.0
    jitter: float = 0.0  # relative: gap is drawn uniformly in gap*(1±jitter)


@dataclass(frozen=True)
class Arrival:
    """HP arrival process: poisson (rate_hz), periodic (rate_hz), closed (outstanding,
    think_us) or trace (times_ms, arrival offsets read from a file)."""

    kind: str
    rate_hz: float = 0.0
    outstanding: int = 1
    think_us: float = 0.0
    times_ms: tuple[float, ...] = ()
    path: str = ""


@dataclass
class Task:
    """Live task state. Policies read it at every decision, so edits apply at the next one.

    priority: larger is more important (among tasks of the same class).
    slice_us / slice_blocks: operator cap on LP slice size; slice_blocks forces an
    exact block count (even below one wave), slice_us is converted with the wave model.
    """

    name: str
    cls: str
    priority: int = 0
    slo_ms: float | None = None
    slo_factor: float | None = None
    arrival: Arrival | None = None
    steps: tuple[Step, ...] = ()  # hp: the kernels of one request
    kernels: tuple[str, ...] = ()  # lp: the training-like loop, repeated forever
    slice_us: float | None = None
    slice_blocks: int | None = None
    paused: bool = False

    def slo_ns(self, baseline_p99_ms: float | None) -> int | None:
        """SLO in ns: slo_ms, or slo_factor × the exclusive p99 when that is known."""
        if self.slo_ms is not None:
            return int(self.slo_ms * 1e6)
        if self.slo_factor is not None and baseline_p99_ms is not None:
            return int(self.slo_factor * baseline_p99_ms * 1e6)
        return None


@dataclass(slots=True, eq=False)
class Launch:
    """One kernel launch: a whole kernel or a slice [start, end) of its blocks."""

    id: int
    task: str
    cls: str
    kernel: KernelSpec
    start_block: int
    end_block: int
    stream: int  # 0 = highest priority; backends map it to real streams
    issue_ns: int = 0  # host enqueue time
    start_ns: int = -1  # first block started on the GPU
    end_ns: int = -1  # last block finished
    request: int = -1  # hp: request id
    predicted_ns: int = 0  # lp: predicted duration, for pre-issue
    seen_ns: int = -1  # chained hp (issued by the backend): when its issuer saw it end
    after: Launch | None = None  # lp: starts only once this (chained hp) launch has ended
    armed: bool = False  # lp with after: handed to the HP issuer before `after` was issued

    @property
    def blocks(self) -> int:
        return self.end_block - self.start_block


@dataclass(slots=True, eq=False)
class Request:
    """One HP request: a sequence of kernels with host gaps between them."""

    id: int
    task: str
    arrival_ns: int
    step: int = 0  # index of the next kernel to enqueue
    gaps_ns: tuple[int, ...] = ()
    done_ns: int = -1
