"""hbtui: SLO-oriented GPU sharing (Hummingbird-style kernel slicing) with a live console.

Rooms: ``hbtui.engine`` (scheduler, policies, backends, server, client, protocol; never
imports Textual or the console), ``hbtui.console`` (the Textual app; talks to engines
over ZeroMQ only), ``hbtui.native`` and ``hbtui.profiles`` (package data).
"""

__version__ = "0.1.0"


def request():  # noqa: ANN201 - a context manager; imported lazily to keep `import hbtui` light
    """``with hbtui.request():`` marks one HP request of a program under ``hbtui run``."""
    from hbtui.attach.markers import request as _request

    return _request()
