"""Masks that do not flicker: a per-camera, per-pixel temporal filter of the predicted classes.

The backends give each pixel its class and that class's score (softmax probability), not the
scores of every class, so the filter keeps per pixel one held class and a remembered score `v`
instead of an exponential average of K scores (which would cost the backends a (K,H,W) output):

* the new class is the held one: ``v <- m * v + (1 - m) * p`` (the exponential average of its score);
* another class with ``p > m * v``: it takes over, ``v <- p``;
* another class with ``p <= m * v``: the held class stays and its memory fades, ``v <- m * v``.

``m`` (`memory`, the node's ``temporal_smoothing``) in [0, 0.95]: 0 is no filter, larger values hold a
class longer against a weaker new one, so a flickering pixel keeps its class while a confident
change (an object that really moved there) goes through in the frame it appears. The returned
score is ``v``, so the node's score_threshold also marks a held class whose memory has faded as
unknown. Nothing aligns the frames (no ego-motion): on a moving camera a class edge lags where the
new class is less sure than the memory of the old one. A time jump (as the tracker's), a new image
size or `reset()` (a vocabulary swap) starts afresh. ROS-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from casseg_ros.parameter_rules import problem

from .tracking import is_time_jump

__all__ = ["ClassSmoother"]


@dataclass
class _Held:
    class_ids: np.ndarray
    scores: np.ndarray  # float32
    stamp_s: float | None


class ClassSmoother:
    """One camera's held classes; `update` takes its frames in stamp order."""

    def __init__(self, max_gap_s: float = 1.0) -> None:
        self.max_gap_s = max_gap_s
        self._held: _Held | None = None

    def reset(self) -> None:
        self._held = None

    def update(self, class_ids: np.ndarray, confidence: np.ndarray, stamp_s: float | None,
               memory: float) -> tuple[np.ndarray, np.ndarray]:
        """(class ids, scores) after the filter, shaped and typed like the inputs; the inputs are
        not modified. The first frame (and the first after a reset) passes unchanged. The filtered
        arrays are also the filter's memory, so they come back read-only."""
        if reason := problem("temporal_smoothing", memory):
            raise ValueError(reason)
        held = self._held
        if (memory == 0.0 or held is None or held.class_ids.shape != class_ids.shape
                or (stamp_s is not None and is_time_jump(held.stamp_s, stamp_s, self.max_gap_s))):
            self._held = None if memory == 0.0 else _Held(class_ids.copy(), confidence.astype(np.float32), stamp_s)
            return class_ids, confidence
        # in place on two fresh arrays (1080p: a few full-image passes, no temporaries per branch)
        scores = held.scores * np.float32(memory)  # the held class's faded memory
        same = class_ids == held.class_ids
        takes_over = confidence > scores
        takes_over &= ~same
        np.add(scores, np.float32(1.0 - memory) * confidence, out=scores, where=same)
        np.copyto(scores, confidence, where=takes_over)
        smoothed = held.class_ids.copy()
        np.copyto(smoothed, class_ids, where=takes_over)  # where `same` the two are equal already
        scores = scores.astype(confidence.dtype, copy=False)
        smoothed.flags.writeable = scores.flags.writeable = False
        self._held = _Held(smoothed, scores, stamp_s)
        return smoothed, scores
