"""NVRTC writes its log and output into buffers we hand it. A 1-byte ``bytes`` object is
one shared object in CPython, so ``b" " * 1`` (the empty log's size) handed to NVRTC turned
every ``b" "`` of the process into ``b"\\0"`` (found when a fat binary test, run after an
NVRTC compile, read spaces back as NULs). The buffers are ``bytearray`` now."""

from __future__ import annotations

import pytest

SRC = 'extern "C" __global__ void k(int* p) { *p = 1; }'


def _space_intact() -> bool:
    return bytes([32]) == b" " and b"a b"[1:2] == b" " and b" ".decode() == " "


def test_compiles_leave_the_shared_one_byte_objects_alone() -> None:
    pytest.importorskip("cuda.bindings.nvrtc")
    from hbtui.engine.backends.native import compile_source
    from hbtui.engine.slicer import compile_cuda

    assert compile_cuda(SRC, "k.cu", "compute_90").lstrip().startswith("//")
    assert _space_intact()
    ptx, log = compile_source(SRC, "k.cu", "compute_90")
    assert ptx.rstrip(b"\0").rstrip().endswith(b"}") and log == "" and isinstance(ptx, bytes)
    cubin, _ = compile_source(SRC, "k.cu", "sm_90")
    assert cubin[:4] == b"\x7fELF" and isinstance(cubin, bytes)
    assert _space_intact()
