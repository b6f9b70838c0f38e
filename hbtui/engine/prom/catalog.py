"""Every metric the exporter serves: name (as scraped), type, labels and help.

One table, read by the exporter, the docs check (docs/metrics.md lists each one) and the
dashboard check (its queries name only these). Names follow Prometheus conventions: base
units in the name (``_seconds``, ``_ratio``), ``_total`` on counters, ``_info`` on the
info metric; histograms add ``_bucket``/``_sum``/``_count`` to the name below.
"""

from __future__ import annotations

from dataclasses import dataclass

TASK = ("task", "class")
INFO_LABELS = (
    "engine_id",
    "version",
    "policy",
    "profile",
    "backend",
    "gpu",
    "device_index",
    "pci_bus_id",
    "hostname",
)


@dataclass(frozen=True)
class Metric:
    name: str
    type: str  # "counter" | "gauge" | "histogram" | "info"
    labels: tuple[str, ...]
    help: str


def _m(name: str, type_: str, labels: tuple[str, ...], help_: str) -> Metric:
    return Metric(name, type_, labels, help_)


# Prometheus histogram bounds (seconds). HP latency covers the SLO range 100 us .. 10 s;
# preemption (an HP kernel's wait beyond its exclusive wait) 1 us .. 100 ms. Six bounds a
# decade (1, 1.5, 2, 3, 5, 7) keep histogram_quantile's interpolation within ~25 %.
_STEPS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)


def _decades(lo_exp: int, hi_exp: int) -> tuple[float, ...]:
    out = [round(s * 10.0**e, 12) for e in range(lo_exp, hi_exp) for s in _STEPS]
    return (*out, round(10.0**hi_exp, 12))


LATENCY_BOUNDS_S = _decades(-4, 1)  # 100 us .. 10 s
PREEMPTION_BOUNDS_S = _decades(-6, -1)  # 1 us .. 100 ms

METRICS: tuple[Metric, ...] = (
    _m("hbtui_engine_info", "info", INFO_LABELS,
       "The engine: id, version, policy, profile, backend, GPU name, device index, PCI bus"),
    # counters (cumulative since the engine started; they never go down)
    _m("hbtui_hp_requests_total", "counter", TASK, "HP requests completed"),
    _m("hbtui_hp_slo_misses_total", "counter", TASK,
       "HP requests completed over their SLO (tasks with an SLO)"),
    _m("hbtui_lp_work_total", "counter", TASK,
       "LP work completed: thread blocks (profile tasks), kernels (programs under hbtui run)"),
    _m("hbtui_lp_slices_total", "counter", TASK, "LP slices (launches) completed"),
    _m("hbtui_scheduler_decisions_total", "counter", (), "Scheduling decisions taken"),
    _m("hbtui_telemetry_sent_total", "counter", (), "Telemetry messages published"),
    _m("hbtui_telemetry_dropped_total", "counter", (),
       "Telemetry messages dropped (a subscriber's queue full, or not encodable)"),
    _m("hbtui_telemetry_dropped_records_total", "counter", (),
       "Telemetry records (slices, requests) dropped before publishing"),
    _m("hbtui_control_requests_total", "counter", (), "Control requests received"),
    _m("hbtui_control_errors_total", "counter", (), "Control requests answered with an error"),
    _m("hbtui_control_dropped_total", "counter", (), "Control frames dropped (malformed)"),
    _m("hbtui_subscriber_gaps", "gauge", (),
       "Telemetry messages missed, as reporting subscribers count them (last 60 s)"),
    # histograms
    _m("hbtui_hp_request_latency_seconds", "histogram", TASK,
       "HP request latency, arrival to last kernel's end"),
    _m("hbtui_hp_preemption_latency_seconds", "histogram", TASK,
       "HP kernel wait beyond its exclusive median wait (preemption latency)"),
    # gauges: the console's live figures
    _m("hbtui_hp_slo_seconds", "gauge", TASK, "HP SLO in force (explicit or factor x baseline)"),
    _m("hbtui_hp_window_slo_attainment_ratio", "gauge", TASK,
       "HP SLO attainment over the rolling window (0-1)"),
    _m("hbtui_hp_slo_attainment_ratio", "gauge", TASK,
       "HP SLO attainment since the last stats reset (0-1)"),
    _m("hbtui_hp_latency_p99_seconds", "gauge", TASK,
       "HP request latency p99 since the last stats reset"),
    _m("hbtui_hp_preemption_p99_seconds", "gauge", TASK,
       "HP preemption latency p99 since the last stats reset"),
    _m("hbtui_lp_window_throughput_normalized_ratio", "gauge", TASK,
       "LP throughput over the rolling window / LP-alone throughput"),
    _m("hbtui_lp_throughput_normalized_ratio", "gauge", TASK,
       "LP throughput since the last stats reset / LP-alone throughput"),
    _m("hbtui_lp_work_per_second", "gauge", TASK, "LP work completed per second since the reset"),
    _m("hbtui_lp_slice_cap_seconds", "gauge", TASK,
       "LP slice cap in GPU time (absent when the cap is in blocks)"),
    _m("hbtui_lp_slice_cap_blocks", "gauge", TASK, "LP slice cap in thread blocks, when set"),
    _m("hbtui_window_harvest_ratio", "gauge", (),
       "LP GPU time in HP bubbles / bubble time, over the rolling window"),
    _m("hbtui_harvest_ratio", "gauge", (), "LP GPU time in HP bubbles / bubble time, since reset"),
    _m("hbtui_window_gpu_busy_ratio", "gauge", (), "GPU busy fraction over the rolling window"),
    _m("hbtui_gpu_busy_ratio", "gauge", (), "GPU busy fraction since the last stats reset"),
    _m("hbtui_loop_lag_seconds", "gauge", (), "Scheduler clock behind the wall clock (sim)"),
)  # fmt: skip

BY_NAME = {m.name: m for m in METRICS}

# Names the exporter served before these conventions (docs/metrics.md, "Renames").
RENAMED = {
    "hbtui_slo_attainment": "hbtui_hp_slo_attainment_ratio",
    "hbtui_hp_p99_ms": "hbtui_hp_latency_p99_seconds",
    "hbtui_preemption_p99_us": "hbtui_hp_preemption_p99_seconds",
    "hbtui_lp_throughput_norm": "hbtui_lp_throughput_normalized_ratio",
    "hbtui_lp_work_per_s": "hbtui_lp_work_per_second",
    "hbtui_gpu_busy": "hbtui_gpu_busy_ratio",
    "hbtui_loop_lag_ms": "hbtui_loop_lag_seconds",
}
