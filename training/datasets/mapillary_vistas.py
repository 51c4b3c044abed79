"""Mapillary Vistas v1.2 / v2.0 semantic labels in the official layout.

    <root>/config_v1.2.json | config_v2.0.json          the label list of that version
    <root>/{training,validation}/images/<key>.jpg
    <root>/{training,validation}/<version>/labels/<key>.png   palette PNG: index = position in the label list

The classes are the labels the config marks ``"evaluate": true`` (v1.2: 65 of its 66 labels, all but
"Unlabeled"), in config order, named by their ``readable`` name (the ``name`` id where two labels
share a readable name). Pixels of the ``"evaluate": false`` labels are ignored (255) in training and
in evaluation, as the official benchmark ignores them.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .folders import IGNORE, LabelledFolder, paired_files, require_file

VERSIONS = ("v1.2", "v2.0")
SPLITS = {"train": "training", "val": "validation"}
LABEL_KEYS = ("name", "readable", "evaluate")


def config_path(root: str, version: str) -> str:
    return os.path.join(root, f"config_{version}.json")


def read_labels(path: str) -> list[dict]:
    """The ``labels`` list of a Vistas config file; ValueError naming what it lacks."""
    require_file(path, "Mapillary Vistas label config")
    with open(path) as f:
        config = json.load(f)
    labels = config.get("labels") if isinstance(config, dict) else None
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"{path}: no 'labels' list")
    for i, label in enumerate(labels):
        missing = [k for k in LABEL_KEYS if not isinstance(label, dict) or k not in label]
        if missing:
            raise ValueError(f"{path}: label {i} lacks {missing}")
    if len(labels) > IGNORE:
        raise ValueError(f"{path}: {len(labels)} labels do not fit an 8-bit label PNG beside the ignore id {IGNORE}")
    return labels


def class_names(labels: list[dict]) -> list[str]:
    """Readable names of the evaluated labels; a readable name two of them share gives way to ``name``."""
    evaluated = [label for label in labels if label["evaluate"]]
    readable = [str(label["readable"]) for label in evaluated]
    return [r if readable.count(r) == 1 else str(label["name"]) for r, label in zip(readable, evaluated)]


def label_lut(labels: list[dict]) -> np.ndarray:
    """(256,) uint8: label id -> contiguous class id of the evaluated labels; the others -> 255."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    evaluated = [i for i, label in enumerate(labels) if label["evaluate"]]
    lut[evaluated] = np.arange(len(evaluated), dtype=np.uint8)
    return lut


class MapillaryVistasSemantic(LabelledFolder):
    """Mapillary Vistas: 18,000 training and 2,000 validation images; the classes of ``version``'s config."""

    def __init__(self, root: str, split: str = "train", version: str = "v1.2") -> None:
        if version not in VERSIONS:
            raise ValueError(f"Mapillary Vistas version must be one of {list(VERSIONS)}, got {version!r}")
        if split not in SPLITS:
            raise ValueError(f"Mapillary Vistas split must be one of {sorted(SPLITS)}, got {split!r}")
        self.root, self.split, self.version = root, split, version
        labels = read_labels(config_path(root, version))
        self.labels = labels
        self.class_names = class_names(labels)
        self.label_ids = [i for i, label in enumerate(labels) if label["evaluate"]]
        """Vistas label id of each class (to write predictions in the dataset's ids)."""
        self.ignored_labels = [str(label["name"]) for label in labels if not label["evaluate"]]
        folder = os.path.join(root, SPLITS[split])
        pairs = paired_files(os.path.join(folder, "images"), os.path.join(folder, version, "labels"), ".jpg",
                             f"Mapillary Vistas {version}")
        super().__init__(pairs, label_lut(labels))
