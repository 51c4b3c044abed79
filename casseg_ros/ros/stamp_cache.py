"""Bounded, thread-safe "message by exact stamp" cache for inputs that accompany the image.

Camera drivers stamp an image, its camera_info and its registered depth image identically, but
the three arrive on separate topics in any order. The executor thread `put`s every camera_info /
depth message; the worker, holding an image, asks for the one with the same stamp and may wait a
little for it (`get(..., timeout, publishers)`). Only the newest `capacity` stamps are kept, so a
topic nobody asks for cannot grow memory.

When to wait: while the topic is live (its newest message is less than LIVE_WINDOW_NS older than
the frame), or has not delivered yet — then for the first FIRST_MISSES frames only, so a camera
without that topic stops costing a wait after start-up. (Whether a publisher is matched cannot
decide it: DDS matches the two sides separately, and the reader side may not show a publisher the
writer side already matched.)
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class StampCache(Generic[T]):
    LIVE_WINDOW_NS = 1_000_000_000
    FIRST_MISSES = 10

    def __init__(self, capacity: int = 30) -> None:
        self._capacity = capacity
        self._items: OrderedDict[int, T] = OrderedDict()
        self._cond = threading.Condition(threading.Lock())
        self.received = 0
        self._misses_before_first = 0

    def put(self, stamp_ns: int, item: T) -> None:
        with self._cond:
            self._items[stamp_ns] = item
            self._items.move_to_end(stamp_ns)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
            self.received += 1
            self._cond.notify_all()

    def get(self, stamp_ns: int, timeout: float = 0.0) -> T | None:
        """The item with exactly this stamp, waiting up to `timeout` s for it when it is expected
        (see the module docstring): a camera without depth, or whose depth stopped, costs no wait."""
        with self._cond:
            newest = next(reversed(self._items), None)
            live = newest is not None and 0 < stamp_ns - newest < self.LIVE_WINDOW_NS
            first = self.received == 0 and self._misses_before_first < self.FIRST_MISSES
            if timeout > 0.0 and (live or first):
                self._cond.wait_for(lambda: stamp_ns in self._items, timeout)
            found = self._items.get(stamp_ns)
            if found is None and self.received == 0:
                self._misses_before_first += 1
            return found

    def clear(self) -> None:
        with self._cond:
            self._items.clear()
            self.received = 0
            self._misses_before_first = 0
