"""Objects that keep their identity from frame to frame: a per-camera tracker over scene graphs.

Each frame's objects (instances of `scene_graph.segment_instances`) are associated with the live
tracks of the same class by box IoU — one (N,T) matrix in numpy, solved as an assignment with
scipy's `linear_sum_assignment` (Hungarian), pairs below `min_iou` refused. Box IoU rather than
mask IoU: the instances' boxes are already in the graph, and for the blob-like segments of one
class in one camera the two rank pairs alike at a fraction of the cost.

Lifecycle (SORT-style): an unmatched object opens a TENTATIVE track; `confirm_hits` matched frames
make it CONFIRMED; a track unmatched for more than `max_misses` frames is dropped, and its id is
never given again (an object that comes back later gets a new id). Every object of the frame is
returned, with its track's id, state and age (frames since the track opened); with depth, the
velocity (m/s, camera optical frame) is the change of the 3D centroid over the stamps of the
track's last two frames with 3D.

A stamp that goes backwards or jumps more than `max_gap_s` (a bag that loops, a camera restart)
resets the tracker, as `reset()` does on a vocabulary swap (class ids change meaning). ROS-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .scene_graph import TRACK_CONFIRMED, TRACK_TENTATIVE, SceneGraph

__all__ = ["Tracker", "TrackerSettings", "box_iou", "is_time_jump"]


@dataclass(frozen=True)
class TrackerSettings:
    confirm_hits: int = 3  # frames with a match (the first included) before a track is confirmed
    max_misses: int = 5  # frames without a match a track survives
    min_iou: float = 0.3  # box IoU below which an object and a track are not the same
    max_gap_s: float = 1.0  # a larger stamp step (or a step back) is a time jump: reset


def is_time_jump(previous_s: float | None, now_s: float, max_gap_s: float) -> bool:
    """A stamp that goes backwards or moves on by more than ``max_gap_s`` (never after no stamp)."""
    return previous_s is not None and not 0.0 <= now_s - previous_s <= max_gap_s


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,M) IoU of boxes (N,4) and (M,4), each x, y, width, height in pixels."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * \
        np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    union = (a[:, 2:3] * a[:, 3:4]) + (b[:, 2] * b[:, 3]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class Tracker:
    """One camera's tracks. `update` takes each frame's graph in stamp order and returns it with
    persistent ids, states, ages and velocities (`SceneGraph.with_tracks`)."""

    def __init__(self, settings: TrackerSettings = TrackerSettings()):
        self.settings = settings
        self._next_id = 1  # 0 stays "no track"
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids keep counting up: an id is never given twice)."""
        self._ids = np.zeros(0, np.uint32)
        self._classes = np.zeros(0, np.uint16)
        self._boxes = np.zeros((0, 4), np.float64)
        self._hits = np.zeros(0, np.int64)
        self._misses = np.zeros(0, np.int64)
        self._ages = np.zeros(0, np.uint32)
        self._positions = np.zeros((0, 3), np.float64)  # last 3D centroid (NaN unknown)
        self._position_stamps = np.zeros(0, np.float64)  # stamp of that centroid
        self._velocities = np.zeros((0, 3), np.float64)
        self._stamp: float | None = None

    @property
    def num_tracks(self) -> int:
        return int(self._ids.size)

    def _associate(self, graph: SceneGraph) -> tuple[np.ndarray, np.ndarray]:
        """(object rows, track rows) of the matched pairs."""
        if graph.num_objects == 0 or self.num_tracks == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        iou = box_iou(graph.boxes, self._boxes)
        iou[graph.class_ids[:, None] != self._classes[None, :]] = 0.0  # a track keeps its class
        rows, cols = linear_sum_assignment(-iou)
        keep = iou[rows, cols] >= self.settings.min_iou
        return rows[keep], cols[keep]

    def update(self, graph: SceneGraph, stamp_s: float) -> SceneGraph:
        s = self.settings
        if is_time_jump(self._stamp, stamp_s, s.max_gap_s):
            self.reset()
        self._stamp = float(stamp_s)
        n = graph.num_objects
        obj_rows, track_rows = self._associate(graph)
        # tracks without an object this frame: one more miss, dropped past max_misses
        matched = np.zeros(self.num_tracks, bool)
        matched[track_rows] = True
        self._misses[~matched] += 1
        self._hits[track_rows] += 1
        self._misses[track_rows] = 0
        self._ages += 1
        self._boxes[track_rows] = graph.boxes[obj_rows]
        # objects without a track: new tentative tracks
        new = np.ones(n, bool)
        new[obj_rows] = False
        new_rows = np.flatnonzero(new)
        first = self._next_id
        self._next_id += int(new_rows.size)
        k = new_rows.size
        self._ids = np.concatenate([self._ids, np.arange(first, first + k, dtype=np.uint32)])
        self._classes = np.concatenate([self._classes, graph.class_ids[new_rows]])
        self._boxes = np.concatenate([self._boxes, graph.boxes[new_rows].astype(np.float64)])
        self._hits = np.concatenate([self._hits, np.ones(k, np.int64)])
        self._misses = np.concatenate([self._misses, np.zeros(k, np.int64)])
        self._ages = np.concatenate([self._ages, np.zeros(k, np.uint32)])
        self._positions = np.concatenate([self._positions, np.full((k, 3), np.nan)])
        self._position_stamps = np.concatenate([self._position_stamps, np.full(k, np.nan)])
        self._velocities = np.concatenate([self._velocities, np.full((k, 3), np.nan)])
        # every object's track row (matched ones, then the new ones appended above)
        row_of = np.empty(n, np.int64)
        row_of[obj_rows] = track_rows
        row_of[new_rows] = len(self._ids) - k + np.arange(k)
        self._update_motion(graph.centroids_3d, row_of, stamp_s)
        out = graph.with_tracks(
            ids=self._ids[row_of],
            track_states=np.where(self._hits[row_of] >= s.confirm_hits, TRACK_CONFIRMED, TRACK_TENTATIVE).astype(np.uint8),
            track_ages=self._ages[row_of], velocities_3d=self._velocities[row_of].astype(np.float32))
        self._drop(self._misses <= s.max_misses)
        return out

    def _update_motion(self, centroids_3d: np.ndarray, row_of: np.ndarray, stamp_s: float) -> None:
        """Velocity of each track seen with 3D now: (centroid - its last 3D centroid) / dt."""
        placed = np.isfinite(centroids_3d).all(axis=1)
        rows, now = row_of[placed], centroids_3d[placed].astype(np.float64)
        dt = stamp_s - self._position_stamps[rows]
        ok = np.isfinite(dt) & (dt > 0)
        self._velocities[rows[ok]] = (now[ok] - self._positions[rows[ok]]) / dt[ok, None]
        self._positions[rows] = now
        self._position_stamps[rows] = stamp_s

    def _drop(self, keep: np.ndarray) -> None:
        for name in ("_ids", "_classes", "_boxes", "_hits", "_misses", "_ages", "_positions", "_position_stamps",
                     "_velocities"):
            setattr(self, name, getattr(self, name)[keep])
