"""NVTX ranges as HP request markers through NVTX's tool-injection hook: the interceptor's
InitializeInjectionNvtx2 fills the core slots; a top-level push/pop or start/end range
(named HBTUI_NVTX_RANGE, or any when unset) becomes a REQ_BEGIN/REQ_END record around
the launches inside it. ``hbtui run --hp`` names the interceptor in
NVTX_INJECTION64_PATH unless a profiler already did."""

from __future__ import annotations

import pytest
from conftest import Native, prog_env, run_prog

from hbtui.attach import build
from hbtui.attach import layout as L
from hbtui.attach.launcher import child_env

HERE = build.Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def loader(native: Native) -> str:
    exe = native.dir / "nvtx_loader"
    build.compile_c([HERE / "nvtx_loader.c"], exe, ("-O2", "-std=gnu11"), ("-ldl",))
    return str(exe)


def _kinds(att) -> list[str]:  # noqa: ANN001
    return [L.KIND_NAMES[r.kind] for r in att.launches()]


def test_top_level_ranges_mark_requests(native: Native, loader: str, make_segment) -> None:
    att = make_segment(L.CLASS_HP)
    env = prog_env(native, att.name, NVTX_INJECTION64_PATH=str(native.so))
    steps = ["push:step", "launch", "push:inner", "launch", "pop", "pop",
             "pushex:step", "launch", "pop", "start:r", "launch", "end"]  # fmt: skip
    r = run_prog([loader, *steps], env)
    assert r.returncode == 0 and r.stdout.split("\n")[0] == "injected 1", r.stderr
    b, k, e = "req_begin", "kernel", "req_end"
    assert _kinds(att) == [b, k, k, e, b, k, e, b, k, e]  # the inner range is not a request


def test_only_the_named_range_is_a_request(native: Native, loader: str, make_segment) -> None:
    att = make_segment(L.CLASS_HP)
    env = prog_env(native, att.name, NVTX_INJECTION64_PATH=str(native.so),
                   HBTUI_NVTX_RANGE="request")  # fmt: skip
    r = run_prog([loader, "push:forward", "launch", "pop", "push:request", "launch", "pop",
                  "start:other", "end"], env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _kinds(att) == ["kernel", "req_begin", "kernel", "req_end"]


def test_without_a_segment_the_hook_changes_nothing(native: Native, loader: str) -> None:
    env = prog_env(native, None, NVTX_INJECTION64_PATH=str(native.so))
    r = run_prog([loader, "push:a", "launch", "pop", "start:b", "end"], env)
    assert (r.returncode, r.stdout) == (0, "injected 1\ndone\n")


def test_hbtui_run_points_nvtx_at_the_interceptor_for_hp_only() -> None:
    hp = child_env({}, "/x/libhbtui.so", "/hbtui-1-2-ab", "hp", "svc")
    lp = child_env({}, "/x/libhbtui.so", "/hbtui-1-2-ab", "lp", "train")
    prof = child_env({"NVTX_INJECTION64_PATH": "/opt/nsys/inj.so"}, "/x/libhbtui.so",
                     "/hbtui-1-2-ab", "hp", "svc")  # fmt: skip
    assert hp["NVTX_INJECTION64_PATH"] == "/x/libhbtui.so"
    assert "NVTX_INJECTION64_PATH" not in lp
    assert prof["NVTX_INJECTION64_PATH"] == "/opt/nsys/inj.so"
