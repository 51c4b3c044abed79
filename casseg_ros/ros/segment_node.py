"""The casseg_ros lifecycle node: camera images in; masks, labels, 3D, scene graphs, diagnostics out.

Thin glue over the ROS-free library, a file per concern: here the lifecycle and the parameter
callbacks; `parameters` the declarations and their rules; `node_pubsub` the publishers and
subscriptions (from the one topic table, `topics`); `frame_worker` the worker thread;
`camera_batch` what it does with a batch: the frame step of `frame_io` (shared with replay and
the benchmarks) around `pipeline.FramePipeline`; `vocabulary_swap` the run-time vocabulary;
`diagnostics` /diagnostics. The executable is `node_main`.

One model serves every camera of the `cameras` parameter. The subscription callbacks only drop a
message into the camera's latest-frame slot or stamp cache; the worker (alive while the node is
active) takes the newest frame of every camera that has one as one batch and publishes each
camera's outputs with that camera's header. A slow model therefore never delays the
lifecycle/parameter services and never builds a backlog: frames it could not keep up with are
dropped and counted per camera. `~/set_vocabulary` never holds the executor: its callback (a
coroutine) hands the request to the embedding thread (`vocabulary_swap`; the text provider is
loaded at configure), the worker swaps the new classes in between two batches and republishes
label_info before the next mask, and the answer resumes the callback through a guard condition;
on any error the old vocabulary stays.

Lifecycle:
  configure  -> validate parameters, resolve model_path, create + load + warm up the backend,
                load the text provider, create the publishers and the vocabulary service
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

import time
import traceback
from typing import Any

import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image

from casseg_msgs.srv import SetVocabulary
from casseg_ros.ros.calibration_frames import calibration_options
from casseg_ros.pipeline import FramePipeline, display_labels, start_backend
from casseg_ros.resources import resolve_data_path
from casseg_ros.ros.camera_batch import WARN_THROTTLE_S, BatchContext
from casseg_ros.ros.camera_batch import process_batch as process_camera_batch
from casseg_ros.ros.cameras import Camera
from casseg_ros.ros.diagnostics import node_diagnostics
from casseg_ros.ros.frame_worker import FrameWorker
from casseg_ros.ros.latest_frame import TakenFrame
from casseg_ros.ros.messages import label_info_msg
from casseg_ros.ros.node_pubsub import create_inputs, create_outputs, destroy_inputs, destroy_outputs, publisher_key
from casseg_ros.ros.node_stats import BatchStats
from casseg_ros.ros.parameters import (
    LiveSettings, change_problem, effective_transport, param_specs, validate_input_size, validate_parameter,
)
from casseg_ros.ros.topics import NODE_NAME
from casseg_ros.ros.vocabulary_swap import SwapOutcome, VocabularySwap
from casseg_ros.text import Vocabulary


class StartupParameterError(ValueError):
    """A parameter given at start-up (-p, a params file) that the node refuses: one line, its rule."""


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
        # Only node_main reads it, once, at start-up: read_only says so to `ros2 param set`.
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
        self._max_batch = 1
        self.cameras: list[Camera] = [Camera(name) for name in self._param("cameras")]
        self.batch_stats = BatchStats()
        self._batch = BatchContext(self._camera, self.batch_stats, self.get_logger(),
                                   lambda: self.get_clock().now().nanoseconds)
        self._worker: FrameWorker | None = None
        self._swap = VocabularySwap(self._apply_vocabulary)
        self._vocabulary_service = None
        # ~/set_vocabulary's coroutine waits for its answer in a group of its own: in the node's
        # default (mutually exclusive) group a waiting callback holds the group, which takes every
        # subscription and timer of the node out of the executor's wait set. The embedding thread
        # triggers the guard condition once an answer is ready: a Future set from another thread
        # wakes no executor, and the coroutine is resumed only when the executor wakes.
        self._vocabulary_group = ReentrantCallbackGroup()
        self._vocabulary_answered = self.create_guard_condition(lambda: None, self._vocabulary_group)
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
        reason = change_problem({p.name: p.value for p in params}, self._param, self._configured, self._active)
        return SetParametersResult(successful=reason is None, reason=reason or "")

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
        self._max_batch = int(self._param("max_batch"))
        t0 = time.perf_counter()
        calibration = str(self._param("calibration")).strip()
        calibration = calibration_options(resolve_data_path(calibration, "calibration", folders=True)) \
            if calibration else {}
        backend = self._backend = start_backend(self._param("backend"), model_path, self._param("device"), input_size,
                                                bool(self._param("resize_in_graph")),
                                                openvino_device=str(self._param("openvino_device")),
                                                precision=str(self._param("precision")), **calibration)
        labels = display_labels(backend, str(self._param("vocabulary_file")).strip() or None)
        self._pipeline = FramePipeline(backend, labels)
        t_text = time.perf_counter()
        provider = str(self._param("text_provider")).strip() or backend.vocabulary.provider
        if reason := self._swap.open(provider):
            self.get_logger().warning(f"~/set_vocabulary will keep the vocabulary: {reason}")
        text_s = time.perf_counter() - t_text
        for camera in self.cameras:
            create_outputs(self, camera)
        self._vocabulary_service = self.create_service(SetVocabulary, "~/set_vocabulary", self._on_set_vocabulary,
                                                       callback_group=self._vocabulary_group)
        self._configured = True
        desc = backend.describe()
        if desc.get("backend_choice"):  # backend auto: what it chose and why
            self.get_logger().info(f"backend {desc['backend_choice']}")
        if desc.get("precision_choice"):  # precision auto: the same
            self.get_logger().info(f"precision {desc['precision_choice']}")
        self.get_logger().info(
            f"configured: {model_path} on {desc.get('name')}/{desc.get('openvino_device') or desc.get('device')} "
            f"precision={desc.get('precision')} "
            f"input_size={desc.get('input_size')} classes={len(labels.names)} mask={labels.mask_encoding} "
            f"cameras={[c.label for c in self.cameras]} text_provider={provider} "
            f"({time.perf_counter() - t0:.1f} s incl. warm-up, {text_s:.1f} s of it the text provider)")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        try:
            self._publish_labels()
            self._swap.attach_worker()  # before its first batch: from now on the worker swaps
            self._worker = FrameWorker([c.name for c in self.cameras], self._max_batch, self.process_batch,
                                       self._swap.finish, self._on_batch_failure)
            self._worker.start()
            transport = effective_transport(self._param("image_transport"), self._param("input_transport"))
            if self._param("input_transport"):
                self.get_logger().warning("input_transport is deprecated: set image_transport instead", once=True)
            for camera in self.cameras:
                create_inputs(self, camera, transport, self._param("qos_reliability") == "reliable", self._on_image)
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

    def _destroy_subscriptions(self) -> None:
        for camera in self.cameras:
            destroy_inputs(self, camera)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_subscriptions()
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for camera in self.cameras:
            destroy_outputs(self, camera)
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
        self._swap.close()  # first: with no worker, its thread may be swapping into the pipeline
        backend, self._backend, self._pipeline = self._backend, None, None
        if backend is not None and hasattr(backend, "close"):
            backend.close()
        del backend
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # frees cached GPU memory held by the released model

    def _stop_worker(self) -> None:
        if self._worker is not None:
            for camera_name in self._worker.stop():  # the batch in flight finishes
                self._camera(camera_name).stats.on_dropped()
        self._worker = None
        self._swap.detach_worker()  # a swap that arrived during the last batch is done here

    # ------------------------------------------------------------------ data path
    def _camera(self, name: str) -> Camera:
        return next(c for c in self.cameras if c.name == name)

    def _on_image(self, camera: Camera, msg: Image | CompressedImage, info: dict) -> None:
        """Executor thread: hand the frame over and return; never decode or infer here."""
        camera.stats.on_received(publisher=publisher_key(info), sequence=info.get("publication_sequence_number"))
        worker = self._worker
        if worker is not None and worker.put(camera.name, msg):
            camera.stats.on_dropped()

    def _on_batch_failure(self, batch: list[TakenFrame], exc: Exception) -> None:
        for taken in batch:
            self._camera(taken.camera).stats.on_processing_error(f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"processing failed: {exc}\n{traceback.format_exc()}",
                                throttle_duration_sec=WARN_THROTTLE_S)

    def process_frame(self, msg: Image | CompressedImage) -> None:
        """Segment and publish one frame of the first camera (tests, tools)."""
        self.process_batch([TakenFrame(self.cameras[0].name, msg, time.monotonic())])

    def process_batch(self, batch: list[TakenFrame]) -> None:
        """The worker's step (`camera_batch.process_batch`) with the node's current settings."""
        if (pipeline := self._pipeline) is not None:
            process_camera_batch(batch, pipeline, self._live, self._batch)

    def _publish_labels(self) -> None:
        if self._pipeline is None:
            return
        msg = label_info_msg(self._pipeline.labels, self._live.pipeline.score_threshold,
                             self.get_clock().now().to_msg())
        for camera in self.cameras:
            camera.outputs["label_info"].publish(msg)

    # ------------------------------------------------------------------ run-time vocabulary
    async def _on_set_vocabulary(self, request: SetVocabulary.Request, response: SetVocabulary.Response):
        """Executor thread, a coroutine: hands the request over and waits without holding the
        executor; frames keep flowing while the names are embedded and swapped in (the longest
        mask gap meanwhile: bench/cameras.py's vocab_swap_max_gap_periods). Answers after the swap."""
        answer: Future = Future()

        def on_done(outcome: SwapOutcome) -> None:  # the embedding thread
            answer.set_result(outcome)
            try:
                self._vocabulary_answered.trigger()  # wakes the executor, which resumes this coroutine
            except Exception:  # noqa: BLE001 - the node was destroyed meanwhile: nobody waits
                pass

        self._swap.submit(request, on_done)
        outcome: SwapOutcome = await answer
        if outcome.vocabulary is not None:
            self.get_logger().info(f"vocabulary: {outcome.message}: {list(outcome.vocabulary.names)}")
        response.success, response.message = outcome.vocabulary is not None, outcome.message
        return response

    def _apply_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Worker thread, between batches (or the embedding thread while none runs): swap, then
        republish label_info so it precedes every mask made with the new classes."""
        self._pipeline.set_vocabulary(vocabulary)
        self.batch_stats.on_vocabulary_swap()
        if self._active:
            self._publish_labels()

    # ------------------------------------------------------------------ diagnostics
    def lifecycle_state(self) -> str:
        return "active" if self._active else ("inactive" if self._configured else "unconfigured")

    def publish_diagnostics(self) -> None:
        backend = {"name": self._param("backend"), "device": self._param("device")} | (
            self._backend.describe() if self._backend is not None else {})
        classes = len(self._pipeline.labels.names) if self._pipeline is not None else 0
        self._diagnostics_pub.publish(node_diagnostics(
            self.get_fully_qualified_name(), self.lifecycle_state(), backend, self.cameras, self.batch_stats, classes,
            self.get_clock().now().to_msg()))
