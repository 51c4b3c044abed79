"""Replay metrics: latency percentiles, throughput, per-class IoU (torchmetrics), skipped frames.

Numbers are kept at full precision (metrics.json is data for scripts and comparisons); only the
human-readable report.md rounds them.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

IGNORE_INDEX = 255


class InvalidLabel(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def label_to_ids(msg) -> np.ndarray:
    """Ground-truth sensor_msgs/Image (mono8 / mono16 class ids, any row padding) -> (H, W) int64.

    Not `conversions.image_to_rgb`: that one turns mono16 into displayable 8-bit (high byte),
    which would destroy class ids.
    """
    encoding = msg.encoding.strip().lower()
    if encoding not in ("mono8", "mono16", "8uc1", "16uc1"):
        raise InvalidLabel(f"label encoding {msg.encoding!r} is not a class-id image (mono8/mono16)")
    bpp = 1 if encoding in ("mono8", "8uc1") else 2
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InvalidLabel(f"empty label image ({w}x{h})")
    if step < w * bpp or len(msg.data) != step * h:
        raise InvalidLabel(f"label data length {len(msg.data)} does not match step {step} x height {h} "
                           f"for {w} px of {encoding}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(h, step)[:, : w * bpp]
    if bpp == 1:
        return rows.astype(np.int64)
    return np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2").astype(np.int64)


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None, "count": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "max": float(ms.max()),
            "count": int(ms.size)}


IOU_UNIT = "percent"  # of IoU and mIoU in every replay, demo and fleet output


class IoUEvaluator:
    """Accumulates a MulticlassJaccardIndex over frames.

    `gt_to_model` maps ground-truth ids to model class ids (by class name when the bag names its
    labels); unmapped ids and 255 are ignored. IoU of a class that is neither in the ground truth
    nor predicted is undefined (NaN, excluded from mIoU); a class only predicted scores 0.
    Predicted ids outside the vocabulary (the node's 255 "unknown" below score_threshold) count as
    wrong for the ground-truth class: an extra internal class, left out of the results.
    """

    def __init__(self, class_names: list[str], gt_to_model: np.ndarray | None = None):
        self.class_names = list(class_names)
        self.metric = MulticlassJaccardIndex(num_classes=len(class_names) + 1, ignore_index=IGNORE_INDEX,
                                             average=None, zero_division=float("nan"))
        self.gt_to_model = gt_to_model
        self.frames = 0
        self.gt_pixels = np.zeros(len(class_names), dtype=np.int64)

    def update(self, predicted_ids: np.ndarray, gt_ids: np.ndarray) -> None:
        if len(self.class_names) > IGNORE_INDEX:  # class 255 would be the ground truth's ignore id
            raise InvalidLabel(f"{len(self.class_names)} classes: ground truth is scored for up to "
                               f"{IGNORE_INDEX} (ids 0..{IGNORE_INDEX - 1}; {IGNORE_INDEX} = ignore)")
        if predicted_ids.shape != gt_ids.shape:
            raise InvalidLabel(f"label size {gt_ids.shape[1]}x{gt_ids.shape[0]} != image size "
                               f"{predicted_ids.shape[1]}x{predicted_ids.shape[0]}")
        k = len(self.class_names)
        if self.gt_to_model is not None:
            lut = self.gt_to_model
            gt = np.where(gt_ids < len(lut), lut[np.clip(gt_ids, 0, len(lut) - 1)], IGNORE_INDEX)
        else:
            gt = np.where((gt_ids >= 0) & (gt_ids < k), gt_ids, IGNORE_INDEX)
        self.gt_pixels += np.bincount(gt[gt != IGNORE_INDEX].ravel(), minlength=k)[:k]
        pred = predicted_ids.astype(np.int64)
        pred = np.where((pred >= 0) & (pred < k), pred, k)
        self.metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
        self.frames += 1

    def result(self) -> dict[str, Any]:
        """IoU and mIoU in percent (0-100), the unit of the README, the model card and the paper;
        `unit` says so in every metrics.json and fleet.json."""
        if self.frames == 0:
            return {"frames": 0, "per_class_iou": {}, "miou": None, "unit": IOU_UNIT}
        iou = 100.0 * self.metric.compute().numpy().astype(np.float64)[: len(self.class_names)]
        per_class = {name: (None if math.isnan(v) else float(v)) for name, v in zip(self.class_names, iou)}
        valid = iou[~np.isnan(iou)]
        return {"frames": self.frames, "per_class_iou": per_class,
                "miou": float(valid.mean()) if valid.size else None, "unit": IOU_UNIT,
                "gt_pixels": {n: int(c) for n, c in zip(self.class_names, self.gt_pixels)},
                "ignore_index": IGNORE_INDEX, "confusion_matrix": self.confusion_matrix()}

    def confusion_matrix(self) -> list[list[int]]:
        """Pixel counts [ground-truth id][predicted id] over the frames so far: the model's classes
        plus a last row/column "unknown" (predictions outside the vocabulary). Exact integers, so
        matrices of several recordings sum to the matrix of all their frames pooled."""
        return self.metric.confmat.tolist()

    def add_confusion_matrix(self, matrix: list[list[int]], frames: int) -> None:
        """Count another evaluation (its `confusion_matrix()` over `frames` frames) into this one, as
        if its frames had been updated here: a fleet's overall IoU comes from the summed matrix, not
        from a mean of per-recording means."""
        confmat = self.metric.confmat.new_tensor(matrix)
        if confmat.shape != self.metric.confmat.shape:
            raise ValueError(f"confusion matrix of shape {tuple(confmat.shape)} for {len(self.class_names)} "
                             f"classes (+ unknown): expected {tuple(self.metric.confmat.shape)}")
        # An update with no pixels marks the torchmetrics state as updated (compute() warns
        # otherwise); merge_state adds the counts with the metric's own reduction (a sum).
        self.metric.update(confmat.new_empty(0), confmat.new_empty(0))
        self.metric.merge_state({"confmat": confmat})
        self.gt_pixels += confmat[: len(self.class_names)].sum(dim=1).numpy()
        self.frames += frames


@dataclass
class ReplayStats:
    """Everything the metrics JSON reports, filled frame by frame."""

    frames_seen: int = 0
    frames_processed: int = 0
    forward_s: list[float] = field(default_factory=list)
    host_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"frame", "stamp_ns", "reason"}
    label_notes: Counter = field(default_factory=Counter)
    depth_notes: Counter = field(default_factory=Counter)  # frames whose depth was not used, by reason
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def skip(self, index: int, stamp: int | None, reason: str) -> None:
        self.skipped.append({"frame": index, "stamp_ns": stamp, "reason": reason})

    def summary(self) -> dict[str, Any]:
        reasons = Counter(s["reason"] for s in self.skipped)
        busy = sum(self.total_s)
        return {
            "frames_in_bag_read": self.frames_seen,
            "frames_processed": self.frames_processed,
            "frames_skipped": len(self.skipped),
            "skipped_by_reason": dict(reasons),
            "skipped_frames": self.skipped[:200],
            "frames_without_label": dict(self.label_notes),
            "frames_without_depth": dict(self.depth_notes),
            "latency_ms": {"total": percentiles_ms(self.total_s), "forward": percentiles_ms(self.forward_s),
                           "host": percentiles_ms(self.host_s)},
            # Pipeline FPS: frames per second of pipeline time (decode excluded); wall FPS includes
            # bag reading, decoding and writing outputs.
            "fps_pipeline": self.frames_processed / busy if busy > 0 else None,
            "fps_wall": self.frames_processed / self.wall_s if self.wall_s > 0 else None,
            "wall_s": self.wall_s,
            "errors": self.errors,
        }
