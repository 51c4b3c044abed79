"""The one per-frame pipeline, without ROS: decoded frame -> backend -> mask rule -> products -> scene graph.

The node, the offline replay and the benchmarks all call `FramePipeline.process_batch` from the
one frame step at the message level (casseg_ros/ros/frame_io.py), and bring their backend up with
`start_backend`, so a figure measured offline is the node's figure and a mask written by replay is
byte for byte the mask the node publishes.

Optional products cost host time at full resolution, so they are made only when a caller asks
(the node: when the topic has a subscriber or the parameter is on):

* overlay           (H,W,3) uint8, palette colour blended over the camera image
* colour mask       (H,W,3) uint8, palette[mask] (unknown pixels black)
* confidence image  (H,W) uint8, round(confidence * 255)
* points            (H/s,W/s) organised labelled cloud (perception.depth.POINT_DTYPE), with depth

With a registered depth image (`DepthFrame`) the scene graph also gets 3D centroids, extents and
relation distances (perception/depth.py).

Timings: `forward_s` is the backend call; `host_s` everything after it in this pipeline.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from casseg_ros.message_buffers import message_array
from casseg_ros.perception.depth import PinholeCamera, depth_cloud, graph_in_3d
from casseg_ros.perception.mask import class_mask, mask_encoding_for, unknown_id_for
from casseg_ros.perception.overlay import colorize, make_overlay
from casseg_ros.perception.scene_graph import SceneGraph, segment_instances
from casseg_ros.perception.temporal_smoothing import ClassSmoother
from casseg_ros.perception.tracking import Tracker, TrackerSettings
from casseg_ros.runtime import Backend, InferenceResult, create_backend
from casseg_ros.runtime.base import resize_images, resize_outputs
from casseg_ros.text import Vocabulary


@dataclass(frozen=True)
class ClassLabels:
    """What the ids of the published mask mean: names, colours, encoding and the unknown id."""

    names: tuple[str, ...]
    palette: np.ndarray  # (K,3) uint8

    @property
    def mask_encoding(self) -> str:
        return mask_encoding_for(len(self.names))

    @property
    def unknown_id(self) -> int:
        return unknown_id_for(self.mask_encoding)

    @classmethod
    def from_vocabulary(cls, vocabulary: Vocabulary) -> "ClassLabels":
        return cls(tuple(str(n) for n in vocabulary.names), np.asarray(vocabulary.palette, dtype=np.uint8))


def start_backend(name: str, model_path: str | os.PathLike, device: str = "cpu",
                  input_size: tuple[int, int] | None = None, resize_in_graph: bool = False,
                  num_threads: int | None = None, openvino_device: str = "CPU", precision: str | None = None,
                  calibration: Callable[[], tuple[Iterable[np.ndarray], str]] | None = None,
                  calibration_source: str | None = None) -> Backend:
    """The one bring-up of a backend (the node at configure, replay before its first frame): create,
    load and warm up, so the same kernels are warm before frame 0. `num_threads`: a CPU backend's
    intra-op threads (None: the physical cores this process may use). `openvino_device`: the
    OpenVINO device of backend openvino (and of auto when it chooses openvino). `name` "auto": the
    backend `runtime.choose_backend` picks; `describe()["backend_choice"]` says which and why.
    `precision`: None or "auto" (measured by backend openvino on the calibration frames, the default
    of the others: `describe()["precision_choice"]`), or fp32/fp16/bf16/int8. `calibration`: a
    callable returning (RGB frames, source) for int8 and precision auto, named `calibration_source`
    (this module cannot read a bag: the ROS layer passes `ros.calibration_frames.calibration_options`). On
    failure whatever was created is closed and the error raised (BackendUnavailable,
    FileNotFoundError, a bad checkpoint...)."""
    backend = create_backend(name=name, model_path=str(model_path), device=device, input_size=input_size,
                             resize_in_graph=resize_in_graph, num_threads=num_threads,
                             openvino_device=openvino_device, precision=precision,
                             **({"calibration": calibration, "calibration_source": calibration_source}
                                if calibration is not None else {}))
    try:
        backend.load()
        backend.warmup()
    except BaseException:
        if hasattr(backend, "close"):
            backend.close()
        raise
    return backend


def display_labels(backend: Backend, vocabulary_file: str | None = None) -> ClassLabels:
    """The backend's class names and palette, or those of `vocabulary_file` (display names only:
    it must have the model's class count, so the ids keep their meaning)."""
    labels = ClassLabels.from_vocabulary(backend.vocabulary)
    if not vocabulary_file:
        return labels
    renamed = ClassLabels.from_vocabulary(Vocabulary.load(vocabulary_file))
    if len(renamed.names) != len(labels.names):
        raise ValueError(f"vocabulary_file {vocabulary_file} has {len(renamed.names)} classes, the model "
                         f"{len(labels.names)}; the labels would not match the mask ids")
    return renamed


@dataclass(frozen=True)
class PipelineSettings:
    """The node's live parameters that shape a frame's outputs, with the node's defaults."""

    score_threshold: float = 0.0
    min_instance_area: int = 64
    overlay_alpha: float = 0.5
    points_stride: int = 1  # decimation of the point cloud (and of the mask in it)
    # The scene graph is found on the mask's every 4th row and column (the model's output stride:
    # finer detail is interpolation) and measured in image pixels; 1 = at full resolution.
    scene_graph_stride: int = 4
    # Persistent object ids per camera (perception/tracking.py): a track is confirmed after
    # track_confirm_hits matched frames and dropped after track_max_misses frames unmatched.
    tracking: bool = False
    track_confirm_hits: int = 3
    track_max_misses: int = 5
    # Per-pixel memory of the class per camera (perception/temporal_smoothing.py), 0 = off: a new
    # class replaces the held one only when its score beats the held score times this.
    temporal_smoothing: float = 0.0
    # "camera": outputs at the camera's resolution; "model": at the model's (input_size), the
    # camera_info scaled to match (casseg_ros.ros.depth_conversions.scaled_camera_info).
    output_resolution: str = "camera"


@dataclass(frozen=True)
class Products:
    """Optional full-resolution images a caller wants for this frame."""

    overlay: bool = False
    color_mask: bool = False
    confidence_image: bool = False
    points: bool = False  # needs a DepthFrame


@dataclass(frozen=True)
class DepthFrame:
    """The registered depth image of a frame, in metres (NaN invalid), and the camera's intrinsics.
    Only every `stride`-th pixel of it may be decoded: what the frame's products read
    (`depth_stride`), so a 1080p depth image is decoded in full only for a full-resolution cloud."""

    metres: np.ndarray  # (ceil(H/s), ceil(W/s)) float32: pixels (s*r, s*c) of the colour image's size
    camera: PinholeCamera
    stride: int = 1

    def resampled(self, height: int, width: int) -> "DepthFrame":
        """The depth of the image resized to `height` x `width` (nearest: each pixel's centre takes
        the depth sample nearest to it; depth is not interpolated across edges), every pixel."""
        h_full, w_full = self.camera.height, self.camera.width
        rows = np.clip(np.rint(((np.arange(height) + 0.5) * h_full / height - 0.5) / self.stride).astype(np.int64),
                       0, self.metres.shape[0] - 1)
        cols = np.clip(np.rint(((np.arange(width) + 0.5) * w_full / width - 0.5) / self.stride).astype(np.int64),
                       0, self.metres.shape[1] - 1)
        return DepthFrame(np.ascontiguousarray(self.metres[rows[:, None], cols[None, :]]),
                          self.camera.scaled(width, height), 1)


def depth_stride(settings: PipelineSettings, products: Products) -> int:
    """The coarsest depth decimation a frame's products can read: the scene graph's stride, and with
    the point cloud also a divisor of its stride."""
    if products.points:
        return math.gcd(settings.scene_graph_stride, settings.points_stride)
    return settings.scene_graph_stride


@dataclass
class FrameResult:
    class_ids: np.ndarray  # (H,W) int32 argmax before thresholding (what IoU is computed on)
    confidence: np.ndarray  # (H,W) float32 max softmax probability
    mask: np.ndarray  # (H,W) uint8/uint16: class ids, unknown id below the threshold (as published)
    graph: SceneGraph
    forward_s: float
    host_s: float
    forward_thread_cpu_s: float  # CPU time of the calling thread inside the backend call
    overlay: np.ndarray | None = None  # (H,W,3) uint8
    color_mask: np.ndarray | None = None  # (H,W,3) uint8
    confidence_image: np.ndarray | None = None  # (H,W) uint8
    points: np.ndarray | None = None  # (H/s,W/s) POINT_DTYPE

    @property
    def total_s(self) -> float:
        return self.forward_s + self.host_s


def confidence_to_mono8(confidence: np.ndarray) -> np.ndarray:
    """[0,1] float -> 0..255 uint8 (the ROS convention for a confidence image): the float32 product
    `confidence * 255` rounded to the nearest integer, ties to even, saturated to [0, 255].

    One OpenCV pass (saturate_cast), ten times cheaper at 1080p than numpy's clip + cast, into a
    message array (published without a copy)."""
    confidence = np.asarray(confidence, dtype=np.float32)
    return cv2.convertScaleAbs(confidence, dst=message_array(confidence.shape, np.uint8), alpha=255.0)


class InferenceError(RuntimeError):
    """The backend failed on this frame (e.g. CUDA out of memory); the next frame may succeed."""


@dataclass(frozen=True)
class FrameInput:
    """One camera frame of a batch: the decoded image, what to make of it, its depth (if any)."""

    rgb: np.ndarray  # (H,W,3) uint8 RGB
    products: Products = Products()
    depth: DepthFrame | None = None
    camera: str = ""  # whose tracks the frame's objects continue (one tracker per camera)
    stamp_s: float | None = None  # the image's stamp; tracking needs it (velocities, time jumps)


class FramePipeline:
    def __init__(self, backend: Backend, labels: ClassLabels | None = None):
        self.backend = backend
        self.labels = labels or ClassLabels.from_vocabulary(backend.vocabulary)
        self._trackers: dict[str, Tracker] = {}  # per camera, made at its first tracked frame
        self._smoothers: dict[str, ClassSmoother] = {}  # per camera, made at its first smoothed frame

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Swap the class vocabulary (new text embeddings, names, palette) between two frames; the
        backend raises (and keeps the old one) when it cannot."""
        self.backend.set_vocabulary(vocabulary)
        self.labels = ClassLabels.from_vocabulary(vocabulary)
        for tracker in self._trackers.values():  # class ids change meaning: tracks start afresh
            tracker.reset()
        for smoother in self._smoothers.values():
            smoother.reset()

    def _tracker(self, camera: str, settings: PipelineSettings) -> Tracker:
        wanted = TrackerSettings(confirm_hits=settings.track_confirm_hits, max_misses=settings.track_max_misses)
        tracker = self._trackers.get(camera)
        if tracker is None:
            tracker = self._trackers[camera] = Tracker(wanted)
        tracker.settings = wanted  # live parameters: the next update uses them
        return tracker

    def process(self, rgb: np.ndarray, settings: PipelineSettings = PipelineSettings(),
                products: Products = Products(), depth: DepthFrame | None = None) -> FrameResult:
        """One decoded (H,W,3) uint8 RGB frame. Backend failures raise InferenceError, anything else
        is a post-processing error; the caller counts either and goes on with the next frame."""
        return self.process_batch([FrameInput(rgb, products, depth)], settings)[0]

    def process_batch(self, frames: Sequence[FrameInput], settings: PipelineSettings = PipelineSettings()
                      ) -> list[FrameResult]:
        """Several frames (e.g. one per camera) through one forward pass, then each post-processed.
        Every result's `forward_s` is the batch's forward time."""
        t0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            inferred = self._infer([frame.rgb for frame in frames], settings.output_resolution == "camera")
        except Exception as exc:  # noqa: BLE001 - any backend failure is reported the same way
            raise InferenceError(f"{type(exc).__name__}: {exc}") from exc
        forward_s, forward_cpu_s = time.perf_counter() - t0, time.thread_time() - cpu0
        return [self._postprocess(frame, result, settings, forward_s, forward_cpu_s)
                for frame, result in zip(frames, inferred)]

    def _infer(self, images: list[np.ndarray], at_camera: bool = True) -> list[InferenceResult]:
        """One backend call per distinct image size; frames of different sizes share one call when
        the backend runs at a fixed input size and resizes on the host (results resized back).
        A backend that resizes in its graph takes each size as it is (one call per size).
        `at_camera` False: the outputs at the model's size (output_resolution: model)."""
        if len(images) == 1:  # the common single-camera case: a view, no stacking copy
            results = [self._backend_infer(images[0][None], at_camera)]
        else:
            results = self._infer_batch(images, at_camera)
        size = self.backend.input_size
        if not at_camera and self.backend.resize_in_graph and size is not None:  # the graph returned camera size
            results = [resize_outputs(r, size) for r in results]
        return results

    def _backend_infer(self, batch: np.ndarray, at_camera: bool) -> InferenceResult:
        # resize_back only when it is not the default: a stand-in's or a wrapper's infer(images) still fits
        return self.backend.infer(batch) if at_camera else self.backend.infer(batch, resize_back=False)

    def _infer_batch(self, images: list[np.ndarray], at_camera: bool) -> list[InferenceResult]:
        size = None if self.backend.resize_in_graph else self.backend.input_size
        if size is not None and len({image.shape for image in images}) > 1:
            batch = np.stack([resize_images(image[None], size)[0] for image in images])
            result = self.backend.infer(batch)  # at the model's size already: nothing to resize back
            return [resize_outputs(result.frame(i), image.shape[:2]) if at_camera else result.frame(i)
                    for i, image in enumerate(images)]
        results: list[InferenceResult | None] = [None] * len(images)
        for shape in dict.fromkeys(image.shape for image in images):
            indices = [i for i, image in enumerate(images) if image.shape == shape]
            result = self._backend_infer(np.stack([images[i] for i in indices]), at_camera)
            for position, index in enumerate(indices):
                results[index] = result.frame(position)
        return results

    def _postprocess(self, frame: FrameInput, inferred: InferenceResult, settings: PipelineSettings,
                     forward_s: float, forward_cpu_s: float) -> FrameResult:
        t1 = time.perf_counter()
        rgb, products, depth = frame.rgb, frame.products, frame.depth
        class_ids, confidence = inferred.class_ids[0], inferred.confidence[0]
        if settings.temporal_smoothing > 0.0:
            smoother = self._smoothers.setdefault(frame.camera, ClassSmoother())
            class_ids, confidence = smoother.update(class_ids, confidence, frame.stamp_s, settings.temporal_smoothing)
        else:  # off forgets: turned on again, the camera's filter starts afresh
            self._smoothers.pop(frame.camera, None)
        if class_ids.shape != rgb.shape[:2]:  # output_resolution: model: the products at the model's size
            h, w = class_ids.shape
            if products.overlay or products.points:  # the image under the overlay, the cloud's colours
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            depth = depth.resampled(h, w) if depth is not None else None
        labels = self.labels
        mask = class_mask(class_ids, confidence, settings.score_threshold, labels.mask_encoding)
        result = FrameResult(class_ids, confidence, mask, graph=SceneGraph(), forward_s=forward_s,
                             host_s=0.0, forward_thread_cpu_s=forward_cpu_s)
        colorized = colorize(mask, labels.palette) if products.overlay or products.color_mask else None
        if products.overlay:
            result.overlay = make_overlay(rgb, mask, labels.palette, settings.overlay_alpha, colorized)
        if products.color_mask:
            result.color_mask = colorized[0]
        if products.confidence_image:
            result.confidence_image = confidence_to_mono8(confidence)
        graph, runs = segment_instances(mask, list(labels.names), confidence, inferred.adjacency[0],
                                        min_area=settings.min_instance_area, ignore_ids=(labels.unknown_id,),
                                        stride=settings.scene_graph_stride)
        if depth is not None:
            graph = graph_in_3d(graph, runs, depth.metres, depth.camera, depth.stride)
            if products.points:
                result.points = depth_cloud(depth.metres, depth.camera, rgb, mask, confidence,
                                            settings.points_stride, depth.stride)
        if settings.tracking and frame.stamp_s is not None:
            graph = self._tracker(frame.camera, settings).update(graph, frame.stamp_s)
        result.graph = graph
        result.host_s = time.perf_counter() - t1
        return result
