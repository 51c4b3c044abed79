"""Benchmark of the node's host path alone (issue 14): everything a frame costs besides the forward pass.

Writes out/bench/host.json. Per image size (1280x720, 1920x1080, 2048x1024) and per stage, the
median milliseconds of the node's per-frame steps, on procedural context scenes rendered at that
size (training/datasets/context_scenes.py: street/harbour scenes with their usual objects and their
exact depth), fed through the node's own frame step (casseg_ros/ros/frame_io.py, what the node's
worker and offline replay call):

- decode: frame_io.frame_input: the input sensor_msgs/Image (rgb8) -> array (ros/conversions.to_rgb);
  with depth also the 16UC1 depth message -> metres, camera_info -> intrinsics and the checks;
- pipeline: FramePipeline.process_batch (mask rule, the products asked for, scene graph, its 3D with
  depth) around the stand-in backend casseg_ros/runtime/canned.py: the real `Backend.infer` around a
  forward pass that returns precomputed model outputs (the scene's classes, a smooth confidence), so
  only the model is left out. Two variants: outputs at the camera's resolution (a graph that resizes
  in itself, as a GPU deployment should: casseg-export --resize-in-graph), and — config
  `default_host_resize` — a model at 512x1024, so `Backend.infer` resizes the image down and the
  class ids and confidence back up on the host;
- build: frame_io.frame_outputs (ros/messages.frame_messages, the camera_info re-stamped when the
  camera sends one — the configurations with depth —, markers when subscribed);
- publish: the node's lifecycle publishers (ros/node_pubsub.py, QoS of the topic table ros/topics.py)
  with a subscriber in another process (this script with --subscriber, started with
  casseg_ros/processes/children.py on loopback DDS, readiness = matched subscriptions), so
  serialisation and the DDS write are counted.

Two configurations, run interleaved frame by frame (so a slow spell of the shared machine hits both):
`default` = mask, confidence image, scene graph (what a node with no optional subscribers makes,
plus the confidence image) and `all` = every output subscribed (also overlay, colour mask, markers,
depth -> scene graph in 3D and the labelled point cloud). label_info is latched and published on a
vocabulary or threshold change, not per frame: its build + publish time is reported apart.
`breakdown_ms` times each product's function alone on the same inputs (the profile), and (`crowded/*`)
the scene graph, its 3D, its message and the markers on a crowded view of the same size (80-pixel
squares of random classes: max_instances = 256 objects, ~2000 relations).

The publish floor (issue 22): in the same run, interleaved with the frames, the bench's node publishes
plain rgb8 images of 0.25, 1, 4 and 16 MB on another topic of the same QoS to the same subscriber
process; a least-squares line through the median publish times gives this machine's cost per MB
(`publish_floor`: ms_per_mb, intercept_ms, the points). Per size and configuration: `published_mb`
(one frame's messages, serialised), `floor_ms` = published_mb x ms_per_mb, `host_over_floor` =
total / floor_ms and `host_ms_over_floor` = total - floor_ms. Top level: `host_over_floor` = the worst
(largest) of the configurations publishing >= 4 MB per frame (goal <= 1.3), `host_ms_over_floor_small`
= the worst ms above the floor of the others (goal <= 2).

Keys: host_ms_1080p (default, 1920x1080, median per frame), host_ms_1080p_all (all, with the node's
default points_stride 1: a 50 MB organised cloud per 1080p frame), host_ms_1080p_all_points_stride4
(all, points_stride 4: a 3 MB cloud), host_ms_1080p_all_no_points (all but ~/points, depth kept for
the 3D scene graph), host_ms_1080p_host_resize (default, with the host resizes); per size the same as
host_ms[size][config]; the load average before/after. Goals (issue 14, quiet machine):
host_ms_1080p <= 5, host_ms_1080p_all <= 10.

    python bench/host.py [--rounds 15] [--sizes 1280x720,1920x1080,2048x1024] [--out out/bench/host.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import rclpy
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's casseg_ros, also without an install

from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.message_buffers import message_array  # noqa: E402
from casseg_ros.perception.depth import check_depth, graph_in_3d, labelled_cloud, organised_points  # noqa: E402
from casseg_ros.perception.mask import class_mask  # noqa: E402
from casseg_ros.perception.overlay import colorize, make_overlay  # noqa: E402
from casseg_ros.perception.scene_graph import SceneGraph, segment_instances  # noqa: E402
from casseg_ros.perception.temporal_smoothing import ClassSmoother  # noqa: E402
from casseg_ros.perception.tracking import Tracker  # noqa: E402
from casseg_ros.pipeline import (ClassLabels, DepthFrame, FramePipeline, PipelineSettings, Products,  # noqa: E402
                                 confidence_to_mono8)
from casseg_ros.processes.children import ChildProcesses, init_child_rclpy, loopback_env, random_domain_id  # noqa: E402
from casseg_ros.processes.children import StopFlag  # noqa: E402
from casseg_ros.processes.readiness import wait_for_matched_subscriptions  # noqa: E402
from casseg_ros.resources import DEMO_MODEL, resolve_data_path  # noqa: E402
from casseg_ros.ros.cameras import Camera  # noqa: E402
from casseg_ros.ros.conversions import numpy_to_image, to_rgb  # noqa: E402
from casseg_ros.ros.depth_conversions import depth_to_metres, pinhole_from_info  # noqa: E402
from casseg_ros.ros.frame_io import Companions, InputSettings, Rejection, frame_input, frame_outputs  # noqa: E402
from casseg_ros.ros.markers import scene_graph_markers  # noqa: E402
from casseg_ros.ros.messages import frame_messages, label_info_msg, point_cloud_msg, scene_graph_to_msg  # noqa: E402
from casseg_ros.ros.node_pubsub import create_outputs, publish  # noqa: E402
from casseg_ros.ros.topics import OUTPUT_TOPICS, OUTPUTS  # noqa: E402
from casseg_ros.runtime import create_backend  # noqa: E402
from casseg_ros.runtime.base import InferenceResult, resize_images, resize_outputs  # noqa: E402
from casseg_ros.runtime.canned import CannedBackend  # noqa: E402
from training.datasets.context_scenes import CONTEXT_CLASSES, ContextScenes  # noqa: E402

SIZES = ((720, 1280), (1080, 1920), (1024, 2048))
NODE = "host_bench"
INPUTS = InputSettings()  # the node's defaults: max_input_pixels, depth_max_range_m
MAX_RANGE_M = INPUTS.depth_max_range_m
MARKER_SCALE = 0.01
SETTINGS = PipelineSettings(points_stride=1)
DEFAULT = Products(confidence_image=True)
ALL = Products(overlay=True, color_mask=True, confidence_image=True, points=True)
MODEL_SIZE = (512, 1024)  # the demo model's input size: what a host-resizing backend runs at


@dataclass(frozen=True)
class Config:
    products: Products
    settings: PipelineSettings
    with_depth: bool
    # Which backend: "camera_size" (CannedBackend), "host_resize" (CannedBackend at MODEL_SIZE), and with
    # --onnx "onnxruntime" / "onnxruntime_host_resize" (the demo weights on ONNX Runtime at MODEL_SIZE,
    # resized in the graph / on the host).
    backend: str = "camera_size"


CONFIGS = {"default": Config(DEFAULT, SETTINGS, False), "all": Config(ALL, SETTINGS, True),
           "all_points_stride4": Config(ALL, PipelineSettings(points_stride=4), True),
           "all_no_points": Config(Products(overlay=True, color_mask=True, confidence_image=True), SETTINGS, True),
           "default_host_resize": Config(DEFAULT, SETTINGS, False, backend="host_resize"),
           # output_resolution: model (issue 22 item 2): the 512x1024 model's outputs published as they are
           "default_model_resolution": Config(DEFAULT, replace(SETTINGS, output_resolution="model"), False,
                                              backend="host_resize"),
           "all_model_resolution": Config(ALL, replace(SETTINGS, output_resolution="model"), True,
                                          backend="host_resize")}
ONNX_CONFIGS = {"default_onnxruntime": Config(DEFAULT, SETTINGS, False, backend="onnxruntime"),
                "default_onnxruntime_host_resize": Config(DEFAULT, SETTINGS, False, backend="onnxruntime_host_resize")}
EVERY_CONFIG = {**CONFIGS, **ONNX_CONFIGS}


@dataclass
class Frame:
    """One camera frame at one size, as the node receives it, and the pipeline that segments it."""

    size: tuple[int, int]
    image_msg: Image
    depth_msg: Image
    info: CameraInfo
    result: InferenceResult
    instances: int
    pipelines: dict[str, FramePipeline]  # Config.backend -> the pipeline around that backend


def smooth_confidence(height: int, width: int, seed: int) -> np.ndarray:
    """A model-like confidence map: smooth in [0.4, 1], not one constant."""
    coarse = np.random.default_rng(seed).random((height // 32 + 1, width // 32 + 1), dtype=np.float32)
    return (0.4 + 0.6 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)).astype(np.float32)


def make_frame(height: int, width: int, seed: int = 0) -> Frame:
    scene = ContextScenes(1, height, width, seed=seed).generate(0)
    image = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    image.data = scene.image.tobytes()
    millimetres = np.rint(np.where(np.isfinite(scene.depth), scene.depth, 0) * 1000)
    depth = Image(height=height, width=width, encoding="16UC1", is_bigendian=0, step=width * 2)
    depth.data = np.where(millimetres <= 65535, millimetres, 0).astype("<u2").tobytes()
    info = CameraInfo(height=height, width=width, k=scene.camera.k)
    k = len(CONTEXT_CLASSES)
    adjacency = np.random.default_rng(seed).random((1, k, k), dtype=np.float32)
    result = InferenceResult(scene.label.astype(np.int32)[None], smooth_confidence(height, width, seed)[None],
                             np.full((1, k), 1 / k, np.float32), adjacency)
    palette = np.random.default_rng(0).integers(0, 256, (k, 3), dtype=np.uint8)
    labels = ClassLabels(tuple(CONTEXT_CLASSES), palette)
    model_h, model_w = MODEL_SIZE
    model_size_result = InferenceResult(
        cv2.resize(result.class_ids[0], (model_w, model_h), interpolation=cv2.INTER_NEAREST)[None],
        smooth_confidence(model_h, model_w, seed)[None], result.class_scores, result.adjacency)
    pipelines = {"camera_size": FramePipeline(CannedBackend(result), labels),
                 "host_resize": FramePipeline(CannedBackend(model_size_result, input_size=MODEL_SIZE), labels)}
    return Frame((height, width), image, depth, info, result, len(scene.instance_classes), pipelines)


def onnx_pipelines(sizes: list[tuple[int, int]]) -> dict[str, FramePipeline]:
    """The demo weights on ONNX Runtime (CPU) at MODEL_SIZE, resizing in the graph and on the host,
    warmed up at every camera size (the first frame of a size allocates for it)."""
    model = resolve_data_path(DEMO_MODEL, "demo weights")
    pipelines = {}
    for name, in_graph in (("onnxruntime", True), ("onnxruntime_host_resize", False)):
        backend = create_backend("onnxruntime", model, input_size=MODEL_SIZE, resize_in_graph=in_graph).load()
        for size in sizes:
            backend.warmup(1, size=size)
        pipelines[name] = FramePipeline(backend)
    return pipelines


def bench_camera(node: LifecycleNode) -> Camera:
    """The unnamed camera of a node: the node's lifecycle publishers of every output, activated."""
    camera = Camera("")
    create_outputs(node, camera)
    node.trigger_configure()
    node.trigger_activate()  # enables the lifecycle publishers
    return camera


def wait_matched(camera: Camera, timeout: float) -> None:
    for publisher in camera.outputs.values():
        wait_for_matched_subscriptions(publisher, timeout)


def run_frame(frame: Frame, config: str, camera: Camera) -> tuple[dict[str, float], dict[str, object]]:
    """The node's per-frame host work for one camera frame (ros/camera_batch.py for a batch of one), per
    stage, and the messages it published."""
    chosen = EVERY_CONFIG[config]
    products, settings, pipeline = chosen.products, chosen.settings, frame.pipelines[chosen.backend]
    # A camera with depth also sends camera_info; the configurations without depth have neither.
    companions = Companions(frame.info, frame.depth_msg, True) if chosen.with_depth else Companions(None, None, False)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    decoded = frame_input(frame.image_msg, lambda: companions, settings, products, INPUTS)
    t1 = time.perf_counter()
    if isinstance(decoded, Rejection) or decoded.depth_problem:
        raise RuntimeError(f"the bench's frame was not taken as the node takes it: {decoded}")
    result = pipeline.process_batch([decoded.frame], settings)[0]
    t2 = time.perf_counter()
    header = Header(frame_id="camera_optical_frame")
    # Markers only in the configurations with every output subscribed (those with the overlay).
    messages = frame_outputs(result, pipeline.labels, header, decoded.camera_info,
                             MARKER_SCALE if products.overlay else None)
    t3 = time.perf_counter()
    publish(camera, messages)
    t4 = time.perf_counter()
    # Host time of the pipeline call: all but the runtime call proper (the stand-ins make none; with
    # a host resize it includes Backend.infer's two resizes).
    runtime_s = pipeline.backend.last_runtime_s
    times.update(decode=t1 - t0, pipeline=t2 - t1 - runtime_s, build=t3 - t2, publish=t4 - t3)
    times["total"] = sum(times.values())
    times["runtime"] = runtime_s
    return times, messages


def published_bytes(messages: dict[str, object]) -> int:
    """Serialised bytes of one frame's messages (the markers are serialised already)."""
    return sum(len(m) if isinstance(m, bytes) else len(serialize_message(m)) for m in messages.values())


# The publish floor: the same publisher path (a reliable depth-2 topic, a subscriber in the other process)
# sending plain rgb8 images of these sizes; a line through the medians gives this machine's ms per MB.
FLOOR_TOPIC = "publish_floor"
FLOOR_MB = (0.25, 1.0, 4.0, 16.0)
MB = 1e6
LARGE_MB = 4.0  # configurations publishing at least this per frame are judged by host_over_floor


def floor_images(header: Header) -> dict[float, Image]:
    """One rgb8 image of each FLOOR_MB size, its data an array.array the message keeps (no copy)."""
    images = {}
    for size in FLOOR_MB:
        rows = max(1, int(size * MB) // (1000 * 3))
        images[size] = numpy_to_image(message_array((rows, 1000, 3), np.uint8), "rgb8", header)
    return images


def publish_floor(samples: dict[float, list[float]]) -> dict[str, object]:
    """ms per MB and the per-message intercept of a least-squares line through the median publish
    times, with the points it was fitted to (MB as serialised)."""
    sizes = sorted(samples)
    medians = [float(np.median(samples[s])) * 1e3 for s in sizes]
    slope, intercept = np.polyfit(sizes, medians, 1)
    return {"ms_per_mb": round(float(slope), 4), "intercept_ms": round(float(intercept), 4),
            "points_ms": {f"{s:g}": round(m, 4) for s, m in zip(sizes, medians)}}


def breakdown(frame: Frame, node_camera: Camera, repeats: int) -> dict[str, float]:
    """Each product's function alone on this frame's inputs (median ms): the profile."""
    labels, header = frame.pipelines["camera_size"].labels, Header(frame_id="camera_optical_frame")
    rgb = to_rgb(frame.image_msg)
    class_ids, confidence = frame.result.class_ids[0], frame.result.confidence[0]
    camera = pinhole_from_info(frame.info)
    metres = depth_to_metres(frame.depth_msg, MAX_RANGE_M)
    mask = class_mask(class_ids, confidence, 0.0, labels.mask_encoding)
    colorized = colorize(mask, labels.palette)
    def scene_graph(stride: int):
        return segment_instances(mask, list(labels.names), confidence, frame.result.adjacency[0],
                                 ignore_ids=(labels.unknown_id,), stride=stride)

    graph, runs = scene_graph(SETTINGS.scene_graph_stride)
    graph_full, runs_full = scene_graph(1)
    full = frame.pipelines["camera_size"].process(rgb, SETTINGS, ALL, DepthFrame(metres, camera))
    messages = frame_messages(full, labels, header)
    markers = scene_graph_markers(full.graph, header, labels.palette, MARKER_SCALE)
    label_info = label_info_msg(labels, 0.0, header.stamp)
    steps: dict[str, Callable[[], object]] = {
        "decode/image": lambda: to_rgb(frame.image_msg),
        "decode/depth": lambda: (depth_to_metres(frame.depth_msg, MAX_RANGE_M), pinhole_from_info(frame.info)),
        "decode/depth (stride 4)": lambda: depth_to_metres(frame.depth_msg, MAX_RANGE_M, 4),
        "decode/check_depth": lambda: check_depth(metres, camera, rgb.shape[:2]),
        "host_resize/image": lambda: resize_images(rgb[None], MODEL_SIZE),
        "host_resize/outputs": lambda: resize_outputs(frame.pipelines["host_resize"].backend.result, rgb.shape[:2]),
        "mask_rule": lambda: class_mask(class_ids, confidence, 0.0, labels.mask_encoding),
        "mask_rule/threshold": lambda: class_mask(class_ids, confidence, 0.5, labels.mask_encoding),
        "confidence_image": lambda: confidence_to_mono8(confidence),
        "overlay (after color_mask)": lambda: make_overlay(rgb, mask, labels.palette, 0.5, colorized),
        "color_mask": lambda: colorize(mask, labels.palette),
        "scene_graph": lambda: scene_graph(SETTINGS.scene_graph_stride),
        "scene_graph_3d": lambda: graph_in_3d(graph, runs, metres, camera),
        "scene_graph (stride 1)": lambda: scene_graph(1),
        "scene_graph_3d (stride 1)": lambda: graph_in_3d(graph_full, runs_full, metres, camera),
        "points": lambda: labelled_cloud(organised_points(metres, camera, 1), rgb, mask, confidence, 1),
        "msg/mask": lambda: numpy_to_image(mask, labels.mask_encoding, header),
        "msg/confidence": lambda: numpy_to_image(full.confidence_image, "mono8", header),
        "msg/overlay": lambda: numpy_to_image(full.overlay, "rgb8", header),
        "msg/color_mask": lambda: numpy_to_image(full.color_mask, "rgb8", header),
        "msg/scene_graph": lambda: scene_graph_to_msg(full.graph, header),
        "msg/markers": lambda: scene_graph_markers(full.graph, header, labels.palette, MARKER_SCALE),
        "msg/points": lambda: point_cloud_msg(full.points, header),
        "label_info (per change)": lambda: label_info_msg(labels, 0.0, header.stamp),
    }
    for name in ("mask", "confidence", "overlay", "mask/color", "points", "scene_graph"):
        steps[f"publish/{name}"] = (lambda n=name: node_camera.outputs[n].publish(messages[n]))
    steps["publish/scene_graph/markers"] = lambda: node_camera.outputs["scene_graph/markers"].publish(markers)
    steps["publish/label_info (per change)"] = lambda: node_camera.outputs["label_info"].publish(label_info)
    # The scene has a handful of objects; a crowded view reaches max_instances (256) objects and ~2000
    # relations, where a graph's cost per object and relation shows.
    crowded_map = crowded_class_map(*rgb.shape[:2], len(labels.names))
    def crowded_graph():
        return segment_instances(crowded_map, list(labels.names), confidence, frame.result.adjacency[0],
                                 ignore_ids=(labels.unknown_id,), stride=SETTINGS.scene_graph_stride)
    crowded, crowded_runs = crowded_graph()
    crowded_3d = graph_in_3d(crowded, crowded_runs, metres, camera)
    crowded_msg = scene_graph_to_msg(crowded_3d, header)
    crowded_markers = scene_graph_markers(crowded_3d, header, labels.palette, MARKER_SCALE)
    steps.update({
        "crowded/scene_graph": crowded_graph,
        "crowded/scene_graph_3d": lambda: graph_in_3d(crowded, crowded_runs, metres, camera),
        "crowded/msg/scene_graph": lambda: scene_graph_to_msg(crowded_3d, header),
        "crowded/msg/markers": lambda: scene_graph_markers(crowded_3d, header, labels.palette, MARKER_SCALE),
        "crowded/publish/scene_graph": lambda: node_camera.outputs["scene_graph"].publish(crowded_msg),
        "crowded/publish/scene_graph/markers": lambda: node_camera.outputs["scene_graph/markers"].publish(crowded_markers),
    })
    result = {}
    for name, step in steps.items():
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            samples.append(time.perf_counter() - t0)
        result[name] = round(float(np.median(samples)) * 1e3, 3)
    result["_graph"] = {"instances": full.graph.num_objects, "relations": full.graph.num_relations}
    result["_crowded_graph"] = {"instances": crowded_3d.num_objects, "relations": crowded_3d.num_relations,
                                "bytes_scene_graph": len(serialize_message(crowded_msg)),
                                "bytes_markers": len(crowded_markers)}
    return result


def crowded_class_map(height: int, width: int, num_classes: int, cell: int = 80, seed: int = 0) -> np.ndarray:
    """A class map of `cell`-pixel squares of random classes: a few hundred regions."""
    cells = np.random.default_rng(seed).integers(0, num_classes, (-(-height // cell), -(-width // cell)))
    return np.kron(cells, np.ones((cell, cell), np.int64))[:height, :width].astype(np.uint8)


def subscriber_main() -> int:
    """The child: subscribes to every output of the bench's publisher node, drops what it gets."""
    stop = StopFlag()
    init_child_rclpy()
    node = Node("host_bench_subscriber")
    for output in OUTPUT_TOPICS:
        node.create_subscription(output.msg_type, f"/{NODE}/{output.name}", lambda msg: None, output.qos)
    node.create_subscription(Image, f"/{NODE}/{FLOOR_TOPIC}", lambda msg: None, OUTPUTS["mask"].qos)
    while not stop.stop:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def tracking_ms(objects: int = 50, frames: int = 300, seed: int = 0) -> dict[str, float]:
    """Median ms of one `Tracker.update` (perception/tracking.py, what the pipeline calls per frame
    with tracking on) for `objects` objects of 5 classes drifting a few pixels a frame, with 3D
    centroids (velocities computed), some leaving and new ones entering (issue 23's goal: <= 0.5 ms
    for 50 objects)."""
    rng = np.random.default_rng(seed)
    boxes = np.column_stack([rng.integers(0, 1800, objects), rng.integers(0, 1000, objects),
                             rng.integers(20, 120, objects), rng.integers(20, 120, objects)]).astype(np.float64)
    classes = rng.integers(0, 5, objects)
    step = rng.normal(0, 3, (objects, 2))
    tracker, samples = Tracker(), []
    for i in range(frames):
        boxes[:, :2] = np.clip(boxes[:, :2] + step, 0, None)
        leaving = rng.random(objects) < 0.02  # ~1 object a frame leaves and another enters elsewhere
        boxes[leaving, :2] = rng.integers(0, 1800, (int(leaving.sum()), 2))
        b = boxes.astype(np.uint32)
        graph = SceneGraph(class_ids=classes, scores=np.full(objects, 0.9), boxes=b,
                           centroids=b[:, :2] + b[:, 2:] / 2, areas=b[:, 2] * b[:, 3],
                           centroids_3d=np.column_stack([b[:, :2] / 100.0, np.full(objects, 10.0)]))
        t0 = time.perf_counter()
        tracker.update(graph, i * 0.1)
        samples.append(time.perf_counter() - t0)
    return {"tracking_ms": round(float(np.median(samples[10:])) * 1e3, 3),
            "tracking_p99_ms": round(float(np.percentile(samples[10:], 99)) * 1e3, 3), "tracking_objects": objects}


def temporal_smoothing_ms(frames: int = 40) -> dict[str, float]:
    """Median ms of one `ClassSmoother.update` (what the pipeline calls per frame with
    temporal_smoothing 0.8) at 1080p (output_resolution camera) and at 512x1024 (model), on
    segmentation-like maps: three class regions, a class edge moving up to 100 px a frame and a
    200 px wide band of weak scores around it (masked numpy ops cost with how scattered their masks
    are: on uniformly random maps the 1080p update took 20 ms instead of ~8)."""
    out = {}
    for name, (h, w) in (("1080p", (1080, 1920)), ("512x1024", (512, 1024))):
        base = np.zeros((h, w), np.int32)
        base[:, : w // 2] = 3
        base[h // 2:, :] = 5
        smoother, samples = ClassSmoother(), []
        for i in range(frames):
            ids, confidence = base.copy(), np.full((h, w), 0.8, np.float32)
            edge = w // 2 - (i * 7) % 100
            ids[:, edge: w // 2] = 4
            confidence[:, max(0, edge - 50): w // 2 + 50] = 0.4 + 0.1 * (i % 3)
            t0 = time.perf_counter()
            smoother.update(ids, confidence, i * 0.1, 0.8)
            samples.append(time.perf_counter() - t0)
        out[f"temporal_smoothing_ms_{name}"] = _ms(samples[5:])
    return out


def _ms(samples: list[float]) -> float:
    return round(float(np.median(samples)) * 1e3, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved frames per size and configuration")
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for h, w in SIZES))
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "host.json")
    parser.add_argument("--onnx", action="store_true",
                        help="also default_onnxruntime(_host_resize): the demo weights on ONNX Runtime at 512x1024 "
                             "(host time = all but session.run; adds ~0.2-0.5 s of CPU forward per frame)")
    parser.add_argument("--only", choices=("tracking",), default=None,
                        help="tracking: only tracking_ms and temporal_smoothing_ms_* (in-process, seconds), "
                             "merged into the --out file")
    parser.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        return subscriber_main()
    if args.only == "tracking":
        tracked = tracking_ms() | temporal_smoothing_ms() | {"tracking_load_average": os.getloadavg()}
        previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
        atomic_write_text(args.out, json.dumps(previous | tracked, indent=2) + "\n")
        print(json.dumps(tracked))
        return 0
    sizes = [tuple(int(v) for v in reversed(s.split("x"))) for s in args.sizes.split(",")]
    domain = random_domain_id()
    env = loopback_env(domain)
    os.environ.update(env)  # this process's rclpy too: loopback profile, private domain
    load_before = os.getloadavg()
    frames = [make_frame(h, w) for h, w in sizes]
    configs = dict(CONFIGS)
    if args.onnx:
        configs.update(ONNX_CONFIGS)
        shared = onnx_pipelines(sizes)
        for frame in frames:
            frame.pipelines.update(shared)
    with tempfile.TemporaryDirectory() as tmp, ChildProcesses(Path(tmp), env, cwd=REPO) as children:
        children.start("subscriber", [sys.executable, str(Path(__file__).resolve()), "--subscriber"])
        rclpy.init()
        node = LifecycleNode(NODE)
        try:
            camera = bench_camera(node)
            floor_publisher = node.create_publisher(Image, f"/{NODE}/{FLOOR_TOPIC}", OUTPUTS["mask"].qos)
            wait_matched(camera, 30.0)
            wait_for_matched_subscriptions(floor_publisher, 30.0)
            probes = floor_images(Header(frame_id="camera_optical_frame"))
            probe_mb = {size: len(serialize_message(image)) / MB for size, image in probes.items()}
            frame_bytes = {}
            for frame in frames:  # warm-up: first-call allocations are not the steady state
                for config in configs:
                    frame_bytes[(frame.size, config)] = published_bytes(run_frame(frame, config, camera)[1])
            for image in probes.values():
                floor_publisher.publish(image)
            samples = {(f.size, c): [] for f in frames for c in configs}
            floor_samples = {probe_mb[size]: [] for size in probes}
            for i in range(args.rounds):
                for frame in frames:
                    order = list(configs) if i % 2 == 0 else list(reversed(configs))
                    for config in order:
                        samples[(frame.size, config)].append(run_frame(frame, config, camera)[0])
                for _ in range(3):  # the floor, interleaved with the frames (the same load)
                    for size, image in probes.items():
                        t0 = time.perf_counter()
                        floor_publisher.publish(image)
                        floor_samples[probe_mb[size]].append(time.perf_counter() - t0)
                children.check_alive("subscriber")
            profile = {f"{w}x{h}": breakdown(frame, camera, max(5, args.rounds // 2))
                       for frame, (h, w) in zip(frames, sizes)}
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    floor = publish_floor(floor_samples)
    host_ms = {}
    for frame in frames:
        h, w = frame.size
        host_ms[f"{w}x{h}"] = {config: {stage: _ms([s[stage] for s in samples[(frame.size, config)]])
                                        for stage in ("decode", "pipeline", "build", "publish", "total", "runtime")}
                               for config in configs}
        for config in configs:
            entry = host_ms[f"{w}x{h}"][config]
            mb = frame_bytes[(frame.size, config)] / MB
            entry.update(published_mb=round(mb, 3), floor_ms=round(mb * floor["ms_per_mb"], 3))
            entry["host_over_floor"] = round(entry["total"] / entry["floor_ms"], 3)
            entry["host_ms_over_floor"] = round(entry["total"] - entry["floor_ms"], 3)
        host_ms[f"{w}x{h}"]["instances_drawn"] = frame.instances
    entries = [entry for per_size in host_ms.values() for config, entry in per_size.items() if config in configs]
    large = [e["host_over_floor"] for e in entries if e["published_mb"] >= LARGE_MB]
    small = [e["host_ms_over_floor"] for e in entries if e["published_mb"] < LARGE_MB]
    report = {
        "host_ms_1080p": host_ms.get("1920x1080", {}).get("default", {}).get("total"),
        "host_ms_1080p_all": host_ms.get("1920x1080", {}).get("all", {}).get("total"),
        "host_ms_1080p_all_points_stride4": host_ms.get("1920x1080", {}).get("all_points_stride4", {}).get("total"),
        "host_ms_1080p_all_no_points": host_ms.get("1920x1080", {}).get("all_no_points", {}).get("total"),
        "host_ms_1080p_host_resize": host_ms.get("1920x1080", {}).get("default_host_resize", {}).get("total"),
        "host_ms_1080p_model_resolution": host_ms.get("1920x1080", {}).get("default_model_resolution", {}).get("total"),
        "host_ms_1080p_all_model_resolution":
            host_ms.get("1920x1080", {}).get("all_model_resolution", {}).get("total"),
        "host_ms_1080p_onnxruntime": host_ms.get("1920x1080", {}).get("default_onnxruntime", {}).get("total"),
        "host_ms_1080p_onnxruntime_host_resize":
            host_ms.get("1920x1080", {}).get("default_onnxruntime_host_resize", {}).get("total"),
        "host_over_floor": max(large, default=None),
        **tracking_ms(),
        **temporal_smoothing_ms(),
        "host_ms_over_floor_small": max(small, default=None),
        "publish_floor": floor,
        "goals": {"host_ms_1080p": "<= 5", "host_ms_1080p_all": "<= 10",
                  "host_over_floor": f"<= 1.3 (configurations publishing >= {LARGE_MB:g} MB per frame)",
                  "host_ms_over_floor_small": "<= 2 (the others: ms above their floor)",
                  "tracking_ms": "<= 0.5 (50 objects)"},
        "host_ms": host_ms,
        "breakdown_ms": profile,
        "details": {"rounds": args.rounds, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
                    "default": "mask, confidence image, scene graph", "all": "every output subscribed, with depth",
                    "method": "medians of frames interleaved across sizes and configurations; stand-in backend "
                              "(full-resolution precomputed outputs), real DDS publish to another process"},
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k.startswith("host_ms_1080p") or "floor" in k} | {"host_ms": host_ms,
                     "load": [load_before, report["details"]["load_average_after"]]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
