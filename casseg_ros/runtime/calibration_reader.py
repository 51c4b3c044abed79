"""Calibration batches for post-training int8 quantisation, the same for every quantiser.

``FrameCalibrationReader`` turns RGB camera frames (from ``casseg_ros.ros.calibration_frames``: a bag
read with the node's decoder, or a folder of images) into the graph's input batches: ONNX
Runtime's quantiser (``casseg_ros.export.quantize``) reads them through its
``CalibrationDataReader`` interface, NNCF (``openvino_backend``, precision int8) as its dataset.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .base import CLASS_EMBEDDINGS_NAME, INPUT_NAME, resize_images

__all__ = ["FrameCalibrationReader"]


class FrameCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over RGB uint8 frames (any size: resized to the model's
    input like the backends do), at most ``max_frames`` of them, grouped into the model's batch.
    A graph with a dynamic height and width (a resize-in-graph export) gets the frames as they are,
    at the camera's size, as it will in use (a batch of several needs frames of one size).
    ``class_embeddings`` ((K,E), the export's own vocabulary) go with every batch when the graph
    takes them as an input."""

    def __init__(self, frames: Iterable[np.ndarray], input_shape: list[int], max_frames: int,
                 class_embeddings: np.ndarray | None = None):
        self._frames = iter(frames)
        self._classes = {} if class_embeddings is None else {
            CLASS_EMBEDDINGS_NAME: np.ascontiguousarray(class_embeddings, dtype=np.float32)}
        self._batch = int(input_shape[0])
        h, w = int(input_shape[1]), int(input_shape[2])
        self._size = (h, w) if min(h, w) > 0 else None  # None: dynamic, the graph resizes
        self._left = int(max_frames)
        self.frames_used = 0

    def _next_frame(self) -> np.ndarray | None:
        if self._left <= 0:
            return None
        frame = next(self._frames, None)
        if frame is None:
            return None
        self._left -= 1
        frame = np.asarray(frame, dtype=np.uint8)
        return frame if self._size is None else resize_images(frame[None], self._size)[0]

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = []
        while len(batch) < self._batch:
            frame = self._next_frame()
            if frame is None:
                break
            batch.append(frame)
        if len(batch) < self._batch:  # a static-batch graph takes only full batches
            return None
        self.frames_used += len(batch)
        return {INPUT_NAME: np.ascontiguousarray(np.stack(batch)), **self._classes}

    def rewind(self) -> None:  # part of ORT's reader interface; calibration reads the frames once
        raise NotImplementedError("FrameCalibrationReader reads its frames once")

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Every batch ``get_next`` gives, until the frames or ``max_frames`` run out."""
        while (batch := self.get_next()) is not None:
            yield batch

