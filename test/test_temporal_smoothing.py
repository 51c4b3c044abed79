"""perception/temporal_smoothing.py: the per-pixel class memory, by hand-worked cases, and in the
pipeline (per camera, reset on a vocabulary swap, off at 0)."""
from __future__ import annotations

import numpy as np
import pytest

from casseg_ros.perception.temporal_smoothing import ClassSmoother
from casseg_ros.pipeline import ClassLabels, FrameInput, FramePipeline, PipelineSettings
from casseg_ros.runtime.base import InferenceResult
from model_factory import local_vocabulary


def _frame(classes, scores):
    return np.array([classes], np.uint8), np.array([scores], np.float32)


def test_a_weak_change_is_held_a_confident_one_goes_through():
    smoother = ClassSmoother()
    ids, conf = smoother.update(*_frame([1, 1, 1], [0.9, 0.9, 0.5]), 0.0, memory=0.5)
    assert ids.tolist() == [[1, 1, 1]]  # the first frame passes
    # pixel 0: same class, averaged 0.5*0.9 + 0.5*0.7; pixel 1: class 2 at 0.4 <= 0.45 held;
    # pixel 2: class 2 at 0.6 > 0.25 takes over
    ids, conf = smoother.update(*_frame([1, 2, 2], [0.7, 0.4, 0.6]), 0.1, memory=0.5)
    assert ids.tolist() == [[1, 1, 2]]
    np.testing.assert_allclose(conf, [[0.8, 0.45, 0.6]], rtol=1e-6)
    # the held class fades: class 2 at 0.3 > 0.225 now takes over pixel 1
    ids, conf = smoother.update(*_frame([1, 2, 2], [0.7, 0.3, 0.6]), 0.2, memory=0.5)
    assert ids.tolist() == [[1, 2, 2]]
    assert ids.dtype == np.uint8 and conf.dtype == np.float32 and not ids.flags.writeable


def test_off_time_jump_and_shape_change_pass_the_frame_through():
    smoother = ClassSmoother()
    smoother.update(*_frame([1], [0.9]), 0.0, memory=0.8)
    weak = _frame([2], [0.5])
    assert smoother.update(*weak, 5.0, memory=0.8)[0].tolist() == [[2]]  # 5 s later: a time jump
    assert smoother.update(*_frame([1], [0.2]), 5.1, memory=0.8)[0].tolist() == [[2]]  # held again
    assert smoother.update(*_frame([1], [0.2]), 4.0, memory=0.8)[0].tolist() == [[1]]  # backwards
    assert smoother.update(*_frame([3, 3], [0.1, 0.1]), 4.1, memory=0.8)[0].tolist() == [[3, 3]]  # new size
    assert smoother.update(*_frame([1, 1], [0.1, 0.1]), 4.2, memory=0.0)[0].tolist() == [[1, 1]]  # off
    assert smoother.update(*_frame([2, 2], [0.01, 0.01]), 4.3, memory=0.8)[0].tolist() == [[2, 2]]  # off forgot
    with pytest.raises(ValueError, match="temporal_smoothing"):
        smoother.update(*weak, 4.4, memory=1.0)


class _Flicker:
    """A stand-in backend: the left half of its class map alternates between class 0 at score 0.9
    and class 1 at 0.3 (a weak challenger); the right half is class 1 at 0.9."""

    input_size, resize_in_graph = (4, 8), False

    def __init__(self):
        self.calls = 0

    def infer(self, images):
        n, h, w = images.shape[:3]
        ids = np.ones((n, h, w), np.int32)
        conf = np.full((n, h, w), 0.9, np.float32)
        ids[:, :, : w // 2] = self.calls % 2
        conf[:, :, : w // 2] = 0.3 if self.calls % 2 else 0.9
        self.calls += 1
        return InferenceResult(ids, conf, np.full((n, 2), 0.5, np.float32), np.zeros((n, 2, 2), np.float32))

    def set_vocabulary(self, vocabulary):
        pass


def test_the_pipeline_smooths_each_camera_and_forgets_at_a_swap():
    backend = _Flicker()
    pipeline = FramePipeline(backend, ClassLabels(names=("a", "b"), palette=np.zeros((2, 3), np.uint8)))
    rgb = np.zeros((4, 8, 3), np.uint8)
    smooth = PipelineSettings(temporal_smoothing=0.8)

    def left(camera: str, stamp_s: float, settings: PipelineSettings = smooth) -> int:
        result = pipeline.process_batch([FrameInput(rgb, camera=camera, stamp_s=stamp_s)], settings)[0]
        assert (result.class_ids[:, 4:] == 1).all()  # the steady half is untouched
        return int(result.class_ids[0, 0])

    # frames alternate 0 (0.9), 1 (0.3), 0, 1: 0.3 never beats 0.8 x the held score (>= 0.72)
    assert [left("front", 0.1 * t) for t in range(4)] == [0, 0, 0, 0]
    assert left("rear", 0.4) == 0 and left("rear", 0.5) == 0  # rear's own memory: its first frame was class 0
    assert left("front", 0.6) == 0  # the backend gave 1 (0.3)
    assert [left("unsmoothed", 0.1 * t, PipelineSettings()) for t in range(2)] == [1, 0]  # off: as given
    pipeline.set_vocabulary(local_vocabulary(("a", "b")))  # a swap: every camera starts afresh
    assert backend.calls % 2 == 1 and left("front", 0.7) == 1  # the weak 1 passes: nothing is held
    assert left("front", 0.8, PipelineSettings()) == 0 and left("front", 0.9, PipelineSettings()) == 1
