"""Prepared kernels of the cuda backend: built-in and user kernels, each with its ``launch``.

Built-in kernels (``native/*.cu``, engine.backends.native) take a block offset and their
original grid, so the slice [start, end) is one launch of ``end - start`` 1-D blocks. The
argument array (ctypes, built once in prepare) is passed by address; the backend only
rewrites the block offset and the stamp/counter slot pointers before each launch.

User kernels (profile ``source``/``entry``/``args``, docs/slicer.md) are compiled to PTX
for the device's compute arch in prepare (engine.backends.user_kernels), loaded with
cuModuleLoadData (driver PTX JIT) and get one argument array: the kernel's own args, then
the six slice params whose values ``launch`` rewrites before each cuLaunchKernel. A slice
[start, end) is ``plan_launches`` sub-grids (1 launch for 1-D grids, up to 3 / 5 for 2-D /
3-D). Unsliceable kernels are launched whole (cuLaunchCooperativeKernel when they
grid-sync).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, ClassVar

from hbtui.engine.backends import native
from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.driver import Driver, err_name
from hbtui.engine.model import KernelSpec
from hbtui.engine.slicer.launch import plan_launches

_CTYPES = {"u32": ctypes.c_uint32, "u64": ctypes.c_uint64, "f32": ctypes.c_float}
_USER_SCALARS = {
    "i32": ctypes.c_int32,
    "u32": ctypes.c_uint32,
    "i64": ctypes.c_int64,
    "u64": ctypes.c_uint64,
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
}
DTYPE_BYTES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i8": 1, "u8": 1, "i16": 2, "u16": 2,
               "i32": 4, "u32": 4, "i64": 8, "u64": 8}  # fmt: skip
ONE = {  # the bytes of 1 in each dtype, for init = "ones"
    "f16": b"\x00\x3c", "bf16": b"\x80\x3f", "f32": b"\x00\x00\x80\x3f",
    "f64": b"\x00" * 6 + b"\xf0\x3f", "i8": b"\x01", "u8": b"\x01", "i16": b"\x01\x00",
    "u16": b"\x01\x00", "i32": b"\x01\x00\x00\x00", "u32": b"\x01\x00\x00\x00",
    "i64": b"\x01" + b"\x00" * 7, "u64": b"\x01" + b"\x00" * 7,
}  # fmt: skip
INIT_FUNCS = ("hb_init_f32", "hb_init_f16")  # native/init.cu: random fills of the inputs

Buffers = dict[str, tuple[int, native.BufferSpec]]  # name → (device pointer, spec)


class PreparedBuiltin:
    """A built-in kernel (or a spin stand-in) made launchable: function, buffers and a
    reusable argument array."""

    user: ClassVar[bool] = False  # submit() branches on it

    __slots__ = (
        "spec",
        "layout",
        "func",
        "total",
        "block",
        "smem",
        "bufs",
        "ts",
        "cnt",
        "off",
        "_vals",
        "params",
        "params_addr",
        "blocks_per_sm",
    )

    def __init__(
        self, spec: KernelSpec, layout: native.ArgLayout, func: Any, bufs: Buffers, bps: int,
        smem: int,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.layout = layout
        self.func = func
        self.total = spec.total_blocks
        self.block = spec.block
        self.smem = smem
        self.bufs = bufs
        self.ts = ctypes.c_uint64(0)
        self.cnt = ctypes.c_uint64(0)
        self.off = ctypes.c_uint32(0)
        g = layout.grid
        vals: list[Any] = [self.ts, self.cnt, self.off, *(ctypes.c_uint32(x) for x in g)]
        vals += [ctypes.c_uint64(bufs[b.name][0]) for b in layout.buffers]
        vals += [_CTYPES[t](v) for t, v in layout.scalars]
        self._vals = vals  # keep the ctypes objects alive: params points at them
        self.params = (ctypes.c_void_p * len(vals))(*(ctypes.addressof(v) for v in vals))
        self.params_addr = ctypes.addressof(self.params)
        self.blocks_per_sm = bps

    def copy(self) -> PreparedBuiltin:
        """The same kernel with its own argument cells (for another issuer: the HP chain's
        thread reads them after the call that handed them over returned)."""
        return PreparedBuiltin(
            self.spec, self.layout, self.func, self.bufs, self.blocks_per_sm, self.smem
        )

    def arg_cell(self, buffer: str) -> Any:
        """The argument cell holding ``buffer``'s device pointer."""
        i = [b.name for b in self.layout.buffers].index(buffer)
        return self._vals[6 + i]

    def launch(self, drv: Driver, stream: Any, blocks: int) -> None:
        """Launch ``blocks`` blocks from the current block offset (``off``)."""
        b = self.block
        r = drv.cu.cuLaunchKernel(
            self.func, blocks, 1, 1, b[0], b[1], b[2], self.smem, stream, self.params_addr, 0
        )
        if r[0] != drv.OK:
            raise BackendError(f"cuLaunchKernel({self.spec.name}) failed: {err_name(drv.cu, r[0])}")


class PreparedUser:
    """A user kernel made launchable: module function, buffers, argument array whose six
    trailing slice params (sliced kernels only) are rewritten per sub-launch."""

    user: ClassVar[bool] = True

    def __init__(
        self, spec: KernelSpec, func: Any, bufs: Buffers, bps: int, sliced: bool,
        cooperative: bool,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.func = func
        self.total = spec.total_blocks
        self.grid = tuple(spec.grid)
        self.block = spec.block
        self.smem = spec.smem
        self.sliced = sliced
        self.cooperative = cooperative
        # name → (devptr, BufferSpec); BufferSpec counts 32-bit words (f16: halves) so that
        # nbytes and the random fill of the shared helpers apply to every dtype
        self.bufs = bufs
        self.inits: dict[str, tuple[str, str, int]] = {}  # name → (init, dtype, count)
        vals: list[Any] = []
        for a in spec.args:
            if a[0] == "buffer":
                vals.append(ctypes.c_uint64(bufs[a[1]][0]))
                self.inits[a[1]] = (a[4], a[2], a[3])
            else:
                vals.append(_USER_SCALARS[a[1]](a[2]))
        self.slice_vals = [ctypes.c_uint32(0) for _ in range(3)]
        self.slice_vals += [ctypes.c_uint32(x) for x in self.grid]
        if sliced:
            vals += self.slice_vals
        self._vals = vals  # keep the ctypes objects alive: params points at them
        self.params = (ctypes.c_void_p * max(1, len(vals)))(*(ctypes.addressof(v) for v in vals))
        self.params_addr = ctypes.addressof(self.params)
        self.blocks_per_sm = bps

    def launch(self, drv: Driver, stream: Any, s0: int, s1: int, launch_id: int) -> None:
        """Blocks [s0, s1): whole (unsliced kernels) or as ``plan_launches`` sub-grids."""
        cu, ok = drv.cu, drv.OK
        b = self.block
        name = self.spec.name
        if not self.sliced:
            if (s0, s1) != (0, self.total):
                raise BackendError(
                    f"launch {launch_id}: {name!r} is not sliceable; got blocks [{s0}, {s1})"
                )
            g = self.grid
            if self.cooperative:
                r = cu.cuLaunchCooperativeKernel(
                    self.func, *g, b[0], b[1], b[2], self.smem, stream, self.params_addr
                )
            else:
                r = cu.cuLaunchKernel(
                    self.func, *g, b[0], b[1], b[2], self.smem, stream, self.params_addr, 0
                )
            if r[0] != ok:
                raise BackendError(f"launch of {name} failed: {err_name(cu, r[0])}")
            return
        sv = self.slice_vals
        for ln in plan_launches(s0, s1, self.grid):
            sv[0].value, sv[1].value, sv[2].value = ln.offset
            g = ln.grid
            r = cu.cuLaunchKernel(
                self.func, *g, b[0], b[1], b[2], self.smem, stream, self.params_addr, 0
            )
            if r[0] != ok:
                raise BackendError(f"cuLaunchKernel({name}) failed: {err_name(cu, r[0])}")


Prepared = PreparedBuiltin | PreparedUser


class KernelLoader:
    """Loads the built-in modules once, prepares kernels and fills their buffers.

    ``stream`` runs the fill kernels (the HP stream: prepare happens before scheduling).
    """

    def __init__(self, drv: Driver, stream: Any, target: str, cache: str | None) -> None:
        self.drv = drv
        self.stream = stream
        self.target = target
        self.modules: list[Any] = []
        self.funcs: dict[str, Any] = {}
        cu = drv.cu
        compiled = native.compile_all(target, cache=None if cache is None else Path(cache))
        for src, comp in compiled.items():
            mod = drv.check(cu.cuModuleLoadData(comp.image), f"cuModuleLoadData({src})")
            self.modules.append(mod)
        fn_names = {fn: "init.cu" for fn in INIT_FUNCS}
        fn_names.update(
            {
                native.builtin_layout(b).function: native.builtin_layout(b).source
                for b in native.BUILTINS
            }
        )
        by_src = dict(zip(compiled, self.modules, strict=True))
        for fn, src in fn_names.items():
            self.funcs[fn] = drv.check(
                cu.cuModuleGetFunction(by_src[src], fn.encode()), f"cuModuleGetFunction({fn})"
            )

    def occupancy(self, name: str, func: Any, block: tuple[int, int, int], smem: int) -> int:
        threads = block[0] * block[1] * block[2]
        bps = int(
            self.drv.check(
                self.drv.cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(func, threads, smem),
                "cuOccupancyMaxActiveBlocksPerMultiprocessor",
            )
        )
        if bps < 1:
            raise BackendError(f"kernel {name!r} cannot be resident on an SM")
        return bps

    def builtin(self, kernel: KernelSpec, seed: int) -> PreparedBuiltin:
        """A built-in kernel, or (no ``builtin``) a spin stand-in with the profile's cost
        model (grid, block, block_us), its occupancy capped at blocks_per_sm through
        reserved shared memory. Inputs are filled from ``seed``."""
        smem = kernel.smem
        if not kernel.builtin:
            lay, smem = self._standin(kernel)
        else:
            try:
                lay = native.builtin_layout(kernel.builtin, kernel.params)
            except native.NativeError as e:
                raise BackendError(f"kernel {kernel.name!r}: {e}") from e
        if tuple(kernel.grid) != lay.grid or tuple(kernel.block) != lay.block:
            raise BackendError(
                f"kernel {kernel.name!r}: builtin {kernel.builtin} with these params needs "
                f"grid {lay.grid} block {lay.block}, got grid {tuple(kernel.grid)} "
                f"block {tuple(kernel.block)} (omit grid/block to get them)"
            )
        func = self.funcs[lay.function]
        bps = self.occupancy(kernel.name, func, lay.block, smem)
        bufs = {}
        for i, b in enumerate(lay.buffers):
            ptr = self.drv.malloc(b.nbytes)
            self.fill(ptr, b, seed + i)
            bufs[b.name] = (ptr, b)
        self.synchronize()
        return PreparedBuiltin(kernel, lay, func, bufs, bps, smem)

    def user(self, k: KernelSpec, sms: int, seed: int) -> PreparedUser:
        """A user kernel: compiled for this device, checked against its args, loaded."""
        from hbtui.engine.backends.user_kernels import resolve

        drv, cu = self.drv, self.drv.cu
        arch = "compute_" + self.target.split("_", 1)[1]  # user kernels are compiled to PTX
        uk = resolve(k, arch)
        mod = drv.check(cu.cuModuleLoadData(uk.ptx.encode() + b"\0"), f"cuModuleLoadData({k.name})")
        self.modules.append(mod)
        func = drv.check(
            cu.cuModuleGetFunction(mod, uk.entry.encode()), f"cuModuleGetFunction({uk.entry})"
        )
        if k.smem > 48 * 1024:  # above the default limit dynamic shared memory is opt-in
            drv.check(
                cu.cuFuncSetAttribute(
                    func,
                    cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    k.smem,
                ),
                "cuFuncSetAttribute",
            )
        bps = self.occupancy(k.name, func, k.block, k.smem)
        if uk.cooperative and k.total_blocks > bps * sms:
            raise BackendError(
                f"kernel {k.name!r} grid-syncs: its {k.total_blocks} blocks must all be "
                f"resident at once, at most {bps * sms} on this GPU"
            )
        bufs = {}
        for a in k.args:
            if a[0] == "buffer":
                nbytes = a[3] * DTYPE_BYTES[a[2]]
                spec = (
                    native.BufferSpec(a[1], "f16", a[3])
                    if a[2] == "f16"
                    else native.BufferSpec(a[1], "u32", (nbytes + 3) // 4)
                )
                bufs[a[1]] = (drv.malloc(spec.nbytes), spec)
        p = PreparedUser(k, func, bufs, bps, uk.sliced, uk.cooperative)
        self.init_user(p, seed)
        self.synchronize()
        return p

    def synchronize(self) -> None:
        self.drv.check(self.drv.cu.cuCtxSynchronize(), "cuCtxSynchronize")

    def fill(self, ptr: int, b: native.BufferSpec, seed: int) -> None:
        """Random non-zero inputs (native/init.cu), NaN-poisoned outputs."""
        drv, cu = self.drv, self.drv.cu
        if b.output:
            drv.check(cu.cuMemsetD32(ptr, 0xFFFFFFFF, b.nbytes // 4), "cuMemsetD32")  # NaN
            return
        fn = self.funcs["hb_init_f16" if b.dtype == "f16" else "hb_init_f32"]
        vals = [
            ctypes.c_uint64(ptr),
            ctypes.c_uint64(b.count),
            ctypes.c_uint32(seed),
            ctypes.c_float(1.0),
        ]
        arr = (ctypes.c_void_p * 4)(*(ctypes.addressof(v) for v in vals))
        grid = max(1, min(4096, (b.count + 255) // 256))
        drv.check(
            cu.cuLaunchKernel(fn, grid, 1, 1, 256, 1, 1, 0, self.stream, ctypes.addressof(arr), 0),
            "cuLaunchKernel(init)",
        )

    def init_user(self, p: PreparedUser, seed: int) -> None:
        """Buffers as the profile's init says: random (non-zero hash values), zeros, ones."""
        drv, cu = self.drv, self.drv.cu
        for i, (name, (ptr, b)) in enumerate(p.bufs.items()):
            init, dtype, count = p.inits[name]
            if init == "random":
                self.fill(ptr, b, seed + i)
            elif init == "zeros":
                drv.check(cu.cuMemsetD8(ptr, 0, b.nbytes), "cuMemsetD8")
            else:
                drv.check(cu.cuMemsetD8(ptr, 0, b.nbytes), "cuMemsetD8")  # the padding
                n = len(ONE[dtype]) * count
                host = ctypes.create_string_buffer(ONE[dtype] * count, n)
                drv.check(cu.cuMemcpyHtoD(ptr, ctypes.addressof(host), n), "cuMemcpyHtoD")

    def _standin(self, k: KernelSpec) -> tuple[native.ArgLayout, int]:
        drv, cu = self.drv, self.drv.cu
        threads = k.block[0] * k.block[1] * k.block[2]
        if not 1 <= threads <= 1024:
            raise BackendError(f"kernel {k.name!r}: block {k.block} has {threads} threads")
        lay = native.builtin_layout(
            "spin", {"us": k.block_us, "blocks": k.total_blocks, "threads": max(32, threads)}
        )
        lay = native.ArgLayout(
            "spin", lay.source, lay.function, tuple(k.grid), tuple(k.block), lay.buffers,
            lay.scalars,
        )  # fmt: skip
        A = cu.CUdevice_attribute
        per_sm = drv.attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)
        optin = drv.attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        reserved = drv.attr(A.CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK)
        want = max(1, k.blocks_per_sm)
        # the largest per-block size that still lets `want` blocks fit, but not want + 1
        smem = min(optin, per_sm // want - reserved) & ~1023
        func = self.funcs[lay.function]
        drv.check(
            cu.cuFuncSetAttribute(
                func,
                cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                optin,
            ),
            "cuFuncSetAttribute",
        )
        return lay, max(0, smem)
