"""The segmentation node over real DDS: camera, node and consumer in separate processes.

One node process (tiny random model, 64x128 input) serves the whole module; a fake camera
process publishes real frames; this test process is the consumer and lifecycle/parameter client.
Each test leaves the node active on the raw transport with reliable QoS.
"""
from __future__ import annotations

import numpy as np
import pytest

from casseg_msgs.msg import SceneGraph
from casseg_ros.model.checkpoint import save_checkpoint
from casseg_ros.perception.scene_graph import extract_scene_graph
from casseg_ros.pipeline import PipelineSettings
from casseg_ros.ros.messages import scene_graph_from_msg
from model_factory import tiny_model
from ros_helpers.harness import header_key, node_and_probe, sent_headers, start_camera

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # node and camera processes

NUM_CLASSES = 5
CLASS_NAMES = [f"class_{i}" for i in range(NUM_CLASSES)]
HEIGHT, WIDTH = 64, 128
MIN_AREA = 4
RAW_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
STARTUP_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", tiny_model(NUM_CLASSES)))


@pytest.fixture(scope="module")
def system(ros_env_module, checkpoint):
    """(env, camera_topic, probe, node_process) with the node active."""
    env, ns = ros_env_module, ros_env_module.namespace
    camera_topic = f"{ns}/camera/image_raw"
    with node_and_probe(env.env, ns, camera_topic, dict(
            model_path=checkpoint, input_height=HEIGHT, input_width=WIDTH, min_instance_area=MIN_AREA,
            qos_reliability="reliable", publish_confidence=True)) as (node, probe):
        probe.wait_for_state("active", STARTUP_TIMEOUT, alive=node.check_alive)
        yield env, camera_topic, probe, node


def run_camera(env, topic, *args, timeout=90.0):
    camera = start_camera(env.env, topic, *args)
    assert camera.wait(timeout) == 0, camera.output()
    return sent_headers(camera)


def mask_array(msg) -> np.ndarray:
    dtype = np.uint8 if msg.encoding == "mono8" else np.uint16
    return np.frombuffer(msg.data, dtype).reshape(msg.height, msg.step // np.dtype(dtype).itemsize)[:, :msg.width]


def last_diagnostics(probe) -> dict:
    assert probe.wait_until(lambda: probe.get("diagnostics"), 5.0), "no diagnostics from the node"
    return probe.get("diagnostics")[-1]


def wait_for_masks(probe, frame_ids, timeout=30.0):
    def have_all():
        got = {m.header.frame_id for m in probe.get("mask")}
        return set(frame_ids) <= got
    probe.wait_until(have_all, timeout)
    return {m.header.frame_id for m in probe.get("mask")}


def test_every_raw_encoding_is_segmented_with_header_kept(system):
    env, topic, probe, node = system
    probe.clear()
    diag_before = last_diagnostics(probe)
    sent = run_camera(env, topic, "--encodings", ",".join(RAW_ENCODINGS), "--frames-per-encoding", "30",
                      "--rate", "30", "--width", str(WIDTH), "--height", str(HEIGHT), "--pad", "4")
    sent_keys = {(fid, sec, nsec) for _, fid, sec, nsec in sent}
    got = wait_for_masks(probe, [f"cam_{e}" for e in RAW_ENCODINGS])
    assert {f"cam_{e}" for e in RAW_ENCODINGS} <= got, f"no mask for {set(RAW_ENCODINGS) - got}\n{node.output()}"
    probe.wait_until(lambda: len(probe.get("scene_graph")) >= len(probe.get("mask")), 5.0)

    masks = probe.get("mask")
    for mask in masks:
        assert header_key(mask.header) in sent_keys  # stamp and frame_id unchanged
        assert (mask.encoding, mask.height, mask.width) == ("mono8", HEIGHT, WIDTH)
        values = np.unique(mask_array(mask))
        assert set(values.tolist()) <= set(range(NUM_CLASSES)), values  # threshold 0: no unknown pixels

    for overlay in probe.get("overlay"):
        assert header_key(overlay.header) in sent_keys
        assert (overlay.encoding, overlay.height, overlay.width, overlay.step) == ("rgb8", HEIGHT, WIDTH, WIDTH * 3)
    assert probe.get("overlay"), "overlay subscribed but never published"
    confidences = probe.get("confidence")
    assert confidences and all(c.encoding == "mono8" and header_key(c.header) in sent_keys for c in confidences)

    # The scene graph of each frame is the library's graph of that frame's mask.
    masks_by_key = {header_key(m.header): mask_array(m) for m in masks}
    graphs = probe.get("scene_graph")
    assert graphs
    checked = 0
    for graph in graphs:
        key = header_key(graph.header)
        assert key in sent_keys
        if key not in masks_by_key:
            continue
        expected = extract_scene_graph(masks_by_key[key], CLASS_NAMES, min_area=MIN_AREA,
                                       stride=PipelineSettings.scene_graph_stride)  # the node's default
        got = scene_graph_from_msg(graph, CLASS_NAMES)
        assert graph.format_version == SceneGraph.FORMAT_VERSION == 2
        assert [(i.instance_id, i.class_id, i.label, i.area, i.bbox) for i in got.instances] == \
               [(i.instance_id, i.class_id, i.label, i.area, i.bbox) for i in expected.instances]
        np.testing.assert_allclose(got.centroids, expected.centroids)
        assert ((0.0 <= got.scores) & (got.scores <= 1.0)).all()
        assert [(r.source, r.target, r.predicate) for r in got.relations] == \
               [(r.source, r.target, r.predicate) for r in expected.relations]
        assert ((0.0 <= got.weights) & (got.weights <= 1.0)).all()
        assert (got.track_states == SceneGraph.TRACK_NONE).all() and list(got.ids) == list(range(got.num_objects))
        assert int(got.areas.sum()) <= HEIGHT * WIDTH
        checked += 1
    assert checked > 0

    graphs_by_key = {header_key(g.header): g for g in graphs}
    marker_arrays = probe.get("scene_graph/markers")
    assert marker_arrays
    for array_msg in marker_arrays:
        key = header_key(array_msg.markers[0].header)
        assert key in sent_keys and array_msg.markers[0].action == array_msg.markers[0].DELETEALL
        if key in graphs_by_key:
            spheres = [p for m in array_msg.markers if m.ns == "nodes" for p in m.points]
            labels = [m for m in array_msg.markers if m.ns == "labels"]
            assert len(spheres) == len(labels) == len(graphs_by_key[key].ids)

    # Counters move: more frames processed than before, inputs counted, drops accounted for.
    assert probe.wait_until(lambda: int(last_diagnostics(probe)["frames_processed"])
                            >= int(diag_before["frames_processed"]) + len(masks), 5.0)
    diag = last_diagnostics(probe)
    assert int(diag["frames_received"]) - int(diag_before["frames_received"]) >= len(masks)
    assert int(diag["frames_received"]) >= int(diag["frames_processed"]) + int(diag["dropped_in_node"])
    assert max(float(d["input_rate_hz"]) for d in probe.get("diagnostics")) > 1.0
    assert float(diag["latency_p50_ms"]) > 0.0
    assert "max_backlog" not in diag  # removed: a single slot can never hold a backlog
    assert diag["backend"] == "torch" and diag["device"] == "cpu" and diag["lifecycle_state"] == "active"

    # A subscriber joining late still gets the labels (transient local).
    probe.subscribe_label_info()
    assert probe.wait_until(lambda: probe.get("label_info"), 10.0), "late subscriber got no LabelInfo"
    label_info = probe.get("label_info")[-1]
    assert [(c.class_id, c.class_name) for c in label_info.class_map] == list(enumerate(CLASS_NAMES))


def test_bad_raw_inputs_are_counted_and_the_next_good_frame_is_processed(system):
    env, topic, probe, node = system
    probe.clear()
    rejected_before = int(last_diagnostics(probe)["inputs_rejected"])
    sent = run_camera(env, topic, "--bad", "raw", "--bad-gap", "0.5", "--width", str(WIDTH), "--height", str(HEIGHT))
    good = [fid for _, fid, _, _ in sent if fid.startswith("good_after_")]
    bad = [fid for _, fid, _, _ in sent if fid.startswith("bad_")]
    assert len(good) == len(bad) == 6
    got = wait_for_masks(probe, good)
    assert set(good) <= got, f"missing masks after bad input: {set(good) - got}\n{node.output()}"
    assert not {fid for fid in got if fid.startswith("bad_")}
    assert probe.wait_until(lambda: int(last_diagnostics(probe)["inputs_rejected"]) - rejected_before == len(bad), 5.0)
    assert node.proc.poll() is None
    assert "rejected input image" in node.output()


def test_lifecycle_transitions_and_parameter_validation(system, checkpoint):
    env, topic, probe, node = system
    assert probe.lifecycle_state() == "active"
    # Invalid values are rejected with a reason, whatever the state.
    (ok, reason), = probe.set_parameters(backend="caffe")
    assert not ok and "backend must be one of" in reason
    (ok, reason), = probe.set_parameters(score_threshold=1.5)
    assert not ok
    (ok, reason), = probe.set_parameters(input_height=16)
    assert not ok and ">= 32" in reason
    # Valid, but not while active / configured.
    (ok, reason), = probe.set_parameters(image_transport="compressed")
    assert not ok and "deactivate" in reason
    (ok, reason), = probe.set_parameters(model_path="/nonexistent/model.safetensors")
    assert not ok and "cleanup" in reason

    assert probe.change_state("deactivate") and probe.lifecycle_state() == "inactive"
    # The subscription is gone: a camera finds no subscriber.
    camera = start_camera(env.env, topic, "--encodings", "rgb8", "--frames-per-encoding", "1", "--wait-subscribers", "2")
    assert camera.wait(30) == 3 and "NO_SUBSCRIBER" in camera.output()
    assert probe.wait_until(lambda: last_diagnostics(probe)["lifecycle_state"] == "inactive", 3.0)

    assert probe.change_state("cleanup") and probe.lifecycle_state() == "unconfigured"
    assert probe.set_parameters(model_path="/nonexistent/model.safetensors") == [(True, "")]
    assert not probe.change_state("configure")  # fails cleanly, node stays up and unconfigured
    assert probe.lifecycle_state() == "unconfigured"
    assert "/nonexistent/model.safetensors" in node.output() and node.proc.poll() is None

    assert probe.set_parameters(model_path=checkpoint) == [(True, "")]
    assert probe.change_state("configure") and probe.lifecycle_state() == "inactive"
    assert probe.change_state("activate") and probe.lifecycle_state() == "active"
    probe.clear()
    run_camera(env, topic, "--encodings", "rgb8", "--frames-per-encoding", "15")
    assert "cam_rgb8" in wait_for_masks(probe, ["cam_rgb8"]), node.output()


def test_compressed_transport_and_bad_compressed_inputs(system):
    env, topic, probe, node = system
    assert probe.change_state("deactivate")
    assert probe.set_parameters(image_transport="compressed", qos_reliability="best_effort") == [(True, ""), (True, "")]
    assert probe.change_state("activate")
    try:
        probe.clear()
        sent = run_camera(env, topic, "--compressed", "jpeg,png", "--frames-per-encoding", "30",
                          "--reliability", "best_effort")
        sent_keys = {(fid, sec, nsec) for _, fid, sec, nsec in sent}
        got = wait_for_masks(probe, ["cam_jpeg", "cam_png"])
        assert {"cam_jpeg", "cam_png"} <= got, node.output()
        for mask in probe.get("mask"):
            assert header_key(mask.header) in sent_keys and (mask.height, mask.width) == (HEIGHT, WIDTH)

        rejected_before = int(last_diagnostics(probe)["inputs_rejected"])
        probe.clear()
        sent = run_camera(env, topic, "--bad", "compressed", "--bad-gap", "0.5")
        good = [fid for _, fid, _, _ in sent if fid.startswith("good_after_")]
        bad = [fid for _, fid, _, _ in sent if fid.startswith("bad_")]
        got = wait_for_masks(probe, good)
        assert set(good) <= got, f"missing masks after bad input: {set(good) - got}\n{node.output()}"
        assert probe.wait_until(
            lambda: int(last_diagnostics(probe)["inputs_rejected"]) - rejected_before == len(bad), 5.0)
    finally:  # restore the module's node for the next tests; a failure above still reports first
        restored = (probe.change_state("deactivate")
                    and probe.set_parameters(image_transport="raw", qos_reliability="reliable") == [(True, ""), (True, "")]
                    and probe.change_state("activate"))
    assert restored, "could not restore the raw transport for the next tests"


def test_live_parameter_change_applies_to_the_next_frames(system):
    env, topic, probe, node = system
    probe.subscribe_label_info()
    # No confidence reaches 1.0 from a softmax over 5 classes: threshold 1.0 makes every pixel unknown.
    assert probe.set_parameters(score_threshold=1.0, overlay_alpha=0.0) == [(True, ""), (True, "")]
    try:
        assert probe.wait_until(lambda: any(abs(m.threshold - 1.0) < 1e-6 for m in probe.get("label_info")), 10.0)
        probe.clear()
        run_camera(env, topic, "--encodings", "rgb8", "--frames-per-encoding", "15")
        assert probe.wait_until(lambda: probe.get("mask") and probe.get("overlay"), 20.0), node.output()
        for mask in probe.get("mask"):
            assert set(np.unique(mask_array(mask)).tolist()) == {255}
        for graph in probe.get("scene_graph"):
            assert len(graph.ids) == 0 and len(graph.sources) == 0
    finally:
        assert probe.set_parameters(score_threshold=0.0, overlay_alpha=0.5) == [(True, ""), (True, "")]
