"""Counters and sliding windows behind the node's /diagnostics (ROS-free, thread-safe)."""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class SlidingRate:
    """Events per second over the last `window_s` seconds (or since creation, if shorter)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._start = time.monotonic()
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        span = min(self.window_s, now - self._start)
        return len(self._times) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


class NodeStats:
    """Everything the worker and callback count; `snapshot()` is what diagnostics publish."""

    def __init__(self, latency_window: int = 300, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._input_rate = SlidingRate(rate_window_s)
        self._output_rate = SlidingRate(rate_window_s)
        self._latency_s: deque[float] = deque(maxlen=latency_window)
        self._forward_s: deque[float] = deque(maxlen=latency_window)
        self._host_s: deque[float] = deque(maxlen=latency_window)
        self._host_cpu_s: deque[float] = deque(maxlen=latency_window)
        self.received = 0
        self.dropped_in_node = 0  # overwritten in the latest-frame slot before the worker took them
        self.lost_in_transport = 0  # publisher sequence-number gaps: dropped by DDS (depth-1 reader)
        self._last_sequence: dict[bytes, int] = {}
        self.processed = 0
        self.rejected = 0
        self.inference_errors = 0
        self.processing_errors = 0  # failures after inference (post-processing, publishing)
        self.last_reject_reason = ""
        self.last_error = ""
        self.camera_info_missing = 0  # frames published without a camera_info of their stamp
        self.depth_problems = 0  # frames with depth expected but unusable (2D outputs still published)
        self.last_depth_problem = ""

    def on_received(self, publisher: bytes | None = None, sequence: int | None = None) -> None:
        """Count an arriving frame; `sequence` gaps per publisher count as lost in transport."""
        with self._lock:
            self.received += 1
            self._input_rate.tick(time.monotonic())
            if publisher is not None and sequence:
                last = self._last_sequence.get(publisher)
                if last is not None and sequence > last + 1:
                    self.lost_in_transport += sequence - last - 1
                self._last_sequence[publisher] = sequence

    def on_camera_info_missing(self) -> None:
        with self._lock:
            self.camera_info_missing += 1

    def on_depth_problem(self, reason: str) -> None:
        with self._lock:
            self.depth_problems += 1
            self.last_depth_problem = reason

    def on_dropped(self) -> None:
        with self._lock:
            self.dropped_in_node += 1

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_reject_reason = reason

    def on_processing_error(self, error: str) -> None:
        with self._lock:
            self.processing_errors += 1
            self.last_error = error

    def on_inference_error(self, error: str) -> None:
        with self._lock:
            self.inference_errors += 1
            self.last_error = error

    def on_published(self, latency_s: float, forward_s: float, host_s: float, host_cpu_s: float | None = None) -> None:
        """One frame out: stamp->publish latency, forward wall time, host wall (and CPU) time."""
        with self._lock:
            self.processed += 1
            self._output_rate.tick(time.monotonic())
            self._latency_s.append(latency_s)
            self._forward_s.append(forward_s)
            self._host_s.append(host_s)
            if host_cpu_s is not None:
                self._host_cpu_s.append(host_cpu_s)

    def snapshot(self) -> dict[str, float | int | str]:
        now = time.monotonic()
        with self._lock:
            latency = np.asarray(self._latency_s, dtype=np.float64) * 1e3
            forward = np.asarray(self._forward_s, dtype=np.float64) * 1e3
            host = np.asarray(self._host_s, dtype=np.float64) * 1e3
            host_cpu = np.asarray(self._host_cpu_s, dtype=np.float64) * 1e3
            snap: dict[str, float | int | str] = {
                "input_rate_hz": self._input_rate.rate(now),
                "output_rate_hz": self._output_rate.rate(now),
                "frames_received": self.received,
                "frames_processed": self.processed,
                "dropped_frames": self.dropped_in_node + self.lost_in_transport,
                "dropped_in_node": self.dropped_in_node,
                "lost_in_transport": self.lost_in_transport,
                "inputs_rejected": self.rejected,
                "inference_errors": self.inference_errors,
                "processing_errors": self.processing_errors,
                "last_reject_reason": self.last_reject_reason,
                "last_error": self.last_error,
                "camera_info_missing": self.camera_info_missing,
                "depth_problems": self.depth_problems,
                "last_depth_problem": self.last_depth_problem,
            }
        for name, values in (("latency", latency), ("forward", forward), ("host_overhead", host),
                             ("host_cpu", host_cpu)):
            if values.size:
                snap[f"{name}_mean_ms"] = float(values.mean())
                snap[f"{name}_p50_ms"] = float(np.percentile(values, 50))
                snap[f"{name}_p99_ms"] = float(np.percentile(values, 99))
        return snap


class BatchStats:
    """The shared backend's side: batches run, their sizes and forward times, vocabulary swaps."""

    def __init__(self, window: int = 300) -> None:
        self._lock = threading.Lock()
        self._forward_s: deque[float] = deque(maxlen=window)
        self._sizes: deque[int] = deque(maxlen=window)
        self.batches = 0
        self.vocabulary_swaps = 0

    def on_batch(self, size: int, forward_s: float) -> None:
        with self._lock:
            self.batches += 1
            self._sizes.append(size)
            self._forward_s.append(forward_s)

    def on_vocabulary_swap(self) -> None:
        with self._lock:
            self.vocabulary_swaps += 1

    def snapshot(self) -> dict[str, float | int | str]:
        with self._lock:
            forward = np.asarray(self._forward_s, dtype=np.float64) * 1e3
            sizes = np.asarray(self._sizes, dtype=np.float64)
            snap: dict[str, float | int | str] = {"batches": self.batches, "vocabulary_swaps": self.vocabulary_swaps}
        if sizes.size:
            snap["batch_size_mean"] = float(sizes.mean())
            snap["batch_forward_p50_ms"] = float(np.percentile(forward, 50))
            snap["batch_forward_p99_ms"] = float(np.percentile(forward, 99))
        return snap
