"""Tracking metrics of a recording with ground-truth instance ids: MOTA, IDF1, id switches
(motmetrics, the py-motmetrics implementation of the CLEAR-MOT and ID measures), and mask flicker.

Per frame the evaluator keeps what it needs (ground-truth objects: id, class, box; predicted
objects: track id, class, box) and computes at the end, when the classes that have instances are
known from the whole recording: predicted objects of other classes (road, sky: stuff without
instance ground truth) are left out, and a prediction matches a ground-truth object of its own class
with box IoU >= ``min_iou`` (distance 1 - IoU, as motmetrics' ``iou_matrix``). Ground-truth objects
with fewer than ``min_area`` visible pixels (almost fully occluded, or a sliver at the image edge)
are not scored, as the node reports no object below its ``min_instance_area``.

Flicker: of the pixels whose ground-truth class is the same in two consecutive frames (and not
ignored), the share whose predicted class changed — the mask's instability that the scene does
not explain. Temporal mIoU: on those same pixels, the mIoU of each frame's predicted classes
against the previous frame's (the temporal-consistency measure of video segmentation, which warps
the previous prediction by optical flow; here the ground truth tells which pixels kept their class,
so no flow is needed): 100 % is a mask that changes only where the scene does. `per_frame` keeps
each frame's matches, misses, false positives, id switches and flicker for the report's plot. ROS-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import motmetrics as mm
import numpy as np
from scipy import ndimage

from casseg_ros.perception.scene_graph import SceneGraph
from casseg_ros.perception.tracking import box_iou

__all__ = ["TrackingEvaluator", "instance_boxes"]

IGNORE = 255


def instance_boxes(instance_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), boxes (N,4) x, y, w, h) of the nonzero ids of an instance map."""
    slices = ndimage.find_objects(np.asarray(instance_map, np.int64))
    ids, boxes = [], []
    for index, where in enumerate(slices, start=1):
        if where is not None:
            rows, cols = where
            ids.append(index)
            boxes.append((cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start))
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


@dataclass
class _Frame:
    gt_ids: np.ndarray
    gt_classes: np.ndarray
    gt_boxes: np.ndarray
    hyp_ids: np.ndarray
    hyp_classes: np.ndarray
    hyp_boxes: np.ndarray


@dataclass
class TrackingEvaluator:
    min_iou: float = 0.5
    min_area: int = 64  # ground-truth objects with fewer visible pixels are not scored (the node's min_instance_area)
    frames: list[_Frame] = field(default_factory=list)
    _previous: tuple[np.ndarray, np.ndarray] | None = None  # (gt class ids, predicted class ids)
    _stable_pixels: int = 0
    _flickering_pixels: int = 0
    _frame_flicker: list[float | None] = field(default_factory=list)
    # consecutive predicted classes on stable pixels: confusion[previous, current]
    _consistency: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def update(self, instance_map: np.ndarray, gt_class_ids: np.ndarray, graph: SceneGraph,
               predicted_class_ids: np.ndarray) -> None:
        """One frame: its instance ids (0 none), ground-truth class ids (model ids, 255 ignored), the
        predicted scene graph (track ids when tracked) and the predicted class ids per pixel."""
        ids, boxes = instance_boxes(instance_map)
        areas = np.bincount(instance_map.reshape(-1), minlength=int(ids.max(initial=0)) + 1)[ids]
        visible = areas >= self.min_area
        ids, boxes = ids[visible], boxes[visible]
        classes = np.array([np.bincount(gt_class_ids[instance_map == i].clip(0, IGNORE)).argmax() for i in ids],
                           np.int64)
        self.frames.append(_Frame(ids, classes, boxes, graph.ids.astype(np.int64), graph.class_ids.astype(np.int64),
                                  graph.boxes.astype(np.float64)))
        if self._previous is not None and self._previous[0].shape == gt_class_ids.shape:
            gt_before, predicted_before = self._previous
            stable = (gt_before == gt_class_ids) & (gt_class_ids != IGNORE)
            flickering = int((stable & (predicted_before != predicted_class_ids)).sum())
            stable_count = int(stable.sum())
            self._stable_pixels += stable_count
            self._flickering_pixels += flickering
            self._frame_flicker.append(flickering / stable_count if stable_count else None)
            self._count_consistency(predicted_before[stable], predicted_class_ids[stable])
        else:
            self._frame_flicker.append(None)
        self._previous = (gt_class_ids, predicted_class_ids)

    def _count_consistency(self, before: np.ndarray, now: np.ndarray) -> None:
        if not before.size:
            return
        k = max(int(before.max()), int(now.max())) + 1
        if k > len(self._consistency):
            grown = np.zeros((k, k), np.int64)
            grown[:len(self._consistency), :len(self._consistency)] = self._consistency
            self._consistency = grown
        k = len(self._consistency)
        pairs = before.astype(np.int64) * k + now.astype(np.int64)
        self._consistency += np.bincount(pairs, minlength=k * k).reshape(k, k)

    def temporal_miou(self) -> float | None:
        """Mean over the classes seen on stable pixels of IoU(previous prediction, current one)."""
        c = self._consistency
        union = c.sum(0) + c.sum(1) - np.diag(c)
        present = union > 0
        return float(np.mean(np.diag(c)[present] / union[present])) if present.any() else None

    def result(self) -> dict:
        """MOTA, IDF1, id switches (also per 100 ground-truth objects), flicker; None where undefined."""
        thing_classes = set(np.concatenate([f.gt_classes for f in self.frames]).tolist()) if self.frames else set()
        accumulator = mm.MOTAccumulator(auto_id=True)
        for f in self.frames:
            keep = np.isin(f.hyp_classes, list(thing_classes))
            hyp_ids, hyp_classes, hyp_boxes = f.hyp_ids[keep], f.hyp_classes[keep], f.hyp_boxes[keep]
            distance = 1.0 - box_iou(f.gt_boxes, hyp_boxes)
            distance[(distance > 1.0 - self.min_iou) | (f.gt_classes[:, None] != hyp_classes[None, :])] = np.nan
            accumulator.update(f.gt_ids.tolist(), hyp_ids.tolist(), distance)
        objects = len({int(i) for f in self.frames for i in f.gt_ids})
        summary = mm.metrics.create().compute(accumulator, metrics=["mota", "idf1", "num_switches", "num_matches",
                                                                    "num_false_positives", "num_misses"],
                                              name="sequence") if objects else None
        row = summary.iloc[0] if summary is not None else {}
        switches = int(row["num_switches"]) if objects else 0
        return {
            "frames": len(self.frames), "ground_truth_objects": objects,
            "thing_classes": sorted(int(c) for c in thing_classes), "min_iou": self.min_iou, "min_area": self.min_area,
            "mota": float(row["mota"]) if objects else None, "idf1": float(row["idf1"]) if objects else None,
            "id_switches": switches, "id_switches_per_100": 100.0 * switches / objects if objects else None,
            "matches": int(row["num_matches"]) if objects else 0,
            "false_positives": int(row["num_false_positives"]) if objects else 0,
            "misses": int(row["num_misses"]) if objects else 0,
            "flicker": self._flickering_pixels / self._stable_pixels if self._stable_pixels else None,
            "temporal_miou": self.temporal_miou(),
            "per_frame": self._per_frame(accumulator),
        }

    def _per_frame(self, accumulator: "mm.MOTAccumulator") -> dict[str, list]:
        """Per frame: motmetrics' event counts (a switch is also a match) and the flicker since the previous frame."""
        counts = {kind: [0] * len(self.frames) for kind in ("matches", "misses", "false_positives", "id_switches")}
        kinds = {"MATCH": "matches", "SWITCH": "id_switches", "MISS": "misses", "FP": "false_positives"}
        events = accumulator.mot_events
        for (frame, _), kind in zip(events.index, events["Type"]):
            if kind in kinds:
                counts[kinds[kind]][int(frame)] += 1
        counts["matches"] = [m + s for m, s in zip(counts["matches"], counts["id_switches"])]
        return counts | {"flicker": list(self._frame_flicker)}
