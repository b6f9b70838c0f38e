"""The interceptor's entry-point table against the real driver (CUDA 12 and 13 ABIs): for
every function the interceptor wraps, asked through ``cuGetProcAddress_v2`` at the CUDA
versions runtimes ask for (12.0 .. 13.0, and the driver's own) with and without
per-thread default streams, the entry point a program gets under the interceptor must be
the wrapper of the very function the driver hands out (same exported name, so the same
ABI), never a driver function left unwrapped (a launch or sync hbtui would not see).
Entry points the driver does not export by name are listed (the interceptor wraps those
by name only where the ABI never changed: ``substitute()`` in intercept.c). Skipped
without a usable GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hbtui.engine.backends.cuda import cuda_available

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="no usable GPU")]

from hbtui.attach import build  # noqa: E402

SRC = build.sources()[0]
STABLE = {h: s == "1" for h, s in re.findall(r"X\(H_\w+,\s*(cu\w+),\s*([01])\)", SRC.read_text())}
HOOKS = set(STABLE)
BASES = sorted({re.sub(r"(_v\d+)?(_ptsz)?$", "", h) for h in HOOKS})
VERSIONS = [12000, 12040, 12080, 13000]
PTDS = 2  # CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM

# Prints, per (name, version, flags), the exported symbol (and its object) that the entry
# point cuGetProcAddress_v2 returned is, as dladdr names it.
PROG = r"""
import ctypes, json, sys
bases, versions = json.loads(sys.argv[1])
class DlInfo(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
libc = ctypes.CDLL(None)
cuda = ctypes.CDLL("libcuda.so.1")
assert cuda.cuInit(0) == 0
drv = ctypes.c_int()
cuda.cuDriverGetVersion(ctypes.byref(drv))
gpa = cuda.cuGetProcAddress_v2
gpa.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                ctypes.c_uint64, ctypes.POINTER(ctypes.c_int)]
out = {"driver": drv.value, "rows": []}
for name in bases:
    for ver in sorted(set(versions + [drv.value])):
        for flags in (0, 2):
            p, st = ctypes.c_void_p(), ctypes.c_int(-1)
            r = gpa(name.encode(), ctypes.byref(p), ver, flags, ctypes.byref(st))
            row = {"name": name, "ver": ver, "flags": flags, "r": r, "status": st.value}
            if r == 0 and p.value:
                info = DlInfo()
                if libc.dladdr(ctypes.c_void_p(p.value), ctypes.byref(info)):
                    exact = info.saddr == p.value and info.sname
                    row["sym"] = info.sname.decode() if exact else None
                    row["obj"] = info.fname.decode() if info.fname else None
            out["rows"].append(row)
print(json.dumps(out))
"""


def _table(env: dict[str, str]) -> dict:
    r = subprocess.run([sys.executable, "-c", PROG, json.dumps([BASES, VERSIONS])], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def _by_name(name: str, ver: int, flags: int) -> str | None:
    """What substitute() wraps an entry point the driver does not export with: the hook of
    the name (per-thread variant first) where its ABI never changed; cuCtxSynchronize by
    the version asked for (its ABI changed at 13.0); else None (handed out unwrapped)."""
    if name == "cuCtxSynchronize":
        return "cuCtxSynchronize_v2" if ver >= 13000 else name
    for h in ([name + "_ptsz"] if flags & PTDS else []) + [name]:
        if h in STABLE:
            return h if STABLE[h] else None
    return None


def test_every_wrapped_entry_point_the_driver_hands_out_is_wrapped_with_its_own_abi() -> None:
    assert len(HOOKS) >= 20 and "cuLaunchKernel" in HOOKS, HOOKS  # the table was read
    so = str(build.build())
    base = {k: v for k, v in os.environ.items() if not k.startswith("HBTUI_")}
    base.pop("LD_PRELOAD", None)
    real = _table(base)
    under = _table({**base, "LD_PRELOAD": so, "HBTUI_CLASS": "lp"})
    key = lambda r: (r["name"], r["ver"], r["flags"])  # noqa: E731
    got = {key(r): r for r in under["rows"]}
    wrong, internal, lines = [], [], []
    for r in real["rows"]:
        u = got[key(r)]
        if r["r"] != 0:
            assert u["r"] == r["r"], (r, u)  # the interceptor never invents an entry point
            continue
        ours = u.get("obj") is not None and Path(u["obj"]).resolve() == Path(so).resolve()
        lines.append(f"{r['name']:28} {r['ver']} {'ptds' if r['flags'] else '    '} "
                     f"driver {r.get('sym')!s:34} -> {'hbtui ' if ours else 'driver '}"
                     f"{u.get('sym')}")  # fmt: skip
        if r.get("sym") is None:  # not exported: wrapped by name, where the ABI is stable
            internal.append(lines[-1])
            want = _by_name(r["name"], r["ver"], r["flags"])
            if (want is None and ours) or (
                want is not None and not (ours and u.get("sym") == want)
            ):
                wrong.append(lines[-1] + f" (expected {want or 'unwrapped'})")
        elif r["sym"] in HOOKS and not (ours and u.get("sym") == r["sym"]):
            wrong.append(lines[-1])  # a function we wrap, handed out unwrapped or mis-wrapped
        elif r["sym"] not in HOOKS:  # a version of a wrapped function we do not wrap
            wrong.append(lines[-1])  # (or, if ours, wrapped with another function's ABI)
    print(f"\ndriver {real['driver']}; {len(lines)} entry points", *lines, sep="\n")
    print("not exported by name (wrapped by name where the ABI is stable):", *internal, sep="\n")
    assert any("-> hbtui" in ln for ln in lines), "nothing was wrapped: the interceptor not loaded?"
    assert not wrong, "\n".join(wrong)
