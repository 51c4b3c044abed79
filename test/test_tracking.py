"""The per-camera tracker (perception/tracking.py) on synthetic sequences whose right answer is
known: crossing objects, occlusion shorter and longer than the track's patience, the lifecycle,
class gating, resets (time jump, vocabulary swap), velocity from 3D, determinism; and the
pipeline's tracker per camera."""
from __future__ import annotations

import numpy as np
import pytest

from casseg_ros.perception.scene_graph import TRACK_CONFIRMED, TRACK_NONE, TRACK_TENTATIVE, SceneGraph
from casseg_ros.perception.tracking import Tracker, TrackerSettings, box_iou
from casseg_ros.pipeline import ClassLabels, FrameInput, FramePipeline, PipelineSettings
from casseg_ros.runtime.base import InferenceResult
from casseg_ros.runtime.canned import CannedBackend
from model_factory import random_vocabulary

DT = 0.1  # 10 Hz


def frame(objects, relations=()) -> SceneGraph:
    """objects: (class id, x, y, w, h[, (X, Y, Z) metres]); relations: (source row, target row)."""
    boxes = np.array([o[1:5] for o in objects], np.uint32).reshape(-1, 4)
    centroids_3d = np.array([o[5] if len(o) > 5 else (np.nan,) * 3 for o in objects], np.float32).reshape(-1, 3)
    return SceneGraph(class_names=("car", "person"), class_ids=[o[0] for o in objects], scores=[0.9] * len(objects),
                      boxes=boxes, centroids=boxes[:, :2] + boxes[:, 2:] / 2, areas=boxes[:, 2] * boxes[:, 3],
                      centroids_3d=centroids_3d,
                      sources=[r[0] for r in relations], targets=[r[1] for r in relations],
                      predicates=[0] * len(relations), weights=[1.0] * len(relations))


def run(tracker, frames, t0=0.0):
    return [tracker.update(graph, t0 + i * DT) for i, graph in enumerate(frames)]


def test_box_iou():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])


def test_crossing_objects_keep_their_ids():
    # two cars pass each other, one lane apart (boxes overlap at the crossing), 4 px a frame
    frames = [frame([(0, 10 + 4 * i, 20, 30, 20), (0, 110 - 4 * i, 30, 30, 20)]) for i in range(26)]
    out = run(Tracker(), frames)
    by_x = [dict(zip(g.boxes[:, 0].tolist(), g.ids.tolist())) for g in out]
    first_right_mover, first_left_mover = by_x[0][10], by_x[0][110]
    assert all(b[10 + 4 * i] == first_right_mover and b[110 - 4 * i] == first_left_mover
               for i, b in enumerate(by_x))
    assert first_right_mover != first_left_mover


def test_lifecycle_tentative_then_confirmed_with_ages():
    out = run(Tracker(TrackerSettings(confirm_hits=3)), [frame([(0, 10, 10, 20, 20)])] * 5)
    assert [int(g.track_states[0]) for g in out] == [TRACK_TENTATIVE] * 2 + [TRACK_CONFIRMED] * 3
    assert [int(g.track_ages[0]) for g in out] == [0, 1, 2, 3, 4]
    assert len({int(g.ids[0]) for g in out}) == 1


def test_occlusion_within_the_patience_keeps_the_id_and_longer_gives_a_new_one():
    seen, gone = frame([(0, 10, 10, 20, 20)]), frame([])
    tracker = Tracker(TrackerSettings(max_misses=3))
    out = run(tracker, [seen, seen, gone, gone, gone, seen])  # 3 misses: still alive
    assert int(out[-1].ids[0]) == int(out[0].ids[0])
    assert int(out[-1].track_ages[0]) == 5  # the track aged while hidden
    tracker = Tracker(TrackerSettings(max_misses=3))
    out = run(tracker, [seen, seen, gone, gone, gone, gone, seen])  # 4 misses: dropped, re-entry is new
    assert int(out[-1].ids[0]) != int(out[0].ids[0]) and int(out[-1].track_states[0]) == TRACK_TENTATIVE


def test_a_track_keeps_its_class():
    out = run(Tracker(), [frame([(0, 10, 10, 20, 20)]), frame([(1, 10, 10, 20, 20)])])
    assert int(out[1].ids[0]) != int(out[0].ids[0])


def test_a_time_jump_or_a_reset_starts_afresh_and_no_id_is_given_twice():
    tracker = Tracker()
    still = frame([(0, 10, 10, 20, 20)])
    a = run(tracker, [still] * 3)
    b = tracker.update(still, 0.0)  # the bag looped: stamp went back
    assert int(b.ids[0]) > int(a[-1].ids[0]) and int(b.track_ages[0]) == 0
    c = tracker.update(still, 5.0)  # a 5 s gap
    tracker.reset()  # e.g. a vocabulary swap
    d = tracker.update(still, 5.1)
    assert len({int(a[0].ids[0]), int(b.ids[0]), int(c.ids[0]), int(d.ids[0])}) == 4


def test_velocity_from_the_3d_centroids_and_the_stamps():
    frames = [frame([(0, 10 + i, 10, 20, 20, (1.0 + 0.5 * i, 0.0, 10.0))]) for i in range(3)]
    out = run(Tracker(), frames)
    assert np.isnan(out[0].velocities_3d).all()  # one position: no velocity yet
    assert out[2].velocities_3d[0].tolist() == pytest.approx([5.0, 0.0, 0.0], rel=1e-5)


def test_relations_are_keyed_by_track_ids():
    frames = [frame([(0, 10, 10, 20, 20), (1, 60, 10, 20, 20)], relations=[(0, 1)]),
              frame([(1, 62, 10, 20, 20), (0, 12, 10, 20, 20)], relations=[(1, 0)])]  # rows swapped
    out = run(Tracker(), frames)
    assert [(r.source, r.target) for r in out[0].relations] == [(r.source, r.target) for r in out[1].relations]


def test_the_same_sequence_gives_the_same_tracks():
    rng = np.random.default_rng(0)
    frames = [frame([(int(c), int(x), int(y), 20, 20) for c, x, y in zip(rng.integers(0, 2, 6), rng.integers(0, 200, 6),
                                                                           rng.integers(0, 100, 6))])
              for _ in range(10)]
    first, second = run(Tracker(), frames), run(Tracker(), frames)
    assert all(a == b for a, b in zip(first, second))


def test_the_pipeline_tracks_each_camera_apart_and_a_swap_starts_afresh():
    ids = np.zeros((1, 40, 80), np.int32)
    ids[0, 10:30, 10:30] = 1  # one "person" blob
    k = 2
    backend = CannedBackend(InferenceResult(ids, np.ones((1, 40, 80), np.float32), np.full((1, k), 0.5, np.float32),
                                            np.zeros((1, k, k), np.float32)))
    pipeline = FramePipeline(backend, ClassLabels(("road", "person"), np.array([[0, 0, 0], [255, 0, 0]], np.uint8)))
    rgb = np.zeros((40, 80, 3), np.uint8)
    tracked = PipelineSettings(min_instance_area=16, tracking=True, track_confirm_hits=2)

    def graph(camera, t, settings=tracked):  # the person object (the road around it is one too)
        g = pipeline.process_batch([FrameInput(rgb, camera=camera, stamp_s=t)], settings)[0].graph
        person = g.class_ids == 1
        return g.ids[person], g.track_states[person]

    ids_untracked, states_untracked = graph("a", 0.0, PipelineSettings(min_instance_area=16))
    assert states_untracked.tolist() == [TRACK_NONE] and int(ids_untracked[0]) < 2  # this frame's instance id
    a = [graph("a", 0.1 * i) for i in range(3)]
    assert [states.tolist() for _, states in a] == [[TRACK_TENTATIVE], [TRACK_CONFIRMED], [TRACK_CONFIRMED]]
    assert len({int(ids[0]) for ids, _ in a}) == 1
    assert graph("b", 0.3)[1].tolist() == [TRACK_TENTATIVE]  # camera b's own tracks, not a's
    backend.set_vocabulary = lambda vocabulary: None  # the stand-in cannot swap; the pipeline's part is tested
    pipeline.set_vocabulary(random_vocabulary(2))
    ids_after, states_after = graph("a", 0.4)
    assert states_after.tolist() == [TRACK_TENTATIVE] and int(ids_after[0]) != int(a[-1][0][0])
