"""Cityscapes fine annotations in the official layout.

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Label ids are mapped to the 19 evaluation train ids with ``cityscapesscripts.helpers.labels``;
every id whose ``trainId`` is 255 or -1 (and anything unknown) becomes 255 (ignore).
"""
from __future__ import annotations

import glob
import os

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from PIL import Image

CITYSCAPES_CLASSES: list[str] = [
    lbl.name for lbl in sorted((l for l in _CS_LABELS if 0 <= l.trainId < 255), key=lambda l: l.trainId)
]
assert len(CITYSCAPES_CLASSES) == 19


def id_to_train_id_lut() -> np.ndarray:
    """(256,) uint8 lookup table labelId -> trainId (255 = ignore)."""
    lut = np.full(256, 255, dtype=np.uint8)
    for lbl in _CS_LABELS:
        if 0 <= lbl.id < 256 and 0 <= lbl.trainId < 255:
            lut[lbl.id] = lbl.trainId
    return lut


def train_id_to_id_lut() -> np.ndarray:
    """(256,) uint8 lookup table trainId -> labelId for writing official-format predictions."""
    lut = np.zeros(256, dtype=np.uint8)  # 0 = 'unlabeled' for anything not a train id
    for lbl in _CS_LABELS:
        if 0 <= lbl.trainId < 255 and lbl.id >= 0:
            lut[lbl.trainId] = lbl.id
    return lut


class CityscapesSemantic:
    """Cityscapes gtFine semantic segmentation (19 classes)."""

    class_names = CITYSCAPES_CLASSES
    ignore_index = 255

    def __init__(self, root: str, split: str = "train"):
        self.root = root
        self.split = split
        pattern = os.path.join(root, "leftImg8bit", split, "*", "*_leftImg8bit.png")
        self.images = sorted(glob.glob(pattern))
        if not self.images:
            raise FileNotFoundError(f"no Cityscapes images matched {pattern}")
        self.labels = []
        for img in self.images:
            city = os.path.basename(os.path.dirname(img))
            stem = os.path.basename(img)[: -len("_leftImg8bit.png")]
            lab = os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png")
            if not os.path.isfile(lab):
                raise FileNotFoundError(f"missing annotation {lab} for {img}")
            self.labels.append(lab)
        self._lut = id_to_train_id_lut()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int):
        img = np.asarray(Image.open(self.images[idx]).convert("RGB"), dtype=np.uint8)
        ids = np.asarray(Image.open(self.labels[idx]), dtype=np.uint8)
        return img, self._lut[ids]

    def sample_id(self, idx: int) -> str:
        """``<city>_<seq>_<frame>`` of sample ``idx`` (the official evaluator matches on it)."""
        return os.path.basename(self.images[idx])[: -len("_leftImg8bit.png")]
