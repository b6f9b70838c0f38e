"""Prometheus exporter of the engine (``hbtui engine --metrics``; docs/metrics.md)."""

from hbtui.engine.prom.exporter import PromExporter

__all__ = ["PromExporter"]
