"""Turn a linear block range of a grid into sub-grid launches for a sliced kernel.

Blocks are linearised x-fastest: id = x + gx * (y + gy * z), as CUDA orders blockIdx.
A range is covered by at most 5 boxes: a partial row, full rows up to the next plane,
full planes, full rows, a partial row (a 2-D grid needs at most 3).
"""

from __future__ import annotations

from dataclasses import dataclass

Dim3 = tuple[int, int, int]


@dataclass(frozen=True)
class SubLaunch:
    offset: Dim3  # block offset of the sub-grid inside the full grid
    grid: Dim3  # sub-grid dims to pass to cuLaunchKernel

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


def _dim3(v: tuple[int, ...], what: str) -> Dim3:
    if len(v) > 3 or any(int(x) < 1 for x in v):
        raise ValueError(f"{what} must be 1 to 3 positive ints, got {v!r}")
    t = [int(x) for x in v] + [1, 1]
    return (t[0], t[1], t[2])


def plan_launches(
    start: int, end: int, grid: tuple[int, ...], cluster: tuple[int, ...] = (1, 1, 1)
) -> list[SubLaunch]:
    """Launches covering the blocks [start, end) of `grid` exactly once, in order.

    With a cluster shape (a kernel whose result reported `cluster_alignment`), start and
    end count whole clusters of the cluster grid (grid / cluster, linearised the same
    way) and every launch is cluster-aligned.
    """
    g, c = _dim3(grid, "grid"), _dim3(cluster, "cluster")
    if any(gi % ci for gi, ci in zip(g, c, strict=True)):
        raise ValueError(f"grid {g} is not a multiple of cluster {c}")
    cg = (g[0] // c[0], g[1] // c[1], g[2] // c[2])
    total = cg[0] * cg[1] * cg[2]
    if not 0 <= start <= end <= total:
        raise ValueError(f"range [{start}, {end}) outside 0..{total}")
    out: list[SubLaunch] = []
    gx, plane = cg[0], cg[0] * cg[1]

    def emit(s: int, size: Dim3) -> None:
        x, y, z = s % gx, (s // gx) % cg[1], s // plane
        out.append(
            SubLaunch(
                (x * c[0], y * c[1], z * c[2]),
                (size[0] * c[0], size[1] * c[1], size[2] * c[2]),
            )
        )

    s = start
    if s < end and s % gx:  # partial row up to the end of the row
        n = min(gx - s % gx, end - s)
        emit(s, (n, 1, 1))
        s += n
    if s < end and s % plane:  # full rows up to the end of the plane
        rows = min(cg[1] - (s // gx) % cg[1], (end - s) // gx)
        if rows:
            emit(s, (gx, rows, 1))
            s += rows * gx
    if s < end and s % plane == 0 and (end - s) // plane:  # full planes
        planes = (end - s) // plane
        emit(s, (gx, cg[1], planes))
        s += planes * plane
    if s < end and s % gx == 0 and (end - s) // gx:  # full rows of the last plane
        rows = (end - s) // gx
        emit(s, (gx, rows, 1))
        s += rows * gx
    if s < end:  # partial last row
        emit(s, (end - s, 1, 1))
    return out


def slice_args(launch: SubLaunch, grid: tuple[int, ...]) -> tuple[int, int, int, int, int, int]:
    """Values of the six appended params: off_x, off_y, off_z, grid_x, grid_y, grid_z."""
    g = _dim3(grid, "grid")
    return (*launch.offset, *g)


def full_grid_args(grid: tuple[int, ...]) -> tuple[int, int, int, int, int, int]:
    """The appended params for launching the sliced kernel over its whole grid at once."""
    return (0, 0, 0, *_dim3(grid, "grid"))
