"""Image / label-PNG pairs in two parallel folders: what ADE20K, BDD100K and Mapillary Vistas share.

Each of those datasets keeps ``<image dir>/<stem><image ext>`` beside ``<label dir>/<stem>.png``,
one 8-bit label PNG per image (grey values or palette indices = the dataset's label ids). A
:class:`LabelledFolder` finds the pairs, maps label ids to training ids with a (256,) uint8 lookup
table (255 = ignore) and names whatever is missing: a folder, the images, or the annotations of
some images.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

IGNORE = 255
LABEL_MODES = ("L", "P")  # 8-bit grey, or palette indices (Vistas): the pixel value is the label id


def require_dir(path: str, what: str) -> str:
    """``path``, or FileNotFoundError naming ``what`` should be there."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what}: folder {path} does not exist")
    return path


def require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: file {path} does not exist")
    return path


def paired_files(image_dir: str, label_dir: str, image_ext: str, dataset: str) -> list[tuple[str, str]]:
    """``(image, label)`` paths for every ``*<image_ext>`` in ``image_dir`` (sorted by name), the
    label being ``label_dir/<stem>.png``. FileNotFoundError naming the folder, or the images
    without an annotation (how many, and the first few)."""
    require_dir(image_dir, f"{dataset} images")
    require_dir(label_dir, f"{dataset} annotations")
    images = sorted(name for name in os.listdir(image_dir) if name.endswith(image_ext))
    if not images:
        raise FileNotFoundError(f"{dataset}: no *{image_ext} images in {image_dir}")
    pairs = [(os.path.join(image_dir, name), os.path.join(label_dir, name[: -len(image_ext)] + ".png"))
             for name in images]
    missing = [os.path.basename(label) for _, label in pairs if not os.path.isfile(label)]
    if missing:
        raise FileNotFoundError(f"{dataset}: {len(missing)} of {len(pairs)} images have no annotation in "
                                f"{label_dir} (missing: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    return pairs


def read_label_png(path: str) -> np.ndarray:
    """(H, W) uint8 label ids of an 8-bit grey or palette PNG (palette indices as they are)."""
    with Image.open(path) as image:
        if image.mode not in LABEL_MODES:
            raise ValueError(f"{path}: label PNG of mode {image.mode!r}; expected 8-bit ids ({' or '.join(LABEL_MODES)})")
        return np.asarray(image, dtype=np.uint8)


class LabelledFolder:
    """``(image uint8 HWC RGB, train ids uint8 HW)`` samples of paired image and label files.

    Subclasses set ``class_names`` and pass the pairs and the label-id → train-id lookup table.
    """

    class_names: list[str]
    ignore_index = IGNORE

    def __init__(self, pairs: list[tuple[str, str]], lut: np.ndarray) -> None:
        if lut.shape != (256,) or lut.dtype != np.uint8:
            raise ValueError(f"label lookup table must be (256,) uint8, got {lut.shape} {lut.dtype}")
        self.pairs = pairs
        self.lut = lut

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int):
        image_path, label_path = self.pairs[idx]
        with Image.open(image_path) as image:
            img = np.asarray(image.convert("RGB"), dtype=np.uint8)
        ids = read_label_png(label_path)
        if ids.shape != img.shape[:2]:
            raise ValueError(f"{label_path}: label {ids.shape[1]}x{ids.shape[0]} for image "
                             f"{img.shape[1]}x{img.shape[0]} ({image_path})")
        return img, self.lut[ids]

    def sample_id(self, idx: int) -> str:
        """The image's file name without its extension (what the datasets' evaluators match on)."""
        return os.path.splitext(os.path.basename(self.pairs[idx][0]))[0]
