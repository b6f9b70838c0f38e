"""docs/metrics.md documents every metric the exporter serves (with its type and labels)
and every rename; the README points to the fleet guide."""

from __future__ import annotations

import re
from pathlib import Path

from hbtui.engine.prom.catalog import METRICS, RENAMED

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "metrics.md").read_text()


def _rows() -> dict[str, tuple[str, set[str]]]:
    out = {}
    for line in DOC.splitlines():
        m = re.match(r"^\| `(hbtui_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", line)
        if m:
            out[m.group(1)] = (m.group(2), set(re.findall(r"`(\w+)`", m.group(3))))
    return out


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    rows = _rows()
    assert set(rows) == {m.name for m in METRICS}
    for m in METRICS:
        assert rows[m.name] == (m.type, set(m.labels)), m.name


def test_every_rename_is_listed() -> None:
    for old, new in RENAMED.items():
        assert re.search(rf"^\| `{old}`[^|]*\| `{new}`", DOC, re.M), old


def test_readme_points_to_the_fleet_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/fleet.md" in readme
    assert (ROOT / "docs" / "fleet.md").read_text().startswith("# Run on many GPUs")
