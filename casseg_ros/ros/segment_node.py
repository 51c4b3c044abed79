"""The casseg_ros lifecycle node: camera image in; mask, overlay, labels, scene graph, diagnostics out.

Thin glue over the ROS-free library: `casseg_ros.runtime` runs the model, `casseg_ros.perception`
turns its outputs into a scene graph and an overlay, `conversions` turns messages into arrays.

Threads: the executor thread runs the subscription callback, which only drops the message into
a `LatestFrameSlot`; one worker thread (alive while the node is active) decodes, runs inference and
publishes. A slow model therefore never delays the lifecycle/parameter services and never builds
a backlog — frames it could not keep up with are dropped and counted.

Lifecycle:
  configure  -> validate parameters, resolve model_path, create + load + warm up the backend,
                create the publishers
  activate   -> publish ~/labels (transient local), start the worker, create the subscription
  deactivate -> destroy the subscription, stop the worker (the frame in flight finishes)
  cleanup    -> destroy publishers, free the backend
Parameters that shape the model (model_path, backend, device, input size, vocabulary_file,
max_input_pixels) can only change while unconfigured; the subscription's (input_transport,
qos_reliability) while not active; the rest (score_threshold, min_instance_area, overlay_alpha,
publish_confidence, marker_scale) at any time, taking effect with the next frame.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rcl_interfaces.msg import (
    FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from casseg_msgs.msg import ClassLabel, LabelInfo, SceneEdge, SceneGraph, SceneNode
from casseg_ros.perception.mask import class_mask, mask_encoding_for, unknown_id_for
from casseg_ros.perception.overlay import make_overlay
from casseg_ros.perception.scene_graph import extract_scene_graph
from casseg_ros.ros.conversions import DEFAULT_MAX_PIXELS, InvalidImage, numpy_to_image, to_rgb
from casseg_ros.ros.latest_frame import LatestFrameSlot
from casseg_ros.ros.node_stats import NodeStats

NODE_NAME = "casseg_ros"
PACKAGE = "casseg_ros"
BACKENDS = ("torch", "onnxruntime", "tensorrt")
TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
# The worker re-checks for shutdown this often while no frame arrives.
_WORKER_POLL_S = 0.2
_WARN_THROTTLE_S = 2.0

_MODEL_PARAMS = ("model_path", "backend", "device", "input_height", "input_width", "vocabulary_file",
                 "max_input_pixels")
_SUBSCRIPTION_PARAMS = ("input_transport", "qos_reliability")


def _float_range(lo: float, hi: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]


def _int_range(lo: int, hi: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]


def _param_specs() -> list[tuple[str, Any, ParameterDescriptor]]:
    """(name, default, descriptor) of every parameter; descriptions say when a change applies."""
    at_configure = " Changes only while unconfigured (cleanup, set, configure)."
    at_activate = " Changes only while not active (deactivate, set, activate)."
    live = " Changes live (next frame)."
    D = ParameterDescriptor
    return [
        ("model_path", "models/casseg_demo.safetensors", D(
            type=ParameterType.PARAMETER_STRING,
            description="Checkpoint (.safetensors) or exported model (.onnx/.engine). A relative path is "
                        "looked up in the casseg_ros share directory, then in the working directory." + at_configure)),
        ("backend", "torch", D(
            type=ParameterType.PARAMETER_STRING,
            description=f"Inference backend, one of {', '.join(BACKENDS)}." + at_configure,
            additional_constraints=f"one of {', '.join(BACKENDS)}")),
        ("device", "cpu", D(
            type=ParameterType.PARAMETER_STRING,
            description="Inference device: cpu, cuda or cuda:N." + at_configure,
            additional_constraints="cpu | cuda | cuda:N")),
        ("input_height", 0, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range(0, 4096),
            description="Height the model runs at (images are resized on the host and the mask resized "
                        "back). 0 together with input_width 0: every image at its own size (torch only)."
                        + at_configure)),
        ("input_width", 0, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range(0, 4096),
            description="Width the model runs at; see input_height." + at_configure)),
        ("vocabulary_file", "", D(
            type=ParameterType.PARAMETER_STRING,
            description="Optional vocabulary file replacing the checkpoint's class names/palette in the "
                        "published labels; empty: use the checkpoint's." + at_configure)),
        ("max_input_pixels", DEFAULT_MAX_PIXELS, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range(1, 8192 * 8192),
            description="Images with more pixels are rejected before decoding (protects against forged "
                        "headers)." + at_configure)),
        ("input_transport", "raw", D(
            type=ParameterType.PARAMETER_STRING,
            description="raw: subscribe to 'image' (sensor_msgs/Image); compressed: to 'image/compressed' "
                        "(sensor_msgs/CompressedImage, jpeg or png)." + at_activate,
            additional_constraints="raw | compressed")),
        ("qos_reliability", "best_effort", D(
            type=ParameterType.PARAMETER_STRING,
            description="Reliability of the image subscription (SensorData QoS, depth 1). best_effort "
                        "matches every publisher; reliable only reliable ones." + at_activate,
            additional_constraints="best_effort | reliable")),
        ("score_threshold", 0.0, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range(0.0, 1.0),
            description="Pixels whose confidence is below it get the unknown id (255, or 65535 in mono16)." + live)),
        ("min_instance_area", 64, D(
            type=ParameterType.PARAMETER_INTEGER, integer_range=_int_range(1, 1 << 26),
            description="Connected regions smaller than this many pixels are not scene-graph nodes." + live)),
        ("overlay_alpha", 0.5, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range(0.0, 1.0),
            description="Weight of the class colour in ~/overlay." + live)),
        ("publish_confidence", False, D(
            type=ParameterType.PARAMETER_BOOL,
            description="Publish ~/confidence (mono8, confidence * 255)." + live)),
        ("marker_scale", 0.01, D(
            type=ParameterType.PARAMETER_DOUBLE, floating_point_range=_float_range(1e-6, 10.0),
            description="Metres per image pixel in ~/scene_graph/markers (x = column, y = row, z = 0 in the "
                        "image's frame_id)." + live)),
    ]


@dataclass
class LiveSettings:
    """Parameters the worker reads every frame; replaced as a whole so reads need no lock."""

    score_threshold: float
    min_instance_area: int
    overlay_alpha: float
    publish_confidence: bool
    marker_scale: float


def validate_parameter(name: str, value: Any) -> str | None:
    """Reason `value` is invalid for `name`, or None. Ranges are also enforced by the descriptors;
    this covers what a descriptor cannot express (enumerations, paired values)."""
    if name == "backend" and value not in BACKENDS:
        return f"backend must be one of {BACKENDS}, got {value!r}"
    if name == "device" and not (value in ("cpu", "cuda") or (
            isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit())):
        return f"device must be cpu, cuda or cuda:N, got {value!r}"
    if name == "input_transport" and value not in TRANSPORTS:
        return f"input_transport must be one of {TRANSPORTS}, got {value!r}"
    if name == "qos_reliability" and value not in RELIABILITIES:
        return f"qos_reliability must be one of {RELIABILITIES}, got {value!r}"
    if name == "model_path" and not str(value).strip():
        return "model_path must not be empty"
    if name in ("input_height", "input_width") and 0 < int(value) < 32:
        return f"{name} must be 0 (native size) or >= 32, got {value}"
    return None


def _share_directories() -> list[Path]:
    """The package's share dir: from the ament index (colcon/ROS install), else the pip prefix."""
    found = []
    try:
        from ament_index_python.packages import get_package_share_directory
        found.append(Path(get_package_share_directory(PACKAGE)))
    except (ImportError, LookupError, OSError):  # no ament index (pip install), or not registered
        pass
    pip_share = Path(sys.prefix) / "share" / PACKAGE  # setup.py data_files
    if pip_share.is_dir() and pip_share not in found:
        found.append(pip_share)
    return found


def resolve_model_path(model_path: str) -> Path:
    """Absolute paths as given; relative ones in the package share dir, then the working directory."""
    path = Path(os.path.expanduser(model_path))
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [share / path for share in _share_directories()] + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"model_path {model_path!r} not found (tried: {tried}). Train or download the "
                            f"model, or set the model_path parameter to an existing file.")


def _publisher_key(info: dict) -> bytes | None:
    gid = info.get("publisher_gid")
    if isinstance(gid, dict) and gid.get("data") is not None:
        return bytes(gid["data"])
    return None


def _class_labels(names: list[str], palette: np.ndarray) -> list[ClassLabel]:
    labels = []
    for class_id, name in enumerate(names):
        r, g, b = (float(c) / 255.0 for c in palette[class_id])
        labels.append(ClassLabel(class_id=class_id, name=str(name), color=ColorRGBA(r=r, g=g, b=b, a=1.0)))
    return labels


def scene_graph_to_msg(graph: Any, header: Header) -> SceneGraph:
    """perception SceneGraph (Instance/Relation dataclasses) -> casseg_msgs/SceneGraph.

    Fields are set on the sub-messages each message already owns: building a graph of a few
    hundred nodes and a few thousand edges is then a few milliseconds of Python, not ten.
    """
    msg = SceneGraph(header=header)
    nodes = []
    for inst in graph.instances:
        node = SceneNode(instance_id=int(inst.instance_id), class_id=int(inst.class_id), label=str(inst.label),
                         score=float(inst.score), area=int(inst.area))
        bbox = node.bbox
        bbox.x_offset, bbox.y_offset, bbox.width, bbox.height = (int(v) for v in inst.bbox)
        node.centroid.x, node.centroid.y = float(inst.centroid[0]), float(inst.centroid[1])
        nodes.append(node)
    msg.nodes = nodes
    msg.edges = [SceneEdge(source=int(rel.source), target=int(rel.target), predicate=str(rel.predicate),
                           weight=float(rel.weight)) for rel in graph.relations]
    return msg


def _color(rgb: np.ndarray, alpha: float) -> ColorRGBA:
    return ColorRGBA(r=float(rgb[0]) / 255.0, g=float(rgb[1]) / 255.0, b=float(rgb[2]) / 255.0, a=alpha)


def scene_graph_markers(graph_msg: SceneGraph, palette: np.ndarray, scale: float) -> MarkerArray:
    """RViz/Foxglove view of the graph, drawn in the image plane of the camera frame.

    Frame convention: markers use the image's header (frame_id and stamp). A node sits at
    (centroid_x * scale, centroid_y * scale, 0): image columns along +x, rows along +y, so in a
    REP-103 optical frame (x right, y down, z forward) the diagram appears upright, overlaying the
    picture as seen from behind the camera. It is a diagram of the 2-D graph, not a 3-D
    localisation (the node has no depth).

    Markers: DELETEALL first (objects that left the view disappear); ns "nodes": one SPHERE_LIST
    with a sphere per node in its class colour; ns "labels": a TEXT_VIEW_FACING per node
    ("label score", id = instance id) above its sphere; ns "edges/<predicate>": one LINE_LIST per
    predicate with a segment per edge. Lists keep a frame with hundreds of nodes and thousands
    of edges cheap to build, send and render.
    """
    header = graph_msg.header
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    node_size = max(scale * 12.0, 1e-3)
    positions: dict[int, Point] = {}
    white = np.array([255, 255, 255])
    spheres = Marker(header=header, ns="nodes", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
    spheres.pose.orientation.w = 1.0
    spheres.scale.x = spheres.scale.y = spheres.scale.z = node_size
    spheres.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    points, colors, texts = [], [], []
    for node in graph_msg.nodes:
        p = Point(x=node.centroid.x * scale, y=node.centroid.y * scale, z=0.0)
        positions[node.instance_id] = p
        cid = int(node.class_id)
        points.append(p)
        colors.append(_color(palette[cid] if cid < len(palette) else white, 0.9))
        text = Marker(header=header, ns="labels", id=int(node.instance_id), type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text=f"{node.label} {node.score:.2f}")
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.pose.position.x, text.pose.position.y = p.x, p.y - 1.5 * node_size
        text.pose.orientation.w = 1.0
        text.scale.z = node_size
        texts.append(text)
    spheres.points, spheres.colors = points, colors
    if points:
        markers.append(spheres)
    markers += texts
    by_predicate: dict[str, list[Point]] = {}
    for edge in graph_msg.edges:
        if edge.source in positions and edge.target in positions:
            by_predicate.setdefault(edge.predicate, []).extend((positions[edge.source], positions[edge.target]))
    for index, (predicate, segment_points) in enumerate(sorted(by_predicate.items())):
        line = Marker(header=header, ns=f"edges/{predicate}", id=index, type=Marker.LINE_LIST, action=Marker.ADD,
                      color=ColorRGBA(r=1.0, g=1.0, b=0.2, a=0.6))
        line.pose.orientation.w = 1.0
        line.scale.x = node_size * 0.25
        line.points = segment_points
        markers.append(line)
    return MarkerArray(markers=markers)


class SegmentNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, default, descriptor in _param_specs():
            self.declare_parameter(name, default, descriptor)
        # Only `main` reads it, once, at start-up: read_only says so to `ros2 param set`.
        self.declare_parameter("autostart", True, ParameterDescriptor(
            type=ParameterType.PARAMETER_BOOL, read_only=True,
            description="casseg_ros executable: configure and activate at start (false: wait for a "
                        "lifecycle manager)."))
        self._live = self._read_live_settings()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._configured = False
        self._active = False
        self._backend: Any = None
        self._class_names: list[str] = []
        self._palette = np.zeros((0, 3), np.uint8)
        self._mask_encoding = "mono8"
        self._max_input_pixels = DEFAULT_MAX_PIXELS
        self._outputs: dict[str, Any] = {}
        self._subscription = None
        self._slot: LatestFrameSlot | None = None
        self._worker: threading.Thread | None = None
        self.stats = NodeStats()
        # Diagnostics run in every state: an operator must see why a node is not producing masks.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(1.0, self.publish_diagnostics)

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _read_live_settings(self) -> LiveSettings:
        return LiveSettings(
            score_threshold=float(self._param("score_threshold")),
            min_instance_area=int(self._param("min_instance_area")),
            overlay_alpha=float(self._param("overlay_alpha")),
            publish_confidence=bool(self._param("publish_confidence")),
            marker_scale=float(self._param("marker_scale")))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        pending = {p.name: p.value for p in params}
        for param in params:
            reason = validate_parameter(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if param.name in _MODEL_PARAMS and self._configured:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is applied at configure: deactivate and cleanup the node first"))
            if param.name in _SUBSCRIPTION_PARAMS and self._active:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is applied at activate: deactivate the node first"))
        height = pending.get("input_height", self._param("input_height"))
        width = pending.get("input_width", self._param("input_width"))
        if (int(height) == 0) != (int(width) == 0):
            return SetParametersResult(successful=False, reason=(
                f"input_height and input_width must both be 0 (native size) or both > 0, got {height}x{width}"))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        self._live = self._read_live_settings()
        if self._active and any(p.name == "score_threshold" for p in params):
            self._publish_labels()  # LabelInfo carries the threshold

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - any failure must leave the node unconfigured, not dead
            self.get_logger().error(f"configure failed: {exc}")
            self.get_logger().debug(traceback.format_exc())
            self._release_backend()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def _configure(self) -> None:
        for name, _, _ in _param_specs():
            reason = validate_parameter(name, self._param(name))
            if reason:
                raise ValueError(reason)
        from casseg_ros.runtime import create_backend  # torch/onnxruntime import cost only when used

        model_path = resolve_model_path(str(self._param("model_path")))
        height, width = int(self._param("input_height")), int(self._param("input_width"))
        input_size = (height, width) if height and width else None
        self._max_input_pixels = int(self._param("max_input_pixels"))
        t0 = time.perf_counter()
        backend = create_backend(name=self._param("backend"), model_path=str(model_path),
                                 device=self._param("device"), input_size=input_size)
        self._backend = backend
        backend.load()
        backend.warmup()
        vocabulary = backend.vocabulary
        names, palette = list(vocabulary.names), np.asarray(vocabulary.palette, dtype=np.uint8)
        vocabulary_file = str(self._param("vocabulary_file")).strip()
        if vocabulary_file:
            names, palette = self._display_vocabulary(vocabulary_file, len(names))
        self._class_names, self._palette = names, palette
        # mono8 holds class ids 0..254 plus 255 "unknown": up to 255 classes; more need mono16.
        self._mask_encoding = mask_encoding_for(len(names))
        self._create_publishers()
        self._configured = True
        desc = backend.describe()
        self.get_logger().info(
            f"configured: {model_path} on {desc.get('name')}/{desc.get('device')} "
            f"input_size={desc.get('input_size')} classes={len(names)} mask={self._mask_encoding} "
            f"({time.perf_counter() - t0:.1f} s incl. warm-up)")

    @staticmethod
    def _display_vocabulary(path: str, num_classes: int) -> tuple[list[str], np.ndarray]:
        from casseg_ros.text import Vocabulary

        vocabulary = Vocabulary.load(path)
        if len(vocabulary.names) != num_classes:
            raise ValueError(f"vocabulary_file {path} has {len(vocabulary.names)} classes, the model "
                             f"{num_classes}; the labels would not match the mask ids")
        return list(vocabulary.names), np.asarray(vocabulary.palette, dtype=np.uint8)

    def _create_publishers(self) -> None:
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)
        latched_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        graph_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        make = self.create_lifecycle_publisher
        self._outputs = {
            "mask": make(Image, "~/mask", image_qos),
            "overlay": make(Image, "~/overlay", image_qos),
            "confidence": make(Image, "~/confidence", image_qos),
            "labels": make(LabelInfo, "~/labels", latched_qos),
            "scene_graph": make(SceneGraph, "~/scene_graph", graph_qos),
            "markers": make(MarkerArray, "~/scene_graph/markers", graph_qos),
        }

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        try:
            self._publish_labels()
            self._slot = LatestFrameSlot()
            self._worker = threading.Thread(target=self._worker_loop, args=(self._slot,),
                                            name="casseg_worker", daemon=True)
            self._worker.start()
            self._subscription = self._create_subscription()
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {exc}")
            self._stop_worker()
            super().on_deactivate(state)  # back to inactive: publishers disabled again
            return TransitionCallbackReturn.FAILURE
        self._active = True
        self.get_logger().info(f"active: listening on {self._subscription.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def _create_subscription(self):
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=1,
            reliability=(ReliabilityPolicy.RELIABLE if self._param("qos_reliability") == "reliable"
                         else ReliabilityPolicy.BEST_EFFORT),
            durability=qos_profile_sensor_data.durability)
        if self._param("input_transport") == "compressed":
            return self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos)
        return self.create_subscription(Image, "image", self._on_image, qos)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        self._release_backend()
        self._configured = False
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_deactivate(state)
        self._release_backend()
        self._configured = False
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()
        self._release_backend()
        self._configured = False
        return TransitionCallbackReturn.SUCCESS

    def _release_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None and hasattr(backend, "close"):
            backend.close()
        del backend
        try:
            import torch  # frees cached GPU memory held by the released model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def _stop_worker(self) -> None:
        if self._slot is not None and self._slot.close():
            self.stats.on_dropped()
        if self._worker is not None:
            self._worker.join()
        self._slot, self._worker = None, None

    # ------------------------------------------------------------------ data path
    def _on_image(self, msg: Image | CompressedImage, info: dict) -> None:
        """Executor thread: hand the frame over and return; never decode or infer here."""
        self.stats.on_received(publisher=_publisher_key(info), sequence=info.get("publication_sequence_number"))
        slot = self._slot
        if slot is not None and slot.put(msg):
            self.stats.on_dropped()

    def _worker_loop(self, slot: LatestFrameSlot) -> None:
        while not slot.closed:
            taken = slot.take(timeout=_WORKER_POLL_S)
            if taken is not None:
                try:
                    self.process_frame(taken.item)
                except Exception as exc:  # noqa: BLE001 - a bug on one frame must not end the worker
                    self.stats.on_processing_error(f"{type(exc).__name__}: {exc}")
                    self.get_logger().error(f"processing failed: {exc}\n{traceback.format_exc()}",
                                            throttle_duration_sec=_WARN_THROTTLE_S)

    def process_frame(self, msg: Image | CompressedImage) -> None:
        """Decode, segment and publish one frame. Bad input and inference failures are counted and
        logged, not raised."""
        t_start, cpu_start = time.perf_counter(), time.thread_time()
        live = self._live
        try:
            rgb = to_rgb(msg, self._max_input_pixels)
        except InvalidImage as exc:
            self.stats.on_rejected(exc.reason)
            self.get_logger().warning(f"rejected input image: {exc.reason}", throttle_duration_sec=_WARN_THROTTLE_S)
            return
        backend = self._backend
        if backend is None:
            return
        t_forward, cpu_forward = time.perf_counter(), time.thread_time()
        try:
            result = backend.infer(rgb[None])
        except Exception as exc:  # noqa: BLE001 - e.g. CUDA OOM on one frame; the next may succeed
            self.stats.on_inference_error(f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=_WARN_THROTTLE_S)
            return
        forward_s = time.perf_counter() - t_forward
        # Host work as CPU time of this thread too: on a loaded machine wall time also counts
        # the time other processes held the core.
        host_cpu_s = cpu_forward - cpu_start
        cpu_after_forward = time.thread_time()

        header = msg.header
        class_ids, confidence = result.class_ids[0], result.confidence[0]
        mask = self._mask_from(class_ids, confidence, live.score_threshold)
        pubs = self._outputs
        pubs["mask"].publish(numpy_to_image(mask, self._mask_encoding, header))
        latency_s = self._stamp_age(header)

        if live.publish_confidence:
            scaled = np.clip(confidence * 255.0 + 0.5, 0, 255).astype(np.uint8)
            pubs["confidence"].publish(numpy_to_image(scaled, "mono8", header))
        if pubs["overlay"].get_subscription_count() > 0:
            overlay = make_overlay(rgb, mask, self._palette, live.overlay_alpha)
            pubs["overlay"].publish(numpy_to_image(overlay, "rgb8", header))
        graph = extract_scene_graph(mask, self._class_names, confidence, result.adjacency[0],
                                    min_area=live.min_instance_area, ignore_ids=(self._unknown_id,))
        graph_msg = scene_graph_to_msg(graph, header)
        pubs["scene_graph"].publish(graph_msg)
        if pubs["markers"].get_subscription_count() > 0:
            pubs["markers"].publish(scene_graph_markers(graph_msg, self._palette, live.marker_scale))
        host_s = time.perf_counter() - t_start - forward_s
        host_cpu_s += time.thread_time() - cpu_after_forward
        self.stats.on_published(latency_s, forward_s, host_s, host_cpu_s)

    @property
    def _unknown_id(self) -> int:
        return unknown_id_for(self._mask_encoding)

    def _mask_from(self, class_ids: np.ndarray, confidence: np.ndarray, threshold: float) -> np.ndarray:
        return class_mask(class_ids, confidence, threshold, self._mask_encoding)

    def _stamp_age(self, header: Header) -> float:
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        return (now_ns - stamp_ns) / 1e9

    def _publish_labels(self) -> None:
        msg = LabelInfo(classes=_class_labels(self._class_names, self._palette),
                        threshold=float(self._live.score_threshold))
        msg.header.stamp = self.get_clock().now().to_msg()
        self._outputs["labels"].publish(msg)

    # ------------------------------------------------------------------ diagnostics
    def lifecycle_state(self) -> str:
        return "active" if self._active else ("inactive" if self._configured else "unconfigured")

    def publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        snap["lifecycle_state"] = self.lifecycle_state()
        desc = self._backend.describe() if self._backend is not None else {}
        snap["backend"] = desc.get("name", self._param("backend"))
        snap["device"] = desc.get("device", self._param("device"))
        snap["precision"] = desc.get("precision", "")
        snap["input_size"] = "x".join(str(v) for v in desc.get("input_size") or []) or "native"
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: segmentation",
                                  hardware_id=str(snap["device"]))
        if not self._active:
            status.level, status.message = DiagnosticStatus.WARN, f"not processing ({snap['lifecycle_state']})"
        elif snap["input_rate_hz"] == 0.0:
            status.level, status.message = DiagnosticStatus.WARN, "no input images"
        else:
            status.level, status.message = DiagnosticStatus.OK, "processing"
        status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                         for k, v in snap.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="casseg_ros", description=__doc__.splitlines()[0])
    parser.add_argument("--no-autostart", dest="autostart", action="store_false", default=None,
                        help="stay unconfigured (overrides the autostart parameter); drive the node "
                             "with lifecycle transitions instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Console entry `casseg_ros`: configure + activate (unless --no-autostart), then spin."""
    rclpy.init(args=argv)
    args = _parse_args(rclpy.utilities.remove_ros_args(argv if argv is not None else sys.argv)[1:])
    node = SegmentNode()
    exit_code = 0
    try:
        autostart = args.autostart if args.autostart is not None else bool(node.get_parameter("autostart").value)
        if autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("configure failed; see the error above")
                exit_code = 1
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("activate failed; see the error above")
                exit_code = 1
        if exit_code == 0:
            rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if node.lifecycle_state() == "active":
            node.on_deactivate(None)
        node._release_backend()
        node.destroy_node()
        rclpy.try_shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
