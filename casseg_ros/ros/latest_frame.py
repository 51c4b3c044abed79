"""The "latest frame wins" hand-off from the subscription callbacks to the one worker: a slot per camera.

The subscription callbacks must return at once (they share the executor with the lifecycle and
parameter services), and a model slower than the cameras must never build a queue: a queued frame
is a stale frame, and every queued frame adds a forward pass of latency. So each camera's callback
overwrites its own slot (counting the frame it replaces as dropped) and the worker takes the newest
frame of every camera that has one, as one batch of at most `max_batch` frames. When more cameras
wait than a batch holds, the cameras are served round-robin — the next batch starts after the
camera served last — so none starves.
"""
from __future__ import annotations

import threading
import time
from typing import Generic, NamedTuple, Sequence, TypeVar

T = TypeVar("T")


class TakenFrame(NamedTuple, Generic[T]):
    camera: str
    item: T
    arrival: float  # time.monotonic() when it was put


class LatestFrames(Generic[T]):
    def __init__(self, cameras: Sequence[str]) -> None:
        if not cameras:
            raise ValueError("at least one camera")
        self._cameras = list(cameras)
        self._cond = threading.Condition(threading.Lock())
        self._items: dict[str, tuple[T, float]] = {}
        self._next = 0  # index of the camera a batch starts looking at
        self._closed = False
        self.dropped: dict[str, int] = {c: 0 for c in self._cameras}

    def put(self, camera: str, item: T) -> bool:
        """Store `camera`'s newest frame, replacing one not yet taken. True if one was dropped."""
        with self._cond:
            replaced = camera in self._items
            if replaced:
                self.dropped[camera] += 1
            self._items[camera] = (item, time.monotonic())
            self._cond.notify()
            return replaced

    def take_batch(self, max_batch: int, timeout: float | None = None) -> list[TakenFrame[T]]:
        """Wait for any frame; then the newest frame of up to `max_batch` cameras, round-robin.
        Empty on timeout or close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout) or self._closed:
                return []
            count = len(self._cameras)
            batch: list[TakenFrame[T]] = []
            last = self._next
            for offset in range(count):
                index = (self._next + offset) % count
                camera = self._cameras[index]
                if camera in self._items:
                    item, arrival = self._items.pop(camera)
                    batch.append(TakenFrame(camera, item, arrival))
                    last = index
                    if len(batch) == max_batch:
                        break
            self._next = (last + 1) % count
            return batch

    def close(self) -> dict[str, int]:
        """Wake the worker for good; later takes return nothing. Returns, per camera, the frames
        still waiting (discarded, and counted as dropped)."""
        with self._cond:
            discarded = {camera: 1 for camera in self._items}
            for camera in discarded:
                self.dropped[camera] += 1
            self._items.clear()
            self._closed = True
            self._cond.notify_all()
            return discarded

    @property
    def closed(self) -> bool:
        return self._closed
