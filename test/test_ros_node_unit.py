"""The node's building blocks and in-process behaviour (no second process needed)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from geometry_msgs.msg import Point
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from casseg_ros.model.checkpoint import save_checkpoint
from casseg_ros.perception.scene_graph import PREDICATES, TRACK_CONFIRMED, TRACK_TENTATIVE
from casseg_ros.perception.scene_graph import SceneGraph as Graph
from casseg_ros.ros.latest_frame import LatestFrames, TakenFrame
from casseg_ros.ros.node_stats import NodeStats, SlidingRate
from casseg_ros import pipeline as frame_pipeline
from casseg_ros.resources import resolve_data_path
from casseg_ros.ros.markers import NODE_SIZE_3D_M, scene_graph_markers
from casseg_ros.ros.parameters import effective_transport, param_specs, validate_parameter
from casseg_ros.ros.segment_node import SegmentNode
from model_factory import tiny_model
from ros_helpers.camera import encode_raw, synthetic_scene
from ros_helpers.harness import Probe, wait_until

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- latest-frame slots
def test_each_camera_keeps_only_its_newest_frame_and_counts_drops():
    frames = LatestFrames(["front", "rear"])
    assert frames.put("front", "a") is False
    assert frames.put("front", "b") is True and frames.put("front", "c") is True
    assert frames.put("rear", "x") is False
    assert frames.dropped == {"front": 2, "rear": 0}
    batch = frames.take_batch(max_batch=4, timeout=0.1)
    assert [(t.camera, t.item) for t in batch] == [("front", "c"), ("rear", "x")]
    assert all(t.arrival <= time.monotonic() for t in batch)
    assert frames.take_batch(4, timeout=0.05) == []  # empty again: nothing queued behind the newest


def test_more_waiting_cameras_than_a_batch_are_served_round_robin():
    cameras = ["a", "b", "c", "d", "e"]
    frames = LatestFrames(cameras)
    served = []
    for _ in range(10):  # every camera always has a frame waiting; batches of 2
        for camera in cameras:
            frames.put(camera, camera)
        served.append([t.camera for t in frames.take_batch(max_batch=2, timeout=0.1)])
    assert served[:3] == [["a", "b"], ["c", "d"], ["e", "a"]]
    counts = {c: sum(batch.count(c) for batch in served) for c in cameras}
    assert max(counts.values()) - min(counts.values()) <= 1, counts  # none starves


def test_slots_wake_a_waiting_worker_on_put_and_on_close():
    frames = LatestFrames(["cam"])
    got = []
    worker = threading.Thread(target=lambda: got.append(frames.take_batch(1, timeout=5.0)))
    worker.start()
    time.sleep(0.05)
    frames.put("cam", "frame")
    worker.join(2.0)
    assert got and got[0][0].item == "frame"
    waiter = threading.Thread(target=lambda: got.append(frames.take_batch(1, timeout=5.0)))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    frames.put("cam", "left behind")
    assert frames.close() == {"cam": 1} or got[-1]  # the waiter may have taken it first
    waiter.join(2.0)
    assert not waiter.is_alive() and time.monotonic() - started < 1.0


# ---------------------------------------------------------------------- stats
def test_stats_count_transport_losses_from_sequence_gaps():
    stats = NodeStats()
    for seq in (1, 2, 5, 6, 10):
        stats.on_received(publisher=b"cam", sequence=seq)
    stats.on_received(publisher=b"other", sequence=7)  # another publisher: its own sequence
    stats.on_dropped()
    snap = stats.snapshot()
    assert snap["frames_received"] == 6 and snap["lost_in_transport"] == 2 + 3
    assert snap["dropped_in_node"] == 1 and snap["dropped_frames"] == 6


def test_stats_latency_percentiles_in_ms():
    stats = NodeStats()
    for i in range(1, 101):
        stats.on_published(latency_s=i / 1000, forward_s=0.01, host_s=0.002)
    snap = stats.snapshot()
    assert snap["latency_p50_ms"] == pytest.approx(50.5)
    assert snap["latency_p99_ms"] == pytest.approx(99.01)
    assert snap["forward_mean_ms"] == pytest.approx(10.0) and snap["host_overhead_p50_ms"] == pytest.approx(2.0)


def test_sliding_rate_forgets_old_events():
    rate = SlidingRate(window_s=1.0)
    rate._start -= 10  # long-running meter
    now = time.monotonic()
    for i in range(30):
        rate.tick(now - 0.99 + i * 0.033)
    assert rate.rate(now) == pytest.approx(30, abs=1)
    assert rate.rate(now + 2.0) == 0.0


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name,value,fragment", [
    ("backend", "caffe", "backend must be one of"),
    ("device", "tpu", "device must be"),
    ("device", "cuda:x", "device must be"),
    ("image_transport", "theora", "image_transport"),
    ("input_transport", "theora", "deprecated: use image_transport"),
    ("qos_reliability", "sometimes", "qos_reliability"),
    ("model_path", "  ", "must not be empty"),
    ("input_height", 8, ">= 32"),
])
def test_invalid_parameter_values_have_a_reason(name, value, fragment):
    assert fragment in validate_parameter(name, value)


@pytest.mark.parametrize("name,value", [("backend", "tensorrt"), ("device", "cuda:1"), ("input_height", 0),
                                        ("input_width", 64), ("image_transport", "compressed"),
                                        ("input_transport", ""), ("input_transport", "compressed")])
def test_valid_parameter_values_pass(name, value):
    assert validate_parameter(name, value) is None


@pytest.mark.parametrize("image_transport,input_transport,used", [
    ("raw", "", "raw"), ("compressed", "", "compressed"),
    ("raw", "compressed", "compressed"),  # only the deprecated one was changed: honoured
    ("compressed", "raw", "compressed"),  # the new one wins when both are set
])
def test_deprecated_input_transport_is_honoured_only_while_image_transport_is_default(
        image_transport, input_transport, used):
    assert effective_transport(image_transport, input_transport) == used


def test_shipped_yaml_sets_every_parameter_with_the_declared_type_and_default():
    shipped = yaml.safe_load((REPO / "config" / "segment.yaml").read_text())["/**"]["ros__parameters"]
    declared = {name: default for name, default, _ in param_specs()}
    assert shipped == declared
    assert all(type(shipped[k]) is type(declared[k]) for k in declared)


def test_missing_model_path_error_names_every_tried_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_path("models/none_such.safetensors")
    assert "models/none_such.safetensors" in str(err.value) and str(tmp_path) in str(err.value)
    assert str(REPO) in str(err.value)  # this checkout was tried too (the tests run from it)
    # Outside the repository the bundled defaults are found in the checkout the package runs from ...
    assert resolve_data_path("models/casseg_demo.safetensors") == REPO / "models" / "casseg_demo.safetensors"
    assert resolve_data_path("data/demo.mcap") == REPO / "data" / "demo.mcap"
    # ... and a file of the user's own in the working directory comes first.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "casseg_demo.safetensors").write_bytes(b"x")
    assert resolve_data_path("models/casseg_demo.safetensors") == tmp_path / "models" / "casseg_demo.safetensors"


@pytest.mark.ros
def test_executable_with_a_missing_model_exits_with_the_path(ros_env, tmp_path):
    config = yaml.safe_load((REPO / "config" / "segment.yaml").read_text())
    config["/**"]["ros__parameters"]["model_path"] = "models/none_such.safetensors"
    (tmp_path / "segment.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "casseg_ros.ros.node_main", "--ros-args", "-r", f"__ns:={ros_env.namespace}",
         "--params-file", str(tmp_path / "segment.yaml")],
        env=ros_env.env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "model_path 'models/none_such.safetensors' not found" in result.stderr


# ---------------------------------------------------------------------- markers
def _markers(graph: Graph, header: Header, palette: np.ndarray, scale: float) -> list[Marker]:
    """The node's markers (serialised CDR) as rclpy reads them."""
    return deserialize_message(scene_graph_markers(graph, header, palette, scale), MarkerArray).markers


def test_markers_place_nodes_at_scaled_pixel_centroids_in_the_image_frame():
    header = Header(frame_id="cam_optical")
    header.stamp.sec = 7
    graph = Graph(class_names=("c0", "c1"), class_ids=[0, 1], scores=[0.5, 0.5], centroids=[[100.0, 50.0], [300.0, 200.0]],
                  sources=[0], targets=[1], predicates=[PREDICATES.index("above")], weights=[0.25])
    palette = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    markers = _markers(graph, header, palette, scale=0.01)
    assert markers[0].action == markers[0].DELETEALL
    assert all(m.header == header for m in markers)
    spheres, = [m for m in markers if m.ns == "nodes"]
    assert spheres.type == spheres.SPHERE_LIST
    assert [(p.x, p.y, p.z) for p in spheres.points] == [pytest.approx((1.0, 0.5, 0.0)), pytest.approx((3.0, 2.0, 0.0))]
    assert spheres.colors[0].r == 1.0 and spheres.colors[1].g == 1.0
    lines = [m for m in markers if m.type == m.LINE_LIST]
    assert len(lines) == 1 and lines[0].ns == "edges/above"
    assert [(p.x, p.y) for p in lines[0].points] == [pytest.approx((1.0, 0.5)), pytest.approx((3.0, 2.0))]
    assert [m.text for m in markers if m.ns == "labels"] == ["c0 0.50", "c1 0.50"]
    tracked = graph.with_tracks(ids=[12, 40], track_states=[TRACK_CONFIRMED, TRACK_TENTATIVE], track_ages=[5, 0],
                                velocities_3d=np.full((2, 3), np.nan))
    labels = [m for m in _markers(tracked, header, palette, scale=0.01) if m.ns == "labels"]
    assert [(m.id, m.text) for m in labels] == [(12, "c0 #12 0.50"), (40, "c1 #40 0.50")]  # RViz keeps a track's label


def test_markers_in_3d_leave_out_objects_without_depth_and_their_relations():
    header = Header(frame_id="cam_optical")
    nan = float("nan")
    graph = Graph(class_names=("a", "b", "c"), ids=[7, 8, 9], class_ids=[0, 1, 2], scores=[0.9, 0.8, 0.7],
                  centroids=[[1, 1], [2, 2], [3, 3]], centroids_3d=[[0.0, 0.0, 2.0], [nan] * 3, [1.0, 0.0, 4.0]],
                  sources=[0, 0, 1, 2], targets=[1, 2, 2, 0], weights=[1, 1, 1, 1],
                  predicates=[PREDICATES.index(p) for p in ("touches", "touches", "left_of", "right_of")])
    markers = _markers(graph, header, np.zeros((3, 3), np.uint8), scale=0.01)
    spheres, = [m for m in markers if m.ns == "nodes"]
    assert [(p.x, p.y, p.z) for p in spheres.points] == [(0.0, 0.0, 2.0), (1.0, 0.0, 4.0)]
    assert spheres.scale.x == NODE_SIZE_3D_M
    assert [(m.id, m.text) for m in markers if m.ns == "labels"] == [(7, "a 0.90"), (9, "c 0.70")]  # ids, not indices
    lines = {m.ns: [(p.x, p.z) for p in m.points] for m in markers if m.type == m.LINE_LIST}
    assert lines == {"edges/right_of": [(1.0, 4.0), (0.0, 2.0)], "edges/touches": [(0.0, 2.0), (1.0, 4.0)]}
    assert [m.id for m in markers if m.type == m.LINE_LIST] == [0, 1]  # predicates in name order


def _markers_as_rclpy_messages(graph: Graph, header: Header, palette: np.ndarray, node_size: float) -> MarkerArray:
    """The same markers built the plain way, one rclpy message per object (the CDR writer's reference)."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    placed = [bool(np.isfinite(where).all()) for where in graph.centroids_3d]
    drawn = [i for i in range(graph.num_objects) if placed[i]]
    spheres = Marker(header=header, ns="nodes", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD,
                     color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
    spheres.scale.x = spheres.scale.y = spheres.scale.z = node_size
    at = {}
    for i in drawn:
        at[i] = Point(x=float(graph.centroids_3d[i][0]), y=float(graph.centroids_3d[i][1]), z=float(graph.centroids_3d[i][2]))
        c = int(graph.class_ids[i])
        rgb = palette[c] if c < len(palette) else (255, 255, 255)
        spheres.points.append(at[i])
        spheres.colors.append(ColorRGBA(r=rgb[0] / 255.0, g=rgb[1] / 255.0, b=rgb[2] / 255.0, a=0.9))
    markers.append(spheres)
    for i in drawn:
        text = Marker(header=header, ns="labels", id=int(graph.ids[i]), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=f"{graph.labels()[i]} {float(graph.scores[i]):.2f}",
                      color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
        text.pose.position = Point(x=at[i].x, y=at[i].y - 1.5 * node_size, z=at[i].z)
        text.scale.z = node_size
        markers.append(text)
    by_predicate = {}
    for s, t, p in zip(graph.sources.tolist(), graph.targets.tolist(), graph.predicates.tolist()):
        if s in at and t in at:
            by_predicate.setdefault(graph.predicate_names[p], []).extend([at[s], at[t]])
    for index, name in enumerate(sorted(by_predicate)):
        line = Marker(header=header, ns=f"edges/{name}", id=index, type=Marker.LINE_LIST, action=Marker.ADD,
                      color=ColorRGBA(r=1.0, g=1.0, b=0.2, a=0.6), points=by_predicate[name])
        line.scale.x = node_size * 0.25
        markers.append(line)
    return MarkerArray(markers=markers)


def test_markers_cdr_is_what_rclpy_makes_of_the_same_markers():
    rng = np.random.default_rng(5)
    n, m = 40, 150
    where = rng.uniform(-3.0, 3.0, (n, 3)).astype(np.float32)
    where[rng.random(n) < 0.3] = np.nan  # objects without depth: left out with their relations
    header = Header(frame_id="camera_optical_frame_ä")  # odd lengths and UTF-8: string padding
    header.stamp.sec, header.stamp.nanosec = 1_700_000_123, 987_654_321
    graph = Graph(class_names=("road", "car", "pedestrian crossing"), ids=rng.permutation(1000)[:n],
                  class_ids=rng.integers(0, 5, n), scores=rng.random(n), centroids=rng.random((n, 2)) * 100,
                  centroids_3d=where, sources=rng.integers(0, n, m), targets=rng.integers(0, n, m),
                  predicates=rng.integers(0, len(PREDICATES), m), weights=rng.random(m))
    palette = rng.integers(0, 256, (3, 3)).astype(np.uint8)  # class ids 3 and 4 are beyond it: white
    data = scene_graph_markers(graph, header, palette, scale=0.01)
    reference = serialize_message(_markers_as_rclpy_messages(graph, header, palette, NODE_SIZE_3D_M))
    assert deserialize_message(data, MarkerArray) == deserialize_message(reference, MarkerArray)  # as a subscriber sees
    assert len(data) == len(reference)  # the same layout, padding included
    empty = deserialize_message(scene_graph_markers(Graph(), header, palette, 0.01), MarkerArray)
    assert [m.action for m in empty.markers] == [Marker.DELETEALL]


# ---------------------------------------------------------------------- in-process node
@pytest.fixture
def in_process(ros_env):
    rclpy.init()
    created = []

    def make(checkpoint: str, **params) -> SegmentNode:
        overrides = [Parameter("model_path", value=checkpoint), Parameter("input_height", value=32),
                     Parameter("input_width", value=64)] + [Parameter(k, value=v) for k, v in params.items()]
        node = SegmentNode(namespace=ros_env.namespace, parameter_overrides=overrides)
        created.append(node)
        return node

    yield make
    for node in created:
        if node.lifecycle_state() == "active":
            node.trigger_deactivate()
        node.destroy_node()
    rclpy.shutdown()


@pytest.mark.ros
def test_more_than_255_classes_publish_mono16_with_65535_unknown(in_process, tmp_path):
    checkpoint = str(save_checkpoint(tmp_path / "wide.safetensors", tiny_model(300, img_size=(32, 64))))
    node = in_process(checkpoint, score_threshold=0.5, publish_confidence=True)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    probe = Probe(node.get_fully_qualified_name(), name="unit_probe")
    try:
        assert probe.wait_until(lambda: node.cameras[0].outputs["mask"].get_subscription_count() > 0, 10.0)
        msg = encode_raw(synthetic_scene(32, 64, 0), "rgb8")
        msg.header.frame_id = "wide"
        node.process_frame(msg)
        assert probe.wait_until(lambda: probe.get("mask") and probe.get("confidence"), 10.0)
        mask = probe.get("mask")[0]
        assert (mask.encoding, mask.step, mask.header.frame_id) == ("mono16", 128, "wide")
        values = np.frombuffer(mask.data, "<u2").reshape(32, 64)
        confidence = np.frombuffer(probe.get("confidence")[0].data, np.uint8).reshape(32, 64)
        # Softmax over 300 classes of a random model: far below 0.5 everywhere -> all unknown.
        assert (confidence < 128).all() and (values == 65535).all()
    finally:
        probe.close()


@pytest.mark.ros
def test_subscription_callback_never_waits_for_a_slow_model(in_process, tmp_path):
    checkpoint = str(save_checkpoint(tmp_path / "tiny.safetensors", tiny_model(5, img_size=(32, 64))))
    node = in_process(checkpoint)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    real_infer = node._backend.infer
    calls = []

    def slow_infer(images):
        calls.append(time.monotonic())
        time.sleep(0.5)
        return real_infer(images)

    node._backend.infer = slow_infer
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    msg = encode_raw(synthetic_scene(32, 64, 0), "rgb8")
    durations = []
    for _ in range(20):  # 20 frames at ~100 Hz while one inference takes 0.5 s
        started = time.perf_counter()
        node._on_image(node.cameras[0], msg, {})
        durations.append(time.perf_counter() - started)
        time.sleep(0.01)
    assert max(durations) < 0.05
    assert wait_until(lambda: node.stats.snapshot()["frames_processed"] >= 1, 10.0, poll_s=0.02)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS  # waits for the frame in flight
    snap = node.stats.snapshot()
    assert snap["frames_received"] == 20
    # Latest frame wins: at most the first frame and the newest one waiting behind it ran.
    assert len(calls) <= 2 and snap["frames_processed"] == len(calls)
    assert snap["dropped_in_node"] == 20 - len(calls)


@pytest.mark.ros
def test_vocabulary_file_renames_labels_and_must_match_the_class_count(in_process, tmp_path):
    from casseg_ros.text import Vocabulary

    checkpoint = str(save_checkpoint(tmp_path / "tiny.safetensors", tiny_model(5, img_size=(32, 64))))
    rng = np.random.default_rng(1)
    names = ["road", "car", "person", "sky", "tree"]
    Vocabulary(names=names, embeddings=rng.standard_normal((5, 8)).astype(np.float32)).save(tmp_path / "ok.vocab")
    Vocabulary(names=names[:3], embeddings=rng.standard_normal((3, 8)).astype(np.float32)).save(tmp_path / "bad.vocab")

    mismatched = in_process(checkpoint, vocabulary_file=str(tmp_path / "bad.vocab"))
    assert mismatched.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert mismatched.lifecycle_state() == "unconfigured" and mismatched._backend is None

    node = in_process(checkpoint, vocabulary_file=str(tmp_path / "ok.vocab"))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert list(node._pipeline.labels.names) == names


@pytest.mark.ros
def test_worker_survives_failures_and_processes_the_next_frame(in_process, tmp_path, monkeypatch):
    checkpoint = str(save_checkpoint(tmp_path / "tiny.safetensors", tiny_model(5, img_size=(32, 64))))
    node = in_process(checkpoint)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    real_infer, real_mask = node._backend.infer, frame_pipeline.class_mask
    failures = {"infer": 1, "post": 1}

    def flaky_infer(images):
        if failures["infer"]:
            failures["infer"] -= 1
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_infer(images)

    def flaky_mask(*args):
        if failures["post"]:
            failures["post"] -= 1
            raise ValueError("post-processing bug (simulated)")
        return real_mask(*args)

    node._backend.infer = flaky_infer
    monkeypatch.setattr(frame_pipeline, "class_mask", flaky_mask)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    msg = encode_raw(synthetic_scene(32, 64, 0), "rgb8")
    def frames_finished() -> int:
        return node.stats.inference_errors + node.stats.processing_errors + node.stats.processed

    for step in (1, 2, 3):  # infer fails, post-processing fails, then a frame goes through
        node._on_image(node.cameras[0], msg, {})
        assert wait_until(lambda: frames_finished() == step, 10.0, poll_s=0.02)
    snap = node.stats.snapshot()
    assert (snap["inference_errors"], snap["processing_errors"], snap["frames_processed"]) == (1, 1, 1)
    assert "post-processing bug" in snap["last_error"] and node._worker.is_alive()


@pytest.mark.ros
def test_frames_of_several_cameras_run_as_one_batch_whatever_their_sizes(in_process, tmp_path):
    checkpoint = str(save_checkpoint(tmp_path / "tiny.safetensors", tiny_model(5, img_size=(32, 64))))
    node = in_process(checkpoint, cameras=["front", "left", "rear"], max_batch=3)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    real_infer, batches = node._backend.infer, []

    def recording_infer(images):
        batches.append(images.shape)
        return real_infer(images)

    node._backend.infer = recording_infer
    sizes = {"front": (32, 64), "left": (48, 96), "rear": (20, 40)}
    batch = []
    for camera, (h, w) in sizes.items():
        msg = encode_raw(synthetic_scene(h, w, 0), "rgb8")
        msg.header.frame_id = camera
        batch.append(TakenFrame(camera, msg, time.monotonic()))
    node.process_batch(batch)
    assert batches == [(3, 32, 64, 3)]  # one forward pass at the model's size
    for camera in node.cameras:
        assert camera.stats.snapshot()["frames_processed"] == 1, camera.name
    assert node.batch_stats.snapshot()["batch_size_mean"] == 3.0
