"""hbtui engine: SLO-oriented GPU scheduler (no console imports here)."""

__version__ = "0.1.0"
