"""The simulator is deterministic: these bench runs must give exactly the golden figures.

The golden files were recorded before the package was restructured and pin the
simulated behaviour of the scheduler and policies. A change that alters simulated
behaviour on purpose updates them in the same commit and says why:
``hbtui bench --backend sim --profile P --duration 6 --seed 13 --json OUT``, then copy
``lp_alone`` and ``results`` into ``golden/P.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
PROFILES = ("default", "bursty", "heavy-lp")


def test_sim_bench_matches_golden(tmp_path: Path) -> None:
    procs = {
        p: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hbtui",
                "bench",
                "--backend",
                "sim",
                "--profile",
                p,
                "--duration",
                "6",
                "--seed",
                "13",
                "--quiet",
                "--json",
                str(tmp_path / f"{p}.json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for p in PROFILES
    }
    for p, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{p}: {err}"
        got = json.loads((tmp_path / f"{p}.json").read_text())
        want = json.loads((GOLDEN / f"{p}.json").read_text())
        assert got["lp_alone"] == want["lp_alone"], p
        for policy, res in want["results"].items():
            assert got["results"][policy] == res, f"{p}/{policy}"
        assert set(got["results"]) == set(want["results"]), p
