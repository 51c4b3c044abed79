"""The demo and the live replay: real node, player and recorder processes over loopback DDS."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from replay_helpers import make_demo_bag_module, tiny_context_checkpoint

from casseg_ros import demo
from casseg_ros.replay.live import ChildProcesses, node_command, read_recording

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
    assert demo.main(["--out", str(out), "--bag", str(demo_bag), "--model", str(tiny_ckpt), "--timeout", "120"]) == 0
    wall = time.monotonic() - t0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_published"] == 20
    # latest-frame-wins may drop frames on a loaded machine, but most must come through
    assert 10 <= m["frames_received"] <= 20 and m["dropped"] == 20 - m["frames_received"]
    lat = m["latency_ms"]["e2e (camera stamp -> mask received)"]
    assert 0 < lat["p50"] <= lat["p99"] < 5000
    assert m["iou"]["frames"] == m["frames_received"] and 0 <= m["iou"]["miou"] <= 1
    assert m["node_diagnostics"]["inputs_rejected"] == "0"
    graphs = json.loads((out / "scene_graphs.json").read_text())["frames"]
    assert len(graphs) == m["frames_received"] and all("nodes" in g and "edges" in g for g in graphs)
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 8
    import cv2

    assert cv2.imread(str(overlays[0])).shape == (64, 128, 3)  # the node's own ~/overlay output
    assert "mIoU" in (out / "report.md").read_text()
    assert (out / "recording" / "metadata.yaml").is_file()
    print(f"demo wall time {wall:.1f} s")


def test_demo_with_corrupt_weights_fails_with_clear_error(tmp_path, tiny_ckpt, demo_bag, capsys):
    weights = tmp_path / "corrupt.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json" + tiny_ckpt.read_bytes()[100:2000])
    t0 = time.monotonic()
    code = demo.main(["--out", str(tmp_path / "demo"), "--bag", str(demo_bag), "--model", str(weights),
                      "--timeout", "90"])
    err = capsys.readouterr().err
    assert code == 1
    assert "node process exited" in err and "configure failed" in err, err
    assert time.monotonic() - t0 < 60  # fails at start, not at the timeout


def test_demo_missing_inputs(tmp_path, tiny_ckpt, demo_bag, capsys):
    assert demo.main(["--out", str(tmp_path), "--bag", str(tmp_path / "none.mcap"), "--model", str(tiny_ckpt)]) == 1
    assert "not found" in capsys.readouterr().err


def test_camera_killed_mid_stream_and_restarted_node_recovers(tmp_path, tiny_ckpt, demo_bag, ros_env):
    py = sys.executable
    recording = tmp_path / "rec"

    def player(name: str) -> list[str]:
        return [py, "-m", "casseg_ros.replay.live", "player", "--bag", str(demo_bag), "--topic", "/camera/image_raw",
                "--loop-frames", "100000", "--offset-file", str(tmp_path / f"{name}.json"),
                "--wait-subscribers", "/casseg_ros/mask", "--wait-timeout", "90"]

    with ChildProcesses(tmp_path / "logs", ros_env.env) as children:
        node = children.start("node", node_command(tiny_ckpt, "/camera/image_raw"))
        children.start("recorder", [py, "-m", "casseg_ros.replay.live", "recorder", "--out", str(recording),
                                    "--no-overlay"])
        first = children.start("camera1", player("camera1"))
        deadline = time.monotonic() + 90
        while not (tmp_path / "camera1.json").exists():
            children.check_alive("node", "recorder", "camera1")
            assert time.monotonic() < deadline, children.log_tail("node")
            time.sleep(0.2)
        time.sleep(2.0)
        os.killpg(first.pid, signal.SIGKILL)  # the camera driver crashes mid-stream
        first.wait(10)
        killed_ns = time.time_ns()
        time.sleep(1.0)
        children.start("camera2", player("camera2"))
        deadline = time.monotonic() + 60
        while not (tmp_path / "camera2.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2.0)
        children.stop("camera2")
        time.sleep(1.0)
        assert node.poll() is None, "node died"
        assert children.stop("recorder") == 0
    rec = read_recording(recording)
    before = int((rec.mask_stamps_ns < killed_ns).sum())
    after = int((rec.mask_stamps_ns > killed_ns).sum())
    assert before >= 8, before
    assert after >= 8, f"node did not resume after the camera restart ({after} masks)"
    assert rec.last_diagnostics.get("inference_errors") == "0"


def test_realtime_mode_measures_the_live_node(tmp_path, tiny_ckpt, demo_bag):
    from casseg_ros.replay.cli import main as replay_main

    out = tmp_path / "rt"
    assert replay_main([str(demo_bag), "--realtime", "--spawn-node", "--model", str(tiny_ckpt), "--out", str(out),
                        "--throughput-frames", "600"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rec = m["at_recorded_rate"]
    assert rec["frames_published"] == 20 and rec["frames_received"] >= 10
    assert rec["rate_hz"] == pytest.approx(10.0, rel=0.1)
    assert rec["latency_ms"]["p99"] > 0
    thr = m["max_throughput"]
    assert thr["frames_published"] == 600 and thr["frames_received"] > 5 and thr["output_fps"] > 1
    assert (out / "report.md").is_file()


def test_demo_ctrl_c_stops_every_child(tmp_path, tiny_ckpt, demo_bag):
    import subprocess

    import psutil

    from casseg_ros.replay.live import loopback_env, random_domain_id

    slow_bag = make_demo_bag_module().build(tmp_path / "slow.mcap", frames=200, height=64, width=128, rate_hz=10.0)
    proc = subprocess.Popen([sys.executable, "-m", "casseg_ros.demo", "--out", str(tmp_path / "demo"), "--bag",
                             str(slow_bag), "--model", str(tiny_ckpt)], env=loopback_env(random_domain_id()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list = []
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        if "playing the recording" in line:
            break
        assert time.monotonic() < deadline
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 3  # node, recorder, player (and their re-exec'd interpreters)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"children left running: {alive}"
