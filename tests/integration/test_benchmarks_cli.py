"""The maintained benchmark scripts stay runnable: each one's ``--help``, and a very short
real run of each that works without a GPU (sim backend, or the CPU-only dry run). Results
go to a temporary directory; each run checks the provenance the harness records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "harness.py")


def run(script: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_the_kept_scripts() -> None:
    assert SCRIPTS == [
        "attach_engine_cpu.py",
        "attach_launch_cost.py",
        "attach_python_cost.py",
        "attach_smoke.py",
        "calibrate_kernels.py",
        "console_bench.py",
        "ctx_switch.py",
        "cuda_dispatch.py",
        "engine_live.py",
        "hp_minimal.py",
        "hp_overhead_ab.py",
        "real_programs.py",
        "slice_launch_cost.py",
        "slicer_overhead.py",
        "slicing_check.py",
        "telemetry_bench.py",
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    r = run(script, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


def _result(path: Path, script: str) -> dict:
    doc = json.loads(path.read_text())
    for key in ("commit", "date", "machine", "command"):
        assert key in doc, key
    assert doc["command"].startswith(f"python benchmarks/{script}")
    assert doc["machine"]["cpus"] >= 1
    return doc


def test_calibrate_kernels_sim(tmp_path: Path) -> None:
    out = tmp_path / "calib.json"
    r = run("calibrate_kernels.py", "--backend", "sim", "--reps", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = _result(out, "calibrate_kernels.py")
    assert doc["backend"] == "sim" and doc["kernels"]
    k = next(iter(doc["kernels"].values()))
    assert k["one_wave_us"]["p50"] > 0


def test_hp_minimal_dry_run() -> None:
    r = run("hp_minimal.py", "--arrivals", "profile", "--duration", "1", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "in the measured window" in r.stdout


def test_telemetry_bench_sim(tmp_path: Path) -> None:
    out = tmp_path / "tel.json"
    prof = str(BENCH / "telemetry_load.toml")
    r = run("telemetry_bench.py", "--profile", prof, "--seconds", "1", "--warmup", "0.2",
            "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    run_ = _result(out, "telemetry_bench.py")["runs"]["telemetry_load"]
    assert run_["slice_records"] > 0
    assert run_["control_rtt_ms"]["n"] > 0 and run_["control_rtt_ms"]["failures"] == 0


def test_engine_live_sim(tmp_path: Path) -> None:
    out = tmp_path / "live.json"
    r = run("engine_live.py", "--backend", "sim", "--calibrate", "0.5", "--seconds", "1",
            "--warmup", "0.2", "--subscribe", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = _result(out, "engine_live.py")
    assert doc["policy"] == "hummingbird"
    assert doc["telemetry"]["slice_records"] > 0
    assert doc["stats"]["tasks"]


def test_console_bench_sim(tmp_path: Path) -> None:
    out = tmp_path / "console.json"
    r = run("console_bench.py", "--duration", "0.5", "--presses", "2", "--warmup", "0",
            "--no-synthetic", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = _result(out, "console_bench.py")
    assert doc["key_to_screen_ms"]["n"] == 2
    assert doc["engine_steady"]["messages_received"] > 0


def test_hp_overhead_ab_smoke(tmp_path: Path) -> None:
    """The A/B's whole plumbing on the CPU: a real engine, the service alone and under
    ``hbtui run --hp`` (the real interceptor; the tiny CPU model touches no CUDA),
    alternating blocks, the summary. Needs torch + transformers (skipped without)."""
    probe = subprocess.run([sys.executable, "-c", "import torch, transformers"],
                           capture_output=True, timeout=120)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("torch + transformers not importable (the service builds a Llama)")
    out = tmp_path / "ab.json"
    r = run("hp_overhead_ab.py", "--smoke", "--rounds", "1", "--cycles", "2", "--requests",
            "3", "--out", str(out), timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = _result(out, "hp_overhead_ab.py")
    assert doc["benchmark"] == "hp-overhead-ab" and doc["smoke"]
    assert [(x["mode"], len(x["cycles"])) for x in doc["rounds"]] == [("eager", 2), ("graph", 2)]
    for rec in doc["rounds"]:
        assert not rec["errors"] and not rec["checks"]
        assert rec["engine_before"]["status"] == "attached"
        assert rec["procs"]["hbtui"]["result"]["under_hbtui"] == "hp"
        assert rec["procs"]["hbtui"]["result"]["ld_preload"]
        assert rec["procs"]["alone"]["result"]["under_hbtui"] is None
        for cyc in rec["cycles"]:
            assert set(cyc["blocks"]) == {"alone", "hbtui", "alone2"}
            assert all(len(b["service_ms"]) == 3 for b in cyc["blocks"].values())
    for mode in ("eager", "graph"):
        s = doc["summary"][mode]
        assert s["cycles"] == 2 and s["primary"] == "hbtui/alones"
        assert s["verdict"] in ("PASS", "FAIL", "UNDECIDED")
    assert "within 2 % of alone" in r.stdout


def test_attach_python_cost_cpu(tmp_path: Path) -> None:
    """The fake-driver stand-in for the in-process 2 % check runs on a CPU: observed and
    quiet requests both timed, the interceptor's own time read back."""
    out = tmp_path / "cost.json"
    r = run("attach_python_cost.py", "--blocks", "2", "--requests", "3", "--launches", "50",
            "--self-time", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = _result(out, "attach_python_cost.py")
    assert len(doc["blocks"]) == 2 and doc["quiet_ns_per_launch"] > 0
    assert all(b["observed_ns"] > 0 and b["self_ns"] > 0 for b in doc["blocks"])
