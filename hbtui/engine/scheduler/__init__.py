"""The scheduler: the loop (``core``), HP request handling (``hp``) and live control
(``control``). Policies never import this package; they see ``hbtui.engine.view``."""

from hbtui.engine.scheduler.control import ControlError
from hbtui.engine.scheduler.core import Listener, LpCursor, Scheduler

__all__ = ["ControlError", "Listener", "LpCursor", "Scheduler"]
