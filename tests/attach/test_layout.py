"""The ctypes mirror (hbtui/attach/layout.py) matches hbtui_shm.h: every field's offset
and size and every constant, read from a C program compiled against the header."""

from __future__ import annotations

import ctypes
import os
import subprocess

from conftest import Native

from hbtui.attach import build
from hbtui.attach import layout as L

STRUCTS = {"hb_header": L.Header, "hb_launch": L.Launch, "hb_pending": L.Pending,
           "hb_module": L.Module, "hb_func": L.Func, "hb_variant": L.Variant}  # fmt: skip
CONSTANTS = {
    "HB_SHM_MAGIC": L.MAGIC, "HB_SHM_VERSION": L.VERSION, "HB_LAUNCH_CAP": L.LAUNCH_CAP,
    "HB_MODULE_CAP": L.MODULE_CAP, "HB_FUNC_CAP": L.FUNC_CAP, "HB_PENDING_CAP": L.PENDING_CAP,
    "HB_COMP_SLOTS": L.COMP_SLOTS, "HB_NAME_MAX": L.NAME_MAX, "HB_OFF_COMP_KEY": L.OFF_COMP_KEY,
    "HB_OFF_COMP_DONE": L.OFF_COMP_DONE, "HB_OFF_PENDING": L.OFF_PENDING,
    "HB_OFF_LAUNCH": L.OFF_LAUNCH, "HB_OFF_MODULE": L.OFF_MODULE, "HB_OFF_FUNC": L.OFF_FUNC,
    "HB_SHM_SIZE": L.SHM_SIZE, "HB_COMP_PAGE": L.COMP_PAGE, "HB_CLASS_HP": L.CLASS_HP,
    "HB_CLASS_LP": L.CLASS_LP, "HB_MODE_PASS": L.MODE_PASS, "HB_MODE_GATED": L.MODE_GATED,
    "HB_FLAG_NO_COMPLETION": L.FLAG_NO_COMPLETION, "HB_COMP_UNSET": L.COMP_UNSET,
    "HB_COMP_SETUP": L.COMP_SETUP, "HB_COMP_WRITEVAL": L.COMP_WRITEVAL,
    "HB_COMP_HOSTFN": L.COMP_HOSTFN, "HB_COMP_OFF": L.COMP_OFF,
    "HB_KIND_KERNEL": L.KIND_KERNEL, "HB_KIND_KERNEL_EX": L.KIND_KERNEL_EX,
    "HB_KIND_COOP": L.KIND_COOP, "HB_KIND_GRAPH": L.KIND_GRAPH, "HB_LF_PTSZ": L.LF_PTSZ,
    "HB_LF_HELD": L.LF_HELD, "HB_LF_PREGRANTED": L.LF_PREGRANTED,
    "HB_LF_UNGATED": L.LF_UNGATED, "HB_LF_CAPTURED": L.LF_CAPTURED,
    "HB_LF_NO_SLOT": L.LF_NO_SLOT, "HB_COMP_NONE": L.COMP_NONE,
    "HB_API_MODULE_LOAD_DATA": L.API_MODULE_LOAD_DATA,
    "HB_API_MODULE_LOAD_DATA_EX": L.API_MODULE_LOAD_DATA_EX,
    "HB_API_MODULE_LOAD_FATBIN": L.API_MODULE_LOAD_FATBIN,
    "HB_API_LIBRARY_LOAD_DATA": L.API_LIBRARY_LOAD_DATA,
    "HB_API_MODULE_GET_FUNCTION": L.API_MODULE_GET_FUNCTION,
    "HB_API_LIBRARY_GET_KERNEL": L.API_LIBRARY_GET_KERNEL,
    "HB_API_KERNEL_GET_FUNCTION": L.API_KERNEL_GET_FUNCTION, "HB_IMG_UNKNOWN": L.IMG_UNKNOWN,
    "HB_IMG_CUBIN": L.IMG_CUBIN, "HB_IMG_FATBIN": L.IMG_FATBIN, "HB_IMG_PTX": L.IMG_PTX,
    "HB_VARIANT_CAP": L.VARIANT_CAP, "HB_OFF_VARIANT": L.OFF_VARIANT, "HB_LF_SLICE": L.LF_SLICE,
    "HB_LF_COALESCED": L.LF_COALESCED, "HB_VAR_UNTRIED": L.VAR_UNTRIED,
    "HB_VAR_READY": L.VAR_READY, "HB_VAR_FAILED": L.VAR_FAILED, "HB_SLICE_FORCED": L.SLICE_FORCED,
    "HB_SLICE_MAX_BLOCKS": L.SLICE_MAX_BLOCKS,
    "hb_variant_slot(0x123456789abcdefULL)": L.variant_slot(0x123456789ABCDEF),
    "hb_variant_slot(0xffffffffffff0000ULL)": L.variant_slot(0xFFFFFFFFFFFF0000),
}  # fmt: skip


def test_ctypes_layout_matches_the_c_header(native: Native) -> None:
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "hbtui_shm.h"',
             "int main(void) {"]  # fmt: skip
    for cname, cls in STRUCTS.items():
        lines.append(f'printf("{cls.__name__} * %zu 0\\n", sizeof({cname}));')
        for name, *_ in cls._fields_:
            if not name.startswith("_"):
                off, size = f"offsetof({cname}, {name})", f"sizeof((({cname} *)0)->{name})"
                lines.append(f'printf("{cls.__name__} {name} %zu %zu\\n", {off}, {size});')
    for name in CONSTANTS:
        lines.append(f'printf("const {name} %llu 0\\n", (unsigned long long)({name}));')
    lines.append("return 0; }")
    src = native.dir / "layout_dump.c"
    src.write_text("\n".join(lines))
    exe = native.dir / "layout_dump"
    build.compile_c([src], exe, ("-std=gnu11", f"-I{build.native_dir()}"))
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    seen = 0
    for line in out.splitlines():
        kind, name, a, b = line.split()
        if kind == "const":
            assert int(a) == CONSTANTS[name], name
        else:
            cls = getattr(L, kind)
            if name == "*":
                assert ctypes.sizeof(cls) == int(a), kind
            else:
                f = getattr(cls, name)
                assert (f.offset, f.size) == (int(a), int(b)), f"{kind}.{name}"
        seen += 1
    assert seen > 60
    assert os.path.getsize(exe) > 0


def test_hash_is_pinned() -> None:
    """hash64 values are stored and compared across processes: pin them (C computes the
    same; test_intercept checks module hashes against this function)."""
    assert L.hash64(b"") == 0x877E2015A156CDA7
    assert L.hash64(b"k_add") == 0xEABF5F9F7EF72DE6
    assert L.hash64(bytes(range(256)) * 3) == 0x1A0B5FDED2921C49
    assert L.hash64(b"12345678") != L.hash64(b"12345678\0")  # the length is mixed in
