"""Single-slot "latest frame wins" hand-off between the subscription callback and the worker.

The subscription callback must return at once (it shares the executor with the lifecycle and
parameter services), and a model slower than the camera must never build a queue: a queued
frame is a stale frame, and every queued frame adds a full forward pass of latency. So the
callback overwrites the single slot (counting the frame it replaces as dropped) and the worker
always takes the newest frame there is.
"""
from __future__ import annotations

import threading
import time
from typing import Generic, NamedTuple, Optional, TypeVar

T = TypeVar("T")


class TakenFrame(NamedTuple, Generic[T]):
    item: T
    arrival: float  # time.monotonic() when it was put


class LatestFrameSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._item: Optional[T] = None
        self._arrival = 0.0
        self._closed = False
        self.dropped = 0  # frames overwritten before the worker took them

    def put(self, item: T) -> bool:
        """Store `item`, replacing any frame not yet taken. Returns True if one was dropped."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._arrival = time.monotonic()
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> TakenFrame[T] | None:
        """Wait for the newest frame; None on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._closed, timeout):
                return None
            if self._item is None:  # closed and empty
                return None
            item, self._item = self._item, None
            return TakenFrame(item, self._arrival)

    def close(self) -> bool:
        """Wake the worker for good; later `take` calls return None at once.

        Returns True if a frame was still waiting (it is discarded, and counted as dropped)."""
        with self._cond:
            discarded = self._item is not None
            if discarded:
                self.dropped += 1
            self._closed = True
            self._item = None
            self._cond.notify_all()
            return discarded

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> int:
        with self._cond:
            return int(self._item is not None)
