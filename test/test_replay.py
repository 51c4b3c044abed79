"""casseg-replay offline: outputs, metrics, bad inputs through a bag, damaged bags, bad weights."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from file_modes import file_modes, umask
from replay_helpers import (
    jpeg, make_demo_bag_module, png, ros_compressed, ros_image, scene_pixels, tiny_context_checkpoint, write_bag,
)

from casseg_ros.model.checkpoint import read_vocabulary
from casseg_ros.replay.bag import typestore
from casseg_ros.replay.cli import main as replay_main
from casseg_ros.replay.metrics import IoUEvaluator, label_to_ids
from casseg_ros.replay.report import legend_entries


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return tiny_context_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> Path:
    """12 context-scenes frames 48x96 with labels + label info (the demo bag's layout)."""
    out = tmp_path_factory.mktemp("bag") / "small.mcap"
    return make_demo_bag_module().build(out, frames=12, height=48, width=96, rate_hz=10.0)


def _read(path: Path):
    from rosbags.rosbag2 import Reader

    store = typestore()
    with Reader(path) as reader:
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]


@pytest.mark.slow
def test_offline_replay_writes_bag_metrics_and_report(tmp_path, tiny_ckpt, small_bag):
    out = tmp_path / "out"
    assert replay_main([str(small_bag), "--model", str(tiny_ckpt), "--out", str(out), "--no-progress",
                        "--products", "overlay,color_mask,confidence"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["frames_processed"] == 12 and metrics["frames_skipped"] == 0
    assert metrics["label_topic"] == "/camera/labels" and metrics["image_topic"] == "/camera/image_raw"
    for key in ("p50", "p90", "p99"):
        assert metrics["latency_ms"]["total"][key] > 0
    assert metrics["fps_pipeline"] > 0
    iou = metrics["iou"]
    assert iou["frames"] == 12 and 0.0 <= iou["miou"] <= 100.0 and iou["unit"] == "percent"
    assert set(iou["per_class_iou"]) == set(metrics["classes"])

    # Output bag: typed topics, stamped like the inputs, readable by rosbags ...
    inputs = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: t for topic, t, m in _read(small_bag)
              if topic == "/camera/image_raw"}
    outputs = _read(out / "bag")
    masks = [(t, m) for topic, t, m in outputs if topic == "/casseg_ros/mask"]
    graphs = [m for topic, _, m in outputs if topic == "/casseg_ros/scene_graph"]
    assert len(masks) == 12 and len(graphs) == 12
    for log_time, mask in masks:
        stamp = mask.header.stamp.sec * 10**9 + mask.header.stamp.nanosec
        assert inputs[stamp] == log_time and mask.header.frame_id == "camera_optical_frame"
        assert (mask.height, mask.width, mask.encoding) == (48, 96, "mono8")
        assert int(np.asarray(mask.data).max()) < 9
    assert type(graphs[0]).__msgtype__ == "casseg_msgs/msg/SceneGraph"
    # The bag has camera_info and registered depth next to the camera: the graph is 3D, as the node's.
    assert metrics["frames_without_depth"] == {} and all(
        np.isfinite(np.asarray(g.centroids_3d)).any() for g in graphs if len(g.ids))
    label_info = [m for topic, _, m in outputs if topic == "/casseg_ros/label_info"]
    assert [c.class_name for c in label_info[0].class_map] == metrics["classes"]
    # Requested products: colour mask = palette[mask], one per frame like the mask.
    palette = read_vocabulary(tiny_ckpt).palette
    colors = [m for topic, _, m in outputs if topic == "/casseg_ros/mask/color"]
    assert len(colors) == 12 and len([1 for topic, _, _ in outputs if topic == "/casseg_ros/confidence"]) == 12
    for (_, mask), color in zip(masks, colors):
        ids = np.asarray(mask.data).reshape(48, 96)
        np.testing.assert_array_equal(np.asarray(color.data).reshape(48, 96, 3), palette[ids])

    # ... and by the mcap reader (schemas embedded as ros2msg).
    from mcap.reader import make_reader

    with open(next((out / "bag").glob("*.mcap")), "rb") as handle:
        reader = make_reader(handle)
        seen = {(channel.topic, schema.name) for schema, channel, _ in reader.iter_messages()}
    assert ("/casseg_ros/scene_graph", "casseg_msgs/msg/SceneGraph") in seen
    assert ("/casseg_ros/overlay", "sensor_msgs/msg/Image") in seen

    report = (out / "report.md").read_text()
    assert "mIoU" in report and "p99" in report
    for fig in ("latency_hist.png", "iou_per_class.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    assert len(list((out / "figures").glob("frame_*.png"))) == 4
    # Each sample frame has a legend: a swatch in the exact colour of every class its prediction shows
    # (the panels themselves only hold the camera image and blended overlays).
    mask_of = {i: np.asarray(m.data).reshape(48, 96) for i, (_, m) in enumerate(masks)}
    for fig in sorted((out / "figures").glob("frame_*.png")):
        pixels = cv2.cvtColor(cv2.imread(str(fig)), cv2.COLOR_BGR2RGB).reshape(-1, 3)
        for class_id in np.unique(mask_of[int(fig.stem.split("_")[1])]):
            assert (pixels == palette[class_id]).all(axis=1).sum() >= 30, (fig.name, metrics["classes"][class_id])
    assert len(json.loads((out / "scene_graphs.json").read_text())["frames"]) == 12
    assert not list(out.glob(".*")), "temporary files left behind"


@pytest.mark.slow
def test_replay_outputs_get_the_umasks_mode(tmp_path, tiny_ckpt, small_bag):
    out = tmp_path / "out"
    with umask(0o022):
        assert replay_main([str(small_bag), "--model", str(tiny_ckpt), "--out", str(out), "--no-progress",
                            "--max-frames", "2", "--overlays", "1"]) == 0
    modes = file_modes(out)
    assert {"metrics.json", "report.md", "scene_graphs.json", "figures/frame_00000.png"} <= set(modes)
    assert any(name.startswith("bag/") for name in modes)
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.slow
def test_optional_products_are_not_made_unless_asked(tmp_path, tiny_ckpt, small_bag):
    out = tmp_path / "out"
    assert replay_main([str(small_bag), "--model", str(tiny_ckpt), "--out", str(out), "--no-progress",
                        "--max-frames", "2", "--overlays", "0"]) == 0
    counts = json.loads((out / "metrics.json").read_text())["output_bag"]["messages"]
    # camera_info is not optional: the node republishes it with every mask (the bag has one per frame)
    assert counts == {"/casseg_ros/mask": 2, "/casseg_ros/scene_graph": 2, "/casseg_ros/label_info": 1,
                      "/casseg_ros/camera_info": 2}


@pytest.mark.slow
def test_resize_in_graph_replay_resizes_nothing_on_the_host(tmp_path, tiny_ckpt, small_bag, monkeypatch):
    """`--resize-in-graph` (the node's resize_in_graph): a model size other than the camera's, and
    masks at the camera's size with no host resize either way."""
    def no_host_resize(*args, **kwargs):
        raise AssertionError("host resize with resize_in_graph")

    monkeypatch.setattr("casseg_ros.runtime.base.resize_images", no_host_resize)
    monkeypatch.setattr("casseg_ros.runtime.base.resize_outputs", no_host_resize)
    out = tmp_path / "out"
    assert replay_main([str(small_bag), "--model", str(tiny_ckpt), "--out", str(out), "--no-progress",
                        "--max-frames", "3", "--overlays", "0", "--input-size", "32", "64", "--resize-in-graph"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["frames_processed"] == 3
    masks = [m for topic, _, m in _read(out / "bag") if topic == "/casseg_ros/mask"]
    assert [(m.height, m.width) for m in masks] == [(48, 96)] * 3

@pytest.mark.slow
def test_bad_inputs_in_a_bag_are_skipped_with_reasons(tmp_path, tiny_ckpt):
    good, _ = scene_pixels()
    s = iter(range(1_000_000_000, 10**12, 100_000_000))
    bad = [
        ("unsupported encoding", ros_image(next(s), good, encoding="yuv422")),
        ("step", ros_image(next(s), good, step=10)),
        ("empty image", ros_image(next(s), None)),
        ("data length", ros_image(next(s), good, data=np.ascontiguousarray(good).reshape(-1)[:-7])),
        ("exceeds max_input_pixels", ros_image(next(s), good, height=100_000, width=100_000, step=300_000)),
    ]
    messages = []
    for _, msg in bad:
        messages.append(("/cam/image", "sensor_msgs/msg/Image", msg))
        messages.append(("/cam/image", "sensor_msgs/msg/Image", ros_image(next(s), good)))
    messages.append(("/cam/image", "sensor_msgs/msg/Image", b"\x00\x01\x00\x00\x01\x02"))  # malformed CDR
    bag = write_bag(tmp_path / "bad", messages)
    out = tmp_path / "out"
    assert replay_main([str(bag), "--model", str(tiny_ckpt), "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_in_bag_read"] == 11 and m["frames_processed"] == 5 and m["frames_skipped"] == 6
    reasons = [s["reason"] for s in m["skipped_frames"]]
    for (expected, _), reason in zip(bad, reasons):
        assert expected in reason, (expected, reason)
    assert "undecodable" in reasons[-1]
    assert [s["frame"] for s in m["skipped_frames"]] == [0, 2, 4, 6, 8, 10]


@pytest.mark.slow
def test_bad_compressed_inputs_are_skipped(tmp_path, tiny_ckpt):
    good, _ = scene_pixels()
    j, p = jpeg(good), png(good)
    msgs = [ros_compressed(1_000_000_000, j), ros_compressed(1_100_000_000, j[: len(j) // 2]),
            ros_compressed(1_200_000_000, p, "png"), ros_compressed(1_300_000_000, p[:-20], "png"),
            ros_compressed(1_400_000_000, b"GIF89a not an image")]
    bag = write_bag(tmp_path / "c", [("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", m) for m in msgs],
                    storage="sqlite3")
    out = tmp_path / "out"
    assert replay_main([str(bag), "--model", str(tiny_ckpt), "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_processed"] == 2
    assert [s["reason"].split(" (")[0] for s in m["skipped_frames"]] == [
        "truncated JPEG", "truncated PNG", "compressed data is neither PNG nor JPEG"]


def test_missing_topic_names_the_problem(tmp_path, tiny_ckpt, small_bag, capsys):
    out = tmp_path / "out"
    assert replay_main([str(small_bag), "--model", str(tiny_ckpt), "--out", str(out), "--image-topic", "/nope"]) == 1
    err = capsys.readouterr().err
    assert "'/nope' not in bag" in err and "/camera/image_raw" in err
    assert not out.exists()  # a run that could not start leaves nothing behind


@pytest.mark.slow
def test_truncated_bag_keeps_results_of_frames_before_the_damage(tmp_path, tiny_ckpt):
    bag = make_demo_bag_module().build(tmp_path / "long.mcap", frames=40, height=96, width=192, rate_hz=10.0)
    data = bag.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # recorder killed mid-write: no footer, half a chunk
    out = tmp_path / "out"
    assert replay_main([str(cut), "--model", str(tiny_ckpt), "--out", str(out), "--no-progress"]) == 1
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "incomplete" and "truncated or corrupt" in m["errors"][0]
    assert 0 < m["frames_processed"] < 40
    masks = [1 for topic, _, _ in _read(out / "bag") if topic == "/casseg_ros/mask"]
    assert len(masks) == m["frames_processed"]  # the partial output bag is complete and readable
    # A frame whose label message was cut off is evaluated without ground truth, and says so.
    assert m["iou"]["frames"] + sum(m["frames_without_label"].values()) == m["frames_processed"]
    assert m["iou"]["frames"] >= m["frames_processed"] - 1


def test_unreadable_bag_and_corrupt_weights_give_clear_errors(tmp_path, tiny_ckpt, small_bag, capsys):
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 50)
    assert replay_main([str(junk), "--model", str(tiny_ckpt), "--out", str(tmp_path / "o1" / "run")]) == 1
    assert "cannot open bag" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()  # no empty output folders from a run that could not start
    weights = tmp_path / "corrupt.safetensors"
    weights.write_bytes(tiny_ckpt.read_bytes()[:5000])
    assert replay_main([str(small_bag), "--model", str(weights), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "cannot load model" in err and str(weights) in err and "truncated checkpoint" in err
    # File errors name the file and what it is not (not "header too large", "Wire format was corrupt").
    picture = tmp_path / "photo.safetensors"
    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((8, 8, 3), np.uint8))
    picture.write_bytes((tmp_path / "photo.png").read_bytes())
    assert replay_main([str(small_bag), "--model", str(picture), "--out", str(tmp_path / "o3")]) == 1
    assert f"{picture} is not a checkpoint" in capsys.readouterr().err.replace("\n", " ")
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert replay_main([str(small_bag), "--model", str(onnx_file), "--backend", "onnxruntime",
                        "--out", str(tmp_path / "o4")]) == 1
    err = capsys.readouterr().err
    assert f"{onnx_file} is not an ONNX model" in err and "Traceback" not in err
    assert not any((tmp_path / name).exists() for name in ("o2", "o3", "o4"))


def test_legend_names_the_classes_shown_and_unknown():
    palette = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8)
    maps = [np.array([[2, 0], [255, 2]]), np.array([[0, 0], [0, 0]])]
    assert legend_entries(maps, ["a", "b", "c"], palette) == [("a", (1, 2, 3)), ("c", (7, 8, 9)), ("unknown", (0, 0, 0))]
    assert legend_entries([np.array([[1]])], ["a", "b", "c"], palette) == [("b", (4, 5, 6))]


def test_iou_evaluator_and_label_decoding():
    ev = IoUEvaluator(["a", "b", "c"])
    pred = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    gt = np.array([[0, 1, 1, 1], [2, 255, 2, 1]])
    ev.update(pred, gt)
    r = ev.result()
    # a: tp1 fp0 fn... pred a at 2 px, gt a at 1 px -> 1/2; b: pred {(0,2),(0,3),(1,3)}, gt {(0,1),(0,2),(0,3),(1,3)}
    # -> 3/4; c: pred (1,0),(1,1)[ignored gt] ; gt c (1,0),(1,2)[pred unknown] -> 1/2
    assert r["per_class_iou"] == {"a": 50.0, "b": 75.0, "c": 50.0}
    assert r["miou"] == pytest.approx((50 + 75 + 50) / 3, abs=1e-3)

    from casseg_ros.replay.bag import typestore as ts

    ids = np.array([[1, 300], [65535, 7]], dtype="<u2")
    msg = ros_image(0, ids.view(np.uint8).reshape(2, 4), encoding="mono16", width=2, step=4)
    assert label_to_ids(msg).tolist() == [[1, 300], [65535, 7]]
    assert ts() is ts()


@pytest.mark.slow
def test_committed_demo_bag_is_what_the_script_generates(tmp_path):
    """data/demo.mcap is reproducible byte for byte (regenerate it if the scene generator changes)."""
    committed = Path(__file__).resolve().parent.parent / "data" / "demo.mcap"
    assert committed.stat().st_size <= 10 * 2**20
    rebuilt = make_demo_bag_module().build(tmp_path / "demo.mcap", frames=100, height=128, width=256, rate_hz=10.0)
    assert rebuilt.read_bytes() == committed.read_bytes(), "run: python scripts/make_demo_bag.py"


def test_realtime_settings_become_the_spawned_nodes_parameters():
    from casseg_ros.pipeline import PipelineSettings
    from casseg_ros.replay.live.run import RealtimeConfig, settings_left_to_the_node, spawned_node_params
    from casseg_ros.ros.parameters import param_specs

    cfg = RealtimeConfig(bag=Path("b"), out_dir=Path("o"), depth_max_range_m=7.5, vocabulary_file="v.yaml",
                         settings=PipelineSettings(score_threshold=0.25, tracking=True, temporal_smoothing=0.5))
    params = spawned_node_params(cfg)
    declared = {name: default for name, default, _ in param_specs()}
    assert set(params) <= set(declared)  # every one a parameter of the node...
    for name, value in params.items():   # ...of the type the node declares (a ROS -p value is typed)
        assert type(value) is type(declared[name]) or (name == "vocabulary_file" and isinstance(value, str)), name
    assert params["tracking"] is True and params["temporal_smoothing"] == 0.5 and params["score_threshold"] == 0.25
    assert params["depth_max_range_m"] == 7.5 and params["vocabulary_file"] == str(Path("v.yaml").resolve())
    # without --spawn-node the running node keeps its own: the ones given are named in a note
    assert settings_left_to_the_node(cfg) == ["score_threshold", "tracking", "temporal_smoothing",
                                              "depth_max_range_m", "vocabulary_file"]
    assert settings_left_to_the_node(RealtimeConfig(bag=Path("b"), out_dir=Path("o"))) == []
