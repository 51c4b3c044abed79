"""The demo and the live replay: real node, player and recorder processes over loopback DDS."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from sensor_msgs.msg import Image

from replay_helpers import make_demo_bag_module, tiny_context_checkpoint, write_bag
from signal_helpers import sigint_disposition

from casseg_ros.demo import checks as demo_checks
from casseg_ros.demo import cli as demo_cli
from casseg_ros.processes.children import ChildProcesses, node_command, player_command, recorder_command
from casseg_ros.processes.readiness import GraphWatcher, wait_for
from casseg_ros.replay.bag import POINT_CLOUD_TYPE, read_bag_messages, typestore
from casseg_ros.replay.live.recording import read_recording
from casseg_ros.replay.live.session import play_and_record, start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # node, player, recorder processes


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return tiny_context_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def demo_bag(tmp_path_factory) -> Path:
    return make_demo_bag_module().build(tmp_path_factory.mktemp("bag") / "demo.mcap", frames=20, height=64,
                                        width=128, rate_hz=10.0)


def test_demo_runs_the_live_node_and_writes_results(tmp_path, tiny_ckpt, demo_bag):
    out = tmp_path / "demo"
    t0 = time.monotonic()
    assert demo_cli.main(["--out", str(out), "--bag", str(demo_bag), "--model", str(tiny_ckpt), "--timeout", "120"]) == 0
    wall = time.monotonic() - t0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_published"] == 20
    # latest-frame-wins may drop frames on a loaded machine, but most must come through
    assert 10 <= m["frames_received"] <= 20 and m["dropped"] == 20 - m["frames_received"]
    lat = m["latency_ms"]["e2e (camera stamp -> mask received)"]
    assert 0 < lat["p50"] <= lat["p99"] < 5000
    assert m["iou"]["frames"] == m["frames_received"] and 0 <= m["iou"]["miou"] <= 100
    assert m["node_diagnostics"]["inputs_rejected"] == "0"
    graphs = json.loads((out / "scene_graphs.json").read_text())["frames"]
    # replay's schema (scene_graph_record): frame index and stamp as in the recording
    assert len(graphs) == m["frames_received"]
    assert [g["frame"] for g in graphs] == sorted({g["frame"] for g in graphs}) and set(graphs[0]) == {
        "frame", "stamp_ns", "frame_id", "format_version", "predicate_names", "objects", "relations"}
    assert graphs[0]["format_version"] == 2 and set(graphs[0]["objects"]["labels"]) <= set(m["classes"])
    recorded = sorted(demo_checks._read_input_bag(demo_bag).images)  # the bag's image stamps
    assert all(g["stamp_ns"] == recorded[g["frame"]] for g in graphs)
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 8
    assert cv2.imread(str(overlays[0])).shape == (64, 128, 3)  # the node's own ~/overlay output
    # camera | overlay | colour mask | ground truth side by side (at least at their own size), legend below
    height, width, _ = cv2.imread(str(out / "figures" / overlays[0].name)).shape
    assert width >= 4 * 128 and height > 64 + 20
    report = (out / "report.md").read_text()
    assert "mIoU" in report and "figures/birds_eye.png" in report and (out / "figures" / "birds_eye.png").is_file()
    assert (out / "recording" / "metadata.yaml").is_file()
    # the standard outputs and 3D, each checked against the camera's inputs
    checks = m["output_checks"]
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["camera_info"]["with_camera_info"] == checks["camera_info"]["masks"] == m["frames_received"]
    assert checks["mask/color"]["frames"] >= 10 and checks["points"]["frames"] >= 10
    assert checks["points"]["reprojection_max_px"] <= 0.5 and checks["points"]["max_abs_z_error_m"] < 1e-6
    assert m["graph_3d"]["instances_with_3d_centroid"] > 0
    placed = [where for g in graphs for where in g["objects"]["centroids_3d"] if where is not None]
    assert placed and all(0 < where[2] <= demo_checks.DEPTH_MAX_RANGE_M for where in placed)
    print(f"demo wall time {wall:.1f} s")


def _cloud_bag(path, stamp_ns: int, xyz: np.ndarray, label: np.ndarray):
    """A recording with one ~/points message (x y z float32, label uint16) of `stamp_ns`."""
    T = typestore().types
    field = T["sensor_msgs/msg/PointField"]
    h, w = label.shape
    points = np.zeros((h, w), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u2"), ("_", "<u2")]))
    points["x"], points["y"], points["z"], points["label"] = xyz[..., 0], xyz[..., 1], xyz[..., 2], label
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                                      frame_id="cam")
    msg = T[POINT_CLOUD_TYPE](header=header, height=h, width=w, fields=[
        field(name=n, offset=o, datatype=d, count=1) for n, o, d in (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("label", 12, 4))],
        is_bigendian=False, point_step=16, row_step=16 * w, data=points.view(np.uint8).reshape(-1), is_dense=False)
    return write_bag(path, [(f"{demo_checks.NODE}/points", POINT_CLOUD_TYPE, msg)])


def test_output_checks_pass_on_consistent_outputs_and_fail_on_wrong_ones(tmp_path):
    h, w, stamp = 6, 8, 5_000_000_000
    k = (10.0, 0.0, 3.5, 0.0, 10.0, 2.5, 0.0, 0.0, 1.0)
    depth = np.full((h, w), 4.0, np.float32)
    depth[0] = np.nan  # invalid row
    mask = np.random.default_rng(0).integers(0, 3, (h, w)).astype(np.uint8)
    palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    inputs = demo_checks.InputBag(images={stamp: np.zeros((h, w, 3), np.uint8)}, camera_k={stamp: k}, depth_m={stamp: depth})
    outputs = demo_checks.NodeOutputs(masks={stamp: mask}, color_masks={stamp: palette[mask]}, camera_k={stamp: k})
    assert demo_checks._check_camera_info(outputs, inputs)["ok"] and demo_checks._check_color_masks(outputs, palette)["ok"]
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    xyz = np.stack([(u - 3.5) * depth / 10, (v - 2.5) * depth / 10, depth], -1)
    good = demo_checks._check_points(_cloud_bag(tmp_path / "good", stamp, xyz, mask), 0, outputs, inputs, stamp)
    assert good.summary["ok"] and good.summary["pixel_aligned"] == 1 and good.sample_stamp == stamp

    assert not demo_checks._check_camera_info(demo_checks.NodeOutputs(masks={stamp: mask}), inputs)["ok"]  # none echoed
    other_k = demo_checks.NodeOutputs(masks={stamp: mask}, camera_k={stamp: (11.0, *k[1:])})
    assert not demo_checks._check_camera_info(other_k, inputs)["ok"]
    wrong_colour = demo_checks.NodeOutputs(masks={stamp: mask}, color_masks={stamp: palette[(mask + 1) % 3]})
    assert not demo_checks._check_color_masks(wrong_colour, palette)["ok"]
    shifted = np.roll(xyz, 1, axis=1)  # each point one pixel to the right of where it projects
    assert not demo_checks._check_points(_cloud_bag(tmp_path / "shifted", stamp, shifted, mask), 0, outputs, inputs,
                                  None).summary["ok"]
    relabelled = demo_checks._check_points(_cloud_bag(tmp_path / "labels", stamp, xyz, (mask + 1) % 3), 0, outputs,
                                    inputs, None)
    assert not relabelled.summary["ok"]


def test_demo_with_corrupt_weights_fails_with_clear_error(tmp_path, tiny_ckpt, demo_bag, capsys):
    weights = tmp_path / "corrupt.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json" + tiny_ckpt.read_bytes()[100:2000])
    t0 = time.monotonic()
    code = demo_cli.main(["--out", str(tmp_path / "demo"), "--bag", str(demo_bag), "--model", str(weights),
                      "--timeout", "90"])
    err = capsys.readouterr().err
    assert code == 1
    assert "node process exited" in err and "configure failed" in err, err
    assert time.monotonic() - t0 < 60  # fails at start, not at the timeout


def test_demo_missing_inputs(tmp_path, tiny_ckpt, demo_bag, capsys):
    assert demo_cli.main(["--out", str(tmp_path), "--bag", str(tmp_path / "none.mcap"), "--model", str(tiny_ckpt)]) == 1
    assert "not found" in capsys.readouterr().err


def test_camera_killed_mid_stream_and_restarted_node_recovers(tmp_path, tiny_ckpt, demo_bag, ros_env):
    recording = tmp_path / "rec"
    camera = ("/camera/image_raw",)

    def player() -> list[str]:
        return player_command(demo_bag, *camera, "--loop-frames", "100000", "--wait-timeout", "90")

    with ChildProcesses(tmp_path / "logs", ros_env.env) as children, \
            GraphWatcher(ros_env.domain_id, ros_env.env) as graph:
        node = start_node(children, graph, node_command(tiny_ckpt, *camera), "/casseg_ros", timeout=90)
        children.start("recorder", recorder_command(recording, "/casseg_ros", "rec", ["--no-overlay"]))
        graph.wait_for_publisher("/rec/ready", 60, node="/rec", alive=children.check_alive)
        masks = graph.stamp_log("/casseg_ros/mask", Image)
        first = children.start("camera1", player())
        wait_for(lambda: masks.count >= 10, 90, "10 masks of the first camera", children.check_alive)
        os.killpg(first.pid, signal.SIGKILL)  # the camera driver crashes mid-stream
        first.wait(10)
        killed_ns = time.time_ns()
        seen = masks.count
        children.start("camera2", player())
        wait_for(lambda: masks.count >= seen + 10, 90, "10 masks after the camera restart",
                 lambda: children.check_alive("node", "recorder", "camera2"))
        children.stop("camera2")
        assert node.running(), "node died"
        assert children.stop("recorder") == 0
    rec = read_recording(recording)
    before = int((rec.mask_stamps_ns < killed_ns).sum())
    after = int((rec.mask_stamps_ns > killed_ns).sum())
    assert before >= 10, before
    assert after >= 10, f"node did not resume after the camera restart ({after} masks)"
    assert rec.last_diagnostics.get("inference_errors") == "0"


def test_paced_player_gets_one_output_per_frame_with_the_recorded_stamps(tmp_path, tiny_ckpt, demo_bag, ros_env):
    """Back to back, the next frame only after the previous output: nothing dropped, every output
    carries its frame's recorded header (what a node-vs-replay comparison needs)."""
    recorded = sorted(demo_checks._read_input_bag(demo_bag).images)
    with ChildProcesses(tmp_path / "logs", ros_env.env) as children, \
            GraphWatcher(ros_env.domain_id, ros_env.env) as graph:
        start_node(children, graph, node_command(tiny_ckpt, "/camera/image_raw", params={
            "qos_reliability": "reliable"}), "/casseg_ros", timeout=90)
        run = play_and_record(children, graph, "/casseg_ros", "/camera/image_raw", demo_bag, tmp_path / "run",
                              ["--paced-by", "/casseg_ros/scene_graph", "--keep-stamps", "--reliability", "reliable"],
                              overlay=False, name="paced", timeout=120)
    assert run.last_output_arrived and run.info["published"] == 20 and run.info["frames_without_output"] == 0
    rec = read_recording(run.recording)
    assert sorted(rec.mask_stamps_ns.tolist()) == recorded  # one mask per frame, none dropped, none twice
    assert rec.messages["/casseg_ros/camera_info"] == 20  # the player sent each frame's camera_info with it
    assert rec.last_diagnostics["dropped_in_node"] == "0"


def test_realtime_mode_measures_the_live_node(tmp_path, tiny_ckpt, demo_bag):
    from casseg_ros.replay.cli import main as replay_main

    out = tmp_path / "rt"
    # the per-frame settings reach the spawned node as its parameters (tracking: track states in the graphs)
    assert replay_main([str(demo_bag), "--realtime", "--spawn-node", "--model", str(tiny_ckpt), "--out", str(out),
                        "--throughput-frames", "600", "--tracking", "--temporal-smoothing", "0.5",
                        "--min-instance-area", "16"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rec = m["at_recorded_rate"]
    graphs = [msg for _, _, msg in read_bag_messages(rec["recording"], ["/casseg_ros/scene_graph"])]
    assert sum(len(g.ids) for g in graphs) > 0
    assert all(len(g.track_states) == len(g.ids) and set(g.track_states.tolist()) <= {1, 2} for g in graphs)
    assert rec["frames_published"] == 20 and rec["frames_received"] >= 10
    assert rec["rate_hz"] == pytest.approx(10.0, rel=0.1)
    assert rec["latency_ms"]["p99"] > 0
    thr = m["max_throughput"]
    assert thr["frames_published"] == 600 and thr["frames_received"] > 5 and thr["output_fps"] > 1
    assert (out / "report.md").is_file()


def test_demo_ctrl_c_stops_every_child(tmp_path, tiny_ckpt, demo_bag, ros_env):
    slow_bag = make_demo_bag_module().build(tmp_path / "slow.mcap", frames=200, height=64, width=128, rate_hz=10.0)
    # Started as a background job or a CI runner starts it, with SIGINT ignored: Ctrl-C must still work.
    with sigint_disposition(signal.SIG_IGN):
        proc = subprocess.Popen([sys.executable, "-m", "casseg_ros.demo", "--out", str(tmp_path / "demo"), "--bag",
                                 str(slow_bag), "--model", str(tiny_ckpt)], env=ros_env.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def started() -> list[psutil.Process]:
        children = psutil.Process(proc.pid).children(recursive=True)
        try:
            commands = " ".join(" ".join(c.cmdline()) for c in children)
        except psutil.NoSuchProcess:  # one just exited (re-exec): look again
            return []
        running = all(module in commands for module in ("ros.node_main", "replay.live.recorder", "replay.live.player"))
        return children if running else []

    # The demo prints a few lines only: its pipe cannot fill while we wait (read at communicate()).
    children = wait_for(started, 120, "the demo's node, recorder and player")
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"children left running: {alive}"
