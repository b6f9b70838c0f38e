"""The engine's reader of a segment's record rings (hbtui/attach/segment.py ``_Ring``)
finds records by their ``pub`` word and asks the interceptor's head only after a lap or
every 100 ms: reading the head on every poll moved its cache line away from the HP
program's core before each launch. Pure Python on a bytearray ring (no interceptor)."""

from __future__ import annotations

import ctypes
import struct

import pytest

from hbtui.attach import layout as L
from hbtui.attach import segment

SIZE = ctypes.sizeof(L.Launch)


class Ring:
    """A launch ring written the way the interceptor writes it."""

    def __init__(self) -> None:
        self.mm = bytearray(L.SHM_SIZE)
        self.head = 0  # records claimed
        self.asked = 0

    def claim(self) -> int:
        i = self.head
        self.head += 1
        struct.pack_into("<Q", self.mm, L.OFF_LAUNCH + (i % L.LAUNCH_CAP) * SIZE, 0)
        return i

    def publish(self, i: int, seq: int) -> None:
        o = L.OFF_LAUNCH + (i % L.LAUNCH_CAP) * SIZE
        struct.pack_into("<QQ", self.mm, o, i + 1, seq)

    def add(self, seq: int) -> None:
        self.publish(self.claim(), seq)

    @property
    def launch_head(self) -> int:  # the header field the reader asks
        self.asked += 1
        return self.head


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(segment.time, "monotonic", lambda: now[0])
    return now


def test_records_are_found_by_pub_and_the_head_is_asked_once_per_100_ms(clock):
    ring, r = Ring(), segment._Ring("launch")
    for s in range(1, 4):
        ring.add(s)
    assert [x.seq for x in r.read(ring.mm, ring, 1 << 30)] == [1, 2, 3]
    asked = ring.asked
    for _ in range(50):  # caught up, polled every 20 us: the head is not asked again
        clock[0] += 20e-6
        assert r.read(ring.mm, ring, 1 << 30) == []
    assert ring.asked == asked
    ring.add(4)
    assert [x.seq for x in r.read(ring.mm, ring, 1 << 30)] == [4]
    assert ring.asked == asked and r.lost == 0


def test_a_record_claimed_but_never_published_is_dropped_after_the_stall(clock):
    ring, r = Ring(), segment._Ring("launch")
    ring.claim()  # its writer died between claim and publish
    ring.add(2)
    assert r.read(ring.mm, ring, 1 << 30) == []  # it may still be written
    clock[0] += 0.05
    assert r.read(ring.mm, ring, 1 << 30) == []  # head not asked again yet
    clock[0] += 0.1
    assert [x.seq for x in r.read(ring.mm, ring, 1 << 30)] == [2]
    assert r.lost == 1


def test_a_claimed_record_published_in_time_is_read(clock):
    ring, r = Ring(), segment._Ring("launch")
    i = ring.claim()
    ring.add(2)
    clock[0] += 0.15
    assert r.read(ring.mm, ring, 1 << 30) == []
    ring.publish(i, 1)
    assert [x.seq for x in r.read(ring.mm, ring, 1 << 30)] == [1, 2]
    assert r.lost == 0


def test_a_lapped_reader_skips_to_the_oldest_record_kept(clock):
    ring, r = Ring(), segment._Ring("launch")
    n = L.LAUNCH_CAP + 10
    for s in range(1, n + 1):
        ring.add(s)
    got = r.read(ring.mm, ring, 1 << 30)
    assert r.lost == 10
    assert [x.seq for x in got] == list(range(11, n + 1))
