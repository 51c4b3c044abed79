"""Several cameras, one model, over real DDS: three camera processes of different sizes, one node.

Every camera's outputs appear on its own topics (~/<camera>/...) with that camera's header and
size; frames are batched through the one backend; a camera that stops does not stall the others;
diagnostics report per camera and for the shared backend.
"""
from __future__ import annotations

import threading

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from casseg_ros.model.checkpoint import save_checkpoint
from model_factory import tiny_model
from ros_helpers.harness import node_and_probe, sent_headers, start_camera

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAMERAS = {"front": (64, 128), "left": (96, 160), "rear": (48, 80)}  # name -> (height, width)
MODEL_SIZE = (64, 128)


@pytest.fixture(scope="module")
def system(ros_env_module, tmp_path_factory):
    env, ns = ros_env_module, ros_env_module.namespace
    checkpoint = str(save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", tiny_model(5)))
    statuses: dict[str, dict[str, str]] = {}
    lock = threading.Lock()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        with lock:
            for status in msg.status:
                statuses[status.name] = {kv.key: kv.value for kv in status.values}
    with node_and_probe(env.env, ns, f"{ns}/unused/image", dict(
            model_path=checkpoint, input_height=MODEL_SIZE[0], input_width=MODEL_SIZE[1], min_instance_area=4,
            qos_reliability="reliable", cameras=list(CAMERAS), max_batch=3),
            probe_name="cameras_probe") as (node, probe):
        for camera in CAMERAS:
            probe.subscribe(f"{camera}/mask", Image)
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
        probe.wait_for_state("active", 120.0, alive=node.check_alive)
        yield env, ns, probe, node, statuses


def test_each_camera_on_its_own_topics_and_a_stopped_camera_stalls_none(system):
    env, ns, probe, node, statuses = system
    # front runs long enough past the start-up frames that wait for a camera_info/depth (StampCache)
    durations = {"front": 4.0, "left": 9.0, "rear": 9.0}
    cameras = {name: start_camera(env.env, f"{ns}/{name}/image", "--duration", str(durations[name]), "--rate", "15",
                                  "--height", str(h), "--width", str(w))
               for name, (h, w) in CAMERAS.items()}
    for name, camera in cameras.items():
        assert camera.wait(120) == 0, camera.output()
    sent = {name: {(sec, nsec) for _, _, sec, nsec in sent_headers(camera)} for name, camera in cameras.items()}
    last_left = max(sent["left"])
    assert probe.wait_until(lambda: any((m.header.stamp.sec, m.header.stamp.nanosec) == last_left
                                        for m in probe.get("left/mask")), 30.0), node.output()
    front_end_ns = max(s * 10**9 + n for s, n in sent["front"])
    for name, (h, w) in CAMERAS.items():
        masks = probe.get(f"{name}/mask")
        assert len(masks) >= 10, (name, len(masks))
        for mask in masks:  # that camera's header and size, nothing from another camera
            assert (mask.header.stamp.sec, mask.header.stamp.nanosec) in sent[name], name
            assert (mask.height, mask.width, mask.header.frame_id) == (h, w, "cam_stream"), name
        if name != "front":  # kept being served after the front camera stopped
            later = [m for m in masks if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec > front_end_ns + 10**9]
            assert len(later) >= 10, (name, len(later))

    fqn = f"{ns}/casseg_ros"
    assert probe.wait_until(lambda: all(f"{fqn}: segmentation {c}" in statuses for c in CAMERAS)
                            and f"{fqn}: backend" in statuses, 10.0), sorted(statuses)
    for name in CAMERAS:  # diagnostics come at 1 Hz: wait for the one that counts the last masks
        assert probe.wait_until(lambda: int(statuses[f"{fqn}: segmentation {name}"]["frames_processed"])
                                >= len(probe.get(f"{name}/mask")), 5.0), (name, statuses)
    backend = statuses[f"{fqn}: backend"]
    # One backend served all three; whether frames waited for each other (batch > 1) depends on the
    # model's speed against the cameras' rates (test_ros_node_unit checks the batching itself).
    assert int(backend["batches"]) > 0 and backend["lifecycle_state"] == "active", backend
