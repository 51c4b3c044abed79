"""The node's per-frame pipeline without ROS: backend -> mask -> overlay -> scene graph.

Mirrors `SegmentNode.process_frame` step for step (same backend interface, same mask rule, same
`make_overlay` / `extract_scene_graph` calls with the node's defaults), so replay numbers describe
what the node does. Timings are split like the node's diagnostics: forward pass vs host work.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from casseg_ros.perception import SceneGraph, extract_scene_graph, make_overlay
from casseg_ros.perception.mask import class_mask, mask_encoding_for, unknown_id_for


@dataclass
class PipelineSettings:
    """The node's live parameters, with the node's defaults."""

    score_threshold: float = 0.0
    min_instance_area: int = 64
    overlay_alpha: float = 0.5


@dataclass
class FrameResult:
    class_ids: np.ndarray  # (H,W) int32 argmax, before thresholding (used for IoU)
    confidence: np.ndarray  # (H,W) float32
    mask: np.ndarray  # (H,W) uint8/uint16 as published on ~/mask
    mask_encoding: str  # mono8 | mono16
    overlay: np.ndarray  # (H,W,3) uint8
    graph: SceneGraph
    forward_s: float
    host_s: float  # everything else of the frame: mask, overlay, scene graph

    @property
    def total_s(self) -> float:
        return self.forward_s + self.host_s


class FramePipeline:
    def __init__(self, backend, settings: PipelineSettings | None = None):
        self.backend = backend
        self.settings = settings or PipelineSettings()
        vocabulary = backend.vocabulary
        self.class_names = list(vocabulary.names)
        self.palette = np.asarray(vocabulary.palette, dtype=np.uint8)
        self.mask_encoding = mask_encoding_for(len(self.class_names))
        self.unknown_id = unknown_id_for(self.mask_encoding)

    def mask_from(self, class_ids: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        return class_mask(class_ids, confidence, self.settings.score_threshold, self.mask_encoding)

    def process(self, rgb: np.ndarray) -> FrameResult:
        """One decoded (H,W,3) uint8 RGB frame. Inference errors propagate (the caller counts them)."""
        t0 = time.perf_counter()
        result = self.backend.infer(rgb[None])
        t1 = time.perf_counter()
        class_ids, confidence = result.class_ids[0], result.confidence[0]
        mask = self.mask_from(class_ids, confidence)
        overlay = make_overlay(rgb, mask, self.palette, self.settings.overlay_alpha)
        graph = extract_scene_graph(mask, self.class_names, confidence, result.adjacency[0],
                                    min_area=self.settings.min_instance_area, ignore_ids=(self.unknown_id,))
        t2 = time.perf_counter()
        return FrameResult(class_ids, confidence, mask, self.mask_encoding, overlay, graph,
                           forward_s=t1 - t0, host_s=t2 - t1)
