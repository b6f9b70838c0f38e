"""CPU tests: built-in kernel registry and the NVRTC compile cache (no GPU needed)."""

from __future__ import annotations

import pytest

from hbtui.engine.backends import native
from hbtui.engine.backends.native import NativeError, builtin_launch_shape

FUNCS = {
    "gemm.cu": [b"hb_gemm"],
    "stream.cu": [b"hb_stream"],
    "reduce.cu": [b"hb_reduce"],
    "gelu.cu": [b"hb_gelu"],
    "spin.cu": [b"hb_spin"],
    "init.cu": [b"hb_init_f32", b"hb_init_f16"],
}


def _nvrtc_ok() -> bool:
    try:
        native.nvrtc_version()
        return True
    except Exception:  # noqa: BLE001
        return False


needs_nvrtc = pytest.mark.skipif(not _nvrtc_ok(), reason="NVRTC (cuda-bindings[all]) missing")


@pytest.mark.parametrize(
    ("builtin", "params", "grid", "block"),
    [
        ("gemm", {"m": 128, "n": 256, "k": 64}, (4, 2, 1), (128, 1, 1)),
        ("gemm", {}, (64, 64, 1), (128, 1, 1)),
        ("stream", {"n": 1 << 20}, (256, 1, 1), (256, 1, 1)),
        ("reduce", {"rows": 64, "cols": 4096}, (64, 1, 1), (256, 1, 1)),
        ("gelu", {"n": 4096}, (4, 1, 1), (256, 1, 1)),
        ("spin", {"us": 20, "blocks": 2112}, (2112, 1, 1), (128, 1, 1)),
        ("spin", {"us": 5.5, "blocks": 3, "threads": 256}, (3, 1, 1), (256, 1, 1)),
    ],
)
def test_launch_shapes(builtin, params, grid, block):
    assert builtin_launch_shape(builtin, params) == (grid, block)


@pytest.mark.parametrize(
    ("builtin", "params", "key"),
    [
        ("gemm", {"m": 100}, "m"),
        ("gemm", {"k": 48}, "k"),
        ("stream", {"n": 1000}, "n"),
        ("reduce", {"cols": 6}, "cols"),
        ("gelu", {"n": -1024}, "n"),
        ("spin", {"us": -1}, "us"),
        ("spin", {"threads": 2048}, "threads"),
        ("nope", {}, "nope"),
    ],
)
def test_bad_params_name_the_key(builtin, params, key):
    with pytest.raises(NativeError, match=key):
        builtin_launch_shape(builtin, params)


def test_layouts_consistent():
    for b in native.BUILTINS:
        lay = native.builtin_layout(b)
        assert lay.source in native.SOURCES
        assert any(buf.output for buf in lay.buffers)
        assert (native.NATIVE_DIR / lay.source).is_file()


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.cache_dir() == tmp_path / "hbtui" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert native.cache_dir().parts[-3:] == (".cache", "hbtui", "kernels")


@needs_nvrtc
def test_compile_every_native_kernel_for_sm90(tmp_path):
    out = native.compile_all("sm_90", cache=tmp_path)
    assert set(out) == set(native.SOURCES)
    for src, comp in out.items():
        assert comp.image[:4] == b"\x7fELF", src
        assert not comp.cached
        for fn in FUNCS[src]:
            assert fn in comp.image, (src, fn)
        assert comp.path is not None and comp.path.read_bytes() == comp.image
    again = native.compile_all("sm_90", cache=tmp_path)
    assert all(c.cached for c in again.values())
    assert {k: c.image for k, c in again.items()} == {k: c.image for k, c in out.items()}
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


@needs_nvrtc
def test_cache_key_depends_on_options_and_target(tmp_path):
    a = native.compile_native("spin.cu", "sm_90", cache=tmp_path)
    b = native.compile_native("spin.cu", "sm_90", options=("-lineinfo",), cache=tmp_path)
    c = native.compile_native("spin.cu", "sm_80", cache=tmp_path)
    assert len({a.path, b.path, c.path}) == 3
    assert not b.cached and not c.cached


@needs_nvrtc
def test_empty_cache_file_is_recompiled(tmp_path):
    a = native.compile_native("gelu.cu", "sm_90", cache=tmp_path)
    a.path.write_bytes(b"")
    b = native.compile_native("gelu.cu", "sm_90", cache=tmp_path)
    assert not b.cached and b.image == a.image


@needs_nvrtc
def test_ptx_target(tmp_path):
    comp = native.compile_native("stream.cu", "compute_90", cache=tmp_path)
    assert comp.path.suffix == ".ptx"
    assert b".target sm_90" in comp.image and b"hb_stream" in comp.image


@needs_nvrtc
def test_target_for():
    assert native.target_for((9, 0)) == "sm_90"
    assert native.target_for((8, 0)) == "sm_80"


@needs_nvrtc
def test_compile_error_carries_log():
    with pytest.raises(NativeError, match="undefined|identifier"):
        native.compile_source('extern "C" __global__ void k() { nope(); }', "bad.cu", "sm_90")
