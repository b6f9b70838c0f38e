"""The exporter behind ``hbtui engine --metrics HOST:PORT`` (metrics: docs/metrics.md).

``update`` runs in the engine's flush once a second, right after the ``stats`` body is
built: it reads the engine (``sample.take``), folds the cumulative figures so that
counters and histograms never go down across stats resets and profile reloads
(``Monotone``), and swaps in an immutable snapshot. prometheus-client's HTTP thread
renders that snapshot on each scrape (``collect``); the scheduling loop never waits on a
scrape and a scrape never sees half an update.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from hbtui.engine.prom import sample
from hbtui.engine.prom.catalog import BY_NAME, LATENCY_BOUNDS_S, METRICS, PREEMPTION_BOUNDS_S
from hbtui.engine.prom.sample import Cumulative, Sample
from hbtui.engine.protocol import StatsBody

if TYPE_CHECKING:
    from hbtui.engine.server.engine import Engine

log = logging.getLogger("hbtui.engine")

Key = tuple[str, tuple[str, ...]]  # (metric, label values)
_BOUNDS = {
    "hbtui_hp_request_latency_seconds": LATENCY_BOUNDS_S,
    "hbtui_hp_preemption_latency_seconds": PREEMPTION_BOUNDS_S,
}


class Monotone:
    """Cumulative figures that only go up, whatever their sources do.

    A source seen again with the same token and no value lower than last time adds the
    difference; a new token (or a value that went down) means it restarted from zero, so
    all of its value is added. The figures counted between the last update and a restart
    (under a second of them) are lost; nothing is ever counted twice."""

    def __init__(self) -> None:
        self._last: dict[Key, Cumulative] = {}
        self._total: dict[Key, tuple[float, ...]] = {}

    def fold(self, key: Key, cur: Cumulative) -> tuple[float, ...]:
        prev, tot = self._last.get(key), self._total.get(key)
        if prev is None or tot is None or len(tot) != len(cur.values):
            tot = cur.values
        elif prev.token is cur.token and all(
            a >= b for a, b in zip(cur.values, prev.values, strict=True)
        ):
            tot = tuple(t + a - b for t, a, b in zip(tot, cur.values, prev.values, strict=True))
        else:
            tot = tuple(t + a for t, a in zip(tot, cur.values, strict=True))
        self._last[key], self._total[key] = cur, tot
        return tot

    def keep(self, keys: set[Key]) -> None:
        """Forget every source not in ``keys`` (a removed task starts from zero if re-added)."""
        for k in [k for k in self._total if k not in keys]:
            del self._total[k]
            self._last.pop(k, None)


@dataclass(frozen=True)
class Snapshot:
    info: dict[str, str]
    values: dict[Key, tuple[float, ...]]  # counters and histograms (folded) and gauges


class _Collector:
    def __init__(self, exporter: PromExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        return render(self._exporter.snapshot)


def render(snap: Snapshot | None) -> Iterator[Metric]:
    """Metric families for ``snap`` (none before the first update)."""
    if snap is None:
        return
    by_metric: dict[str, list[tuple[tuple[str, ...], tuple[float, ...]]]] = {}
    for (name, labels), v in snap.values.items():
        by_metric.setdefault(name, []).append((labels, v))
    for m in METRICS:
        if m.type == "info":
            fam: Any = InfoMetricFamily(m.name.removesuffix("_info"), m.help, labels=[])
            fam.add_metric([], snap.info)
            yield fam
            continue
        rows = by_metric.get(m.name)
        if not rows:
            continue
        labels = list(m.labels)
        if m.type == "counter":
            fam = CounterMetricFamily(m.name, m.help, labels=labels)
            for lv, v in rows:
                fam.add_metric(list(lv), v[0])
        elif m.type == "gauge":
            fam = GaugeMetricFamily(m.name, m.help, labels=labels)
            for lv, v in rows:
                fam.add_metric(list(lv), v[0])
        else:
            fam = HistogramMetricFamily(m.name, m.help, labels=labels)
            bounds = _BOUNDS[m.name]
            for lv, v in rows:
                les = [(f"{b:g}", v[i]) for i, b in enumerate(bounds)]
                fam.add_metric(list(lv), [*les, ("+Inf", v[len(bounds)])], v[-1])
        yield fam


def fold(mono: Monotone, s: Sample) -> Snapshot:
    """The snapshot for one sample: cumulative figures folded, gauges as they are."""
    values: dict[Key, tuple[float, ...]] = {}
    folded: set[Key] = set()
    for name, c in s.cumulative.items():
        key = (name, ())
        values[key] = mono.fold(key, c)
        folded.add(key)
    for name, g in s.gauges.items():
        if g is not None:
            values[(name, ())] = (g,)
    for t in s.tasks:
        lv = (t.name, t.cls)
        for name, c in t.cumulative.items():
            key = (name, lv)
            values[key] = mono.fold(key, c)
            folded.add(key)
        for name, g in t.gauges.items():
            if g is not None:
                values[(name, lv)] = (g,)
    mono.keep(folded)
    assert all(k[0] in BY_NAME for k in values), "a metric missing from the catalog"
    return Snapshot(dict(s.info), values)


class PromExporter:
    """Serves the engine's metrics on ``host:port`` (``/metrics``) until ``close``."""

    def __init__(self, host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        self.snapshot: Snapshot | None = None
        self._mono = Monotone()
        self._failed = False
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)  # process_* (CPU, memory, start time)
        self._server, self._thread = start_http_server(port, host, registry=self.registry)

    def update(self, stats: StatsBody, engine: Engine) -> None:
        """Take the figures of ``stats`` (just built by ``engine``); once a second."""
        from hbtui.engine.server.reports import state_body

        try:
            s = sample.take(engine, stats, dict(state_body(engine)))
            self.snapshot = fold(self._mono, s)
        except Exception:  # noqa: BLE001 - the exporter must never stop the scheduler
            if not self._failed:
                log.exception("Prometheus exporter: update failed (scrapes keep the last one)")
            self._failed = True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
