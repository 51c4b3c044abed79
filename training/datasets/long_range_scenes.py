"""Context scenes in which the deciding cue lies farther away than a Swin window reaches.

``LongRangeContextScenes`` (``data.layout: long_range``) draws wide scenes (the benchmark size is
128x640) with the classes, formats, ground truth and geometry of ``ContextScenes``, laid out so
that a vehicle's own surroundings never tell car from boat:

* the ground below the horizon strip is one large paved area (``sidewalk`` tiles: a car park or
  a boat yard) in both scene types;
* only a narrow **cue zone** at one side edge (``CUE_ZONE`` of the width) shows the scene type:
  a road with lane markings (``street``) or open water (``harbour``), labelled ``road`` / ``water``;
* vehicles (the same appearance model as ``ContextScenes``: body, window band, bumper stripe, the
  dark shadow under it, here labelled ``sidewalk``) stand only in the ``VEHICLE_ZONE`` at the other
  side edge; they are ``car`` in street scenes and ``boat`` in harbour scenes.

At 640 px the gap between the cue zone (at most 96 px) and the vehicle zone (from 448 px) is at
least 352 px. The ``swin_nano`` backbone's windows are 7 tokens (224 px at stride 32, one block
in the last stage, so no shifted window there), and with the stage-3 shift and the decoder's 3x3
convolutions a pixel of the vehicle zone sees at most back to about x = 300 (left cue) or forward
to x = 370 from the other edge (right cue; windows are aligned at x = 0): the cue is outside
every vehicle pixel's receptive field, except through the decoder's GroupNorm statistics, which
are global. ``training.long_range.context_blindness`` measures what a trained model makes of it.

Samples are a pure function of ``(seed, index)``; ``generate(i, scene=...)`` forces the scene type
with everything else unchanged (the cue zone's pixels and the vehicle labels are all that change).
"""
from __future__ import annotations

import numpy as np

from .context_scenes import _C, _VEHICLE_COLOURS, ContextScenes, Scene, SceneCamera, _Canvas, _people

#: (min, max) width of the cue zone at one side edge, as a fraction of the image width
CUE_ZONE = (0.10, 0.15)
#: every vehicle lies wholly within this fraction of the width at the other side edge
VEHICLE_ZONE = 0.30


class LongRangeContextScenes(ContextScenes):
    """``ds[i] -> (image_uint8_hwc, label_uint8_hw)``; the classes of ``ContextScenes``."""

    def __init__(self, num_samples: int = 1000, height: int = 128, width: int = 640, seed: int = 0):
        super().__init__(num_samples, height, width, seed)

    def generate(self, idx: int, scene: str | None = None) -> Scene:
        rng, img, lab, inst, scene = self._begin_scene(idx, scene, 1)  # stream 1: not the standard one
        H, W = self.height, self.width
        yy, xx = self._yy, self._xx
        cue_left = bool(rng.random() < 0.5)
        horizon = int(H * rng.uniform(0.36, 0.46))
        strip = max(2, int(H * rng.uniform(0.05, 0.09)))
        ground_top = horizon + strip
        camera = SceneCamera.for_horizon(H, W, horizon)
        row_depth = camera.ground_depth(np.arange(H))
        depth = np.full((H, W), np.inf, np.float64)
        canvas = _Canvas(img, lab, inst, depth, xx, yy, row_depth)

        canvas.sky(rng, horizon)

        # the paved area: the horizon strip and the whole ground, the same in both scene types
        paved = yy >= horizon
        tiles = 165 + 12 * (((xx.astype(np.int64) // 7) + (yy.astype(np.int64) // 3)) % 2)
        img[paved] = (tiles[paved] + rng.normal(0, 3, int(paved.sum())))[:, None]
        lab[paved] = _C["sidewalk"]
        depth[horizon:] = row_depth[horizon:, None]

        # the cue zone: both textures sampled (same RNG order), the scene picks one
        cue_width = W * rng.uniform(*CUE_ZONE)
        cue = (yy >= ground_top) & ((xx < cue_width) if cue_left else (xx >= W - cue_width))
        road, water = canvas.road_and_water(rng, horizon, *((0.0, cue_width) if cue_left else (W - cue_width, W)))
        img[cue] = (road if scene == "street" else water)[cue]
        lab[cue] = _C["road"] if scene == "street" else _C["water"]

        canvas.skyline(rng, horizon, strip, row_depth[horizon], camera.fx)

        # vehicles in the zone at the far side from the cue, people anywhere on the paved area
        zone = (W * (1 - VEHICLE_ZONE), W) if cue_left else (0.0, W * VEHICLE_ZONE)
        objects = []
        for _ in range(int(rng.integers(1, 4))):
            yb = rng.uniform(ground_top + 0.3 * (H - ground_top), H - 1)
            s = 0.5 + (yb - horizon) / max(H - horizon, 1)
            w = min(H * rng.uniform(0.35, 0.55) * s, 0.7 * (zone[1] - zone[0]))
            h = w * rng.uniform(0.42, 0.55)
            half = 0.7 * w  # the shadow is the widest part
            cx = rng.uniform(zone[0] + half, zone[1] - half)
            colour = _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))] + rng.uniform(-12, 12, 3)
            objects.append(("vehicle", yb, cx, w, h, colour.astype(np.float32)))
        objects += _people(rng, H, W, horizon, ground_top)
        vehicle_cls = _C["car"] if scene == "street" else _C["boat"]
        return canvas.finish(rng, canvas.objects(objects, vehicle_cls, _C["sidewalk"]), scene, camera)
