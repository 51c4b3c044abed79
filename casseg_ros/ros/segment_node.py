"""The casseg_ros lifecycle node: camera images in; masks, labels, 3D, scene graphs, diagnostics out.

Thin glue over the ROS-free library: `casseg_ros.pipeline.FramePipeline` runs the backend, the mask
rule, the products and the scene graph; `conversions`/`camera` turn messages into arrays,
`messages` the results into messages (the same builder replay uses), `parameters` declares and
validates the parameters, `markers` draws the graph, `cameras` names each camera's topics.

One model serves every camera of the `cameras` parameter. Threads: executor threads run the
subscription callbacks, which only drop the message into the camera's latest-frame slot
(`LatestFrames`) or stamp cache; one worker thread (alive while the node is active) takes the newest
frame of every camera that has one (at most `max_batch`, round-robin beyond), runs them as one
batch, and publishes each camera's outputs with that camera's header. A slow model therefore never
delays the lifecycle/parameter services and never builds a backlog — frames it could not keep up
with are dropped and counted per camera.

`~/set_vocabulary` (casseg_msgs/srv/SetVocabulary) embeds new class names with the checkpoint's
text provider in the service callback (off the worker's frame path; new images wait for it),
then the worker swaps them in between two batches and
republishes every camera's label_info before the next mask; on any error the old vocabulary stays.

Lifecycle:
  configure  -> validate parameters, resolve model_path, create + load + warm up the backend,
                create the publishers and the vocabulary service
  activate   -> publish label_info (transient local), start the worker, create the subscriptions
  deactivate -> destroy the subscriptions, stop the worker (the batch in flight finishes)
  cleanup    -> destroy publishers and the service, free the backend
Parameters that shape the model (model_path, backend, device, input size, vocabulary_file,
max_input_pixels, cameras, max_batch, text_provider) can only change while unconfigured; the
subscriptions' (image_transport, qos_reliability) while not active; the rest at any time, taking
effect with the next frame. Optional images (~/overlay, ~/mask/color, ~/points) are made only while
someone subscribes to them.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo
from visualization_msgs.msg import MarkerArray

from casseg_msgs.msg import SceneGraph
from casseg_msgs.srv import SetVocabulary
from casseg_ros.perception.depth import InvalidDepth
from casseg_ros.pipeline import (DepthFrame, FrameInput, FramePipeline, InferenceError, Products, depth_stride,
                                 display_labels)
from casseg_ros.resources import resolve_data_path
from casseg_ros.ros.camera import depth_frame
from casseg_ros.ros.cameras import Camera
from casseg_ros.ros.conversions import DEFAULT_MAX_PIXELS, InvalidImage, to_rgb
from casseg_ros.ros.diagnostics import backend_status, camera_status, diagnostic_array
from casseg_ros.ros.latest_frame import LatestFrames, TakenFrame
from casseg_ros.ros.markers import scene_graph_markers
from casseg_ros.ros.messages import frame_messages, label_info_msg
from casseg_ros.ros.node_stats import BatchStats
from casseg_ros.ros.parameters import (
    MODEL_PARAMS, SUBSCRIPTION_PARAMS, LiveSettings, effective_transport, param_specs, validate_input_size,
    validate_parameter,
)
from casseg_ros.ros.vocabulary_request import BadVocabularyRequest, vocabulary_from_request
from casseg_ros.runtime import create_backend
from casseg_ros.text import Vocabulary

NODE_NAME = "casseg_ros"
# The worker re-checks for shutdown and vocabulary swaps this often while no frame arrives.
_WORKER_POLL_S = 0.2
_WARN_THROTTLE_S = 2.0
# camera_info / depth messages a subscription keeps (the image keeps 1).
COMPANION_QUEUE = 5
# How long ~/set_vocabulary waits for the worker to swap between two batches.
_SWAP_TIMEOUT_S = 60.0
# The executor returns to Python this often, so a SIGINT/SIGTERM is acted on within it.
_SPIN_S = 0.2
_MESSAGE_TYPES = {"mask": Image, "mask/color": Image, "overlay": Image, "confidence": Image,
                  "camera_info": CameraInfo, "points": PointCloud2, "label_info": LabelInfo,
                  "scene_graph": SceneGraph, "scene_graph/markers": MarkerArray}


def _publisher_key(info: dict) -> bytes | None:
    gid = info.get("publisher_gid")
    if isinstance(gid, dict) and gid.get("data") is not None:
        return bytes(gid["data"])
    return None


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class StartupParameterError(ValueError):
    """A parameter given at start-up (-p, a params file) that the node refuses: one line, its rule."""


@dataclass
class _VocabularySwap:
    """A vocabulary waiting for the worker, and the answer the service thread waits for."""

    vocabulary: Vocabulary
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class SegmentNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, default, descriptor in param_specs():
            try:
                self.declare_parameter(name, default, descriptor)
            except ParameterException as exc:  # an override out of range or of the wrong type
                given = self._parameter_overrides[name].value if name in self._parameter_overrides else default
                reason = validate_parameter(name, given) or f"{name} := {given!r}: {exc}"
                raise StartupParameterError(reason) from None
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
        self._max_batch = 1
        self.cameras: list[Camera] = [Camera(name) for name in self._param("cameras")]
        self.batch_stats = BatchStats()
        self._frames: LatestFrames | None = None
        self._worker: threading.Thread | None = None
        self._swap_lock = threading.Lock()  # one swap at a time; guards _pending_swap
        self._pending_swap: _VocabularySwap | None = None
        self._vocabulary_service = None
        # Diagnostics run in every state: an operator must see why a node is not producing masks.
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(1.0, self.publish_diagnostics)

    @property
    def stats(self):
        """The first camera's counters (the only camera's, for a single-camera node)."""
        return self.cameras[0].stats

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
        if {"input_height", "input_width"} & set(pending):  # the pair, only when one of them changes
            reason = validate_input_size(pending.get("input_height", self._param("input_height")),
                                         pending.get("input_width", self._param("input_width")))
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        self._live = LiveSettings.from_values(self._param)
        if any(p.name == "cameras" for p in params):  # only while unconfigured (checked above)
            self.cameras = [Camera(name) for name in self._param("cameras")]
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
        height, width = int(self._param("input_height")), int(self._param("input_width"))
        reason = validate_input_size(height, width)  # e.g. -p input_height:=96 alone at start-up
        if reason:
            raise ValueError(reason)
        model_path = resolve_data_path(str(self._param("model_path")), "model_path")
        input_size = (height, width) if height and width else None
        self._max_input_pixels = int(self._param("max_input_pixels"))
        self._max_batch = int(self._param("max_batch"))
        t0 = time.perf_counter()
        backend = create_backend(name=self._param("backend"), model_path=str(model_path),
                                 device=self._param("device"), input_size=input_size,
                                 resize_in_graph=bool(self._param("resize_in_graph")))
        self._backend = backend
        backend.load()
        backend.warmup()
        labels = display_labels(backend, str(self._param("vocabulary_file")).strip() or None)
        self._pipeline = FramePipeline(backend, labels)
        self._create_publishers()
        self._vocabulary_service = self.create_service(SetVocabulary, "~/set_vocabulary", self._on_set_vocabulary)
        self._configured = True
        desc = backend.describe()
        self.get_logger().info(
            f"configured: {model_path} on {desc.get('name')}/{desc.get('device')} "
            f"input_size={desc.get('input_size')} classes={len(labels.names)} mask={labels.mask_encoding} "
            f"cameras={[c.label for c in self.cameras]} ({time.perf_counter() - t0:.1f} s incl. warm-up)")

    def _create_publishers(self) -> None:
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)
        latched_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        graph_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
        qos = {"label_info": latched_qos, "scene_graph": graph_qos, "scene_graph/markers": graph_qos}

        def make(name: str, topic: str):
            # qos_overrides.<topic>.publisher.<policy> parameters (the ROS convention) may change the QoS.
            return self.create_lifecycle_publisher(_MESSAGE_TYPES[name], topic, qos.get(name, image_qos),
                                                   qos_overriding_options=QoSOverridingOptions.with_default_policies())

        for camera in self.cameras:
            camera.create_outputs(make)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        try:
            self._publish_labels()
            self._frames = LatestFrames([c.name for c in self.cameras])
            self._worker = threading.Thread(target=self._worker_loop, args=(self._frames,),
                                            name="casseg_worker", daemon=True)
            self._worker.start()
            for camera in self.cameras:
                camera.subscriptions = self._create_subscriptions(camera)
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {exc}")
            self._destroy_subscriptions()
            self._stop_worker()
            super().on_deactivate(state)  # back to inactive: publishers disabled again
            return TransitionCallbackReturn.FAILURE
        self._active = True
        topics = ", ".join(s.topic_name for c in self.cameras for s in c.subscriptions.values())
        self.get_logger().info(f"active: listening on {topics}")
        return TransitionCallbackReturn.SUCCESS

    def _create_subscriptions(self, camera: Camera) -> dict[str, Any]:
        """The camera's image (image_transport naming), its camera_info and an optional registered depth."""
        def qos(depth: int = 1) -> QoSProfile:
            return QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=depth,
                reliability=(ReliabilityPolicy.RELIABLE if self._param("qos_reliability") == "reliable"
                             else ReliabilityPolicy.BEST_EFFORT),
                durability=qos_profile_sensor_data.durability)

        def subscribe(msg_type, name: str, callback, depth: int = 1):
            return self.create_subscription(msg_type, camera.input_topic(name), callback, qos(depth),
                                            qos_overriding_options=QoSOverridingOptions.with_default_policies())

        transport = effective_transport(self._param("image_transport"), self._param("input_transport"))
        if self._param("input_transport"):
            self.get_logger().warning("input_transport is deprecated: set image_transport instead", once=True)
        camera.clear_inputs()

        def on_image(msg, info: dict) -> None:
            self._on_image(camera, msg, info)

        image = (subscribe(CompressedImage, "image/compressed", on_image) if transport == "compressed"
                 else subscribe(Image, "image", on_image))
        # The image keeps depth 1 (latest frame wins); its companions keep a few, so a burst does not
        # drop the camera_info/depth of the very frame the worker takes (it would wait for them).
        return {"image": image,
                "camera_info": subscribe(CameraInfo, "camera_info",
                                         lambda msg: camera.camera_infos.put(_stamp_ns(msg.header), msg),
                                         depth=COMPANION_QUEUE),
                "depth/image": subscribe(Image, "depth/image",
                                         lambda msg: camera.depths.put(_stamp_ns(msg.header), msg),
                                         depth=COMPANION_QUEUE)}

    def _destroy_subscriptions(self) -> None:
        for camera in self.cameras:
            for subscription in camera.subscriptions.values():
                self.destroy_subscription(subscription)
            camera.subscriptions = {}

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_subscriptions()
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for camera in self.cameras:
            for publisher in camera.outputs.values():
                self.destroy_lifecycle_publisher(publisher)
            camera.outputs = {}
        self._destroy_vocabulary_service()
        self._release_backend()
        self._configured = False
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.on_deactivate(state)
        self._destroy_vocabulary_service()
        self._release_backend()
        self._configured = False
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()
        self._destroy_vocabulary_service()
        self._release_backend()
        self._configured = False
        return TransitionCallbackReturn.SUCCESS

    def _destroy_vocabulary_service(self) -> None:
        if self._vocabulary_service is not None:
            self.destroy_service(self._vocabulary_service)
            self._vocabulary_service = None

    def _release_backend(self) -> None:
        backend, self._backend, self._pipeline = self._backend, None, None
        if backend is not None and hasattr(backend, "close"):
            backend.close()
        del backend
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # frees cached GPU memory held by the released model

    def _stop_worker(self) -> None:
        if self._frames is not None:
            for camera_name in self._frames.close():
                self._camera(camera_name).stats.on_dropped()
        if self._worker is not None:
            self._worker.join()
        self._frames, self._worker = None, None
        self._finish_pending_swap()  # a swap that arrived during the last batch, or after

    # ------------------------------------------------------------------ data path
    def _camera(self, name: str) -> Camera:
        return next(c for c in self.cameras if c.name == name)

    def _on_image(self, camera: Camera, msg: Image | CompressedImage, info: dict) -> None:
        """Executor thread: hand the frame over and return; never decode or infer here."""
        camera.stats.on_received(publisher=_publisher_key(info), sequence=info.get("publication_sequence_number"))
        frames = self._frames
        if frames is not None and frames.put(camera.name, msg):
            camera.stats.on_dropped()

    def _worker_loop(self, frames: LatestFrames) -> None:
        while not frames.closed:
            batch = frames.take_batch(self._max_batch, timeout=_WORKER_POLL_S)
            self._finish_pending_swap()  # between two batches: no frame sees half a swap
            if batch:
                try:
                    self.process_batch(batch)
                except Exception as exc:  # noqa: BLE001 - a bug on one batch must not end the worker
                    for taken in batch:
                        self._camera(taken.camera).stats.on_processing_error(f"{type(exc).__name__}: {exc}")
                    self.get_logger().error(f"processing failed: {exc}\n{traceback.format_exc()}",
                                            throttle_duration_sec=_WARN_THROTTLE_S)

    def process_frame(self, msg: Image | CompressedImage) -> None:
        """Segment and publish one frame of the first camera (tests, tools)."""
        self.process_batch([TakenFrame(self.cameras[0].name, msg, time.monotonic())])

    def _wanted_products(self, camera: Camera, live: LiveSettings) -> Products:
        outputs = camera.outputs
        return Products(overlay=outputs["overlay"].get_subscription_count() > 0,
                        color_mask=outputs["mask/color"].get_subscription_count() > 0,
                        confidence_image=live.publish_confidence,
                        points=outputs["points"].get_subscription_count() > 0)

    def _depth_frame(self, camera: Camera, stamp_ns: int, info: CameraInfo | None, image_shape: tuple[int, int],
                     live: LiveSettings, stride: int) -> DepthFrame | None:
        """The registered depth of this frame, or None; a problem is counted and never stops the
        2D outputs."""
        depth_msg = camera.depths.get(stamp_ns, live.sync_wait_s)
        if depth_msg is None:
            if camera.depths.received:
                camera.stats.on_depth_problem("no depth image with the frame's stamp")
            return None
        try:
            return depth_frame(depth_msg, info, image_shape, live.depth_max_range_m, stride)
        except InvalidDepth as exc:
            camera.stats.on_depth_problem(exc.reason)
            self.get_logger().warning(f"camera {camera.label}: depth not used: {exc.reason}",
                                      throttle_duration_sec=_WARN_THROTTLE_S)
            return None

    def process_batch(self, batch: list[TakenFrame]) -> None:
        """Decode each camera's frame, segment them in one forward pass, publish each camera's
        outputs. Bad input and inference failures are counted per camera and logged, not raised."""
        t_start, cpu_start = time.perf_counter(), time.thread_time()
        live, pipeline = self._live, self._pipeline
        if pipeline is None:
            return
        accepted: list[tuple[Camera, Any, CameraInfo | None]] = []
        inputs: list[FrameInput] = []
        for taken in batch:
            camera, msg = self._camera(taken.camera), taken.item
            try:
                rgb = to_rgb(msg, self._max_input_pixels)
            except InvalidImage as exc:
                camera.stats.on_rejected(exc.reason)
                self.get_logger().warning(f"camera {camera.label}: rejected input image: {exc.reason}",
                                          throttle_duration_sec=_WARN_THROTTLE_S)
                continue
            stamp_ns = _stamp_ns(msg.header)
            info = camera.camera_infos.get(stamp_ns, live.sync_wait_s)
            if info is None:
                camera.stats.on_camera_info_missing()
            products = self._wanted_products(camera, live)
            depth = self._depth_frame(camera, stamp_ns, info, rgb.shape[:2], live,
                                      depth_stride(live.pipeline, products))
            accepted.append((camera, msg, info))
            inputs.append(FrameInput(rgb, products, depth))
        if not inputs:
            return
        try:
            results = pipeline.process_batch(inputs, live.pipeline)
        except InferenceError as exc:  # e.g. CUDA OOM on one batch; the next may succeed
            for camera, _, _ in accepted:
                camera.stats.on_inference_error(str(exc))
            self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=_WARN_THROTTLE_S)
            return
        forward_s = results[0].forward_s
        self.batch_stats.on_batch(len(results), forward_s)
        for (camera, msg, info), result in zip(accepted, results):
            self._publish(camera, msg.header, info, result, pipeline, live)
        # Host work of the whole batch, shared by its frames; also as CPU time of this thread: on a
        # loaded machine wall time also counts the time other processes held the core.
        host_s = (time.perf_counter() - t_start - forward_s) / len(results)
        host_cpu_s = (time.thread_time() - cpu_start - results[0].forward_thread_cpu_s) / len(results)
        for (camera, msg, _), result in zip(accepted, results):
            latency_s = (self.get_clock().now().nanoseconds - _stamp_ns(msg.header)) / 1e9
            camera.stats.on_published(latency_s, forward_s, host_s, host_cpu_s)

    def _publish(self, camera: Camera, header: Header, info: CameraInfo | None, result, pipeline: FramePipeline,
                 live: LiveSettings) -> None:
        outputs = camera.outputs
        messages = frame_messages(result, pipeline.labels, header)
        for name, message in messages.items():
            outputs[name].publish(message)
        if info is not None:  # with every mask, under the mask's header, so RViz/Foxglove can place it
            info.header = header
            outputs["camera_info"].publish(info)
        if outputs["scene_graph/markers"].get_subscription_count() > 0:
            outputs["scene_graph/markers"].publish(scene_graph_markers(messages["scene_graph"],
                                                                       pipeline.labels.palette, live.marker_scale))

    def _publish_labels(self) -> None:
        if self._pipeline is None:
            return
        msg = label_info_msg(self._pipeline.labels, self._live.pipeline.score_threshold,
                             self.get_clock().now().to_msg())
        for camera in self.cameras:
            camera.outputs["label_info"].publish(msg)

    # ------------------------------------------------------------------ run-time vocabulary
    def _on_set_vocabulary(self, request: SetVocabulary.Request, response: SetVocabulary.Response):
        """Executor thread: embeds the names, then waits for the worker's swap. The worker keeps
        segmenting the frames it holds meanwhile; new images are taken up again when this returns
        (the gap is measured by bench/cameras.py: vocab_swap_max_gap_s)."""
        response.success, response.message = self._set_vocabulary(request)
        return response

    def _set_vocabulary(self, request: SetVocabulary.Request) -> tuple[bool, str]:
        """Embed the names (slow), hand them to the worker, wait for the swap. (success, message)."""
        pipeline = self._pipeline
        if pipeline is None:
            return False, "not configured"
        provider = str(self._param("text_provider")).strip() or pipeline.backend.vocabulary.provider
        t0 = time.perf_counter()
        try:
            vocabulary = vocabulary_from_request(request, provider)
        except BadVocabularyRequest as exc:
            return False, f"vocabulary kept: {exc}"
        embed_s = time.perf_counter() - t0
        with self._swap_lock:
            swap = _VocabularySwap(vocabulary)
            self._pending_swap = swap
            if self._worker is None:  # not active: no frame can be in flight, swap here
                self._finish_pending_swap()
            if not swap.done.wait(_SWAP_TIMEOUT_S):
                self._pending_swap = None
                return False, "vocabulary kept: the worker did not swap in time"
        if swap.error:
            return False, f"vocabulary kept: {swap.error}"
        message = (f"{len(vocabulary.names)} classes ({provider} embeddings in {embed_s:.2f} s), "
                   f"swapped in {time.perf_counter() - t0 - embed_s:.3f} s")
        self.get_logger().info(f"vocabulary: {message}: {list(vocabulary.names)}")
        return True, message

    def _finish_pending_swap(self) -> None:
        """Worker thread, between batches (or the service thread while nothing runs): swap, then
        republish label_info so it precedes every mask made with the new classes."""
        swap, self._pending_swap = self._pending_swap, None
        if swap is None:
            return
        try:
            self._pipeline.set_vocabulary(swap.vocabulary)
            self.batch_stats.on_vocabulary_swap()
            if self._active:
                self._publish_labels()
        except Exception as exc:  # noqa: BLE001 - the backend refused: the old vocabulary stays
            swap.error = f"{type(exc).__name__}: {exc}"
        finally:
            swap.done.set()

    # ------------------------------------------------------------------ diagnostics
    def lifecycle_state(self) -> str:
        return "active" if self._active else ("inactive" if self._configured else "unconfigured")

    def publish_diagnostics(self) -> None:
        state = self.lifecycle_state()
        desc = self._backend.describe() if self._backend is not None else {}
        backend = {"backend": desc.get("name", self._param("backend")),
                   "device": desc.get("device", self._param("device")),
                   "precision": desc.get("precision", ""),
                   "input_size": "x".join(str(v) for v in desc.get("input_size") or []) or "native"}
        fqn = self.get_fully_qualified_name()
        statuses = [camera_status(fqn, camera.name, camera.stats.snapshot() | backend | {"lifecycle_state": state})
                    for camera in self.cameras]
        if len(self.cameras) > 1:  # a single-camera node keeps its one status, as before
            classes = len(self._pipeline.labels.names) if self._pipeline is not None else 0
            statuses.append(backend_status(fqn, self.batch_stats.snapshot() | backend |
                                           {"lifecycle_state": state, "classes": classes}))
        self._diagnostics_pub.publish(diagnostic_array(statuses, self.get_clock().now().to_msg()))


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="casseg_ros", description=__doc__.splitlines()[0])
    parser.add_argument("--no-autostart", dest="autostart", action="store_false", default=None,
                        help="stay unconfigured (overrides the autostart parameter); drive the node "
                             "with lifecycle transitions instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Console entry `casseg_ros`: configure + activate (unless --no-autostart), then spin until
    SIGINT/SIGTERM; then the worker is stopped and drained before the context shuts down."""
    # rclpy's own signal handlers shut the context down the moment a signal arrives, under a worker
    # still publishing ("publisher's context is invalid"): ours only end the spin loop below. Set
    # for both signals, also where the parent started us with SIGINT ignored (nohup, CI runners).
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    args = _parse_args(rclpy.utilities.remove_ros_args(argv if argv is not None else sys.argv)[1:])
    try:
        node = SegmentNode()
    except StartupParameterError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        rclpy.try_shutdown()
        return 1
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
            # One executor thread: rclpy's multi-threaded executor cost so much per callback that
            # most of a camera burst was lost in transport (2 of 600 frames vs 55 single-threaded).
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set():
                executor.spin_once(timeout_sec=_SPIN_S)
            executor.remove_node(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node.lifecycle_state() == "active":
            node.on_deactivate(None)  # subscriptions gone, worker stopped after its batch: nothing publishes
        node._release_backend()
        node.destroy_node()
        rclpy.try_shutdown()
    return exit_code

if __name__ == "__main__":
    sys.exit(main())
