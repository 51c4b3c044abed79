"""Datasets in their real on-disk formats plus the procedural context-scenes dataset.

Every dataset yields ``(image_uint8_hwc_rgb, label_uint8_hw)`` samples (255 = ignore) and exposes
``class_names``. ``build_dataset(data_cfg, split)`` picks one from a :class:`training.config.DataConfig`.
"""
from __future__ import annotations

from .ade20k import ADE20K_CLASSES, ADE20KSceneParsing
from .bdd100k import BDD100KSemantic
from .cityscapes import CITYSCAPES_CLASSES, CityscapesSemantic
from .coco import COCOPanopticSemantic
from .context_scenes import CONTEXT_CLASSES, CONTEXT_THINGS, ContextScenes
from .long_range_scenes import LongRangeContextScenes
from .mapillary_vistas import MapillaryVistasSemantic

__all__ = [
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "CONTEXT_CLASSES",
    "CONTEXT_THINGS",
    "ADE20KSceneParsing",
    "BDD100KSemantic",
    "CityscapesSemantic",
    "COCOPanopticSemantic",
    "ContextScenes",
    "LongRangeContextScenes",
    "MapillaryVistasSemantic",
    "DATASET_NAMES",
    "build_dataset",
]

DATASET_NAMES = ("cityscapes", "coco", "context_scenes", "ade20k", "bdd100k", "mapillary_vistas")


def build_dataset(data_cfg, split: str):
    """Build the dataset named by ``data_cfg.name`` for ``split`` ("train" or "val")."""
    name = data_cfg.name
    if name == "cityscapes":
        return CityscapesSemantic(data_cfg.root, split)
    if name == "coco":
        return COCOPanopticSemantic(data_cfg.root, split, year=data_cfg.coco_year)
    if name == "ade20k":
        return ADE20KSceneParsing(data_cfg.root, split)
    if name == "bdd100k":
        return BDD100KSemantic(data_cfg.root, split)
    if name == "mapillary_vistas":
        return MapillaryVistasSemantic(data_cfg.root, split, version=data_cfg.vistas_version)
    if name == "context_scenes":
        n = data_cfg.num_train if split == "train" else data_cfg.num_val
        # train and val use disjoint seed streams
        seed = data_cfg.seed if split == "train" else data_cfg.seed + 1_000_003
        layouts = {"standard": ContextScenes, "long_range": LongRangeContextScenes}
        if data_cfg.layout not in layouts:
            raise ValueError(f"unknown context_scenes layout {data_cfg.layout!r} (expected {' or '.join(layouts)})")
        return layouts[data_cfg.layout](n, height=data_cfg.height, width=data_cfg.width, seed=seed)
    raise ValueError(f"unknown dataset {name!r} (expected one of {', '.join(DATASET_NAMES)})")
