"""The one per-frame pipeline, without ROS: decoded frame -> backend -> mask rule -> products -> scene graph.

The node (casseg_ros/ros/segment_node.py), the offline replay (casseg_ros/replay/offline.py) and
the benchmarks all call `FramePipeline.process`, so a figure measured offline is the node's figure
and a mask written by replay is byte for byte the mask the node publishes.

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

import time
from dataclasses import dataclass

import numpy as np

from casseg_ros.perception.depth import PinholeCamera, graph_in_3d, labelled_cloud, organised_points
from casseg_ros.perception.mask import class_mask, mask_encoding_for, unknown_id_for
from casseg_ros.perception.overlay import colorize, make_overlay
from casseg_ros.perception.scene_graph import SceneGraph, segment_instances
from casseg_ros.runtime import Backend
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


@dataclass(frozen=True)
class Products:
    """Optional full-resolution images a caller wants for this frame."""

    overlay: bool = False
    color_mask: bool = False
    confidence_image: bool = False
    points: bool = False  # needs a DepthFrame


@dataclass(frozen=True)
class DepthFrame:
    """The registered depth image of a frame, in metres (NaN invalid), and the camera's intrinsics."""

    metres: np.ndarray  # (H,W) float32, the size of the colour image
    camera: PinholeCamera


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
    """[0,1] float -> 0..255 uint8, rounded (the ROS convention for a confidence image)."""
    return np.clip(confidence * 255.0 + 0.5, 0, 255).astype(np.uint8)


class InferenceError(RuntimeError):
    """The backend failed on this frame (e.g. CUDA out of memory); the next frame may succeed."""


class FramePipeline:
    def __init__(self, backend: Backend, labels: ClassLabels | None = None):
        self.backend = backend
        self.labels = labels or ClassLabels.from_vocabulary(backend.vocabulary)

    def process(self, rgb: np.ndarray, settings: PipelineSettings = PipelineSettings(),
                products: Products = Products(), depth: DepthFrame | None = None) -> FrameResult:
        """One decoded (H,W,3) uint8 RGB frame. Backend failures raise InferenceError, anything else
        is a post-processing error; the caller counts either and goes on with the next frame."""
        t0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            inferred = self.backend.infer(rgb[None])
        except Exception as exc:  # noqa: BLE001 - any backend failure is reported the same way
            raise InferenceError(f"{type(exc).__name__}: {exc}") from exc
        t1, cpu1 = time.perf_counter(), time.thread_time()
        class_ids, confidence = inferred.class_ids[0], inferred.confidence[0]
        labels = self.labels
        mask = class_mask(class_ids, confidence, settings.score_threshold, labels.mask_encoding)
        result = FrameResult(class_ids, confidence, mask, graph=SceneGraph(), forward_s=t1 - t0,
                             host_s=0.0, forward_thread_cpu_s=cpu1 - cpu0)
        if products.overlay:
            result.overlay = make_overlay(rgb, mask, labels.palette, settings.overlay_alpha)
        if products.color_mask:
            result.color_mask = colorize(mask, labels.palette)[0]
        if products.confidence_image:
            result.confidence_image = confidence_to_mono8(confidence)
        graph, runs = segment_instances(mask, list(labels.names), confidence, inferred.adjacency[0],
                                        min_area=settings.min_instance_area, ignore_ids=(labels.unknown_id,))
        if depth is not None:
            graph = graph_in_3d(graph, runs, depth.metres, depth.camera)
            if products.points:
                xyz = organised_points(depth.metres, depth.camera, settings.points_stride)
                result.points = labelled_cloud(xyz, rgb, mask, confidence, settings.points_stride)
        result.graph = graph
        result.host_s = time.perf_counter() - t1
        return result
