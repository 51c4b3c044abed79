"""Standard interfaces and 3D over real DDS: an RGB-D camera process, the node, this consumer.

The camera (test/ros_helpers/rgbd_camera.py) publishes image + camera_info + a registered depth
image with identical stamps; the depth of frame i is a fronto-parallel plane at plane_depth(i)
with an invalid band at the top. This process receives with the standard types (vision_msgs,
sensor_msgs) and checks what a Nav2 semantic layer, RViz or Foxglove would rely on.
"""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from casseg_ros.model.checkpoint import read_vocabulary, save_checkpoint
from casseg_ros.perception.depth import POINT_DTYPE
from casseg_ros.ros.messages import scene_graph_from_msg
from model_factory import tiny_model
from ros_helpers.harness import Probe, header_key, node_and_probe, start_rgbd_camera
from ros_helpers.rgbd_camera import FX, FY, INVALID_ROWS, plane_depth

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NUM_CLASSES = 5
HEIGHT, WIDTH = 64, 128
CX, CY = (WIDTH - 1) / 2.0, (HEIGHT - 1) / 2.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", tiny_model(NUM_CLASSES)))


@pytest.fixture(scope="module")
def system(ros_env_module, checkpoint):
    """(env, camera namespace, probe, node) with the node active and every output subscribed."""
    env, ns = ros_env_module, ros_env_module.namespace
    camera = f"{ns}/camera"
    with node_and_probe(env.env, ns, f"{camera}/image_raw", dict(
            model_path=checkpoint, input_height=HEIGHT, input_width=WIDTH, min_instance_area=4,
            qos_reliability="reliable", publish_confidence=True, sync_wait_s=0.3),
            remaps={"camera_info": f"{camera}/camera_info", "depth/image": f"{camera}/depth/image_raw"},
            probe_name="interfaces_probe") as (node, probe):
        for topic, msg_type in (("mask/color", Image), ("camera_info", CameraInfo), ("points", PointCloud2)):
            probe.subscribe(topic, msg_type)
        probe.wait_for_state("active", 120.0, alive=node.check_alive)
        yield env, camera, probe, node


def _sent(camera) -> list[tuple[str, int, int]]:
    return [(fid, int(sec), int(nsec)) for _, fid, sec, nsec in
            (line.split() for line in camera.output().splitlines() if line.startswith("SENT "))]


def _run_camera(env, namespace: str, *args: str) -> list[tuple[str, int, int]]:
    camera = start_rgbd_camera(env.env, namespace, *args)
    assert camera.wait(120) == 0, camera.output()
    return _sent(camera)


def _by_key(probe: Probe, topic: str) -> dict:
    return {header_key(m.header): m for m in probe.get(topic)}


def _diagnostics(probe: Probe) -> dict[str, str]:
    return probe.get("diagnostics")[-1] if probe.get("diagnostics") else {}


def test_label_info_camera_info_colour_mask_points_and_3d(system, checkpoint):
    env, camera, probe, node = system
    probe.clear()
    sent = _run_camera(env, camera, "--frames", "4", "--width", str(WIDTH), "--height", str(HEIGHT))
    keys = set(sent)
    # With a depth publisher matched, even the first frame waits (sync_wait_s) for its depth.
    assert probe.wait_until(lambda: keys <= set(_by_key(probe, "points")), 30.0), node.output()
    assert probe.wait_until(lambda: keys <= set(_by_key(probe, "scene_graph")), 30.0), node.output()
    masks, colours = _by_key(probe, "mask"), _by_key(probe, "mask/color")
    infos, clouds, graphs = _by_key(probe, "camera_info"), _by_key(probe, "points"), _by_key(probe, "scene_graph")
    palette = read_vocabulary(checkpoint).palette
    for key in sorted(keys):
        index = int(key[0].split("_")[1])
        mask = np.frombuffer(bytes(masks[key].data), np.uint8).reshape(HEIGHT, WIDTH)
        # camera_info echoed under the mask's header, with the camera's intrinsics
        assert key in infos and list(infos[key].k) == [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
        # colour mask = palette[mask]
        colour = np.frombuffer(bytes(colours[key].data), np.uint8).reshape(HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(colour, palette[mask])
        # organised cloud: every valid point back-projects to its own pixel and carries its label
        cloud = clouds[key]
        assert (cloud.height, cloud.width, cloud.point_step) == (HEIGHT, WIDTH, POINT_DTYPE.itemsize)
        points = np.frombuffer(bytes(cloud.data), POINT_DTYPE).reshape(HEIGHT, WIDTH)
        valid = np.isfinite(points["z"])
        assert not valid[:INVALID_ROWS].any() and valid[INVALID_ROWS:].all()
        rows, cols = np.nonzero(valid)
        v = points["y"][valid] * FY / points["z"][valid] + CY
        u = points["x"][valid] * FX / points["z"][valid] + CX
        assert np.abs(u - cols).max() < 0.5 and np.abs(v - rows).max() < 0.5
        np.testing.assert_allclose(points["z"][valid], plane_depth(index), atol=1e-3)
        np.testing.assert_array_equal(points["label"], mask)
        # 3D scene graph: the plane's depth, centroids back-projected within 1 cm
        graph = scene_graph_from_msg(graphs[key])
        placed = np.isfinite(graph.centroids_3d).all(axis=1)
        assert placed.any(), "no scene-graph object got a 3D centroid"
        z = plane_depth(index)
        where, pixel = graph.centroids_3d[placed].astype(np.float64), graph.centroids[placed].astype(np.float64)
        assert np.abs(where[:, 2] - z).max() < 0.01
        assert np.abs(where[:, 0] - (pixel[:, 0] - CX) * z / FX).max() < 0.01
        assert np.abs(where[:, 1] - (pixel[:, 1] - CY) * z / FY).max() < 0.01
        both = placed[graph.sources] & placed[graph.targets]
        assert np.isfinite(graph.distances_3d[both]).all()
    # A consumer that joins late (Nav2's layer: reliable, transient local) still gets label_info.
    probe.subscribe_label_info()
    assert probe.wait_until(lambda: probe.get("label_info"), 10.0), "late subscriber got no vision_msgs/LabelInfo"
    info = probe.get("label_info")[-1]
    assert [(c.class_id, c.class_name) for c in info.class_map] == \
        list(enumerate(read_vocabulary(checkpoint).names))


def test_bad_depth_never_stops_the_2d_outputs(system):
    env, camera, probe, node = system
    before = int(_diagnostics(probe).get("depth_problems", 0))
    probe.clear()
    sent = _run_camera(env, camera, "--frames", "1", "--bad-depth", "--width", str(WIDTH), "--height", str(HEIGHT))
    bad = [k for k in sent if k[0].startswith("bad_")]
    good = [k for k in sent if k[0].startswith("good_after_")]
    assert len(bad) == len(good) == 4
    assert probe.wait_until(lambda: set(sent) <= set(_by_key(probe, "mask")), 30.0), node.output()
    clouds, graphs = _by_key(probe, "points"), _by_key(probe, "scene_graph")
    for key in bad:  # mask, scene graph and camera_info, no cloud and no 3D
        assert key in graphs and key not in clouds and not np.isfinite(np.asarray(graphs[key].centroids_3d)).any(), key
    for key in good:  # the next good frame is fully processed, 3D included
        assert key in clouds and np.isfinite(np.asarray(graphs[key].centroids_3d)).any(), key
    assert probe.wait_until(lambda: int(_diagnostics(probe).get("depth_problems", 0)) - before == 4, 5.0), \
        _diagnostics(probe)


def test_compressed_input_under_image_transport_naming(system):
    env, camera, probe, node = system
    assert probe.change_state("deactivate")
    assert probe.set_parameters(image_transport="compressed") == [(True, "")]
    assert probe.change_state("activate")
    try:
        probe.clear()
        sent = _run_camera(env, camera, "--frames", "3", "--compressed", "--width", str(WIDTH),
                           "--height", str(HEIGHT))
        assert probe.wait_until(lambda: set(sent) <= set(_by_key(probe, "points")), 30.0), node.output()
    finally:  # back to raw for the other tests; a failure above still reports first
        restored = (probe.change_state("deactivate") and probe.set_parameters(image_transport="raw") == [(True, "")]
                    and probe.change_state("activate"))
    assert restored
