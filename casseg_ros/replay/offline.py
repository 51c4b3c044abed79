"""Offline replay: every frame of a recording through the node's pipeline, outputs into a new bag.

Per frame: raw CDR from rosbags -> the node's message class (rclpy deserialiser, no DDS) ->
`casseg_ros.ros.conversions.to_rgb` (the node's validation) -> `FramePipeline` -> the node's
message builders -> output bag. Bad frames are skipped with the node's rejection reason; a bag
that stops being readable ends the run with a clear error while everything done so far is kept.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from casseg_ros.replay.bag import (
    COMPRESSED_TYPE, IMAGE_TYPE, IMAGE_TYPES, LABEL_INFO_TYPE, SCENE_GRAPH_TYPE, BagError, FrameStream,
    OutputBag, find_connection, open_reader, typestore,
)
from casseg_ros.replay.metrics import IoUEvaluator, InvalidLabel, ReplayStats, label_to_ids
from casseg_ros.replay.pipeline import FramePipeline, PipelineSettings

NODE_NS = "/casseg_ros"  # output topics as the node names them (~/mask of node "casseg_ros")


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
    settings: PipelineSettings = field(default_factory=PipelineSettings)
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
    """Class names of the ground truth from a casseg_msgs/LabelInfo topic in the bag, if one exists."""
    conns = [c for c in reader.connections if c.msgtype == LABEL_INFO_TYPE]
    if len(conns) != 1:
        return None
    for _, _, raw in reader.messages(connections=conns):
        msg = typestore().deserialize_cdr(raw, LABEL_INFO_TYPE)
        by_id = {int(c.class_id): str(c.name) for c in msg.classes}
        return [by_id.get(i, f"<unnamed {i}>") for i in range(max(by_id) + 1)] if by_id else None
    return None


def load_backend(model_path: Path, backend: str, device: str, input_size):
    """create_backend + load + warmup, with failures turned into one clear ReplayError."""
    from casseg_ros.runtime import BackendUnavailable, create_backend

    try:
        be = create_backend(name=backend, model_path=str(model_path), device=device, input_size=input_size)
        be.load()
        be.warmup(1)
        _ = be.vocabulary
    except BackendUnavailable as exc:
        raise ReplayError(f"backend {backend!r} on {device!r} is not available: {exc}") from exc
    except FileNotFoundError as exc:
        raise ReplayError(f"model file not found: {model_path} ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - corrupt checkpoint, wrong format, ...
        raise ReplayError(f"cannot load model {model_path}: {type(exc).__name__}: {exc}") from exc
    return be


def _header_msg(header):
    from std_msgs.msg import Header

    return header if isinstance(header, Header) else Header(stamp=header.stamp, frame_id=header.frame_id)


def run_replay(cfg: ReplayConfig) -> dict[str, Any]:
    """Run the replay; returns the metrics dict (also written to out_dir/metrics.json).

    Raises ReplayError for problems found before the first frame (nothing written but
    metrics.json with the error) and after it (outputs of the frames done are kept and closed).
    """
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from casseg_msgs.msg import ClassLabel, LabelInfo
    from casseg_ros.replay.report import write_json, write_report
    from casseg_ros.ros.conversions import InvalidImage, numpy_to_image, to_rgb
    from casseg_ros.ros.segment_node import scene_graph_to_msg
    from std_msgs.msg import ColorRGBA

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = ReplayStats()
    metrics: dict[str, Any] = {"bag": str(cfg.bag), "model": str(cfg.model_path), "status": "ok"}

    def fail_early(message: str):
        metrics.update(status="error", errors=[message])
        write_json(out_dir / "metrics.json", metrics)
        raise ReplayError(message)

    try:
        reader = open_reader(cfg.bag)
    except BagError as exc:
        fail_early(str(exc))
    try:
        image_conn = find_connection(reader, cfg.image_topic, IMAGE_TYPES, "image")
        label_topic = cfg.label_topic
        if label_topic is None:
            label_topic = _auto_label_topic(reader, image_conn.topic)
        label_conn = find_connection(reader, label_topic, (IMAGE_TYPE,), "label") if label_topic else None
        gt_names = _ground_truth_names(reader) if label_conn else None
    except BagError as exc:
        reader.close()
        fail_early(str(exc))
    except Exception as exc:  # noqa: BLE001 - unreadable label-info message
        reader.close()
        fail_early(f"cannot read bag {cfg.bag}: {type(exc).__name__}: {exc}")
    salvage_note = getattr(reader, "damage", None)
    if salvage_note:
        metrics.setdefault("warnings", []).append(
            f"bag {cfg.bag} is damaged ({salvage_note}); rosbags cannot open it, its readable part was "
            f"salvaged with the mcap stream reader")
        print(f"casseg-replay: warning: {metrics['warnings'][-1]}", file=sys.stderr)
    try:
        backend = load_backend(cfg.model_path, cfg.backend, cfg.device, cfg.input_size)
    except ReplayError as exc:
        reader.close()
        fail_early(str(exc))

    pipeline = FramePipeline(backend, cfg.settings)
    names = pipeline.class_names
    lut, missing = (gt_mapping(gt_names, names) if gt_names else (None, []))
    iou = IoUEvaluator(names, lut) if label_conn else None
    metrics.update(image_topic=image_conn.topic, image_type=image_conn.msgtype,
                   label_topic=label_conn.topic if label_conn else None,
                   ground_truth_classes=gt_names, ground_truth_classes_not_in_model=missing,
                   backend=backend.describe(), classes=names, settings=vars(cfg.settings))

    total = image_conn.msgcount if cfg.max_frames is None else min(image_conn.msgcount, cfg.max_frames)
    overlay_at = set(np.linspace(0, max(total - 1, 0), num=min(cfg.num_overlays, total), dtype=int).tolist())
    overlays: list[tuple[str, np.ndarray]] = []
    scene_graphs: list[dict] = []

    out_bag = OutputBag(out_dir / "bag")
    topics = {"mask": f"{NODE_NS}/mask", "overlay": f"{NODE_NS}/overlay",
              "scene_graph": f"{NODE_NS}/scene_graph", "labels": f"{NODE_NS}/labels"}
    out_bag.add_topic(topics["mask"], IMAGE_TYPE)
    out_bag.add_topic(topics["overlay"], IMAGE_TYPE)
    out_bag.add_topic(topics["scene_graph"], SCENE_GRAPH_TYPE)
    out_bag.add_topic(topics["labels"], LABEL_INFO_TYPE)
    msg_class = CompressedImage if image_conn.msgtype == COMPRESSED_TYPE else Image
    stream = FrameStream(reader, image_conn, label_conn)
    labels_written = False
    # Inference runs on one worker thread, as in the node (its worker loop): measured on this 2-core
    # machine, torch CPU inference issued from the main thread was 3-5x slower than from a worker
    # thread with the same thread settings, so only this makes replay latency comparable.
    from concurrent.futures import ThreadPoolExecutor

    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="casseg_replay_worker")
    t_start = time.perf_counter()
    interrupted = None
    try:
        from tqdm import tqdm

        frames = tqdm(stream, total=total, unit="frame", desc="replay", disable=not cfg.progress)
        for frame in frames:
            if cfg.max_frames is not None and stats.frames_seen >= cfg.max_frames:
                break
            stats.frames_seen += 1
            try:
                msg = deserialize_message(frame.raw, msg_class)
            except Exception as exc:  # noqa: BLE001 - rclpy raises RMWError for malformed CDR
                stats.skip(frame.index, None, f"undecodable {image_conn.msgtype} message "
                                              f"({type(exc).__name__}, {len(frame.raw)} bytes)")
                continue
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            try:
                rgb = to_rgb(msg)
            except InvalidImage as exc:
                stats.skip(frame.index, stamp, exc.reason)
                continue
            try:
                res = worker.submit(pipeline.process, rgb).result()
            except Exception as exc:  # noqa: BLE001 - as the node: count, carry on
                stats.skip(frame.index, stamp, f"inference error: {type(exc).__name__}: {exc}")
                continue
            stats.frames_processed += 1
            stats.forward_s.append(res.forward_s)
            stats.host_s.append(res.host_s)
            stats.total_s.append(res.total_s)
            header = _header_msg(msg.header)
            if not labels_written:
                info = LabelInfo(header=header, threshold=float(cfg.settings.score_threshold))
                for cid, name in enumerate(names):
                    r, g, b = (float(c) / 255.0 for c in pipeline.palette[cid])
                    info.classes.append(ClassLabel(class_id=cid, name=name, color=ColorRGBA(r=r, g=g, b=b, a=1.0)))
                out_bag.write(topics["labels"], frame.log_time_ns, serialize_message(info))
                labels_written = True
            out_bag.write(topics["mask"], frame.log_time_ns,
                          serialize_message(numpy_to_image(res.mask, res.mask_encoding, header)))
            out_bag.write(topics["overlay"], frame.log_time_ns,
                          serialize_message(numpy_to_image(res.overlay, "rgb8", header)))
            out_bag.write(topics["scene_graph"], frame.log_time_ns,
                          serialize_message(scene_graph_to_msg(res.graph, header)))
            scene_graphs.append({"frame": frame.index, "stamp_ns": stamp, "frame_id": header.frame_id,
                                 **res.graph.to_dict()})
            gt = None
            if iou is not None:
                if frame.label_raw is None:
                    stats.label_notes[frame.label_note or "no label"] += 1
                else:
                    try:
                        gt = label_to_ids(deserialize_message(frame.label_raw, Image))
                        iou.update(res.class_ids, gt)
                    except InvalidLabel as exc:
                        stats.label_notes[exc.reason] += 1
                        gt = None
                    except Exception as exc:  # noqa: BLE001 - malformed label CDR
                        stats.label_notes[f"undecodable label message: {type(exc).__name__}"] += 1
                        gt = None
            if frame.index in overlay_at:
                panels = [rgb, res.overlay]
                if gt is not None:
                    from casseg_ros.perception import make_overlay

                    gt_vis = np.where(gt < 255, lut[np.clip(gt, 0, len(lut) - 1)] if lut is not None else gt, 255)
                    panels.append(make_overlay(rgb, gt_vis.astype(np.int32), pipeline.palette, 0.7))
                overlays.append((f"frame_{frame.index:05d}", np.concatenate(panels, axis=1)))
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    finally:
        worker.shutdown(wait=True)
        stats.wall_s = time.perf_counter() - t_start
        stats.errors.extend(stream.errors)
        if salvage_note:
            stats.errors.append(f"bag {cfg.bag} is truncated or corrupt ({salvage_note}): only the "
                                f"{stats.frames_seen} frames before the damage were evaluated")
        if interrupted:
            stats.errors.append(interrupted)
        bag_path = out_bag.close()
        reader.close()
        metrics.update(stats.summary())
        metrics["status"] = "ok" if not stats.errors else "incomplete"
        metrics["iou"] = iou.result() if iou is not None else None
        metrics["output_bag"] = {"path": str(bag_path), "messages": dict(out_bag.counts)}
        write_json(out_dir / "scene_graphs.json", {"frames": scene_graphs})
        write_json(out_dir / "metrics.json", metrics)
        write_report(out_dir, "casseg_ros replay", metrics, overlays,
                     {"total": stats.total_s, "forward": stats.forward_s},
                     intro=f"Bag `{cfg.bag}`, image topic `{image_conn.topic}`, model `{cfg.model_path}` "
                           f"({metrics['backend'].get('name')}/{metrics['backend'].get('device')}). "
                           f"Overlay figures: input | prediction | ground truth.")
    if stats.errors:
        raise ReplayError("; ".join(stats.errors) + f" — results of the {stats.frames_processed} frames done "
                          f"are in {out_dir}")
    return metrics
