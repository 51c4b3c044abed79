"""The node's worker thread: the newest frame of each camera, one batch per forward pass.

Alive while the node is active. The subscription callbacks only `put` a camera's newest frame into
its slot (`LatestFrames`, latest frame wins); the worker takes the newest frame of every camera that
has one (at most `max_batch`, round-robin beyond) and hands the batch on. Between two batches it
runs `between_batches` (the vocabulary swap), so no frame sees half a swap. A failure on one batch
is reported to `on_failure` and never ends the thread.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from casseg_ros.ros.latest_frame import LatestFrames, TakenFrame

# The worker re-checks for shutdown and vocabulary swaps this often while no frame arrives.
POLL_S = 0.2

Batch = list[TakenFrame]


class FrameWorker:
    def __init__(self, cameras: Sequence[str], max_batch: int, process_batch: Callable[[Batch], None],
                 between_batches: Callable[[], None], on_failure: Callable[[Batch, Exception], None]) -> None:
        self.frames: LatestFrames = LatestFrames(cameras)
        self._max_batch = max_batch
        self._process_batch, self._between_batches, self._on_failure = process_batch, between_batches, on_failure
        self._thread = threading.Thread(target=self._loop, name="casseg_worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, camera: str, frame) -> bool:
        """The camera's newest frame (executor thread; returns at once). True if it replaced one."""
        return self.frames.put(camera, frame)

    def stop(self) -> dict[str, int]:
        """Take no more frames, let the batch in flight finish; the frames left waiting, per camera."""
        left = self.frames.close()
        if self._thread.is_alive():
            self._thread.join()
        return left

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self.frames.closed:
            batch = self.frames.take_batch(self._max_batch, timeout=POLL_S)
            self._between_batches()
            if batch:
                try:
                    self._process_batch(batch)
                except Exception as exc:  # noqa: BLE001 - a bug on one batch must not end the worker
                    self._on_failure(batch, exc)
