"""Profile validation of user kernels (``source``, ``entry``, ``args``); never compiles.

Split from engine.profile (which re-exports the names below); errors name the profile
file and key path like every profile check, and quote no source when ``echo`` is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hbtui.engine.checks import Checker, ProfileError
from hbtui.engine.limits import MAX_ARGS, MAX_SOURCE_BYTES, MAX_TEXT
from hbtui.engine.slicer.user import (
    SCALAR_BYTES,
    UserKernelError,
    check_args,
    check_source,
    load_ptx_kernel,
)


class ProfileWarning(UserWarning):
    """A profile that loads but deserves a note (e.g. a user kernel the slicer refused)."""


# User-kernel args: element bytes of buffer dtypes, scalar bytes (and integer range).
BUFFER_DTYPES = {"f16": 2, "bf16": 2, "f32": 4, "f64": 8, "i8": 1, "u8": 1, "i16": 2, "u16": 2,
                 "i32": 4, "u32": 4, "i64": 8, "u64": 8}  # fmt: skip
SCALAR_TYPES = SCALAR_BYTES
_INT_RANGE = {"i32": (-(2**31), 2**31 - 1), "u32": (0, 2**32 - 1),
              "i64": (-(2**63), 2**63 - 1), "u64": (0, 2**64 - 1)}  # fmt: skip
BUFFER_INITS = ("random", "zeros", "ones")


def user_kernel(c: Checker, kt: dict[str, Any], path: str, base_dir: Path | None,
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
    entry = c.str_(kt, "entry", path, max_len=MAX_TEXT)
    try:
        check_source(src)
        if src.stat().st_size > MAX_SOURCE_BYTES:
            raise UserKernelError("source", f"larger than {MAX_SOURCE_BYTES} bytes")
    except UserKernelError as e:
        raise _kernel_fail(c, path, e) from None
    raw = kt.get("args", [])
    if not isinstance(raw, list) or len(raw) > MAX_ARGS:
        raise c.fail(f"{path}.args", f"must be a list of at most {MAX_ARGS} {{buffer = ...}} / "
                     "{scalar = ...} tables")  # fmt: skip
    args: list[tuple[Any, ...]] = []
    names: set[str] = set()
    for i, a in enumerate(raw):
        ap = f"{path}.args[{i}]"
        a = c.table(a, ap)
        if "buffer" in a:
            c.keys(a, ap, {"buffer", "dtype", "count", "init"})
            name = c.name(a, "buffer", ap, ...)
            if name in names:
                raise c.fail(f"{ap}.buffer", f"duplicate buffer name {name!r}")
            names.add(name)
            dtype = c.str_(a, "dtype", ap, "f32", tuple(BUFFER_DTYPES))
            count = c.num(a, "count", ap, ..., positive=True, rng="buffer_count")
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
                                 f"got {c.show(v)}")  # fmt: skip
            else:
                v = float(c.num(a, "value", ap, ..., rng="scalar_float"))
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
            raise _kernel_fail(c, path, e) from None
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


def _kernel_fail(c: Checker, path: str, e: UserKernelError) -> ProfileError:
    """The slicer's message quotes the source; over the wire only its key is named."""
    return c.fail(f"{path}.{e.key}", str(e) if c.echo else "the kernel source cannot be used")
