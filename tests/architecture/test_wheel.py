"""``pip install .`` installs exactly one top-level package, ``hbtui``, with its package
data (native sources compiled at run time, shipped profiles)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_holds_one_top_level_package_and_its_data(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = tmp_path.glob("hbtui-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"hbtui"}
    src = ROOT / "hbtui"
    for sub in ("native", "profiles"):
        data = [
            p for p in (src / sub).rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
        ]
        data = [p for p in data if "__pycache__" not in p.parts]
        missing = [p.relative_to(ROOT).as_posix() for p in data]
        missing = [m for m in missing if m not in names]
        assert data and not missing, f"package data left out of the wheel: {missing}"
