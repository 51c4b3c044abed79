"""BDD100K semantic segmentation (the 10K images) in its official layout.

    <root>/images/10k/{train,val}/<name>.jpg
    <root>/labels/sem_seg/masks/{train,val}/<name>.png

The masks hold Cityscapes train ids already (0..18, the 19 Cityscapes evaluation classes, in their
order) and 255 for everything else (ignored); any other value is ignored too.
"""
from __future__ import annotations

import os

import numpy as np

from .cityscapes import CITYSCAPES_CLASSES
from .folders import IGNORE, LabelledFolder, paired_files

SPLITS = ("train", "val")


def train_id_lut() -> np.ndarray:
    """(256,) uint8: 0..18 kept, everything else -> 255 (ignore)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[: len(CITYSCAPES_CLASSES)] = np.arange(len(CITYSCAPES_CLASSES), dtype=np.uint8)
    return lut


class BDD100KSemantic(LabelledFolder):
    """BDD100K sem_seg: 7,000 training and 1,000 validation images (1280x720), 19 classes."""

    class_names = CITYSCAPES_CLASSES

    def __init__(self, root: str, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"BDD100K split must be one of {list(SPLITS)}, got {split!r}")
        self.root, self.split = root, split
        pairs = paired_files(os.path.join(root, "images", "10k", split),
                             os.path.join(root, "labels", "sem_seg", "masks", split), ".jpg", "BDD100K")
        super().__init__(pairs, train_id_lut())
