"""Builds deploy/grafana/hbtui.json with grafana-foundation-sdk (docs/fleet.md, "Grafana").

    python deploy/grafana/build.py        (rewrites hbtui.json next to this file)

Provisioning-ready: the Prometheus datasource is the variable ``datasource``; variables
``host`` (the engine's hostname), ``gpu`` (one engine = one GPU = one scrape target,
``instance``) and ``task``; one row per GPU (repeated over ``gpu``) below a fleet row.
Every query names only metrics of docs/metrics.md; tests/unit/test_deploy_grafana.py
checks the committed JSON is this script's output.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as d
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "hbtui.json"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'instance=~"$gpu"'
TSEL = 'instance=~"$gpu", task=~"$task"'
RATE = "$__rate_interval"


def q(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def series(title: str, unit: str, *targets: prometheus.Dataquery, desc: str = "",
           lo: float | None = None, hi: float | None = None) -> timeseries.Panel:  # fmt: skip
    p = timeseries.Panel().title(title).unit(unit).datasource(DS).height(8).span(8)
    if desc:
        p = p.description(desc)
    if lo is not None:
        p = p.min(lo)
    if hi is not None:
        p = p.max(hi)
    for t in targets:
        p = p.with_target(t)
    return p


def p99(metric: str) -> str:
    return (f"histogram_quantile(0.99, sum by (le, task) "
            f"(rate({metric}_bucket{{{TSEL}}}[{RATE}])))")  # fmt: skip


def gpu_panels() -> list[timeseries.Panel]:
    return [
        series(
            "SLO attainment", "percentunit",
            q(f"hbtui_hp_window_slo_attainment_ratio{{{TSEL}}}", "{{task}} (window)"),
            q(f"1 - rate(hbtui_hp_slo_misses_total{{{TSEL}}}[{RATE}]) / "
              f"rate(hbtui_hp_requests_total{{{TSEL}}}[{RATE}])", "{{task}} (counters)", "B"),
            desc="Share of HP requests within their SLO: the engine's rolling window, and "
                 "the same from the counters over the panel's rate interval.",
            lo=0, hi=1,
        ),
        series(
            "HP latency p99 vs SLO", "s",
            q(p99("hbtui_hp_request_latency_seconds"), "{{task}} p99"),
            q(f"hbtui_hp_slo_seconds{{{TSEL}}}", "{{task}} SLO", "B"),
            desc="p99 from the latency histogram (histogram_quantile) against the SLO.",
            lo=0,
        ),
        series(
            "Preemption latency p99", "s",
            q(p99("hbtui_hp_preemption_latency_seconds"), "{{task}} p99"),
            desc="HP kernels' wait beyond their exclusive wait, p99 from the histogram.",
            lo=0,
        ),
        series(
            "LP throughput (normalised)", "percentunit",
            q(f"hbtui_lp_window_throughput_normalized_ratio{{{TSEL}}}", "{{task}}"),
            desc="LP throughput over the rolling window / LP-alone throughput.",
            lo=0,
        ),
        series(
            "Harvest and GPU busy", "percentunit",
            q(f"hbtui_window_harvest_ratio{{{SEL}}}", "harvest"),
            q(f"hbtui_window_gpu_busy_ratio{{{SEL}}}", "GPU busy", "B"),
            desc="Harvest: LP GPU time inside HP bubbles / bubble time (rolling window).",
            lo=0, hi=1,
        ),
        series(
            "Telemetry drops and control errors", "ops",
            q(f"rate(hbtui_telemetry_dropped_total{{{SEL}}}[{RATE}])", "messages dropped"),
            q(f"rate(hbtui_telemetry_dropped_records_total{{{SEL}}}[{RATE}])",
              "records dropped", "B"),
            q(f"rate(hbtui_control_errors_total{{{SEL}}}[{RATE}])", "control errors", "C"),
            lo=0,
        ),
    ]  # fmt: skip


def fleet_panels() -> list[object]:
    attain = (f'1 - sum(increase(hbtui_hp_slo_misses_total{{{TSEL}}}[$__range])) / '
              f'sum(increase(hbtui_hp_requests_total{{{TSEL}}}[$__range]))')  # fmt: skip
    info = (table.Panel().title("Engines").datasource(DS).height(8).span(16)
            .with_target(q(f"hbtui_engine_info{{{SEL}}}", "").instant().format(
                PromQueryFormat.TABLE)))  # fmt: skip
    st = (stat.Panel().title("Fleet SLO attainment (time range)").datasource(DS).unit(
        "percentunit").height(8).span(8).with_target(q(attain, "attainment")))  # fmt: skip
    return [st, info]


def variables() -> list[object]:
    def query(name: str, label: str, expr: str) -> d.QueryVariable:
        return (d.QueryVariable(name).label(label).datasource(DS)
                .query({"query": expr, "refId": f"{name}-q"})
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
                .multi(True).include_all(True).all_value(".*"))  # fmt: skip

    return [
        d.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        query("host", "Host", "label_values(hbtui_engine_info, hostname)"),
        query("gpu", "GPU (engine)",
              'label_values(hbtui_engine_info{hostname=~"$host"}, instance)'),
        query("task", "Task", 'label_values({__name__=~"hbtui_hp_requests_total|'
              'hbtui_lp_slices_total", instance=~"$gpu"}, task)'),
    ]  # fmt: skip


def build() -> dict[str, object]:
    b = (d.Dashboard("hbtui: GPU sharing").uid("hbtui-fleet").tags(["hbtui", "gpu", "slo"])
         .description("hbtui engines: SLO attainment, HP latency, preemption, LP throughput, "
                      "harvest and telemetry health; one row per GPU (docs/metrics.md).")
         .refresh("30s").time("now-1h", "now").timezone("browser").editable())  # fmt: skip
    for v in variables():
        b = b.with_variable(v)  # type: ignore[arg-type]
    b = b.with_row(d.Row("Fleet"))
    for p in fleet_panels():
        b = b.with_panel(p)  # type: ignore[arg-type]
    b = b.with_row(d.Row("GPU $gpu").repeat("gpu"))
    for p in gpu_panels():
        b = b.with_panel(p)
    out = _strip(json.loads(JSONEncoder(sort_keys=True).encode(b.build())))
    assert isinstance(out, dict)
    return out


def _strip(v: object) -> object:
    """Without the SDK's null fields (Grafana fills in its defaults for missing ones)."""
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def text() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(text())
