"""PTX slicer: make kernels launchable as sub-grids that still see their full grid.

See docs/slicer.md. Public API: slice_ptx, plan_launches, slice_args, compile_cuda,
ptx_to_cubin. No GPU is needed for any of it.
"""

from .launch import SubLaunch, full_grid_args, plan_launches, slice_args
from .lexer import PtxParseError
from .ptx import parse_module
from .rewrite import PARAM_NAMES, EntryResult, SliceResult, UnknownKernelError, slice_ptx
from .toolchain import ToolchainError, compile_cuda, ptx_to_cubin

__all__ = [
    "PARAM_NAMES",
    "EntryResult",
    "PtxParseError",
    "SliceResult",
    "SubLaunch",
    "ToolchainError",
    "UnknownKernelError",
    "compile_cuda",
    "full_grid_args",
    "parse_module",
    "plan_launches",
    "ptx_to_cubin",
    "slice_args",
    "slice_ptx",
]
