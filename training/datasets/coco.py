"""COCO panoptic annotations turned into semantic masks, plus instance GT for mAP.

Official layout (``year`` = 2017 by default)::

    <root>/<split><year>/<image>.jpg
    <root>/annotations/panoptic_<split><year>.json
    <root>/annotations/panoptic_<split><year>/<image>.png     (RGB-encoded segment ids)
    <root>/annotations/instances_<split><year>.json           (instance masks; for mAP)

Panoptic category ids (things and stuff, 133 in COCO 2017) are mapped to contiguous ids in
ascending category-id order; pixels of no segment (id 0) and crowd segments are 255 (ignore).
"""
from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
from PIL import Image
from pycocotools.coco import COCO


def rgb2id(color: np.ndarray) -> np.ndarray:
    """panopticapi's encoding: id = R + 256 G + 256^2 B."""
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


class COCOPanopticSemantic:
    ignore_index = 255

    def __init__(self, root: str, split: str = "train", year: int | str = 2017):
        self.root = root
        self.split = split
        tag = f"{split}{year}"
        self.image_dir = os.path.join(root, tag)
        self.panoptic_json = os.path.join(root, "annotations", f"panoptic_{tag}.json")
        self.panoptic_dir = os.path.join(root, "annotations", f"panoptic_{tag}")
        self.instances_json = os.path.join(root, "annotations", f"instances_{tag}.json")
        with open(self.panoptic_json) as f:
            data = json.load(f)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        if len(cats) > 255:
            raise ValueError("more than 255 categories do not fit the uint8 label map")
        self.categories = cats
        self.class_names = [c["name"] for c in cats]
        self.cat_id_to_contiguous = {c["id"]: i for i, c in enumerate(cats)}
        self.contiguous_to_cat_id = [c["id"] for c in cats]
        self.thing_classes = [i for i, c in enumerate(cats) if c.get("isthing", 0)]
        images = {im["id"]: im for im in data["images"]}
        self.samples = []
        for ann in sorted(data["annotations"], key=lambda a: a["image_id"]):
            im = images[ann["image_id"]]
            self.samples.append((im, ann))
        if not self.samples:
            raise FileNotFoundError(f"no annotations in {self.panoptic_json}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int):
        im, ann = self.samples[idx]
        img = np.asarray(Image.open(os.path.join(self.image_dir, im["file_name"])).convert("RGB"), dtype=np.uint8)
        pan = rgb2id(np.asarray(Image.open(os.path.join(self.panoptic_dir, ann["file_name"])).convert("RGB")))
        label = np.full(pan.shape, 255, dtype=np.uint8)
        for seg in ann["segments_info"]:
            if seg.get("iscrowd", 0):
                continue
            label[pan == seg["id"]] = self.cat_id_to_contiguous[seg["category_id"]]
        return img, label

    def image_id(self, idx: int) -> int:
        return int(self.samples[idx][0]["id"])

    def instance_gt(self) -> COCO:
        """pycocotools ``COCO`` object of the instance annotations (for COCOeval segm)."""
        if not os.path.isfile(self.instances_json):
            raise FileNotFoundError(f"instance annotations not found: {self.instances_json}")
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(self.instances_json)
