"""CPU tests of the cuda backend's prepared kernels (engine.backends.cuda_kernels) with a
fake driver: argument arrays, ``launch`` calls and the test tools' fault injection."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any

import pytest

from hbtui.engine.backends import native
from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.cuda_kernels import PreparedBuiltin, PreparedUser
from hbtui.engine.backends.inflight import InFlight
from hbtui.engine.model import KernelSpec, Launch
from hbtui.engine.slicer.launch import plan_launches

OK, BAD = 0, 700


class FakeCu:
    CUresult = SimpleNamespace(CUDA_SUCCESS=OK)

    def __init__(self, result: int = OK) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.result = result

    def cuLaunchKernel(self, *a: Any) -> tuple[int]:  # noqa: N802 - the driver's name
        self.calls.append(("launch", *a))
        return (self.result,)

    def cuLaunchCooperativeKernel(self, *a: Any) -> tuple[int]:  # noqa: N802
        self.calls.append(("coop", *a))
        return (self.result,)

    def cuGetErrorName(self, err: int) -> tuple[int, bytes]:  # noqa: N802
        return OK, b"CUDA_ERROR_ILLEGAL_ADDRESS"


def drv(result: int = OK) -> Any:
    return SimpleNamespace(cu=FakeCu(result), OK=OK)


def gelu() -> PreparedBuiltin:
    lay = native.builtin_layout("gelu", {"n": 4096})
    spec = KernelSpec("g", grid=lay.grid, block=lay.block, builtin="gelu", params={"n": 4096})
    bufs = {b.name: (0x1000 * (i + 1), b) for i, b in enumerate(lay.buffers)}
    return PreparedBuiltin(spec, lay, "func", bufs, 4, 0)


def cell(p: Any, i: int) -> int:
    return ctypes.cast(p.params[i], ctypes.POINTER(ctypes.c_uint64)).contents.value


def test_builtin_argument_array_and_its_cells() -> None:
    p = gelu()
    p.ts.value, p.cnt.value = 0xAA, 0xBB
    assert cell(p, 0) == 0xAA and cell(p, 1) == 0xBB
    assert p.arg_cell("x").value == 0x1000 and p.arg_cell("y").value == 0x2000
    q = p.copy()
    assert q.params_addr != p.params_addr and q.bufs is p.bufs and q.smem == p.smem
    assert q.blocks_per_sm == p.blocks_per_sm and q.arg_cell("y").value == 0x2000


def test_builtin_launch_is_one_1d_grid_of_the_slice() -> None:
    p, d = gelu(), drv()
    p.launch(d, "stream", 3)
    assert d.cu.calls == [("launch", "func", 3, 1, 1, 256, 1, 1, 0, "stream", p.params_addr, 0)]
    with pytest.raises(BackendError, match=r"cuLaunchKernel\(g\) failed: CUDA_ERROR_ILLEGAL"):
        p.launch(drv(BAD), "stream", 3)


def user(grid: tuple[int, int, int], sliced: bool, coop: bool = False) -> PreparedUser:
    args = (("scalar", "f32", 2.0), ("buffer", "x", "f32", 64, "random"))
    spec = KernelSpec("u", grid=grid, block=(32, 1, 1), source="/k.cu", entry="k", args=args)
    bufs = {"x": (0x5000, native.BufferSpec("x", "u32", 64))}
    return PreparedUser(spec, "ufunc", bufs, 2, sliced, coop)


def test_user_argument_array_has_the_slice_params_only_when_sliced() -> None:
    assert len(user((4, 3, 1), sliced=True)._vals) == 2 + 6
    assert len(user((4, 3, 1), sliced=False)._vals) == 2
    p = user((4, 3, 1), sliced=True)
    assert cell(p, 1) == 0x5000 and p.inits == {"x": ("random", "f32", 64)}


def test_user_launch_of_a_slice_is_its_planned_sub_grids() -> None:
    p, d = user((4, 3, 2), sliced=True), drv()
    p.launch(d, "s", 5, 19, launch_id=1)
    want = plan_launches(5, 19, (4, 3, 2))
    assert [c[2:5] for c in d.cu.calls] == [tuple(ln.grid) for ln in want]
    assert len(d.cu.calls) == len(want) > 1
    assert [v.value for v in p.slice_vals[3:]] == [4, 3, 2]  # the kernel sees its full grid


def test_unsliced_user_kernels_launch_whole_cooperatively_when_they_grid_sync() -> None:
    d = drv()
    user((8, 1, 1), sliced=False, coop=True).launch(d, "s", 0, 8, launch_id=1)
    user((8, 1, 1), sliced=False).launch(d, "s", 0, 8, launch_id=2)
    assert [c[0] for c in d.cu.calls] == ["coop", "launch"]
    with pytest.raises(BackendError, match=r"launch 3: 'u' is not sliceable; got blocks \[0, 4\)"):
        user((8, 1, 1), sliced=False).launch(d, "s", 0, 4, launch_id=3)


def test_in_flight_record_tells_user_kernels_by_their_slot() -> None:
    k = KernelSpec("g", grid=(1, 1, 1))
    la = Launch(1, "t", "lp", k, 0, 1, 1)
    assert InFlight(la, "ev1", -1, "ev0").user
    item = InFlight(la, "ev", 7)
    assert not item.user and item.arm is None and item.start_event is None


def test_point_buffer_at_reaches_the_cell_and_later_copies() -> None:
    from hbtui.engine.backends import cuda_testing

    p = gelu()
    be = SimpleNamespace(_prepared={"g": p})
    cuda_testing.point_buffer_at(be, "g", "x", 0x10)  # type: ignore[arg-type]
    assert p.arg_cell("x").value == 0x10 and p.copy().arg_cell("x").value == 0x10
    assert p.arg_cell("y").value == 0x2000
