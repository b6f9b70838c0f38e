"""User kernels in profiles (``source``/``entry``/``args``): load-time validation (never a
compiler), the checks of a ``.cu`` kernel when a backend prepares it, the sim bench, and
hummingbird running an unsliceable LP kernel whole under temporal gating."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sim_recorder import Recorder

from hbtui.engine.backends.base import BackendError
from hbtui.engine.backends.sim import SimBackend
from hbtui.engine.backends.user_kernels import KernelWarning, resolve
from hbtui.engine.bench import bench
from hbtui.engine.model import LP, Launch
from hbtui.engine.profile import ProfileError, ProfileWarning, load, shipped_dir
from hbtui.engine.scheduler import Scheduler

CORPUS = Path(__file__).parents[1] / "slicer_corpus"
MS = 1_000_000

SAXPY = """
extern "C" __global__ void saxpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
"""
SAXPY_ARGS = """args = [
  { scalar = "f32", value = 2.0 },
  { buffer = "x", dtype = "f32", count = 65536 },
  { buffer = "y", dtype = "f32", count = 65536, init = "zeros" },
  { scalar = "i32", value = 65536 },
]"""


def profile(tmp: Path, kernel: str, lp_kernel: str = "k") -> Path:
    """A profile with one native HP kernel and the user kernel table ``kernel`` as LP."""
    text = f"""version = 1
[kernels.hp]
builtin = "gelu"
params = {{ n = 65536 }}
blocks_per_sm = 8
block_us = 5.0

[kernels.k]
{kernel}

[[tasks]]
name = "infer"
class = "hp"
arrival = {{ kind = "poisson", rate_hz = 2000.0 }}
kernels = [{{ kernel = "hp", gap_us = 30.0 }}, {{ kernel = "hp", gap_us = 30.0 }}]

[[tasks]]
name = "train"
class = "lp"
kernels = ["{lp_kernel}"]
"""
    p = tmp / "p.toml"
    p.write_text(text)
    return p


def saxpy_kernel(tmp: Path, args: str = SAXPY_ARGS, source: str = SAXPY) -> str:
    (tmp / "k").mkdir(exist_ok=True)
    (tmp / "k" / "saxpy.cu").write_text(source)
    return f'source = "k/saxpy.cu"\nentry = "saxpy"\ngrid = 256\nblock = 256\n{args}'


def test_cu_kernel_loads_sliceable(tmp_path: Path) -> None:
    prof = load(profile(tmp_path, saxpy_kernel(tmp_path)))
    k = prof.kernels["k"]
    assert k.sliceable and not k.cooperative
    assert k.source == str((tmp_path / "k" / "saxpy.cu").resolve())
    assert k.entry == "saxpy" and k.grid == (256, 1, 1)
    assert k.args == (
        ("scalar", "f32", 2.0),
        ("buffer", "x", "f32", 65536, "random"),
        ("buffer", "y", "f32", 65536, "zeros"),
        ("scalar", "i32", 65536),
    )
    hash(k)  # still a frozen, hashable spec


def test_ptx_kernel_loads(tmp_path: Path) -> None:
    shutil.copy(CORPUS / "triton_add2d.ptx", tmp_path / "add2d.ptx")
    kt = """source = "add2d.ptx"
entry = "add2d_kernel"
grid = [3, 6]
block = 128
args = [{ buffer = "x", count = 1800 }, { buffer = "y", count = 1800 },
        { buffer = "out", count = 1800 }, { scalar = "i32", value = 300 },
        { scalar = "u64", value = 0 }]"""
    k = load(profile(tmp_path, kt)).kernels["k"]
    assert k.sliceable and k.entry == "add2d_kernel" and k.grid == (3, 6, 1)


def test_entry_defaults_to_the_only_one(tmp_path: Path) -> None:
    kt = saxpy_kernel(tmp_path).replace('entry = "saxpy"\n', "")
    k = load(profile(tmp_path, kt)).kernels["k"]
    assert k.entry is None  # a .cu source is only compiled when prepared
    assert resolve(k).entry == "saxpy"
    shutil.copy(CORPUS / "coop_grid_sync.nvrtc13.ptx", tmp_path / "coop.ptx")
    with pytest.warns(ProfileWarning):
        k = load(profile(tmp_path, COOP_PTX.replace('entry = "k"\n', ""))).kernels["k"]
    assert k.entry == "k"  # a .ptx one is read at load


COOP_PTX = """source = "coop.ptx"
entry = "k"
grid = 8
block = 128
args = [{ buffer = "a", count = 1024 }, { scalar = "u32", value = 1024 }]"""

COOP_CU = """source = "coop.cu"
entry = "coop_sync"
grid = 8
block = 128
args = [{ buffer = "a", count = 1024 }, { scalar = "i32", value = 1024 }]"""


def test_refused_ptx_kernel_loads_unsliceable_with_a_warning(tmp_path: Path) -> None:
    shutil.copy(CORPUS / "coop_grid_sync.nvrtc13.ptx", tmp_path / "coop.ptx")
    with pytest.warns(ProfileWarning, match=r"kernels\.k: not sliceable.*grid-wide sync"):
        k = load(profile(tmp_path, COOP_PTX)).kernels["k"]
    assert not k.sliceable and k.cooperative
    assert SimBackend().prepare(k) == k.blocks_per_sm


def test_refused_cu_kernel_runs_whole(tmp_path: Path) -> None:
    """Only the compiled PTX shows the grid sync, and profiles never compile: the kernel
    loads as declared; preparing it warns, and the backend (so the scheduler) then treats
    it as unsliceable."""
    shutil.copy(CORPUS / "coop_sync.cu", tmp_path / "coop.cu")
    k = load(profile(tmp_path, COOP_CU)).kernels["k"]
    assert k.sliceable and not k.cooperative
    be = SimBackend()
    with pytest.warns(KernelWarning, match=r"kernels\.k: the slicer refused .*grid-wide sync"):
        be.prepare(k)
    assert not be.sliceable(k)
    with pytest.warns(KernelWarning):
        s = Scheduler({"k": k}, [], SimBackend())
    assert not s.kernels["k"].sliceable  # hummingbird runs it whole, temporal-gated
    k = load(profile(tmp_path, COOP_CU + "\nsliceable = false")).kernels["k"]
    r = resolve(k)
    assert not k.sliceable and not r.sliced and r.cooperative
    assert SimBackend().prepare(k) == k.blocks_per_sm


@pytest.mark.parametrize(
    "edit,key,msg",
    [
        (lambda t: t.replace("k/saxpy.cu", "k/missing.cu"), "kernels.k.source", "cannot read"),
        (lambda t: t.replace("k/saxpy.cu", "k/saxpy.txt"), "kernels.k.source", ".cu or .ptx"),
        (
            lambda t: t.replace("value = 65536 }", "value = -1 }").replace('"i32"', '"u32"'),
            "kernels.k.args[3].value",
            "must be an integer in 0..",
        ),
        (lambda t: t.replace('init = "zeros"', 'init = "nan"'), "kernels.k.args[2].init", "one of"),
        (lambda t: t.replace("count = 65536 }", "count = 0 }"), "kernels.k.args[1].count", "> 0"),
        (lambda t: t + '\nbuiltin = "gelu"', "kernels.k.source", "not both"),
    ],
)
def test_bad_user_kernels_are_profile_errors(tmp_path: Path, edit, key: str, msg: str) -> None:  # noqa: ANN001
    p = profile(tmp_path, edit(saxpy_kernel(tmp_path)))
    with pytest.raises(ProfileError, match=f"^{re.escape(f'{p}: {key}: ')}.*{msg}"):
        load(p)


# Checks against the compiled entry: when a backend prepares the kernel (sim and cuda alike).
PREPARE_ERRORS = [
    (lambda t: t.replace('"saxpy"', '"saxpie"'), "kernels.k.entry", "no entry named"),
    (
        lambda t: t.replace('  { scalar = "i32", value = 65536 },\n', ""),
        "kernels.k.args",
        r"4 parameters, 3 args given \(args\[3\] missing",
    ),
    (
        lambda t: t.replace('scalar = "i32", value = 65536', 'scalar = "u64", value = 65536'),
        "kernels.k.args[3].scalar",
        "u64 is 8 bytes but parameter 3",
    ),
    (
        lambda t: t.replace('scalar = "i32", value = 65536', 'scalar = "f64", value = 1.0'),
        "kernels.k.args[3].scalar",
        "f64 is 8 bytes",
    ),
    (
        lambda t: t.replace('{ scalar = "f32", value = 2.0 }', '{ buffer = "a", count = 4 }'),
        "kernels.k.args[0].buffer",
        "not a pointer",
    ),
    (
        lambda t: t.replace("65536 },\n]", '65536 },\n  { scalar = "i32", value = 1 },\n]'),
        "kernels.k.args[4]",
        "only 4 parameters, 5 args given",
    ),
]


@pytest.mark.parametrize("edit,key,msg", PREPARE_ERRORS)
def test_bad_cu_kernels_are_errors_when_prepared(tmp_path: Path, edit, key: str, msg: str) -> None:  # noqa: ANN001
    k = load(profile(tmp_path, edit(saxpy_kernel(tmp_path)))).kernels["k"]
    src = tmp_path / "k" / "saxpy.cu"
    with pytest.raises(BackendError, match=f"^{re.escape(f'{src.resolve()}: {key}: ')}.*{msg}"):
        SimBackend().prepare(k)


@pytest.mark.parametrize("edit,key,msg", PREPARE_ERRORS)
def test_bad_ptx_kernels_are_profile_errors(tmp_path: Path, edit, key: str, msg: str) -> None:  # noqa: ANN001
    """The same checks on a .ptx source happen at load (reading PTX needs no compiler)."""
    (tmp_path / "k").mkdir()
    ptx = resolve(load(profile(tmp_path, saxpy_kernel(tmp_path))).kernels["k"]).kernel.ptx
    (tmp_path / "k" / "saxpy.ptx").write_text(ptx)
    p = profile(tmp_path, edit(saxpy_kernel(tmp_path)).replace("saxpy.cu", "saxpy.ptx"))
    with pytest.raises(ProfileError, match=f"^{re.escape(f'{p}: {key}: ')}.*{msg}"):
        load(p)


def test_compile_error_quotes_the_nvrtc_log(tmp_path: Path) -> None:
    bad = SAXPY.replace("a * x[i]", "a * undefined_thing[i]")
    p = profile(tmp_path, saxpy_kernel(tmp_path, source=bad))
    k = load(p).kernels["k"]  # loads: nothing compiles a profile
    with pytest.raises(BackendError) as ei:
        SimBackend().prepare(k)
    text = str(ei.value)
    src = (tmp_path / "k" / "saxpy.cu").resolve()
    assert text.startswith(f"{src}: kernels.k.source: NVRTC failed to compile saxpy.cu")
    assert "undefined_thing" in text and "Traceback" not in text


def test_loading_a_profile_never_loads_cuda(tmp_path: Path) -> None:
    """NVRTC and the driver both come from the cuda package: a load that compiled (or
    touched a GPU) would import it."""
    p = profile(tmp_path, saxpy_kernel(tmp_path))
    code = (
        "import sys\n"
        "from hbtui.engine.profile import load\n"
        f"load({str(p)!r})\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'cuda'\n"
        "       or m.startswith('hbtui.engine.backends.cuda')])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_shipped_user_kernel_profile_runs_in_the_sim_bench() -> None:
    prof = load(shipped_dir() / "user-kernel.toml")
    k = prof.kernels["saxpy"]
    assert k.sliceable and k.source and Path(k.source).is_file()
    r = bench(prof, ["exclusive", "temporal", "hummingbird"], 0.3, seed=3, progress=None,
              warmup_s=0.05)  # fmt: skip
    hb = r["results"]["hummingbird"]
    assert hb["lp"]["work_per_s"] > 0 and hb["slices"] > r["results"]["temporal"]["slices"]


def test_save_round_trips_a_user_kernel(tmp_path: Path) -> None:
    pytest.importorskip("tomli_w")
    from hbtui.engine.profile import save

    prof = load(profile(tmp_path, saxpy_kernel(tmp_path)))
    out = save(prof, tmp_path / "other" / "saved.toml")
    assert load(out).kernels["k"] == prof.kernels["k"]


def run_hummingbird(prof, ms: int = 200) -> Recorder:  # noqa: ANN001
    def check(s: Scheduler, x: Launch) -> None:
        if x.cls == LP and not x.kernel.sliceable:
            assert x.blocks == x.kernel.total_blocks, "unsliceable kernel launched in slices"
            assert s.hp_requests_in_flight == 0, "unsliceable kernel launched during a request"
            assert not s.lp_inflight, "unsliceable kernel queued behind LP work"

    be = Recorder(prof.sim, check)
    s = Scheduler(prof.kernels, [replace(t) for t in prof.tasks], be, "hummingbird", seed=3,
                  baseline_p99_ms={t.name: 3.0 for t in prof.tasks})  # fmt: skip
    be.sched = s
    s.run_until(ms * MS)
    return be


def test_hummingbird_runs_an_unsliceable_user_kernel_whole_between_requests(
    tmp_path: Path,
) -> None:
    shutil.copy(CORPUS / "coop_sync.cu", tmp_path / "coop.cu")
    kt = """source = "coop.cu"
entry = "coop_sync"
grid = 264
block = 128
block_us = 30.0
sliceable = false
args = [{ buffer = "a", count = 33792 }, { scalar = "i32", value = 33792 }]"""
    prof = load(profile(tmp_path, kt))
    be = run_hummingbird(prof)
    lp = [x for x in be.launches if x.cls == LP]
    assert len(lp) > 10 and all(x.blocks == 264 for x in lp)


def test_hummingbird_still_slices_sliceable_kernels_next_to_an_unsliceable_one() -> None:
    prof = load(shipped_dir() / "default.toml")
    prof.kernels["bwd"] = replace(prof.kernels["bwd"], sliceable=False)
    be = run_hummingbird(prof, ms=300)
    lp = [x for x in be.launches if x.cls == LP]
    whole = [x for x in lp if x.kernel.name == "bwd"]
    sliced = [x for x in lp if x.kernel.name == "fwd"]
    assert whole and all(x.blocks == x.kernel.total_blocks for x in whole)
    assert any(x.blocks < x.kernel.total_blocks for x in sliced)


def test_check_kernels_reports_a_bad_cu_kernel_before_any_prepare(tmp_path: Path) -> None:
    from hbtui.engine.backends.user_kernels import check_kernels

    good = load(profile(tmp_path, saxpy_kernel(tmp_path)))
    check_kernels(good.kernels)
    bad = load(profile(tmp_path, saxpy_kernel(tmp_path).replace('"saxpy"', '"saxpie"')))
    with pytest.raises(BackendError, match=r"kernels\.k\.entry: no entry named 'saxpie'"):
        check_kernels(bad.kernels)
