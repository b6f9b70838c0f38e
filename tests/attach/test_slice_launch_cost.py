"""benchmarks/slice_launch_cost.py (issue 16's host cost per slice) runs end to end with
the fake driver: the interceptor saves the program's PTX, the engine's slicer makes the
variant, and with slicing on every timed launch runs as one slice per wave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import Native

ROOT = Path(__file__).resolve().parents[2]


def test_slice_launch_cost_with_the_fake_driver(native: Native, tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    env = {**os.environ, "HBTUI_REAL_LIBCUDA": str(native.fake),
           "LD_LIBRARY_PATH": str(native.dir)}  # fmt: skip
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "slice_launch_cost.py"),
                        "--waves", "3", "--batches", "20", "--per", "5", "--runs", "1",
                        "--out", str(out)], env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["fake_driver"] is True and doc["commit"] and doc["machine"]["cpus"] >= 1
    row = doc["results"]["3_waves"]
    launches = 50 * 5 + 20 * 5  # warm-up and timed (the fake has no memory to check)
    wave = row["sliced"]["wave"]
    assert row["sliced"]["grid"] == 3 * wave
    assert row["sliced"]["sliced_launches"] == launches
    assert row["sliced"]["slice_launches"] == 3 * launches and row["slices_per_launch"] == 3
    assert row["sliced"]["slice_fallbacks"] == 0 and row["sliced"]["variant"]["wave_blocks"] == wave
    assert row["whole"]["sliced_launches"] == 0 and row["whole"]["slice_fallbacks"] == 0
    assert row["whole"]["wave"] == wave and row["ok"] is True and doc["errors"] == []
    assert row["ns_per_slice"] == round(row["sliced"]["median_ns"] / 3, 1)
    assert row["marginal_ns_per_slice"] == round(
        (row["sliced"]["median_ns"] - row["whole"]["median_ns"]) / 2, 1
    )
    assert row["none"]["median_ns"] > 0 and "sliced_launches" not in row["none"]
    # the fake has no device memory: the block check is marked not done, never passed
    assert {row[m]["wrong_blocks"] for m in ("none", "whole", "sliced")} == {-1}
