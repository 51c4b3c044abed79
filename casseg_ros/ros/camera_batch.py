"""One batch of the node's camera frames through the frame step, published and counted per camera.

Each camera's newest frame is decoded with its camera_info and depth (`frame_io.frame_input`), the
accepted frames run through one forward pass (`FramePipeline.process_batch`), and each camera's
messages (`frame_io.frame_outputs`) go out on its own publishers. Bad input and inference failures
are counted on the camera and logged (throttled), never raised: the next frame is processed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from casseg_ros.pipeline import FramePipeline, InferenceError, Products
from casseg_ros.ros.cameras import Camera
from casseg_ros.ros.frame_io import DEPTH_MISSING, Companions, DecodedFrame, Rejection, frame_input, frame_outputs
from casseg_ros.ros.latest_frame import TakenFrame
from casseg_ros.ros.node_pubsub import publish, stamp_ns
from casseg_ros.ros.node_stats import BatchStats
from casseg_ros.ros.parameters import LiveSettings

WARN_THROTTLE_S = 2.0


@dataclass(frozen=True)
class BatchContext:
    """What a batch needs from the node: its cameras, counters, logger and clock."""

    camera: Callable[[str], Camera]  # by name
    batch_stats: BatchStats
    logger: Any  # rclpy logger
    now_ns: Callable[[], int]  # the node's clock


def wanted_products(camera: Camera, live: LiveSettings) -> Products:
    """The optional images someone asked for: a subscriber to the topic, or the parameter."""
    outputs = camera.outputs
    return Products(overlay=outputs["overlay"].get_subscription_count() > 0,
                    color_mask=outputs["mask/color"].get_subscription_count() > 0,
                    confidence_image=live.publish_confidence,
                    points=outputs["points"].get_subscription_count() > 0)


def _decode(camera: Camera, taken: TakenFrame, live: LiveSettings, logger: Any) -> DecodedFrame | None:
    def companions() -> Companions:  # waits up to sync_wait_s for each while the topic is live
        stamp = stamp_ns(taken.item.header)
        info = camera.camera_infos.get(stamp, live.sync_wait_s)
        if info is None:
            camera.stats.on_camera_info_missing()
        depth = camera.depths.get(stamp, live.sync_wait_s)
        return Companions(info, depth, bool(camera.depths.received))

    decoded = frame_input(taken.item, companions, live.pipeline, wanted_products(camera, live), live.inputs,
                          camera.name)
    if isinstance(decoded, Rejection):
        camera.stats.on_rejected(decoded.reason)
        logger.warning(f"camera {camera.label}: rejected input image: {decoded.reason}",
                       throttle_duration_sec=WARN_THROTTLE_S)
        return None
    if decoded.depth_problem:
        camera.stats.on_depth_problem(decoded.depth_problem)
        if decoded.depth_problem != DEPTH_MISSING:  # a sync gap is only counted
            logger.warning(f"camera {camera.label}: depth not used: {decoded.depth_problem}",
                           throttle_duration_sec=WARN_THROTTLE_S)
    return decoded


def process_batch(batch: list[TakenFrame], pipeline: FramePipeline, live: LiveSettings, node: BatchContext) -> None:
    """Decode each camera's frame, segment them in one forward pass, publish each camera's outputs."""
    t_start, cpu_start = time.perf_counter(), time.thread_time()
    accepted: list[tuple[Camera, Any, DecodedFrame]] = []
    for taken in batch:
        camera = node.camera(taken.camera)
        decoded = _decode(camera, taken, live, node.logger)
        if decoded is not None:
            accepted.append((camera, taken.item, decoded))
    if not accepted:
        return
    try:
        results = pipeline.process_batch([decoded.frame for _, _, decoded in accepted], live.pipeline)
    except InferenceError as exc:  # e.g. CUDA OOM on one batch; the next may succeed
        for camera, _, _ in accepted:
            camera.stats.on_inference_error(str(exc))
        node.logger.error(f"inference failed: {exc}", throttle_duration_sec=WARN_THROTTLE_S)
        return
    forward_s = results[0].forward_s
    node.batch_stats.on_batch(len(results), forward_s)
    for (camera, msg, decoded), result in zip(accepted, results):
        markers = live.marker_scale if camera.outputs["scene_graph/markers"].get_subscription_count() > 0 else None
        publish(camera, frame_outputs(result, pipeline.labels, msg.header, decoded.camera_info, markers))
    # Host work of the whole batch, shared by its frames; also as CPU time of this thread: on a
    # loaded machine wall time also counts the time other processes held the core.
    host_s = (time.perf_counter() - t_start - forward_s) / len(results)
    host_cpu_s = (time.thread_time() - cpu_start - results[0].forward_thread_cpu_s) / len(results)
    for camera, msg, _ in accepted:
        latency_s = (node.now_ns() - stamp_ns(msg.header)) / 1e9
        camera.stats.on_published(latency_s, forward_s, host_s, host_cpu_s)
