"""Offline replay: every frame of a recording through the node's frame step, outputs into a new bag.

Per frame: raw CDR from rosbags -> the node's message classes (rclpy deserialiser, no DDS) -> the
node's frame step (`casseg_ros.ros.frame_io`: `frame_input`, `FramePipeline.process`,
`frame_outputs`) -> output bag, under the node's topic names and types (`casseg_ros.ros.topics`).
The output bag therefore holds, message for message, what the live node publishes for the same
frames; a ground-truth label topic is scored as it goes (`ground_truth`). Bad frames are skipped
with the node's rejection reason; a bag that stops being readable ends the run with a clear error
while everything done so far is kept.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tqdm import tqdm

from casseg_ros.ros.calibration_frames import calibration_options
from casseg_ros.model.checkpoint import CheckpointError
from casseg_ros.parameter_rules import problem as setting_problem
from casseg_ros.perception.overlay import make_overlay
from casseg_ros.perception.scene_graph import scene_graph_record
from casseg_ros.pipeline import (
    FramePipeline, FrameResult, InferenceError, PipelineSettings, Products, display_labels, start_backend,
)
from casseg_ros.replay.bag import (
    CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, IMAGE_TYPES, BagError, BagFrame, FrameStream, OutputBag,
    find_connection, open_reader, stamp_ns,
)
from casseg_ros.replay.metrics import ReplayStats, label_to_ids
from casseg_ros.replay.offline.ground_truth import (GroundTruth, at_size, auto_instance_topic, auto_label_topic,
                                                    ground_truth_names)
from casseg_ros.replay.report import PanelFigure, write_json, write_report
from casseg_ros.replay.tracking_metrics import TrackingEvaluator
from casseg_ros.ros.frame_io import Companions, InputSettings, Rejection, frame_input, frame_outputs
from casseg_ros.ros.messages import label_info_msg
from casseg_ros.ros.topics import NODE_NAME, OUTPUTS, camera_siblings
from casseg_ros.runtime import Backend, BackendUnavailable

NODE_NS = f"/{NODE_NAME}"  # output topics as the node names them (~/mask of node "casseg_ros")


class ReplayError(RuntimeError):
    """The replay could not run (or not finish); the message says what is wrong."""


@dataclass
class ReplayConfig:
    bag: Path
    out_dir: Path
    model_path: Path
    image_topic: str | None = None
    label_topic: str | None = None  # None: auto (the only mono label topic named *label*), "" = none
    instance_topic: str | None = None  # ground-truth instance ids (mono16); None: auto (*instance*), "" = none
    backend: str = "torch"
    device: str = "cpu"
    input_size: tuple[int, int] | None = None
    resize_in_graph: bool = False  # the node's parameter of that name
    openvino_device: str = "CPU"  # the node's parameter of that name (backend openvino)
    precision: str = "auto"  # the node's parameter: auto, fp32, fp16, bf16, int8
    calibration: Path | None = None  # the node's calibration parameter: a bag or an image folder
    # Intra-op threads of a CPU backend; None: the physical cores this process may use. Part of the
    # results: floating-point sums split over another number of threads round differently, which
    # can flip a pixel whose two best classes tie to ~1e-7.
    num_threads: int | None = None
    vocabulary_file: str | None = None  # display names/palette, as the node's parameter
    # camera_info / registered depth topics; None: the image topic's siblings when the bag has
    # them (a camera driver's naming), "" = none. With both, the scene graph gets 3D, as the node's.
    camera_info_topic: str | None = None
    depth_topic: str | None = None
    depth_max_range_m: float = InputSettings.depth_max_range_m  # the node's parameter of that name
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    # Optional images also written to the output bag; by default what a node with no subscriber
    # to them makes (so host-time figures are the node's default figures).
    products: Products = field(default_factory=Products)
    max_frames: int | None = None
    num_overlays: int = 4
    progress: bool = True


def load_backend(model_path: Path, backend: str, device: str, input_size, resize_in_graph: bool = False,
                 num_threads: int | None = None, openvino_device: str = "CPU", precision: str = "auto",
                 calibration: Path | None = None) -> Backend:
    """The node's bring-up (`pipeline.start_backend`), with failures turned into one clear ReplayError:
    the backend named when it is the problem, the setting or file when that is."""
    reason = setting_problem("backend", backend)  # the node's rules: an unknown name is the backend's fault
    if reason:
        raise ReplayError(f"backend {backend!r} on {device!r} is not available: {reason}")
    reason = setting_problem("openvino_device", openvino_device) or setting_problem("precision", precision)
    if reason:
        raise ReplayError(reason)
    try:
        frames = calibration_options(calibration) if calibration is not None else {}
    except FileNotFoundError as exc:
        raise ReplayError(str(exc)) from exc
    try:
        be = start_backend(backend, model_path, device, input_size, resize_in_graph, num_threads, openvino_device,
                           precision, **frames)
        _ = be.vocabulary
    except BackendUnavailable as exc:
        raise ReplayError(f"backend {backend!r} on {device!r} is not available: {exc}") from exc
    except FileNotFoundError as exc:
        raise ReplayError(f"model file not found: {model_path} ({exc})") from exc
    except (CheckpointError, ValueError) as exc:  # their messages name the file and what it is not
        raise ReplayError(f"cannot load model: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - anything else the runtime says
        raise ReplayError(f"cannot load model {model_path}: {type(exc).__name__}: {exc}") from exc
    return be


@dataclass
class _Inputs:
    """The opened recording: image (and optional ground-truth) connections."""

    reader: Any
    image_conn: Any
    label_conn: Any | None
    gt_names: list[str] | None
    damage: str | None  # set when the bag was salvaged with the mcap stream reader
    camera_conns: dict[str, Any]  # "camera_info" / "depth" -> connection, those the bag has


def _open_inputs(cfg: ReplayConfig) -> _Inputs:
    try:
        reader = open_reader(cfg.bag)
    except BagError as exc:
        raise ReplayError(str(exc)) from exc
    try:
        image_conn = find_connection(reader, cfg.image_topic, IMAGE_TYPES, "image")
        label_topic = cfg.label_topic if cfg.label_topic is not None else auto_label_topic(reader, image_conn.topic)
        label_conn = find_connection(reader, label_topic, (IMAGE_TYPE,), "label") if label_topic else None
        gt_names = ground_truth_names(reader) if label_conn else None
        camera_conns = _camera_connections(reader, cfg, image_conn.topic)
        instance_topic = cfg.instance_topic if cfg.instance_topic is not None else \
            auto_instance_topic(reader, image_conn.topic)
        if instance_topic and label_conn is not None:  # instances are scored with their classes
            camera_conns["instances"] = find_connection(reader, instance_topic, (IMAGE_TYPE,), "instance")
    except BagError as exc:
        reader.close()
        raise ReplayError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - unreadable label-info message
        reader.close()
        raise ReplayError(f"cannot read bag {cfg.bag}: {type(exc).__name__}: {exc}") from exc
    return _Inputs(reader, image_conn, label_conn, gt_names, getattr(reader, "damage", None), camera_conns)


def _camera_connections(reader, cfg: ReplayConfig, image_topic: str) -> dict[str, Any]:
    """The camera_info and depth connections to pair with the images: as configured, else the
    image topic's siblings when the bag has them."""
    sibling_info, sibling_depth = camera_siblings(image_topic)
    found = {}
    for name, asked, sibling, msgtype in (("camera_info", cfg.camera_info_topic, sibling_info, CAMERA_INFO_TYPE),
                                          ("depth", cfg.depth_topic, sibling_depth, IMAGE_TYPE)):
        if asked == "":
            continue
        if asked is not None:
            found[name] = find_connection(reader, asked, (msgtype,), name)
        elif any(c.topic == sibling and c.msgtype == msgtype for c in reader.connections):
            found[name] = find_connection(reader, sibling, (msgtype,), name)
    return found


def _companions(frame: BagFrame) -> Companions:
    """The frame's camera_info and registered depth from the bag (paired by stamp in FrameStream)."""
    info_raw, depth_raw = frame.companions.get("camera_info"), frame.companions.get("depth")
    return Companions(deserialize_message(info_raw, CameraInfo) if info_raw is not None else None,
                      deserialize_message(depth_raw, Image) if depth_raw is not None else None,
                      "depth" in frame.companions)


class _Outputs:
    """The output bag (node topic names), scene_graphs.json records and the report's figures."""

    def __init__(self, out_dir: Path, products: Products):
        self.bag = OutputBag(out_dir / "bag")
        self.names = ["mask", "scene_graph"] + [name for name, wanted in (
            ("overlay", products.overlay), ("mask/color", products.color_mask),
            ("confidence", products.confidence_image), ("points", products.points)) if wanted]
        for name in self.names + ["label_info", "camera_info"]:
            self.bag.add_topic(f"{NODE_NS}/{name}", OUTPUTS[name].type_name)
        self.labels_written = False
        self.scene_graphs: list[dict] = []
        self.figures: list[PanelFigure] = []

    def write_frame(self, frame: BagFrame, header, result: FrameResult, pipeline: FramePipeline,
                    settings: PipelineSettings, info: CameraInfo | None) -> None:
        if not self.labels_written:  # transient-local on the node: once, before the first mask
            label_info = label_info_msg(pipeline.labels, settings.score_threshold, header.stamp)
            self.bag.write(f"{NODE_NS}/label_info", frame.log_time_ns, serialize_message(label_info))
            self.labels_written = True
        for name, message in frame_outputs(result, pipeline.labels, header, info).items():
            self.bag.write(f"{NODE_NS}/{name}", frame.log_time_ns, serialize_message(message))
        stamp = stamp_ns(header)
        self.scene_graphs.append(scene_graph_record(frame.index, stamp, header.frame_id, result.graph))


def _figure(name: str, rgb: np.ndarray, result: FrameResult, gt_ids: np.ndarray | None, pipeline: FramePipeline,
            alpha: float) -> PanelFigure:
    """input | prediction | ground truth (when there is one), side by side (report only, untimed)."""
    labels = pipeline.labels
    if result.mask.shape != rgb.shape[:2]:  # output_resolution: model
        rgb = cv2.resize(rgb, result.mask.shape[::-1], interpolation=cv2.INTER_AREA)
    panels = [("input", rgb), ("prediction", make_overlay(rgb, result.mask, labels.palette, alpha))]
    class_maps = [result.mask]
    if gt_ids is not None:
        panels.append(("ground truth", make_overlay(rgb, gt_ids, labels.palette, 0.7)))
        class_maps.append(gt_ids)
    return PanelFigure(name, panels, class_maps, labels.names, labels.palette)


def _instance_map(frame: BagFrame) -> np.ndarray | None:
    """The frame's ground-truth instance ids (the bag's instance topic), None without one."""
    raw = frame.companions.get("instances")
    return label_to_ids(deserialize_message(raw, Image)) if raw is not None else None  # camera size


def _replay_frames(cfg: ReplayConfig, inputs: _Inputs, pipeline: FramePipeline, outputs: _Outputs,
                   truth: GroundTruth | None, stats: ReplayStats, tracking: TrackingEvaluator | None) -> None:
    conn = inputs.image_conn
    total = conn.msgcount if cfg.max_frames is None else min(conn.msgcount, cfg.max_frames)
    figure_at = set(np.linspace(0, max(total - 1, 0), num=min(cfg.num_overlays, total), dtype=int).tolist())
    msg_class = CompressedImage if conn.msgtype == COMPRESSED_TYPE else Image
    stream = FrameStream(inputs.reader, conn, inputs.label_conn, companion_conns=inputs.camera_conns)
    decoding = InputSettings(depth_max_range_m=cfg.depth_max_range_m)  # max_input_pixels: the node's default
    # Inference runs on one worker thread, as in the node (its worker loop): measured on this 2-core
    # machine, torch CPU inference issued from the main thread was 3-5x slower than from a worker
    # thread with the same thread settings, so only this makes replay latency comparable.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="casseg_replay_worker")
    try:
        for frame in tqdm(stream, total=total, unit="frame", desc="replay", disable=not cfg.progress):
            if cfg.max_frames is not None and stats.frames_seen >= cfg.max_frames:
                break
            stats.frames_seen += 1
            try:
                msg = deserialize_message(frame.raw, msg_class)
            except Exception as exc:  # noqa: BLE001 - rclpy raises RMWError for malformed CDR
                stats.skip(frame.index, None, f"undecodable {conn.msgtype} message "
                                              f"({type(exc).__name__}, {len(frame.raw)} bytes)")
                continue
            stamp = stamp_ns(msg.header)
            try:
                decoded = frame_input(msg, lambda: _companions(frame), cfg.settings, cfg.products, decoding)
                if isinstance(decoded, Rejection):
                    stats.skip(frame.index, stamp, decoded.reason)
                    continue
                if decoded.depth_problem:
                    stats.depth_notes[decoded.depth_problem] += 1
                rgb = decoded.frame.rgb
                result = worker.submit(pipeline.process_batch, [decoded.frame], cfg.settings).result()[0]
            except InferenceError as exc:  # as the node: count, carry on
                stats.skip(frame.index, stamp, f"inference error: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - a post-processing bug on one frame, as the node
                stats.skip(frame.index, stamp, f"processing error: {type(exc).__name__}: {exc}")
                continue
            stats.frames_processed += 1
            stats.forward_s.append(result.forward_s)
            stats.host_s.append(result.host_s)
            stats.total_s.append(result.total_s)
            outputs.write_frame(frame, msg.header, result, pipeline, cfg.settings, decoded.camera_info)
            gt = truth.update(frame, result.class_ids) if truth is not None else None
            if tracking is not None and gt is not None:
                instances = _instance_map(frame)
                instances = at_size(instances, gt.shape) if instances is not None else None
                if instances is not None:
                    tracking.update(instances, truth.in_model_ids(gt), result.graph, result.class_ids)
            if frame.index in figure_at:
                gt_ids = truth.in_model_ids(gt) if gt is not None else None
                outputs.figures.append(_figure(f"frame_{frame.index:05d}", rgb, result, gt_ids, pipeline,
                                               cfg.settings.overlay_alpha))
    finally:
        worker.shutdown(wait=True)
        stats.errors.extend(stream.errors)


def run_replay(cfg: ReplayConfig) -> dict[str, Any]:
    """Run the replay; returns the metrics dict (also written to out_dir/metrics.json).

    Raises ReplayError for problems found before the first frame — the bag, its topics, the model,
    the backend — with nothing written (out_dir is created only once all of them opened), and for
    problems after it (the outputs of the frames done are kept and closed).
    """
    out_dir = Path(cfg.out_dir)
    metrics: dict[str, Any] = {"bag": str(cfg.bag), "model": str(cfg.model_path), "status": "ok"}
    inputs = _open_inputs(cfg)
    if inputs.damage:
        metrics.setdefault("warnings", []).append(
            f"bag {cfg.bag} is damaged ({inputs.damage}); rosbags cannot open it, its readable part was "
            f"salvaged with the mcap stream reader")
        print(f"casseg-replay: warning: {metrics['warnings'][-1]}", file=sys.stderr)
    try:
        backend = load_backend(cfg.model_path, cfg.backend, cfg.device, cfg.input_size, cfg.resize_in_graph,
                               cfg.num_threads, cfg.openvino_device, cfg.precision, cfg.calibration)
        for what in ("backend", "precision"):  # auto: what it chose and why, as the node logs it
            choice = backend.describe().get(f"{what}_choice")
            if choice:
                print(f"casseg-replay: {what} {choice}", file=sys.stderr)
        pipeline = FramePipeline(backend, display_labels(backend, cfg.vocabulary_file))
    except (ReplayError, ValueError, OSError) as exc:  # ValueError/OSError: a bad vocabulary_file
        inputs.reader.close()
        raise ReplayError(str(exc)) from exc

    out_dir.mkdir(parents=True, exist_ok=True)
    stats = ReplayStats()
    names = list(pipeline.labels.names)
    truth = GroundTruth(names, inputs.gt_names, stats) if inputs.label_conn else None
    metrics.update(image_topic=inputs.image_conn.topic, image_type=inputs.image_conn.msgtype,
                   label_topic=inputs.label_conn.topic if inputs.label_conn else None,
                   ground_truth_classes=inputs.gt_names,
                   ground_truth_classes_not_in_model=truth.missing if truth else [],
                   backend=backend.describe(), classes=names, settings=vars(cfg.settings),
                   products=vars(cfg.products))
    outputs = _Outputs(out_dir, cfg.products)
    tracking = TrackingEvaluator() if "instances" in inputs.camera_conns else None
    metrics["instance_topic"] = inputs.camera_conns["instances"].topic if tracking is not None else None
    t_start = time.perf_counter()
    try:
        _replay_frames(cfg, inputs, pipeline, outputs, truth, stats, tracking)
    except KeyboardInterrupt:
        stats.errors.append("interrupted (Ctrl-C)")
    finally:
        stats.wall_s = time.perf_counter() - t_start
        if inputs.damage:
            stats.errors.append(f"bag {cfg.bag} is truncated or corrupt ({inputs.damage}): only the "
                                f"{stats.frames_seen} frames before the damage were evaluated")
        bag_path = outputs.bag.close()
        inputs.reader.close()
        metrics.update(stats.summary())
        metrics["status"] = "ok" if not stats.errors else "incomplete"
        metrics["iou"] = truth.iou.result() if truth is not None else None
        metrics["tracking"] = tracking.result() if tracking is not None and tracking.frames else None
        metrics["output_bag"] = {"path": str(bag_path), "messages": dict(outputs.bag.counts)}
        write_json(out_dir / "scene_graphs.json", {"frames": outputs.scene_graphs})
        write_json(out_dir / "metrics.json", metrics)
        write_report(out_dir, "casseg_ros replay", metrics, outputs.figures,
                     {"total": stats.total_s, "forward": stats.forward_s},
                     intro=f"Bag `{cfg.bag}`, image topic `{inputs.image_conn.topic}`, model `{cfg.model_path}` "
                           f"({metrics['backend'].get('name')}/{metrics['backend'].get('device')}). "
                           f"Overlay figures: input | prediction | ground truth.")
    if stats.errors:
        raise ReplayError("; ".join(stats.errors) + f" — results of the {stats.frames_processed} frames done "
                          f"are in {out_dir}")
    return metrics
