"""Class colours chosen by class name, so a class looks the same in every vocabulary.

`palette_for_names(names)` gives each class the colour its name has in the first of these tables
that knows it (names compared after `normalise_name`: lower case, '_' and '-' read as spaces):

1. Cityscapes: every label of cityscapesScripts' `labels` table that has a colour (black ones,
   e.g. "ego vehicle", are left out), so road is (128, 64, 128) and sky (70, 130, 180);
2. ADE20K (SceneParse150, 150 classes) and
3. COCO panoptic (133 things and stuff), both from `data/class_colors.json` (sources inside).

Any other name gets `hashed_color(name)`: a colour made from the SHA-256 of its normalised name
(hue from the first two bytes, saturation 0.55-0.95 from the third, value 0.65-0.95 from the
fourth), the same on every machine and in every vocabulary. Within one vocabulary the colours are
distinct: a class whose table colour an earlier class already has (Cityscapes gives "car" and
"license plate" the same), or whose hashed colour is within `MIN_HASHED_DISTANCE` (RGB, Euclidean)
of an earlier one, takes the hash of "name#1", "name#2", ... instead. Black is never given: it
is "unknown" in every colour mask and overlay. Colours a user chose (`fixed`: `casseg-vocab
--colors`, `~/set_vocabulary`'s colors) are kept as given, and the other classes avoid them.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from cityscapesscripts.helpers.labels import labels as cityscapes_labels

__all__ = ["UNKNOWN_COLOR", "MIN_HASHED_DISTANCE", "normalise_name", "table_color", "hashed_color",
           "palette_for_names", "color_tables", "parse_color", "parse_color_assignments"]

Color = tuple[int, int, int]
UNKNOWN_COLOR: Color = (0, 0, 0)
# A hashed colour closer than this to a colour already in the vocabulary is re-drawn (the RGB
# cube's diagonal is 441; 48 keeps two hashed classes apart at a glance).
MIN_HASHED_DISTANCE = 48.0
# Re-draws before a hashed colour only has to differ from the others (not be far from them).
_FAR_ATTEMPTS = 64


def normalise_name(name: str) -> str:
    """The form names are compared in: lower case, '_' and '-' as spaces, single spaces."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


@lru_cache(maxsize=1)
def color_tables() -> tuple[tuple[str, dict[str, Color]], ...]:
    """(table name, {normalised class name: colour}) in the order names are looked up."""
    cityscapes = {}
    for label in cityscapes_labels:
        if tuple(label.color) != UNKNOWN_COLOR:
            cityscapes.setdefault(normalise_name(label.name), tuple(int(v) for v in label.color))
    data = json.loads(resources.files("casseg_ros.perception").joinpath("data/class_colors.json").read_text())
    tables = [("cityscapes", cityscapes)]
    for key in ("ade20k", "coco_panoptic"):
        tables.append((key, {normalise_name(n): tuple(int(v) for v in c) for n, c in data[key]["colors"].items()}))
    return tuple(tables)


def table_color(name: str) -> Color | None:
    """The colour of `name` in the first table that has it, or None."""
    key = normalise_name(name)
    for _, table in color_tables():
        if key in table:
            return table[key]
    return None


def hashed_color(name: str, attempt: int = 0) -> Color:
    """A bright, saturated colour from the SHA-256 of the normalised name (and the attempt)."""
    key = normalise_name(name) + (f"#{attempt}" if attempt else "")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    saturation = 0.55 + 0.40 * digest[2] / 255.0
    value = 0.65 + 0.30 * digest[3] / 255.0
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _free_hashed_color(name: str, taken: Sequence[Color]) -> Color:
    """The first attempt's colour that is far from every taken one; after _FAR_ATTEMPTS, the first
    that is merely unused."""
    # All far-attempts at once, as one distance matrix: tried one by one, a swap to 150 names found in
    # no table took ~0.4 s (each late name runs out of far colours and tries all of them).
    taken_rgb = np.asarray(taken, dtype=np.float64).reshape(-1, 3)
    candidates = [hashed_color(name, attempt) for attempt in range(_FAR_ATTEMPTS)]
    distances = np.linalg.norm(np.asarray(candidates, dtype=np.float64)[:, None, :] - taken_rgb[None], axis=2)
    far = np.all(distances >= MIN_HASHED_DISTANCE, axis=1)
    for color, is_far in zip(candidates, far):
        if is_far and color != UNKNOWN_COLOR and color not in taken:
            return color
    attempt = _FAR_ATTEMPTS
    while True:
        color = hashed_color(name, attempt)
        if color != UNKNOWN_COLOR and color not in taken:
            return color
        attempt += 1


def palette_for_names(names: Sequence[str], fixed: Mapping[str, Sequence[int]] | None = None) -> np.ndarray:
    """(K, 3) uint8 RGB, one colour per class name (rule: module docstring); `fixed` maps names
    to the colours a user chose for them."""
    fixed = {str(name): parse_color(color) for name, color in (fixed or {}).items()}
    unknown = sorted(set(fixed) - {str(n) for n in names})
    if unknown:
        raise ValueError(f"colours given for names that are not classes: {unknown}")
    colors: list[Color] = []
    for name in names:
        taken = colors + [c for n, c in fixed.items() if n != name]
        color = fixed.get(str(name)) or table_color(name)
        if str(name) not in fixed and (color is None or color in taken):
            color = _free_hashed_color(name, taken)
        colors.append(color)
    return np.asarray(colors, dtype=np.uint8).reshape(len(colors), 3)


def parse_color(value: Any) -> Color:
    """'#rrggbb', 'r,g,b' or three integers 0..255 -> (r, g, b); ValueError naming the value."""
    text = value.strip() if isinstance(value, str) else None
    try:
        if text is not None and re.fullmatch(r"#[0-9a-fA-F]{6}", text):
            rgb = tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
        else:
            parts = text.split(",") if text is not None else list(value)
            rgb = tuple(int(str(v).strip()) for v in parts)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"a colour is '#rrggbb' or 'r,g,b' with values 0..255, got {value!r}")
    return rgb[0], rgb[1], rgb[2]


def parse_color_assignments(entries: Iterable[str] | None) -> dict[str, Color]:
    """`NAME=#rrggbb` / `NAME=r,g,b` entries (`--colors` of casseg-vocab and casseg-ctl) -> {name: colour}."""
    colors: dict[str, Color] = {}
    for entry in entries or ():
        name, sep, color = entry.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"--colors takes NAME=#rrggbb or NAME=r,g,b, got {entry!r}")
        colors[name.strip()] = parse_color(color)
    return colors
