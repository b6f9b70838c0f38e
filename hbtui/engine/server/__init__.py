"""``hbtui engine``: the headless engine — scheduler loop + ZeroMQ telemetry and control.

Rooms: ``engine`` (lifecycle, calibration, tick cadence), ``ops`` (the control op table
and its one validation layer), ``reports`` (state/stats bodies, final summary), ``net``
(endpoints, CURVE allow-list), ``startup`` (command line, sockets, Prometheus, signals,
``main``). Wire spec: docs/protocol.md; message shapes: engine.protocol.
"""

from hbtui.engine.server.net import is_loopback
from hbtui.engine.server.startup import keys_main, main

__all__ = ["is_loopback", "keys_main", "main"]
