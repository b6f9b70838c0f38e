"""Typed records of the cuda backend's launches in flight (no CUDA needed to import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hbtui.engine.model import Launch


class ArmedSlice:
    """An LP slice armed in the native thread (slot ``slot``, behind HP launch ``hp``).

    ``out`` latches the first sighting of it launched: once a slice is seen launched its
    slot may be armed again, for the same HP launch too (a later slice found that launch
    already issued, so the thread did not take it and Python disarmed the slot), and the
    slot's word no longer says that this slice went out. Read the word only until then.
    """

    __slots__ = ("stream", "hp", "slot", "out")

    def __init__(self, stream: int, hp: int, slot: int) -> None:
        self.stream, self.hp, self.slot, self.out = stream, hp, slot, False

    def launched(self, chain: Any) -> bool:
        if not self.out and chain.arm_launched(self.slot, self.hp):
            self.out = True
        return self.out


@dataclass(slots=True, eq=False)
class InFlight:
    """A launch queued on its stream, polled head first (FIFO).

    Built-in kernels: ``event`` (no timing) recorded after it and the stamp ``slot``.
    User kernels: ``slot`` is -1 and ``start_event``/``event`` are timing events around
    its sub-launches. ``arm``: handed to the native thread, behind a chained HP launch.
    """

    launch: Launch
    event: Any
    slot: int = -1
    start_event: Any = None
    arm: ArmedSlice | None = None

    @property
    def user(self) -> bool:
        return self.slot < 0
