"""Prometheus exporter (``--metrics HOST:PORT``): gauges set from each ``stats`` body,
so scrapes show exactly the numbers the console sees. Served by prometheus-client's
own HTTP thread (it only reads gauges; the scheduling loop just sets values at 1 Hz)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from hbtui.engine.protocol import StatsBody


class PromExporter:
    def __init__(self, host: str, port: int) -> None:
        self.registry = r = CollectorRegistry()
        t = ["task"]
        self.attain = Gauge("hbtui_slo_attainment", "HP SLO attainment (0-1)", t, registry=r)
        self.p99 = Gauge("hbtui_hp_p99_ms", "HP request latency p99 (ms)", t, registry=r)
        self.pre = Gauge("hbtui_preemption_p99_us", "HP preemption latency p99 (us)", t, registry=r)
        self.norm = Gauge(
            "hbtui_lp_throughput_norm", "LP throughput / LP-alone throughput", t, registry=r
        )
        self.work = Gauge("hbtui_lp_work_per_s", "LP blocks completed per second", t, registry=r)
        self.harvest = Gauge("hbtui_harvest_ratio", "LP busy in bubbles / bubbles", registry=r)
        self.busy = Gauge("hbtui_gpu_busy", "GPU busy fraction", registry=r)
        self.dropped = Gauge(
            "hbtui_telemetry_dropped_total", "telemetry messages dropped", registry=r
        )
        self.dropped_rec = Gauge(
            "hbtui_telemetry_dropped_records_total", "telemetry records dropped", registry=r
        )
        self.lag = Gauge("hbtui_loop_lag_ms", "scheduler clock behind wall clock (ms)", registry=r)
        self._server, self._thread = start_http_server(port, host, registry=r)
        self._tasks: set[str] = set()

    def update(self, stats: StatsBody) -> None:
        seen = set()
        for name, t in stats["tasks"].items():
            seen.add(name)
            if t["class"] == "hp":
                _set(self.attain, name, t.get("slo_attainment"))
                _set(self.p99, name, t.get("p99_ms"))
                _set(self.pre, name, (t.get("preemption_us") or {}).get("p99"))
            else:
                _set(self.norm, name, t.get("throughput_norm"))
                _set(self.work, name, t.get("work_per_s"))
        for gone in self._tasks - seen:  # removed tasks disappear from scrapes
            for g in (self.attain, self.p99, self.pre, self.norm, self.work):
                try:
                    g.remove(gone)
                except KeyError:
                    pass
        self._tasks = seen
        self.harvest.set(stats["harvest_ratio"])
        self.busy.set(stats["gpu_busy"])
        self.dropped.set(stats["telemetry"]["dropped"])
        self.dropped_rec.set(stats["telemetry"]["dropped_records"])
        self.lag.set(stats["loop"]["lag_ms"])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _set(g: Gauge, task: str, v: float | None) -> None:
    if v is None:
        try:
            g.remove(task)
        except KeyError:
            pass
    else:
        g.labels(task).set(v)
