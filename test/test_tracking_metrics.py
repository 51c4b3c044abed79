"""Tracking metrics (replay/tracking_metrics.py, motmetrics) on sequences whose scores are known,
the moving context-scenes sequence (persistent ground-truth ids, determinism), and replay of the
bundled data/demo_sequence.mcap with and without tracking."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from casseg_ros.perception.scene_graph import SceneGraph
from casseg_ros.replay.cli import main as replay_main
from casseg_ros.replay.tracking_metrics import TrackingEvaluator, instance_boxes
from training.datasets.context_scenes import CONTEXT_CLASSES
from training.datasets.context_sequences import ContextSequence

REPO = Path(__file__).resolve().parent.parent
CAR, ROAD = CONTEXT_CLASSES.index("car"), CONTEXT_CLASSES.index("road")


def _scene(t: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, tuple[int, int, int, int]]]]:
    """Two 10x10 cars (ids 1, 2) moving 2 px a frame apart on a road; (instances, classes, [(id, box)])."""
    instances = np.zeros((40, 100), np.int64)
    classes = np.full((40, 100), ROAD, np.int64)
    boxes = [(1, (10 + 2 * t, 5, 10, 10)), (2, (60 - 2 * t, 20, 10, 10))]
    for ident, (x, y, w, h) in boxes:
        instances[y:y + h, x:x + w] = ident
        classes[y:y + h, x:x + w] = CAR
    return instances, classes, boxes


def _graph(boxes, ids, extra_road=True) -> SceneGraph:
    rows = [b for _, b in boxes] + ([(0, 30, 100, 10)] if extra_road else [])
    class_ids = [CAR] * len(boxes) + ([ROAD] if extra_road else [])
    return SceneGraph(class_ids=class_ids, ids=list(ids) + ([99] if extra_road else []), scores=[1.0] * len(rows),
                      boxes=rows, centroids=[(x + w / 2, y + h / 2) for x, y, w, h in rows],
                      areas=[w * h for _, _, w, h in rows])


def test_instance_boxes():
    instances, _, boxes = _scene(0)
    ids, found = instance_boxes(instances)
    assert ids.tolist() == [1, 2] and found.tolist() == [list(b) for _, b in boxes]


def test_perfect_tracks_score_one_and_a_swap_is_an_id_switch():
    perfect, swapped = TrackingEvaluator(min_area=1), TrackingEvaluator(min_area=1)
    for t in range(10):
        instances, classes, boxes = _scene(t)
        perfect.update(instances, classes, _graph(boxes, [7, 8]), classes)
        swapped.update(instances, classes, _graph(boxes, [7, 8] if t < 5 else [8, 7]), classes)
    p, s = perfect.result(), swapped.result()
    assert (p["mota"], p["idf1"], p["id_switches"], p["false_positives"]) == (1.0, 1.0, 0, 0)
    assert p["thing_classes"] == [CAR] and p["ground_truth_objects"] == 2  # the road object is not scored
    assert s["id_switches"] == 2 and s["idf1"] == pytest.approx(0.5) and s["id_switches_per_100"] == 100.0
    assert p["temporal_miou"] == 1.0 and p["flicker"] == 0.0  # the prediction changes only with the scene
    assert s["per_frame"]["id_switches"] == [0] * 5 + [2] + [0] * (len(s["per_frame"]["matches"]) - 6)
    assert s["per_frame"]["matches"] == [2] * len(s["per_frame"]["matches"])  # a switch is still a match


def test_misses_false_positives_and_flicker_are_counted():
    evaluator = TrackingEvaluator(min_area=1)
    for t in range(4):
        instances, classes, boxes = _scene(t)
        predicted = classes.copy()
        if t % 2:
            predicted[0:2, :] = CAR  # 200 road pixels flip to car on every odd frame
        graph = _graph(boxes[:1] + [(3, (80, 0, 10, 10))], [1, 3])  # car 2 missed, a false car instead
        evaluator.update(instances, classes, graph, predicted)
    r = evaluator.result()
    assert (r["matches"], r["misses"], r["false_positives"]) == (4, 4, 4)
    assert r["mota"] == pytest.approx(1 - (4 + 4) / 8)
    # 3 frame pairs; the pixels whose ground truth stays road in each pair, 200 of them flip each time
    stable = [int(((_scene(t)[1] == _scene(t + 1)[1])).sum()) for t in range(3)]
    assert r["flicker"] == pytest.approx(3 * 200 / sum(stable))
    # temporal mIoU on the stable pixels: 200 road pixels go road->car, car->road, road->car
    road_kept = sum(int(((_scene(t)[1] == ROAD) & (_scene(t + 1)[1] == ROAD)).sum()) for t in range(3)) - 600
    car_kept = sum(int(((_scene(t)[1] == CAR) & (_scene(t + 1)[1] == CAR)).sum()) for t in range(3))
    assert r["temporal_miou"] == pytest.approx((road_kept / (road_kept + 600) + car_kept / (car_kept + 600)) / 2)
    per_frame = r["per_frame"]
    assert per_frame["matches"] == per_frame["misses"] == per_frame["false_positives"] == [1, 1, 1, 1]
    assert per_frame["id_switches"] == [0, 0, 0, 0]
    assert per_frame["flicker"][0] is None and per_frame["flicker"][1:] == pytest.approx([200 / n for n in stable])


def test_the_sequence_keeps_ids_moves_and_is_deterministic():
    seq = ContextSequence(frames=30, height=64, width=128, seed=3, person_share=0.0, initial_objects=2, spawn_every=10)
    first = [seq.frame(t) for t in (0, 5, 29)]
    assert set(first[0].instance_classes) == {1, 2} and set(first[0].instance_classes.values()) == {CAR}
    assert max(first[2].instance_classes) >= 3  # objects entered
    box0 = instance_boxes(first[0].scene.instance_map)[1][0]
    box5 = instance_boxes(first[1].scene.instance_map)[1][0]
    assert not np.array_equal(box0, box5)  # object 1 moved (and the camera panned)
    again = ContextSequence(frames=30, height=64, width=128, seed=3, person_share=0.0, initial_objects=2,
                            spawn_every=10).frame(5)
    assert np.array_equal(again.scene.image, first[1].scene.image)
    assert np.array_equal(again.scene.instance_map, first[1].scene.instance_map)


@pytest.mark.slow  # two replays of 40 frames of the demo sequence
def test_replay_of_the_demo_sequence_reports_tracking(tmp_path):
    def run(*extra):
        out = tmp_path / ("tracked" if extra else "untracked")
        assert replay_main([str(REPO / "data" / "demo_sequence.mcap"), "--out", str(out), "--max-frames", "40",
                            "--no-progress", *extra]) == 0
        return json.loads((out / "metrics.json").read_text())

    untracked, tracked = run(), run("--tracking")
    assert tracked["instance_topic"] == "/camera/instances"
    t, u = tracked["tracking"], untracked["tracking"]
    assert t["frames"] == 40 and t["thing_classes"] == [CAR] and t["ground_truth_objects"] >= 3
    assert t["id_switches"] < u["id_switches"] and t["idf1"] > u["idf1"]  # ids that persist
    assert t["flicker"] == u["flicker"]  # tracking changes ids, not masks


def test_a_prediction_of_another_class_does_not_match():
    person = CONTEXT_CLASSES.index("person")
    evaluator = TrackingEvaluator(min_area=1)
    instances, classes, boxes = _scene(0)
    classes[instances == 2] = person  # ground truth: a car (1) and a person (2)
    graph = _graph(boxes, [1, 2])  # both predicted as cars
    evaluator.update(instances, classes, graph, classes)
    r = evaluator.result()
    assert r["thing_classes"] == sorted([CAR, person])
    assert (r["matches"], r["misses"], r["false_positives"]) == (1, 1, 1)
