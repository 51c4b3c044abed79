"""casseg-ctl against a live node: every command runs as its own process (as a user runs it), over
DDS on loopback in the test's private domain; this process watches the node with a Probe."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image

from casseg_ros.ctl_cli import record_qos
from casseg_ros.model.checkpoint import save_checkpoint
from casseg_ros.perception.palette import palette_for_names
from casseg_ros.replay.bag import read_bag_messages
from casseg_ros.replay.cli import main as replay_main
from model_factory import LOCAL_NAMES, tiny_local_model
from ros_helpers.harness import REPO, node_and_probe, start_camera, start_rgbd_camera

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # a node, a camera and a casseg-ctl process per command

HEIGHT, WIDTH = 64, 128


@pytest.fixture(scope="module")
def system(ros_env_module, tmp_path_factory):
    env, ns = ros_env_module, ros_env_module.namespace
    checkpoint = str(save_checkpoint(tmp_path_factory.mktemp("model") / "local.safetensors", tiny_local_model()))
    with node_and_probe(env.env, ns, f"{ns}/camera/image_raw", dict(
            model_path=checkpoint, input_height=HEIGHT, input_width=WIDTH, qos_reliability="reliable"),
            probe_name="ctl_probe") as (node, probe):
        probe.subscribe_label_info()
        probe.wait_for_state("active", 120.0, alive=node.check_alive)
        yield env, ns, probe, node, checkpoint


def ctl(env, ns: str, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "casseg_ros.ctl_cli", "--node", f"{ns}/casseg_ros", *args],
                          env=env.env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)


def test_lifecycle_get_and_transitions(system):
    env, ns, probe, node, _ = system
    got = ctl(env, ns, "lifecycle", "get")
    assert (got.returncode, got.stdout.strip()) == (0, "active"), got.stderr
    down = ctl(env, ns, "lifecycle", "deactivate")
    assert down.returncode == 0 and "deactivate done, now inactive" in down.stdout, down.stderr
    assert probe.lifecycle_state() == "inactive"
    again = ctl(env, ns, "lifecycle", "deactivate")  # not a transition from inactive: refused, said so
    assert again.returncode == 1 and "refused or failed (now inactive" in again.stderr
    up = ctl(env, ns, "lifecycle", "activate")
    assert up.returncode == 0 and "now active" in up.stdout and probe.lifecycle_state() == "active"


def test_param_get_and_set_with_the_nodes_refusals(system):
    env, ns, probe, node, _ = system
    got = ctl(env, ns, "param", "get", "score_threshold", "cameras", "backend")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == ["score_threshold: 0.0", "cameras: ['']", "backend: torch"]
    try:
        done = ctl(env, ns, "param", "set", "score_threshold", "1", "overlay_alpha", "0.25")  # "1": a double
        assert done.returncode == 0, done.stderr
        assert probe.wait_until(lambda: any(abs(m.threshold - 1.0) < 1e-6 for m in probe.get("label_info")), 10.0)
        assert ctl(env, ns, "param", "get", "overlay_alpha").stdout.strip() == "overlay_alpha: 0.25"
        refused = ctl(env, ns, "param", "set", "score_threshold", "-0.5")
        assert refused.returncode == 1 and "score_threshold: refused:" in refused.stderr
        assert "-0.5" in refused.stderr and "out of range" in refused.stderr
        unknown = ctl(env, ns, "param", "get", "no_such_parameter", "backend")
        assert unknown.returncode == 1 and "no_such_parameter: (not declared" in unknown.stderr
        assert unknown.stdout.strip() == "backend: torch"
        unknown = ctl(env, ns, "param", "set", "no_such_parameter", "1")
        assert unknown.returncode == 1 and "has no parameter 'no_such_parameter'" in unknown.stderr
    finally:
        assert ctl(env, ns, "param", "set", "score_threshold", "0.0", "overlay_alpha", "0.5").returncode == 0


def test_vocabulary_set_swaps_the_classes_with_the_names_colours(system):
    env, ns, probe, node, checkpoint = system
    probe.subscribe("mask/color", Image)
    names = ["road", "automobile", "forklift"]
    done = ctl(env, ns, "vocabulary", "set", *names, "--colors", "forklift=#ff8000")
    try:
        assert done.returncode == 0 and "3 classes" in done.stdout, done.stdout + done.stderr
        assert probe.wait_until(lambda: [c.class_name for m in probe.get("label_info")[-1:] for c in m.class_map]
                                == names, 30.0)
        # The node paints with the names' own colours and the one chosen (black: unknown).
        probe.clear()
        camera = start_camera(env.env, f"{ns}/camera/image_raw", "--encodings", "rgb8", "--frames-per-encoding", "10",
                              "--width", str(WIDTH), "--height", str(HEIGHT))
        assert camera.wait(90) == 0, camera.output()
        assert probe.wait_until(lambda: probe.get("mask/color"), 20.0), node.output()
        palette = {tuple(c) for c in palette_for_names(names, {"forklift": (255, 128, 0)}).tolist()}
        assert (128, 64, 128) in palette and (255, 128, 0) in palette
        for msg in probe.get("mask/color"):
            colours = {tuple(c) for c in np.asarray(msg.data, np.uint8).reshape(-1, 3).tolist()}
            assert colours <= palette | {(0, 0, 0)}, colours - palette
        refused = ctl(env, ns, "vocabulary", "set", "road", "road")
        assert refused.returncode == 1 and "duplicate class names" in refused.stdout
    finally:
        assert ctl(env, ns, "vocabulary", "set", *LOCAL_NAMES).returncode == 0


def test_record_writes_a_bag_casseg_replay_reads(system, tmp_path):
    env, ns, probe, node, checkpoint = system
    camera_ns = f"{ns}/rec_camera"
    out = tmp_path / "camera_bag"
    recorder = subprocess.Popen([sys.executable, "-m", "casseg_ros.ctl_cli", "--timeout", "120", "record",
                                 f"{camera_ns}/image_raw", "-o", str(out), "--frames", "6"],
                                env=env.env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    camera = start_rgbd_camera(env.env, camera_ns, "--frames", "6", "--period", "0.2")
    try:
        output, _ = recorder.communicate(timeout=240)
        assert recorder.returncode == 0, output + camera.output()
        assert camera.wait(60) == 0, camera.output()
    finally:
        recorder.kill()
        camera.stop()
    topics = [topic for topic, _, _ in read_bag_messages(out)]
    # the camera's image and, found in the graph, its camera_info and registered depth
    assert topics.count(f"{camera_ns}/image_raw") >= 6
    assert topics.count(f"{camera_ns}/camera_info") >= 6 and topics.count(f"{camera_ns}/depth/image_raw") >= 6
    replay_out = tmp_path / "replay"
    assert replay_main([str(out), "--model", checkpoint, "--out", str(replay_out), "--no-progress"]) == 0
    metrics = json.loads((replay_out / "metrics.json").read_text())
    assert metrics["frames_processed"] >= 6 and metrics["image_topic"] == f"{camera_ns}/image_raw"
    assert metrics["frames_without_depth"] == {}  # replay paired the recorded depth with the images
    assert np.isfinite(metrics["latency_ms"]["total"]["p50"])


def test_a_missing_node_is_a_clear_error(ros_env, tmp_path):
    gone = ctl(ros_env, ros_env.namespace, "--timeout", "2", "lifecycle", "get")
    assert gone.returncode == 2 and "not found in 2 s" in gone.stderr and "Traceback" not in gone.stderr


@pytest.mark.parametrize("offered, expected", [
    ([ReliabilityPolicy.RELIABLE, ReliabilityPolicy.RELIABLE], ReliabilityPolicy.RELIABLE),
    ([ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT], ReliabilityPolicy.BEST_EFFORT),
    ([ReliabilityPolicy.BEST_EFFORT], ReliabilityPolicy.BEST_EFFORT),
    ([], ReliabilityPolicy.BEST_EFFORT),
])
def test_record_subscribes_with_the_reliability_every_publisher_offers(offered, expected):
    # A best-effort reader of a reliable camera loses frames under load (a fresh-clone CI run's
    # `record --frames 6` then waited for frames the camera never sent again).
    publishers = [SimpleNamespace(qos_profile=SimpleNamespace(reliability=r)) for r in offered]
    node = SimpleNamespace(get_publishers_info_by_topic=lambda topic: publishers)
    qos = record_qos(node, "/camera/image_raw")
    assert qos.reliability == expected and qos.depth >= 10
