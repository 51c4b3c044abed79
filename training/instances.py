"""Instance masks from a semantic prediction and COCO-style segm mAP (pycocotools COCOeval).

Instances are 8-connected same-class components of the class map — the rule of
``casseg_ros.perception.scene_graph`` — so the mAP scores the instances the node publishes.
"""
from __future__ import annotations

import contextlib
import io
from typing import Iterable, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["InstanceCollector", "coco_segm_map", "instances_from_class_map", "mask_rle"]


def instances_from_class_map(class_map: np.ndarray, confidence: np.ndarray, thing_classes: Iterable[int],
                             min_area: int = 16) -> list[tuple[int, np.ndarray, float]]:
    """Instances as 8-connected same-class components of ``class_map`` (the scene-graph rule of
    ``casseg_ros.perception.scene_graph``), score = mean confidence over the component.
    Returns [(class_id, bool mask, score)]."""
    out = []
    for c in thing_classes:
        m = (class_map == c).astype(np.uint8)
        if not m.any():
            continue
        n, cc = cv2.connectedComponents(m, connectivity=8)
        for k in range(1, n):
            mask = cc == k
            area = int(mask.sum())
            if area < min_area:
                continue
            out.append((int(c), mask, float(confidence[mask].mean())))
    return out


def mask_rle(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a boolean mask (JSON-able counts)."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


class InstanceCollector:
    """Builds an in-memory COCO ground truth + detections and scores them with COCOeval segm."""

    def __init__(self, categories: list[dict]):
        self.categories = categories  # [{"id":..., "name":...}]
        self.images: list[dict] = []
        self.gt: list[dict] = []
        self.dt: list[dict] = []

    def add_image(self, image_id: int, height: int, width: int) -> None:
        self.images.append({"id": int(image_id), "height": int(height), "width": int(width)})

    def add_gt(self, image_id: int, category_id: int, mask: np.ndarray, iscrowd: int = 0) -> None:
        rle = mask_rle(mask)
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        self.gt.append({"id": len(self.gt) + 1, "image_id": int(image_id), "category_id": int(category_id),
                        "segmentation": rle, "area": float(mask.sum()), "bbox": [x, y, w, h], "iscrowd": iscrowd})

    def add_detection(self, image_id: int, category_id: int, mask: np.ndarray, score: float) -> None:
        self.dt.append({"image_id": int(image_id), "category_id": int(category_id),
                        "segmentation": mask_rle(mask), "score": float(score)})

    def gt_coco(self) -> COCO:
        coco = COCO()
        coco.dataset = {"images": self.images, "annotations": self.gt, "categories": self.categories}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def coco_segm_map(gt_coco, detections: list[dict], image_ids: Sequence[int] | None = None, quiet=True) -> dict:
    """COCOeval(iouType='segm'): {'map': AP@[.5:.95], 'map50': AP@.5, 'map75': AP@.75}."""
    if not detections:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0, "num_detections": 0}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        # loadRes mutates the dicts it gets (adds bbox/area/id): hand it copies
        dets = [{k: v for k, v in d.items() if k not in ("bbox", "area", "id")} for d in detections]
        dt = gt_coco.loadRes(dets)
        ev = COCOeval(gt_coco, dt, iouType="segm")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [max(float(v), 0.0) for v in ev.stats[:3]]  # -1 (no GT) -> 0
    return {"map": s[0], "map50": s[1], "map75": s[2], "num_detections": len(detections)}
