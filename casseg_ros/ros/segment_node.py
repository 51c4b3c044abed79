"""The casseg_ros lifecycle node: camera image in; mask, overlay, labels, scene graph, diagnostics out.

Thin glue over the ROS-free library: `casseg_ros.pipeline.FramePipeline` runs the backend, the mask
rule, the products and the scene graph; `conversions` turns messages into arrays, `messages` the
results into messages (the same builder replay uses), `parameters` declares and validates the
parameters, `markers` draws the graph.

Threads: the executor thread runs the subscription callback, which only drops the message into
a `LatestFrameSlot`; one worker thread (alive while the node is active) decodes, runs inference and
publishes. A slow model therefore never delays the lifecycle/parameter services and never builds
a backlog — frames it could not keep up with are dropped and counted.

Lifecycle:
  configure  -> validate parameters, resolve model_path, create + load + warm up the backend,
                create the publishers
  activate   -> publish ~/label_info (transient local), start the worker, create the subscription
  deactivate -> destroy the subscription, stop the worker (the frame in flight finishes)
  cleanup    -> destroy publishers, free the backend
Parameters that shape the model (model_path, backend, device, input size, vocabulary_file,
max_input_pixels) can only change while unconfigured; the subscription's (input_transport,
qos_reliability) while not active; the rest (score_threshold, min_instance_area, overlay_alpha,
publish_confidence, marker_scale) at any time, taking effect with the next frame.
Optional images (~/overlay, ~/mask/color) are made only while someone subscribes to them.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
from typing import Any

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo
from visualization_msgs.msg import MarkerArray

from casseg_msgs.msg import SceneGraph
from casseg_ros.perception.depth import InvalidDepth, check_depth
from casseg_ros.pipeline import DepthFrame, FramePipeline, InferenceError, Products, display_labels
from casseg_ros.resources import resolve_data_path
from casseg_ros.ros.camera import depth_to_metres, pinhole_from_info
from casseg_ros.ros.conversions import DEFAULT_MAX_PIXELS, InvalidImage, to_rgb
from casseg_ros.ros.diagnostics import diagnostic_array
from casseg_ros.ros.latest_frame import LatestFrameSlot
from casseg_ros.ros.markers import scene_graph_markers
from casseg_ros.ros.messages import frame_messages, label_info_msg
from casseg_ros.ros.node_stats import NodeStats
from casseg_ros.ros.parameters import (
    MODEL_PARAMS, SUBSCRIPTION_PARAMS, LiveSettings, effective_transport, param_specs, validate_input_size,
    validate_parameter,
)
from casseg_ros.ros.stamp_cache import StampCache
from casseg_ros.runtime import create_backend

NODE_NAME = "casseg_ros"
# The worker re-checks for shutdown this often while no frame arrives.
_WORKER_POLL_S = 0.2
_WARN_THROTTLE_S = 2.0


def _publisher_key(info: dict) -> bytes | None:
    gid = info.get("publisher_gid")
    if isinstance(gid, dict) and gid.get("data") is not None:
        return bytes(gid["data"])
    return None


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class SegmentNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, default, descriptor in param_specs():
            self.declare_parameter(name, default, descriptor)
        # Only `main` reads it, once, at start-up: read_only says so to `ros2 param set`.
        self.declare_parameter("autostart", True, ParameterDescriptor(
            type=ParameterType.PARAMETER_BOOL, read_only=True,
            description="casseg_ros executable: configure and activate at start (false: wait for a "
                        "lifecycle manager)."))
        self._live = LiveSettings.from_values(self._param)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._configured = False
        self._active = False
        self._backend: Any = None
        self._pipeline: FramePipeline | None = None
        self._max_input_pixels = DEFAULT_MAX_PIXELS
        self._outputs: dict[str, Any] = {}
        self._subscriptions: list[Any] = []
        self._camera_infos: StampCache[CameraInfo] = StampCache()
        self._depths: StampCache[Image] = StampCache()
        self._slot: LatestFrameSlot | None = None
        self._worker: threading.Thread | None = None
        self.stats = NodeStats()
        # Diagnostics run in every state: an operator must see why a node is not producing masks.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(1.0, self.publish_diagnostics)

    # ------------------------------------------------------------------ parameters
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        pending = {p.name: p.value for p in params}
        for param in params:
            reason = validate_parameter(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if param.name in MODEL_PARAMS and self._configured:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is applied at configure: deactivate and cleanup the node first"))
            if param.name in SUBSCRIPTION_PARAMS and self._active:
                return SetParametersResult(successful=False, reason=(
                    f"{param.name} is applied at activate: deactivate the node first"))
        reason = validate_input_size(pending.get("input_height", self._param("input_height")),
                                     pending.get("input_width", self._param("input_width")))
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        self._live = LiveSettings.from_values(self._param)
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
        for name, _, _ in param_specs():
            reason = validate_parameter(name, self._param(name))
            if reason:
                raise ValueError(reason)
        model_path = resolve_data_path(str(self._param("model_path")), "model_path")
        height, width = int(self._param("input_height")), int(self._param("input_width"))
        input_size = (height, width) if height and width else None
        self._max_input_pixels = int(self._param("max_input_pixels"))
        t0 = time.perf_counter()
        backend = create_backend(name=self._param("backend"), model_path=str(model_path),
                                 device=self._param("device"), input_size=input_size)
        self._backend = backend
        backend.load()
        backend.warmup()
        labels = display_labels(backend, str(self._param("vocabulary_file")).strip() or None)
        self._pipeline = FramePipeline(backend, labels)
        self._create_publishers()
        self._configured = True
        desc = backend.describe()
        self.get_logger().info(
            f"configured: {model_path} on {desc.get('name')}/{desc.get('device')} "
            f"input_size={desc.get('input_size')} classes={len(labels.names)} mask={labels.mask_encoding} "
            f"({time.perf_counter() - t0:.1f} s incl. warm-up)")

    def _create_publishers(self) -> None:
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)
        latched_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        graph_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)

        def make(msg_type, name: str, qos: QoSProfile):
            # qos_overrides.<topic>.publisher.<policy> parameters (the ROS convention) may change `qos`.
            return self.create_lifecycle_publisher(
                msg_type, f"~/{name}", qos, qos_overriding_options=QoSOverridingOptions.with_default_policies())

        self._outputs = {
            "mask": make(Image, "mask", image_qos),
            "mask/color": make(Image, "mask/color", image_qos),
            "overlay": make(Image, "overlay", image_qos),
            "confidence": make(Image, "confidence", image_qos),
            "camera_info": make(CameraInfo, "camera_info", image_qos),
            "points": make(PointCloud2, "points", image_qos),
            "label_info": make(LabelInfo, "label_info", latched_qos),
            "scene_graph": make(SceneGraph, "scene_graph", graph_qos),
            "markers": make(MarkerArray, "scene_graph/markers", graph_qos),
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
            self._subscriptions = self._create_subscriptions()
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {exc}")
            self._stop_worker()
            super().on_deactivate(state)  # back to inactive: publishers disabled again
            return TransitionCallbackReturn.FAILURE
        self._active = True
        topics = ", ".join(s.topic_name for s in self._subscriptions)
        self.get_logger().info(f"active: listening on {topics}")
        return TransitionCallbackReturn.SUCCESS

    def _create_subscriptions(self) -> list[Any]:
        """The image (image_transport naming), its camera_info and an optional registered depth image."""
        def qos() -> QoSProfile:
            return QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=1,
                reliability=(ReliabilityPolicy.RELIABLE if self._param("qos_reliability") == "reliable"
                             else ReliabilityPolicy.BEST_EFFORT),
                durability=qos_profile_sensor_data.durability)

        def subscribe(msg_type, topic: str, callback):
            return self.create_subscription(msg_type, topic, callback, qos(),
                                            qos_overriding_options=QoSOverridingOptions.with_default_policies())

        transport = effective_transport(self._param("image_transport"), self._param("input_transport"))
        if self._param("input_transport"):
            self.get_logger().warning("input_transport is deprecated: set image_transport instead")
        self._camera_infos.clear()
        self._depths.clear()
        image = (subscribe(CompressedImage, "image/compressed", self._on_image) if transport == "compressed"
                 else subscribe(Image, "image", self._on_image))
        # Keeping several recent messages lets each image find its own stamp among them.
        return [image,
                subscribe(CameraInfo, "camera_info", lambda msg: self._camera_infos.put(_stamp_ns(msg.header), msg)),
                subscribe(Image, "depth/image", lambda msg: self._depths.put(_stamp_ns(msg.header), msg))]

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for subscription in self._subscriptions:
            self.destroy_subscription(subscription)
        self._subscriptions = []
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
        backend, self._backend, self._pipeline = self._backend, None, None
        if backend is not None and hasattr(backend, "close"):
            backend.close()
        del backend
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # frees cached GPU memory held by the released model

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

    def _wanted_products(self, live: LiveSettings) -> Products:
        pubs = self._outputs
        return Products(overlay=pubs["overlay"].get_subscription_count() > 0,
                        color_mask=pubs["mask/color"].get_subscription_count() > 0,
                        confidence_image=live.publish_confidence,
                        points=pubs["points"].get_subscription_count() > 0)

    def _depth_frame(self, stamp_ns: int, info: CameraInfo | None, image_shape: tuple[int, int],
                     live: LiveSettings) -> DepthFrame | None:
        """The registered depth of this frame, or None; a problem is counted and never stops the
        2D outputs."""
        depth_msg = self._depths.get(stamp_ns, live.sync_wait_s)
        if depth_msg is None:
            if self._depths.received:
                self.stats.on_depth_problem("no depth image with the frame's stamp")
            return None
        try:
            if info is None:
                raise InvalidDepth("no camera_info with the frame's stamp (needed to place depth in 3D)")
            camera = pinhole_from_info(info)
            metres = depth_to_metres(depth_msg, live.depth_max_range_m)
            check_depth(metres, camera, image_shape)
        except InvalidDepth as exc:
            self.stats.on_depth_problem(exc.reason)
            self.get_logger().warning(f"depth not used: {exc.reason}", throttle_duration_sec=_WARN_THROTTLE_S)
            return None
        return DepthFrame(metres, camera)

    def process_frame(self, msg: Image | CompressedImage) -> None:
        """Decode, segment and publish one frame. Bad input and inference failures are counted and
        logged, not raised."""
        t_start, cpu_start = time.perf_counter(), time.thread_time()
        live, pipeline = self._live, self._pipeline
        try:
            rgb = to_rgb(msg, self._max_input_pixels)
        except InvalidImage as exc:
            self.stats.on_rejected(exc.reason)
            self.get_logger().warning(f"rejected input image: {exc.reason}", throttle_duration_sec=_WARN_THROTTLE_S)
            return
        if pipeline is None:
            return
        stamp_ns = _stamp_ns(msg.header)
        info = self._camera_infos.get(stamp_ns, live.sync_wait_s)
        if info is None:
            self.stats.on_camera_info_missing()
        depth = self._depth_frame(stamp_ns, info, rgb.shape[:2], live)
        try:
            result = pipeline.process(rgb, live.pipeline, self._wanted_products(live), depth)
        except InferenceError as exc:  # e.g. CUDA OOM on one frame; the next may succeed
            self.stats.on_inference_error(str(exc))
            self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=_WARN_THROTTLE_S)
            return
        pubs = self._outputs
        messages = frame_messages(result, pipeline.labels, msg.header)
        for name, message in messages.items():
            pubs[name].publish(message)
        if info is not None:  # with every mask, under the mask's header, so RViz/Foxglove can place it
            info.header = msg.header
            pubs["camera_info"].publish(info)
        latency_s = (self.get_clock().now().nanoseconds - _stamp_ns(msg.header)) / 1e9
        if pubs["markers"].get_subscription_count() > 0:
            pubs["markers"].publish(scene_graph_markers(messages["scene_graph"], pipeline.labels.palette,
                                                        live.marker_scale))
        host_s = time.perf_counter() - t_start - result.forward_s
        # Host work as CPU time of this thread too: on a loaded machine wall time also counts the
        # time other processes held the core.
        host_cpu_s = time.thread_time() - cpu_start - result.forward_thread_cpu_s
        self.stats.on_published(latency_s, result.forward_s, host_s, host_cpu_s)

    def _publish_labels(self) -> None:
        self._outputs["label_info"].publish(label_info_msg(
            self._pipeline.labels, self._live.pipeline.score_threshold, self.get_clock().now().to_msg()))

    # ------------------------------------------------------------------ diagnostics
    def lifecycle_state(self) -> str:
        return "active" if self._active else ("inactive" if self._configured else "unconfigured")

    def publish_diagnostics(self) -> None:
        values = self.stats.snapshot()
        values["lifecycle_state"] = self.lifecycle_state()
        desc = self._backend.describe() if self._backend is not None else {}
        values["backend"] = desc.get("name", self._param("backend"))
        values["device"] = desc.get("device", self._param("device"))
        values["precision"] = desc.get("precision", "")
        values["input_size"] = "x".join(str(v) for v in desc.get("input_size") or []) or "native"
        self._diagnostics_pub.publish(diagnostic_array(f"{self.get_fully_qualified_name()}: segmentation",
                                                       str(values["device"]), values,
                                                       self.get_clock().now().to_msg()))


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
