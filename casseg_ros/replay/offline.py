"""Offline replay: every frame of a recording through the node's pipeline, outputs into a new bag.

Per frame: raw CDR from rosbags -> the node's message class (rclpy deserialiser, no DDS) ->
`casseg_ros.ros.conversions.to_rgb` (the node's validation) -> `casseg_ros.pipeline.FramePipeline`
(the node's pipeline) -> `casseg_ros.ros.messages.frame_messages` (the node's message builder) ->
output bag. The output bag therefore holds, message for message, what the live node publishes
for the same frames. Bad frames are skipped with the node's rejection reason; a bag that stops
being readable ends the run with a clear error while everything done so far is kept.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from tqdm import tqdm

from casseg_ros.model.checkpoint import CheckpointError
from casseg_ros.perception.depth import InvalidDepth
from casseg_ros.perception.overlay import make_overlay
from casseg_ros.perception.scene_graph import scene_graph_record
from casseg_ros.pipeline import (
    DepthFrame, FramePipeline, FrameResult, InferenceError, PipelineSettings, Products, depth_stride, display_labels,
)
from casseg_ros.replay.bag import (
    CAMERA_INFO_TYPE, COMPRESSED_TYPE, IMAGE_TYPE, IMAGE_TYPES, LABEL_INFO_TYPE, POINT_CLOUD_TYPE, SCENE_GRAPH_TYPE,
    BagError, BagFrame, FrameStream, OutputBag, find_connection, open_reader, stamp_ns, typestore,
)
from casseg_ros.replay.metrics import IoUEvaluator, InvalidLabel, ReplayStats, label_to_ids
from casseg_ros.replay.report import PanelFigure, write_json, write_report
from casseg_ros.ros.camera import depth_frame
from casseg_ros.ros.conversions import InvalidImage, to_rgb
from casseg_ros.ros.messages import frame_messages, label_info_msg
from casseg_ros.ros.processes import camera_siblings
from casseg_ros.runtime import Backend, BackendUnavailable, create_backend

NODE_NS = "/casseg_ros"  # output topics as the node names them (~/mask of node "casseg_ros")
# Output name (as in frame_messages) -> message type in the output bag.
OUTPUT_TYPES = {"mask": IMAGE_TYPE, "confidence": IMAGE_TYPE, "overlay": IMAGE_TYPE, "mask/color": IMAGE_TYPE,
                "points": POINT_CLOUD_TYPE, "scene_graph": SCENE_GRAPH_TYPE}


class ReplayError(RuntimeError):
    """The replay could not run (or not finish); the message says what is wrong."""


@dataclass
class ReplayConfig:
    bag: Path
    out_dir: Path
    model_path: Path
    image_topic: str | None = None
    label_topic: str | None = None  # None: auto (the only mono label topic named *label*), "" = none
    backend: str = "torch"
    device: str = "cpu"
    input_size: tuple[int, int] | None = None
    resize_in_graph: bool = False  # the node's parameter of that name
    vocabulary_file: str | None = None  # display names/palette, as the node's parameter
    # camera_info / registered depth topics; None: the image topic's siblings when the bag has
    # them (a camera driver's naming), "" = none. With both, the scene graph gets 3D, as the node's.
    camera_info_topic: str | None = None
    depth_topic: str | None = None
    depth_max_range_m: float = 20.0  # the node's parameter of that name
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    # Optional images also written to the output bag; by default what a node with no subscriber
    # to them makes (so host-time figures are the node's default figures).
    products: Products = field(default_factory=Products)
    max_frames: int | None = None
    num_overlays: int = 4
    progress: bool = True


def gt_mapping(gt_names: list[str], model_names: list[str]) -> tuple[np.ndarray, list[str]]:
    """LUT ground-truth id -> model id by class name (255 where the model lacks the class)."""
    index = {n: i for i, n in enumerate(model_names)}
    lut = np.full(max(len(gt_names), 1), 255, dtype=np.int64)
    missing = []
    for i, name in enumerate(gt_names):
        if name in index:
            lut[i] = index[name]
        else:
            missing.append(name)
    return lut, missing


def _auto_label_topic(reader, image_topic: str) -> str | None:
    candidates = [c.topic for c in reader.connections
                  if c.msgtype == IMAGE_TYPE and c.topic != image_topic and "label" in c.topic.lower()]
    return candidates[0] if len(candidates) == 1 else None


def _ground_truth_names(reader) -> list[str] | None:
    """Class names of the ground truth from a vision_msgs/LabelInfo topic in the bag, if one exists."""
    conns = [c for c in reader.connections if c.msgtype == LABEL_INFO_TYPE]
    if len(conns) != 1:
        return None
    for _, _, raw in reader.messages(connections=conns):
        msg = typestore().deserialize_cdr(raw, LABEL_INFO_TYPE)
        by_id = {int(c.class_id): str(c.class_name) for c in msg.class_map}
        return [by_id.get(i, f"<unnamed {i}>") for i in range(max(by_id) + 1)] if by_id else None
    return None


def load_backend(model_path: Path, backend: str, device: str, input_size, resize_in_graph: bool = False) -> Backend:
    """create_backend + load + warmup, with failures turned into one clear ReplayError: the backend
    named when it is the problem, the model file when that is."""
    try:
        be = create_backend(name=backend, model_path=str(model_path), device=device, input_size=input_size,
                            resize_in_graph=resize_in_graph)
    except (BackendUnavailable, ValueError) as exc:  # unknown backend name, missing runtime
        raise ReplayError(f"backend {backend!r} on {device!r} is not available: {exc}") from exc
    try:
        be.load()
        be.warmup()  # as the node does at configure: the same kernels warmed up before frame 0
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
        label_topic = cfg.label_topic if cfg.label_topic is not None else _auto_label_topic(reader, image_conn.topic)
        label_conn = find_connection(reader, label_topic, (IMAGE_TYPE,), "label") if label_topic else None
        gt_names = _ground_truth_names(reader) if label_conn else None
        camera_conns = _camera_connections(reader, cfg, image_conn.topic)
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


def _depth_of(frame: BagFrame, image_shape: tuple[int, int], cfg: ReplayConfig, stats: ReplayStats
              ) -> tuple[DepthFrame | None, CameraInfo | None]:
    """The frame's registered depth (the node's rule, `ros.camera.depth_frame`) and camera_info."""
    info_raw, depth_raw = frame.companions.get("camera_info"), frame.companions.get("depth")
    info = deserialize_message(info_raw, CameraInfo) if info_raw is not None else None
    if "depth" not in frame.companions:
        return None, info
    if depth_raw is None:
        stats.depth_notes["no depth image with the frame's stamp"] += 1
        return None, info
    try:
        return depth_frame(deserialize_message(depth_raw, Image), info, image_shape, cfg.depth_max_range_m,
                           depth_stride(cfg.settings, cfg.products)), info
    except InvalidDepth as exc:
        stats.depth_notes[exc.reason] += 1
        return None, info


class _GroundTruth:
    """Scores each frame's argmax against the bag's label topic (ids mapped by class name)."""

    def __init__(self, model_names: list[str], gt_names: list[str] | None, stats: ReplayStats):
        self.lut, self.missing = gt_mapping(gt_names, model_names) if gt_names else (None, [])
        self.iou = IoUEvaluator(model_names, self.lut)
        self.stats = stats

    def update(self, frame: BagFrame, class_ids: np.ndarray) -> np.ndarray | None:
        """Ground-truth ids of the frame (None when it has no usable label); counted in the IoU."""
        if frame.label_raw is None:
            self.stats.label_notes[frame.label_note or "no label"] += 1
            return None
        try:
            gt = label_to_ids(deserialize_message(frame.label_raw, Image))
            self.iou.update(class_ids, gt)
        except InvalidLabel as exc:
            self.stats.label_notes[exc.reason] += 1
            return None
        except Exception as exc:  # noqa: BLE001 - malformed label CDR
            self.stats.label_notes[f"undecodable label message: {type(exc).__name__}"] += 1
            return None
        return gt

    def in_model_ids(self, gt: np.ndarray) -> np.ndarray:
        if self.lut is None:
            return gt.astype(np.int32)
        return np.where(gt < 255, self.lut[np.clip(gt, 0, len(self.lut) - 1)], 255).astype(np.int32)


class _Outputs:
    """The output bag (node topic names), scene_graphs.json records and the report's figures."""

    def __init__(self, out_dir: Path, products: Products):
        self.bag = OutputBag(out_dir / "bag")
        self.names = ["mask", "scene_graph"] + [name for name, wanted in (
            ("overlay", products.overlay), ("mask/color", products.color_mask),
            ("confidence", products.confidence_image), ("points", products.points)) if wanted]
        for name in self.names:
            self.bag.add_topic(f"{NODE_NS}/{name}", OUTPUT_TYPES[name])
        self.bag.add_topic(f"{NODE_NS}/label_info", LABEL_INFO_TYPE)
        self.bag.add_topic(f"{NODE_NS}/camera_info", CAMERA_INFO_TYPE)
        self.labels_written = False
        self.scene_graphs: list[dict] = []
        self.figures: list[PanelFigure] = []

    def write_frame(self, frame: BagFrame, header, result: FrameResult, pipeline: FramePipeline,
                    settings: PipelineSettings, info: CameraInfo | None) -> None:
        if not self.labels_written:  # transient-local on the node: once, before the first mask
            label_info = label_info_msg(pipeline.labels, settings.score_threshold, header.stamp)
            self.bag.write(f"{NODE_NS}/label_info", frame.log_time_ns, serialize_message(label_info))
            self.labels_written = True
        for name, message in frame_messages(result, pipeline.labels, header).items():
            self.bag.write(f"{NODE_NS}/{name}", frame.log_time_ns, serialize_message(message))
        if info is not None:  # as the node: the frame's camera_info under the mask's header
            info.header = header
            self.bag.write(f"{NODE_NS}/camera_info", frame.log_time_ns, serialize_message(info))
        stamp = stamp_ns(header)
        self.scene_graphs.append(scene_graph_record(frame.index, stamp, header.frame_id, result.graph))


def _figure(name: str, rgb: np.ndarray, result: FrameResult, gt_ids: np.ndarray | None, pipeline: FramePipeline,
            alpha: float) -> PanelFigure:
    """input | prediction | ground truth (when there is one), side by side (report only, untimed)."""
    labels = pipeline.labels
    panels = [("input", rgb), ("prediction", make_overlay(rgb, result.mask, labels.palette, alpha))]
    class_maps = [result.mask]
    if gt_ids is not None:
        panels.append(("ground truth", make_overlay(rgb, gt_ids, labels.palette, 0.7)))
        class_maps.append(gt_ids)
    return PanelFigure(name, panels, class_maps, labels.names, labels.palette)


def _replay_frames(cfg: ReplayConfig, inputs: _Inputs, pipeline: FramePipeline, outputs: _Outputs,
                   truth: _GroundTruth | None, stats: ReplayStats) -> None:
    conn = inputs.image_conn
    total = conn.msgcount if cfg.max_frames is None else min(conn.msgcount, cfg.max_frames)
    figure_at = set(np.linspace(0, max(total - 1, 0), num=min(cfg.num_overlays, total), dtype=int).tolist())
    msg_class = CompressedImage if conn.msgtype == COMPRESSED_TYPE else Image
    stream = FrameStream(inputs.reader, conn, inputs.label_conn, companion_conns=inputs.camera_conns)
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
                rgb = to_rgb(msg)
                depth, info = _depth_of(frame, rgb.shape[:2], cfg, stats)
                result = worker.submit(pipeline.process, rgb, cfg.settings, cfg.products, depth).result()
            except InvalidImage as exc:
                stats.skip(frame.index, stamp, exc.reason)
                continue
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
            outputs.write_frame(frame, msg.header, result, pipeline, cfg.settings, info)
            gt = truth.update(frame, result.class_ids) if truth is not None else None
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
        backend = load_backend(cfg.model_path, cfg.backend, cfg.device, cfg.input_size, cfg.resize_in_graph)
        pipeline = FramePipeline(backend, display_labels(backend, cfg.vocabulary_file))
    except (ReplayError, ValueError, OSError) as exc:  # ValueError/OSError: a bad vocabulary_file
        inputs.reader.close()
        raise ReplayError(str(exc)) from exc

    out_dir.mkdir(parents=True, exist_ok=True)
    stats = ReplayStats()
    names = list(pipeline.labels.names)
    truth = _GroundTruth(names, inputs.gt_names, stats) if inputs.label_conn else None
    metrics.update(image_topic=inputs.image_conn.topic, image_type=inputs.image_conn.msgtype,
                   label_topic=inputs.label_conn.topic if inputs.label_conn else None,
                   ground_truth_classes=inputs.gt_names,
                   ground_truth_classes_not_in_model=truth.missing if truth else [],
                   backend=backend.describe(), classes=names, settings=vars(cfg.settings),
                   products=vars(cfg.products))
    outputs = _Outputs(out_dir, cfg.products)
    t_start = time.perf_counter()
    try:
        _replay_frames(cfg, inputs, pipeline, outputs, truth, stats)
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
