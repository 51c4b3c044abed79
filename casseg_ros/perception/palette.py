"""Fixed colour palettes for class maps.

The first 19 colours are the Cityscapes ones, so a Cityscapes-ordered vocabulary looks like
every other Cityscapes visualisation. Further classes get deterministic colours that differ
from each other, from the first 19 and from black (black is reserved for "unknown" in overlays).
"""
from __future__ import annotations

import numpy as np

__all__ = ["CITYSCAPES_COLORS", "default_palette"]

# (R, G, B) in Cityscapes train-id order: road, sidewalk, building, wall, fence, pole,
# traffic light, traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus,
# train, motorcycle, bicycle.
CITYSCAPES_COLORS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def _bit_interleaved_color(index: int) -> tuple[int, int, int]:
    """PASCAL-VOC style colour: spreads the bits of `index` over the high bits of R, G, B.

    It is a bijection from [0, 2**24) to colours, so distinct indices give distinct colours,
    and consecutive indices differ in their most significant bits (easy to tell apart).
    """
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((index >> 0) & 1) << shift
        g |= ((index >> 1) & 1) << shift
        b |= ((index >> 2) & 1) << shift
        index >>= 3
    return r, g, b


def default_palette(k: int) -> np.ndarray:
    """Return a `(k, 3)` uint8 RGB palette, identical for the same `k` on every call.

    Entry i is a prefix-stable function of i: `default_palette(k)[:j] == default_palette(j)`, so
    adding classes to a vocabulary never recolours the existing ones.
    """
    if k < 0:
        raise ValueError(f"palette size must be >= 0, got {k}")
    colors: list[tuple[int, int, int]] = list(CITYSCAPES_COLORS[:k])
    used = set(CITYSCAPES_COLORS) | {(0, 0, 0)}
    index = 1
    while len(colors) < k:
        color = _bit_interleaved_color(index)
        index += 1
        if color in used:
            continue
        used.add(color)
        colors.append(color)
    return np.asarray(colors, dtype=np.uint8).reshape(k, 3)
