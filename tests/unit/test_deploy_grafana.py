"""deploy/grafana/hbtui.json: built by deploy/grafana/build.py with grafana-foundation-sdk
(the committed file must be its output), loads back into the SDK's dashboard model, and
asks Prometheus only for metrics the exporter serves."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.models.dashboard import Dashboard

from hbtui.engine.prom.catalog import METRICS

ROOT = Path(__file__).resolve().parents[2]
JSON = ROOT / "deploy" / "grafana" / "hbtui.json"


def _build() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_build", JSON.parent / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DASH = json.loads(JSON.read_text())


def _exprs() -> list[str]:
    out = [t["expr"] for p in DASH["panels"] for t in p.get("targets", [])]
    out += [v["query"]["query"] for v in DASH["templating"]["list"] if v["type"] == "query"]
    return out


def test_committed_dashboard_is_the_builder_output() -> None:
    assert JSON.read_text() == _build().text(), "run deploy/grafana/build.py"


def test_dashboard_loads_into_the_sdk_model() -> None:
    d = Dashboard.from_json(DASH)
    assert d.title == "hbtui: GPU sharing" and d.uid == "hbtui-fleet"
    assert d.panels is not None and len(d.panels) == len(DASH["panels"])
    assert d.templating is not None
    assert [v.name for v in d.templating.list_val or []] == ["datasource", "host", "gpu", "task"]


def test_datasource_is_a_variable_everywhere() -> None:
    ds = DASH["templating"]["list"][0]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for p in DASH["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
    assert "id" not in DASH  # provisioning assigns it


def test_one_row_per_gpu_with_the_issue_panels() -> None:
    rows = [p for p in DASH["panels"] if p["type"] == "row"]
    assert [r.get("repeat") for r in rows] == [None, "gpu"]
    i = DASH["panels"].index(rows[1])
    titles = [p["title"] for p in DASH["panels"][i + 1 :]]
    for want in ("SLO attainment", "HP latency p99 vs SLO", "Preemption latency p99",
                 "LP throughput (normalised)", "Harvest and GPU busy",
                 "Telemetry drops and control errors"):  # fmt: skip
        assert want in titles
    for p in DASH["panels"][i + 1 :]:
        for t in p["targets"]:
            assert 'instance=~"$gpu"' in t["expr"], t["expr"]


def test_queries_name_only_served_metrics_and_quantiles_come_from_histograms() -> None:
    served = set()
    for m in METRICS:
        served |= {m.name, f"{m.name}_bucket", f"{m.name}_count", f"{m.name}_sum"}
    names = {n for e in _exprs() for n in re.findall(r"\bhbtui_[a-z0-9_]+", e)}
    assert names and names <= served, names - served
    quantiles = [e for e in _exprs() if "histogram_quantile" in e]
    assert len(quantiles) == 2
    assert all("_bucket{" in e and "sum by (le, task)" in e for e in quantiles)
