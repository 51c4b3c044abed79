"""Context scenes that move: a panning camera over one street or harbour scene whose objects drive,
pass each other, leave and enter, with ground-truth instance ids that persist across frames.

The background (sky, ground, pavement strip, skyline) is drawn once on a "world" canvas wider than
the camera by the whole pan, with the drawing steps of ``context_scenes._Canvas``; each frame
copies it, draws the objects at their positions of that frame (far to near, so nearer objects
occlude farther ones as they pass), crops the camera's window and adds sensor noise. Panning is a
sideways translation of the camera (the crop moves ``pan_px`` world pixels a frame), so the
intrinsics and the depth of every surface stay those of ``SceneCamera``.

Objects: ``initial_objects`` in view at frame 0, and one more entering from a side every
``spawn_every`` frames, a person with probability ``person_share`` else a vehicle; each moves at a constant speed along its row (vehicles 1-4 px a frame,
people 0.3-1). An object's id is its index in the order objects were made, from 1; it keeps it
for the whole sequence (``instance_map``: 0 = no object; ``instance_classes``: id -> class), also
after an occlusion. Everything is a pure function of the seed (numpy ``SeedSequence``): the same
arguments give the same frames, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .context_scenes import _C, _CLOTHES, _VEHICLE_COLOURS, Scene, SceneCamera, _Canvas

__all__ = ["ContextSequence", "SequenceFrame"]


@dataclass
class SequenceFrame:
    scene: Scene  # image, label, depth, camera; scene.instance_map holds the persistent ids
    instance_classes: dict[int, int]  # persistent id -> class id, of the objects visible in this frame


@dataclass(frozen=True)
class _Mover:
    id: int
    kind: str  # "vehicle" or "person"
    yb: float  # bottom row
    x0: float  # world column of the centre at frame `born`
    vx: float  # world px per frame
    w: float
    h: float
    colour: np.ndarray
    born: int

    def cx(self, t: int) -> float:
        return self.x0 + self.vx * (t - self.born)


class ContextSequence:
    def __init__(self, frames: int = 100, height: int = 128, width: int = 256, seed: int = 0,
                 scene: str = "street", pan_px: float = 1.0, initial_objects: int = 3, spawn_every: int = 12,
                 person_share: float = 0.3):
        if scene not in ("street", "harbour"):
            raise ValueError(f"scene must be street or harbour, got {scene!r}")
        self.frames, self.height, self.width, self.seed = int(frames), int(height), int(width), int(seed)
        self.scene, self.pan_px = scene, float(pan_px)
        self.initial_objects, self.spawn_every = int(initial_objects), int(spawn_every)
        self.person_share = float(person_share)
        self.world_width = self.width + int(np.ceil(abs(self.pan_px) * max(self.frames - 1, 0)))
        self._draw_world()

    def __len__(self) -> int:
        return self.frames

    def _draw_world(self) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        H, W = self.height, self.world_width
        yy, xx = (a.astype(np.float32) for a in np.mgrid[0:H, 0:W])
        horizon = int(H * rng.uniform(0.38, 0.46))
        strip = max(2, int(H * 0.07))
        self.ground_top = horizon + strip
        self.horizon = horizon
        self.camera = SceneCamera.for_horizon(H, self.width, horizon)
        row_depth = self.camera.ground_depth(np.arange(H))
        canvas = _Canvas(np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.uint8), np.zeros((H, W), np.int32),
                         np.full((H, W), np.inf), xx, yy, row_depth)
        canvas.sky(rng, horizon)
        road, water = canvas.road_and_water(rng, horizon, 0.0, float(W))
        ground = yy >= self.ground_top
        street = self.scene == "street"
        canvas.img[ground] = (road if street else water)[ground]
        canvas.lab[ground] = _C["road"] if street else _C["water"]
        strip_mask = (yy >= horizon) & (yy < self.ground_top)
        tiles = 165 + 12 * (((xx.astype(np.int64) // 7) + (yy.astype(np.int64) // 3)) % 2)
        canvas.img[strip_mask] = tiles[strip_mask][:, None]
        canvas.lab[strip_mask] = _C["sidewalk"]
        canvas.depth[horizon:] = row_depth[horizon:, None]
        canvas.skyline(rng, horizon, strip, row_depth[horizon], self.camera.fx)
        self._world = canvas
        self._movers = self._plan_objects(rng)

    def _offset(self, t: int) -> float:
        """World column of the camera window's left edge at frame t."""
        return self.pan_px * t if self.pan_px >= 0 else (self.world_width - self.width) + self.pan_px * t

    def _new_mover(self, rng: np.random.Generator, ident: int, born: int, entering: bool) -> _Mover:
        H, W = self.height, self.width
        person = rng.random() < self.person_share
        vx = rng.uniform(0.3, 1.0) if person else rng.uniform(1.0, 4.0)
        side = rng.random() < 0.5  # entering from the left moves right
        if person:
            yb = rng.uniform(self.horizon + 1, self.ground_top + 1)
            h = H * rng.uniform(0.1, 0.16)
            w = h * 0.32
            colour = _CLOTHES[rng.integers(len(_CLOTHES))] + rng.uniform(-10, 10, 3)
        else:
            yb = rng.uniform(self.ground_top + 0.3 * (H - self.ground_top), H - 1)
            s = 0.5 + (yb - self.horizon) / max(H - self.horizon, 1)
            w = W * rng.uniform(0.1, 0.17) * s
            h = w * rng.uniform(0.42, 0.55)
            colour = _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))] + rng.uniform(-12, 12, 3)
        left = self._offset(born)
        if entering:
            x0 = left - w / 2 if side else left + W + w / 2
        else:
            x0 = left + rng.uniform(0.1, 0.9) * W
        return _Mover(ident, "person" if person else "vehicle", float(yb), float(x0),
                      float(vx if side else -vx), float(w), float(h), colour.astype(np.float32), born)

    def _plan_objects(self, rng: np.random.Generator) -> list[_Mover]:
        movers = [self._new_mover(rng, i + 1, 0, entering=False) for i in range(self.initial_objects)]
        for born in range(self.spawn_every, self.frames, max(self.spawn_every, 1)):
            movers.append(self._new_mover(rng, len(movers) + 1, born, entering=True))
        return movers

    def frame(self, t: int) -> SequenceFrame:
        if not 0 <= t < self.frames:
            raise IndexError(t)
        world = self._world
        canvas = _Canvas(world.img.copy(), world.lab.copy(), world.inst.copy(), world.depth.copy(), world.xx,
                         world.yy, world.row_depth)
        street = self.scene == "street"
        vehicle_cls, ground_cls = (_C["car"], _C["road"]) if street else (_C["boat"], _C["water"])
        classes = {}
        for m in sorted((m for m in self._movers if m.born <= t), key=lambda m: m.yb):  # far to near
            if m.kind == "vehicle":
                canvas.vehicle(m.yb, m.cx(t), m.w, m.h, m.colour, vehicle_cls, ground_cls, m.id)
                classes[m.id] = vehicle_cls
            else:
                canvas.person(m.yb, m.cx(t), m.w, m.h, m.colour, m.id)
                classes[m.id] = _C["person"]
        x = int(round(self._offset(t)))
        window = np.s_[:, x:x + self.width]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, t]))
        img = canvas.img[window] + rng.normal(0, 3, (self.height, self.width, 1)).astype(np.float32)
        inst = np.ascontiguousarray(canvas.inst[window])
        visible = set(np.unique(inst).tolist()) - {0}
        scene = Scene(np.clip(img, 0, 255).astype(np.uint8), np.ascontiguousarray(canvas.lab[window]), inst,
                      [classes[i] for i in sorted(visible)], self.scene,
                      np.ascontiguousarray(canvas.depth[window]).astype(np.float32), self.camera)
        return SequenceFrame(scene, {i: classes[i] for i in sorted(visible)})
