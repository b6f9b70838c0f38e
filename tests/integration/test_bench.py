"""``hbtui bench``: JSON contract, determinism, CLI errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hbtui.engine.bench import bench
from hbtui.engine.profile import load, shipped_dir

POLICIES = ["exclusive", "spatial", "temporal", "hummingbird"]


def hbtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hbtui", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("wall_s", "jobs")}


def test_same_seed_same_results_serial_or_parallel() -> None:
    p = load(shipped_dir() / "default.toml")
    a = bench(p, POLICIES, 0.4, seed=5, progress=None, warmup_s=0.05)
    b = bench(p, POLICIES, 0.4, seed=5, progress=None, warmup_s=0.05, jobs=2)
    c = bench(p, POLICIES, 0.4, seed=6, progress=None, warmup_s=0.05)
    assert strip(a) == strip(b)
    assert a["results"]["hummingbird"] != c["results"]["hummingbird"]


def test_bench_json_follows_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = hbtui("bench", "--duration", "0.3", "--warmup", "0.05", "--seed", "2", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "hummingbird" in r.stdout and "SIMULATED" in r.stdout
    d = json.loads(out.read_text())
    assert d["schema"] == 1 and d["backend"] == "sim" and d["seed"] == 2
    assert d["device_index"] is None and d["pci_bus_id"] is None  # no real GPU to name
    assert d["lp_alone"]["work_per_s"] > 0
    assert list(d["results"]) == POLICIES
    for res in d["results"].values():
        assert set(res) >= {"hp", "lp", "preemption_us", "harvest_ratio", "gpu_busy", "slices"}
        assert set(res["hp"]) >= {"requests", "slo_ms", "slo_attainment", "p50_ms", "p99_ms"}
        assert 0.0 <= res["hp"]["slo_attainment"] <= 1.0
        assert set(res["preemption_us"]) == {"p50", "p99", "max"}
        assert set(res["lp"]) == {"work_per_s", "throughput_norm"}
    assert d["results"]["exclusive"]["lp"]["work_per_s"] == 0
    assert d["results"]["hummingbird"]["slices"] > d["results"]["temporal"]["slices"]


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--policies", "exclusive,fifo"], "unknown policy 'fifo'"),
        (["--profile", "/nonexistent/p.toml"], "/nonexistent/p.toml: no such profile file"),
        (["--duration", "-3"], "must be a finite number > 0"),
        (["--duration", "abc"], "not a number"),
        (["--backend", "tpu"], "invalid choice"),
        (["--device", "-1"], "--device: must be >= 0"),
        (["--device", "gpu1"], "not a device index: 'gpu1'"),
        (["--jobs", "0"], "--jobs: must be 1..64, got '0'"),
        (["--jobs", "many"], "--jobs: not a whole number: 'many'"),
    ],
)
def test_bench_cli_errors_are_one_line_with_exit_2(args: list[str], msg: str) -> None:
    r = hbtui("bench", *args)
    assert r.returncode == 2
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
