"""The demo's acceptance checks: the recorded outputs of the node against the demo recording.

`evaluate` reads the recording (camera images, ground-truth labels, camera_info, registered depth)
and what the recorder captured from the node, scores the masks against the labels (mIoU), checks
the standard outputs — label_info arrived; a camera_info with every mask's stamp, equal to the
camera's; colour mask == palette[mask]; every valid point of ~/points back-projects to its pixel,
carries its label and the camera's depth — and writes report.md, metrics.json, scene_graphs.json
and the figures. A failed check raises DemoError. The command line is `casseg_ros.demo.cli`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from casseg_ros.model.checkpoint import read_vocabulary
from casseg_ros.perception import make_overlay
from casseg_ros.perception.scene_graph import scene_graph_record
from casseg_ros.replay.bag import CAMERA_INFO_TYPE, IMAGE_TYPE, IMAGE_TYPES, LABEL_INFO_TYPE, POINT_CLOUD_TYPE, \
    SCENE_GRAPH_TYPE, find_connection, open_reader, stamp_ns, typestore
from casseg_ros.replay.live.recording import cloud_array, live_metrics, read_recording
from casseg_ros.replay.live.session import PlayedRun
from casseg_ros.replay.metrics import IoUEvaluator
from casseg_ros.replay.offline.ground_truth import gt_mapping
from casseg_ros.replay.report import (PanelFigure, birds_eye_figure, save_png, scene_graph_markdown, write_json,
                                     write_report)
from casseg_ros.ros.depth_conversions import depth_to_metres
from casseg_ros.ros.frame_io import InputSettings
from casseg_ros.ros.messages import scene_graph_from_msg
from casseg_ros.ros.topics import NODE_NAME, camera_siblings

NODE = f"/{NODE_NAME}"
# The node's depth_max_range_m in the demo (its default): farther depth gives NaN points.
DEPTH_MAX_RANGE_M = InputSettings.depth_max_range_m
# A valid point must project back onto its pixel centre to within this (pixels).
REPROJECTION_TOLERANCE_PX = 0.5


class DemoError(RuntimeError):
    pass


def _image_array(msg) -> np.ndarray:
    """rosbags Image (rgb8 / mono8 as the demo bag and the node write them) -> numpy, no copy."""
    data = np.asarray(msg.data, dtype=np.uint8)
    channels = {"rgb8": 3, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise DemoError(f"unexpected encoding {msg.encoding!r} in the recording")
    rows = data.reshape(msg.height, msg.step)[:, : msg.width * channels]
    return rows.reshape(msg.height, msg.width, channels) if channels == 3 else rows


@dataclass
class InputBag:
    """The demo recording by header stamp: camera images, ground-truth ids, the cameras' matrices K
    (row-major 9) and registered depth in metres (NaN invalid), and the label names."""

    images: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    camera_k: dict[int, tuple[float, ...]] = field(default_factory=dict)
    depth_m: dict[int, np.ndarray] = field(default_factory=dict)
    names: list[str] | None = None


def _read_input_bag(bag: Path) -> InputBag:
    store = typestore()
    reader = open_reader(bag)
    try:
        image_conn = find_connection(reader, None, IMAGE_TYPES, "image")
        info_topic, depth_topic = camera_siblings(image_conn.topic)
        label_conns = [c for c in reader.connections if c.msgtype == IMAGE_TYPE and "label" in c.topic]
        extra = [c for c in reader.connections if c.msgtype == LABEL_INFO_TYPE or c.topic in (info_topic, depth_topic)]
        found = InputBag()
        for conn, _, raw in reader.messages(connections=[image_conn, *label_conns, *extra]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype == LABEL_INFO_TYPE:
                found.names = [c.class_name for c in sorted(msg.class_map, key=lambda c: c.class_id)]
            elif conn.id == image_conn.id:
                found.images[stamp_ns(msg.header)] = _image_array(msg)
            elif conn.topic == info_topic:
                found.camera_k[stamp_ns(msg.header)] = tuple(float(v) for v in msg.k)
            elif conn.topic == depth_topic:
                found.depth_m[stamp_ns(msg.header)] = depth_to_metres(msg, max_range_m=np.inf)
            else:
                found.labels[stamp_ns(msg.header)] = _image_array(msg).astype(np.int64)
    finally:
        reader.close()
    return found


def _frame_index(stamps: list[int]) -> dict[int, int]:
    """Recorded stamp -> index of the frame in the recording."""
    return {stamp: i for i, stamp in enumerate(sorted(stamps))}


@dataclass
class NodeOutputs:
    """What the recorder captured, by recorded stamp (the player's offset taken off)."""

    masks: dict[int, np.ndarray] = field(default_factory=dict)
    overlays: dict[int, np.ndarray] = field(default_factory=dict)
    color_masks: dict[int, np.ndarray] = field(default_factory=dict)
    camera_k: dict[int, tuple[float, ...]] = field(default_factory=dict)
    graphs: list[dict[str, Any]] = field(default_factory=list)  # scene_graph_record()s, by frame
    names: list[str] | None = None


def _read_outputs(recording: Path, offset: int, index_of: dict[int, int]) -> NodeOutputs:
    """Every recorded output but the point clouds (big: `_check_points` streams them)."""
    store = typestore()
    found = NodeOutputs()
    graphs = []  # (frame index, recorded stamp, frame_id, message): labelled once label_info is read
    images = {f"{NODE}/mask": found.masks, f"{NODE}/overlay": found.overlays, f"{NODE}/mask/color": found.color_masks}
    with Reader(recording) as reader:
        wanted = [c for c in reader.connections if c.topic != f"{NODE}/points"]
        for conn, _, raw in reader.messages(connections=wanted):
            if conn.topic == f"{NODE}/label_info":
                msg = store.deserialize_cdr(raw, LABEL_INFO_TYPE)
                found.names = [c.class_name for c in sorted(msg.class_map, key=lambda c: c.class_id)]
            elif conn.topic in images:
                msg = store.deserialize_cdr(raw, IMAGE_TYPE)
                images[conn.topic][stamp_ns(msg.header) - offset] = _image_array(msg)
            elif conn.topic == f"{NODE}/camera_info":
                msg = store.deserialize_cdr(raw, CAMERA_INFO_TYPE)
                found.camera_k[stamp_ns(msg.header) - offset] = tuple(float(v) for v in msg.k)
            elif conn.topic == f"{NODE}/scene_graph":
                msg = store.deserialize_cdr(raw, SCENE_GRAPH_TYPE)
                recorded = stamp_ns(msg.header) - offset
                if recorded in index_of:  # one of our frames (not another publisher's)
                    graphs.append((index_of[recorded], recorded, msg.header.frame_id, msg))
    found.graphs = [scene_graph_record(index, recorded, frame_id, scene_graph_from_msg(msg, found.names or ()))
                    for index, recorded, frame_id, msg in sorted(graphs, key=lambda g: g[0])]
    return found


def _check_camera_info(outputs: NodeOutputs, inputs: InputBag) -> dict[str, Any]:
    """~/camera_info: one with every mask's stamp, equal to the camera's camera_info of that frame."""
    ours = [s for s in outputs.masks if s in inputs.images]
    echoed = [s for s in ours if s in outputs.camera_k]
    equal = sum(outputs.camera_k[s] == inputs.camera_k.get(s) for s in echoed)
    return {"masks": len(ours), "with_camera_info": len(echoed), "equal_to_input": equal,
            "ok": bool(ours) and len(echoed) == equal == len(ours)}


def _check_color_masks(outputs: NodeOutputs, palette: np.ndarray) -> dict[str, Any]:
    """~/mask/color == palette[~/mask] for every frame both were recorded for (unknown ids black)."""
    table = np.zeros((65536, 3), np.uint8)
    table[: len(palette)] = palette
    pairs = [s for s in outputs.color_masks if s in outputs.masks]
    equal = sum(np.array_equal(outputs.color_masks[s], table[outputs.masks[s].astype(np.int64)]) for s in pairs)
    return {"frames": len(pairs), "equal_to_palette_of_mask": equal, "ok": bool(pairs) and equal == len(pairs)}


@dataclass
class PointsCheck:
    summary: dict[str, Any]
    sample_stamp: int | None = None
    sample: np.ndarray | None = None  # the organised cloud of `sample_stamp`


def _check_points(recording: Path, offset: int, outputs: NodeOutputs, inputs: InputBag,
                  wanted_stamp: int | None) -> PointsCheck:
    """~/points, streamed cloud by cloud: organised like the mask (stride 1); every valid point
    projects back onto its own pixel with the camera matrix, carries that pixel's mask label and
    the camera's depth; valid exactly where the camera's depth is (0 < z <= the node's range).
    Keeps the cloud nearest to `wanted_stamp` for the bird's-eye figure."""
    store = typestore()
    frames = aligned = points = 0
    errors: list[np.ndarray] = []
    worst_px, check = 0.0, PointsCheck({})
    with Reader(recording) as reader:
        conns = [c for c in reader.connections if c.topic == f"{NODE}/points"]
        for conn, _, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, POINT_CLOUD_TYPE)
            stamp = stamp_ns(msg.header) - offset
            if stamp not in outputs.masks or stamp not in inputs.depth_m or stamp not in inputs.camera_k:
                continue
            cloud, mask, depth = cloud_array(msg), outputs.masks[stamp], inputs.depth_m[stamp]
            frames += 1
            if cloud.shape != mask.shape:
                continue
            fx, _, cx, _, fy, cy = inputs.camera_k[stamp][:6]
            valid = np.isfinite(cloud["z"])
            rows, cols = np.nonzero(valid)
            x, y, z = (cloud[name][valid].astype(np.float64) for name in ("x", "y", "z"))
            reprojection = np.maximum(np.abs(fx * x / z + cx - cols), np.abs(fy * y / z + cy - rows))
            with np.errstate(invalid="ignore"):
                expected_valid = np.isfinite(depth) & (depth <= DEPTH_MAX_RANGE_M)
            frame_ok = (np.array_equal(valid, expected_valid) and (cloud["label"][valid] == mask[valid]).all()
                        and (reprojection <= REPROJECTION_TOLERANCE_PX).all())
            aligned += bool(frame_ok)
            points += int(valid.sum())
            worst_px = max(worst_px, float(reprojection.max()) if reprojection.size else 0.0)
            errors.append(np.abs(z - depth[valid]))
            if wanted_stamp is not None and (check.sample_stamp is None or
                                             abs(stamp - wanted_stamp) < abs(check.sample_stamp - wanted_stamp)):
                check.sample_stamp, check.sample = stamp, cloud
    error = np.concatenate(errors) if errors else np.zeros(0)
    check.summary = {"frames": frames, "pixel_aligned": aligned, "ok": frames > 0 and aligned == frames,
                     "valid_points_per_frame": points / frames if frames else None,
                     "reprojection_max_px": worst_px,
                     "median_abs_z_error_m": float(np.median(error)) if error.size else None,
                     "max_abs_z_error_m": float(error.max()) if error.size else None}
    return check


def _graph_3d_summary(graphs: list[dict[str, Any]]) -> dict[str, Any]:
    placed = [where for g in graphs for where in g["objects"]["centroids_3d"] if where is not None]
    distances = [d for g in graphs for d in g["relations"]["distances_3d"] if d is not None]
    return {"instances": sum(len(g["objects"]["ids"]) for g in graphs), "instances_with_3d_centroid": len(placed),
            "frames_with_3d_centroids": sum(any(w is not None for w in g["objects"]["centroids_3d"]) for g in graphs),
            "relations_with_3d_distance": len(distances),
            "median_instance_depth_m": float(np.median([where[2] for where in placed])) if placed else None}


def _three_d_section(checks: dict[str, Any], three_d: dict[str, Any], figure: Path | None, frame: int | None) -> list[str]:
    lines = ["## Standard outputs and 3D", "",
             f"`{NODE}/label_info` (vision_msgs/LabelInfo), `{NODE}/camera_info`, `{NODE}/mask/color` and "
             f"`{NODE}/points` (organised PointCloud2, depth up to {DEPTH_MAX_RANGE_M:g} m) as recorded:", "",
             "| check | result | details |", "|---|---|---|"]
    for name, result in checks.items():
        details = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in result.items() if k != "ok" and v is not None)
        lines.append(f"| {name} | {'ok' if result['ok'] else '**FAILED**'} | {details} |")
    lines += ["", "| 3D scene graph | value |", "|---|---|"]
    lines += [f"| {k} | {f'{v:.3f}' if isinstance(v, float) else v} |" for k, v in three_d.items()] + [""]
    if figure is not None:
        lines += [f"![bird's-eye view](figures/{figure.name})", "",
                  f"Frame {frame} from above: every valid point of `{NODE}/points` at (x, z) in the camera's "
                  "optical frame, coloured by its label; the scene graph's 3D centroids marked.", ""]
    return lines


def evaluate(bag: Path, model: Path, run: PlayedRun, out: Path, num_overlays: int = 8) -> dict[str, Any]:
    inputs = _read_input_bag(bag)
    images, labels = inputs.images, inputs.labels
    index_of = _frame_index(list(images))
    rec = read_recording(run.recording, NODE)
    offset, first = int(run.info["offset_ns"]), int(run.info["first_stamp_ns"])
    metrics = live_metrics(rec, int(run.info["published"]), float(run.info["elapsed_s"]), offset + first)

    outputs = _read_outputs(run.recording, offset, index_of)
    masks, overlays, names = outputs.masks, outputs.overlays, outputs.names
    palette = read_vocabulary(model).palette  # the colours of the node's ~/mask/color and ~/overlay
    if names is None:
        raise DemoError("the node's ~/label_info (vision_msgs/LabelInfo) never arrived in the recording")
    lut, missing = gt_mapping(inputs.names, names) if inputs.names else (None, [])
    iou = IoUEvaluator(names, lut)
    unmatched = 0
    for stamp, mask in sorted(masks.items()):
        if stamp < first:
            continue  # not one of our frames
        if stamp not in labels:
            unmatched += 1
            continue
        iou.update(mask.astype(np.int64), labels[stamp])
    metrics["iou"] = iou.result()
    metrics["masks_without_ground_truth"] = unmatched
    metrics["ground_truth_classes_not_in_model"] = missing
    metrics["stamp_offset_ns"] = offset

    shutil.rmtree(out / "overlays", ignore_errors=True)
    shutil.rmtree(out / "figures", ignore_errors=True)
    stamps = sorted(s for s in overlays if s in images)
    picks = [stamps[i] for i in np.linspace(0, len(stamps) - 1, num=min(num_overlays, len(stamps)), dtype=int)] if stamps else []
    panels = []
    for stamp in picks:
        index = index_of[stamp]
        save_png(out / "overlays" / f"frame_{index:04d}.png", overlays[stamp])
        row = [("camera", images[stamp]), (f"{NODE}/overlay", overlays[stamp])]
        class_maps = [masks[stamp]] if stamp in masks else []
        if stamp in outputs.color_masks:
            row.append((f"{NODE}/mask/color", outputs.color_masks[stamp]))
        if stamp in labels:
            gt = labels[stamp]
            gt_ids = np.where(gt < len(lut), lut[np.clip(gt, 0, len(lut) - 1)], 255) if lut is not None else gt
            row.append(("ground truth", make_overlay(images[stamp], gt_ids.astype(np.int32), palette, 0.7)))
            class_maps.append(gt_ids)
        panels.append(PanelFigure(f"frame_{index:04d}", row, class_maps, names, palette))
    graphs = outputs.graphs
    write_json(out / "scene_graphs.json", {"frames": graphs})

    middle = picks[len(picks) // 2] if picks else None
    points = _check_points(run.recording, offset, outputs, inputs, middle)
    checks = {"label_info": {"classes": len(names), "ok": True},
              "camera_info": _check_camera_info(outputs, inputs),
              "mask/color": _check_color_masks(outputs, palette),
              "points": points.summary}
    metrics["output_checks"] = checks
    metrics["graph_3d"] = _graph_3d_summary(graphs)
    failed = [name for name, result in checks.items() if not result["ok"]]
    metrics.update(status="ok" if not failed else f"output checks failed: {', '.join(failed)}", bag=str(bag),
                   recording=str(run.recording), classes=names)
    metrics["latency_ms"] = {"e2e (camera stamp -> mask received)": metrics.pop("latency_ms")}
    write_json(out / "metrics.json", metrics)

    extra, figure, plotted = [], None, None
    if points.sample is not None:
        plotted = index_of.get(points.sample_stamp)
        graph = next((g for g in graphs if g["frame"] == plotted), None)
        valid = np.isfinite(points.sample["z"])
        objects = graph["objects"] if graph else {"labels": [], "centroids_3d": []}
        centroids = [(label, where[0], where[2]) for label, where in zip(objects["labels"], objects["centroids_3d"])
                     if where is not None]
        figure = birds_eye_figure(points.sample["x"][valid], points.sample["z"][valid], points.sample["label"][valid],
                                  palette, names, out / "figures" / "birds_eye.png",
                                  f"frame {plotted}: labelled points from above", centroids)
    extra += _three_d_section(checks, metrics["graph_3d"], figure, plotted)
    if middle is not None and graphs:
        graph = next((g for g in graphs if g["frame"] == index_of[middle]), None)
        if graph is not None:
            extra += scene_graph_markdown(f"Scene graph of frame {index_of[middle]} (as published on "
                                          f"`{NODE}/scene_graph`)", graph)
    write_report(out, "casseg_ros demo", metrics, panels,
                 {"camera stamp -> mask received": rec.since(offset + first).latencies_s()}, extra_sections=extra,
                 intro=f"The real `casseg_ros` node (separate process, loopback DDS) segmented `{bag.name}` (camera "
                       f"image, camera_info and registered depth) played at its recorded rate; a recorder process "
                       f"captured its outputs into `recording/`. Figures: camera | node overlay (`{NODE}/overlay`) "
                       f"| colour mask (`{NODE}/mask/color`) | ground truth. Per-frame overlays: `overlays/`; scene "
                       f"graphs (with 3D centroids): `scene_graphs.json`.")
    if failed:
        raise DemoError(f"output checks failed: {', '.join(failed)} (details in {out / 'report.md'})")
    return metrics
