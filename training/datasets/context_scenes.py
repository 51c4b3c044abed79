"""Procedural street / harbour scenes in which context is the only way to tell two classes apart.

Every scene has sky, a skyline of buildings and trees, a pavement / quay strip and a ground plane
that is either a road (``street`` scenes) or open water (``harbour`` scenes). Vehicles are drawn
with *exactly* the same appearance model in both scene types -- body colour, window band, bumper
stripe and the dark shadow / wake under them, all sampled from the same distributions and in the
same random-number order -- but are labelled ``car`` in street scenes and ``boat`` in harbour
scenes. The shadow pixels belong to the ground class (``road`` / ``water``), so the locally
identical region extends past the vehicle: a classifier that only sees the vehicle and its shadow
cannot beat chance on car vs boat; it has to look at the wider scene. ``person`` appears in both.

Samples are a pure function of ``(seed, index)`` (numpy ``SeedSequence``), any size, generated on
the fly. ``generate(i, scene=...)`` can force the scene type with everything else unchanged,
which is how the tests check that the pair is pixel-identical.

Geometry (``Scene.depth``, ``Scene.camera``): the generator draws in perspective, so every pixel
has an exact depth under this model, computed next to the drawing without any random draw of its
own (images, labels and the random-number order are the same with or without it):

* a pinhole camera (``SceneCamera``): fx = fy = W / 2 (a 90 degree horizontal field of view), principal
  point at the image centre ((W-1)/2, (H-1)/2), mounted CAMERA_HEIGHT_M over a flat ground plane
  and pitched down so that the ground's vanishing line lies between the last sky row and the
  first pavement row (row ``horizon`` - 0.5, where the generator puts the horizon);
* ground (road / water, the pavement strip, vehicle shadows and wakes): the depth of the ray /
  ground-plane intersection, z(v) = h / (cos(pitch) (v - cy) / fy + sin(pitch)), the same for
  every column of a row;
* objects (vehicles, people): a surface of constant camera depth, the ground depth of the
  object's bottom drawn row (where it stands);
* the skyline stands beyond the ground: a tree's crown at the ground depth of its lowest drawn
  row (the strip's far edge, row ``horizon``, if it is drawn wholly above the horizon) plus its
  radius in metres at that depth; a building's facade behind the strip's far edge by its own
  drawn width in metres at that depth (so neighbouring facades are staggered, and crowns narrower
  than a building stand in front of it);
* sky: at infinity (+inf, an invalid depth in REP-118 terms).

Depth follows the painter's order of the drawing (each pixel has the depth of the surface drawn
last there), so it is exact for the image as drawn, including its few physically odd overlaps.
Depth is in metres along the optical axis (z of the optical frame: x right, y down, z forward).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from casseg_ros.perception.depth import PinholeCamera

CONTEXT_CLASSES: list[str] = [
    "sky", "building", "vegetation", "road", "sidewalk", "water", "person", "car", "boat",
]
CONTEXT_THINGS: list[str] = ["person", "car", "boat"]
#: classes that look identical locally; the first is used on road, the second on water
CONTEXT_PAIRS: list[tuple[str, str]] = [("car", "boat")]

_C = {n: i for i, n in enumerate(CONTEXT_CLASSES)}

_VEHICLE_COLOURS = np.array(
    [[200, 30, 35], [235, 235, 230], [240, 200, 40], [60, 70, 160], [30, 30, 35], [150, 155, 160],
     [30, 120, 60], [230, 120, 30]], dtype=np.float32)
_BUILDING_COLOURS = np.array(
    [[150, 140, 130], [120, 100, 90], [180, 170, 150], [110, 110, 120], [160, 120, 100]], dtype=np.float32)
_CLOTHES = np.array([[40, 40, 120], [150, 30, 30], [30, 30, 30], [200, 200, 200], [90, 60, 30]], dtype=np.float32)


#: the camera model of the scenes (see the module docstring)
CAMERA_HEIGHT_M = 2.0
FOCAL_PER_WIDTH = 0.5  # fx = fy = W / 2: a 90 degree horizontal field of view


@dataclass(frozen=True)
class SceneCamera(PinholeCamera):
    """The pinhole camera a scene is drawn with (the intrinsics the node gets from camera_info), and
    its pose over the ground plane (optical frame, metres)."""

    mount_height_m: float  # camera centre above the ground plane
    pitch_rad: float  # optical axis below the horizontal

    @classmethod
    def for_horizon(cls, height: int, width: int, horizon: int) -> "SceneCamera":
        """The camera whose ground vanishing line is at row `horizon` - 0.5 of a (height, width) image."""
        f = FOCAL_PER_WIDTH * width
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        return cls(fx=f, fy=f, cx=cx, cy=cy, width=width, height=height, mount_height_m=CAMERA_HEIGHT_M,
                   pitch_rad=math.atan((cy - (horizon - 0.5)) / f))

    @property
    def k(self) -> list[float]:
        """Camera matrix, row-major (sensor_msgs/CameraInfo.k)."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    @property
    def down(self) -> np.ndarray:
        """Unit vector towards the ground plane, in the optical frame."""
        return np.array([0.0, math.cos(self.pitch_rad), math.sin(self.pitch_rad)])

    def ground_depth(self, rows: np.ndarray) -> np.ndarray:
        """Depth (z) of the ground plane seen at image rows `rows` (float64); +inf at and above the
        vanishing line, where a row's rays do not meet the ground."""
        descent = math.cos(self.pitch_rad) * (np.asarray(rows, np.float64) - self.cy) / self.fy + math.sin(self.pitch_rad)
        with np.errstate(divide="ignore"):
            return np.where(descent > 0, self.mount_height_m / np.maximum(descent, 1e-300), np.inf)

    def back_project(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixels (u column, v row) at depth z -> (..., 3) points in the optical frame."""
        z = np.asarray(z, np.float64)
        return np.stack([(np.asarray(u) - self.cx) * z / self.fx, (np.asarray(v) - self.cy) * z / self.fy, z], -1)


@dataclass
class Scene:
    image: np.ndarray          # (H,W,3) uint8 RGB
    label: np.ndarray          # (H,W) uint8 class ids (CONTEXT_CLASSES)
    instance_map: np.ndarray   # (H,W) int32, 0 = none, k = k-th instance
    instance_classes: list[int]  # class id of instance k (index k-1)
    scene: str                 # "street" or "harbour"
    depth: np.ndarray          # (H,W) float32 metres along the optical axis, +inf = sky (no depth)
    camera: SceneCamera        # intrinsics and pose over the ground plane


def _stand(depth: np.ndarray, drawn: np.ndarray, yy: np.ndarray, row_depth: np.ndarray) -> None:
    """An object drawn at `drawn` is a constant-depth surface standing on the ground at its bottom row."""
    if drawn.any():
        depth[drawn] = row_depth[int(yy[drawn].max())]


def _people(rng: np.random.Generator, H: int, W: int, horizon: int, ground_top: int) -> list[tuple]:
    """0-2 people standing on the horizon strip: ``("person", yb, cx, w, h, colour)``."""
    people = []
    for _ in range(int(rng.integers(0, 3))):
        yb = rng.uniform(horizon + 1, ground_top + 1)
        h = H * rng.uniform(0.1, 0.16)
        cx = rng.uniform(0.03 * W, 0.97 * W)
        colour = _CLOTHES[rng.integers(len(_CLOTHES))] + rng.uniform(-10, 10, 3)
        people.append(("person", yb, cx, h * 0.32, h, colour.astype(np.float32)))
    return people


@dataclass
class _Canvas:
    """The arrays a scene is drawn into, and the drawing steps two scene layouts share (none of
    them draws random numbers except ``skyline`` and ``finish``, which draw in a fixed order)."""

    img: np.ndarray        # (H,W,3) float32 RGB
    lab: np.ndarray        # (H,W) uint8 class ids
    inst: np.ndarray       # (H,W) int32 instance ids
    depth: np.ndarray      # (H,W) float64 metres, +inf = sky
    xx: np.ndarray         # (H,W) float32 column of each pixel
    yy: np.ndarray         # (H,W) float32 row of each pixel
    row_depth: np.ndarray  # (H,) ground depth per row

    def sky(self, rng: np.random.Generator, horizon: int) -> None:
        """Everything sky, a vertical gradient down to the horizon (drawn over by the rest)."""
        t = (self.yy / max(horizon, 1))[..., None]
        top = np.array([100, 150, 220], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
        bottom = np.array([185, 210, 240], np.float32)
        self.img[:] = top * (1 - t) + bottom * t
        self.lab[:] = _C["sky"]

    def road_and_water(self, rng: np.random.Generator, horizon: int, x0: float, x1: float):
        """(H,W,3) road (a dashed lane marking somewhere in columns x0..x1) and water textures; both
        are always sampled, so the scene type changes no other random draw."""
        xx, yy = self.xx, self.yy
        H, W = self.lab.shape
        road = np.full((H, W, 3), 85, np.float32) + rng.normal(0, 6, (H, W, 1)).astype(np.float32)
        lane_x = x0 + (x1 - x0) * rng.uniform(0.3, 0.7)
        persp = np.clip((yy - horizon) / max(H - horizon, 1), 0, 1)
        lane = (np.abs(xx - lane_x - (xx - W / 2) * 0.0) < 1 + 2 * persp) & ((yy.astype(np.int64) // 6) % 2 == 0)
        road[lane] = 235
        phase = rng.uniform(0, 2 * np.pi)
        waves = np.sin(yy * (0.9 - 0.5 * persp) + 0.15 * np.sin(xx * 0.11 + phase) * 6 + phase)
        water = np.stack([30 + 12 * waves, 85 + 15 * waves, 150 + 18 * waves], -1).astype(np.float32)
        water += rng.normal(0, 4, (H, W, 1)).astype(np.float32)
        return road, water

    def skyline(self, rng: np.random.Generator, horizon: int, strip: int, edge_depth: float, fx: float) -> None:
        """Buildings with windows standing on the horizon, then 1-4 trees in front of them."""
        img, lab, depth, xx, yy, row_depth = self.img, self.lab, self.depth, self.xx, self.yy, self.row_depth
        H, W = lab.shape
        x = -int(rng.integers(0, W // 8 + 1))
        while x < W:
            bw = int(W * rng.uniform(0.08, 0.2))
            bh = int(H * rng.uniform(0.08, 0.32))
            col = _BUILDING_COLOURS[rng.integers(len(_BUILDING_COLOURS))] + rng.uniform(-10, 10, 3)
            present = rng.random() < 0.85
            if present:
                m = (xx >= x) & (xx < x + bw) & (yy >= horizon - bh) & (yy < horizon)
                img[m] = col
                win = m & ((xx.astype(np.int64) - x) % 6 >= 3) & ((yy.astype(np.int64) - (horizon - bh)) % 7 >= 4)
                img[win] = col * 0.45
                lab[m] = _C["building"]
                depth[m] = edge_depth * (1.0 + bw / fx)  # set back by its own width
            x += bw
        for _ in range(int(rng.integers(1, 5))):
            cx, r = rng.uniform(0, W), H * rng.uniform(0.05, 0.12)
            cy = horizon - r * rng.uniform(0.3, 1.0)
            m = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) & (yy < horizon + strip // 2)
            leaf = np.array([45, 110, 40], np.float32) + rng.normal(0, 14, (H, W, 1)).astype(np.float32)
            img[m] = leaf[m]
            lab[m] = _C["vegetation"]
            if m.any():
                base = max(int(yy[m].max()), horizon)
                depth[m] = row_depth[base] * (1.0 + r / fx)  # beyond its ground by its radius

    def vehicle(self, yb: float, cx: float, w: float, h: float, colour: np.ndarray, vehicle_cls: int,
                ground_cls: int, k: int) -> None:
        """The one vehicle appearance (car and boat alike): body, window band, bumper stripe, and the
        dark shadow / wake under it, which is labelled ``ground_cls``."""
        img, lab, inst, depth, xx, yy, row_depth = (self.img, self.lab, self.inst, self.depth, self.xx, self.yy,
                                                    self.row_depth)
        # shadow / wake: identical dark ellipse, labelled as the ground under it
        shadow = ((xx - cx) / (0.7 * w)) ** 2 + ((yy - yb) / (0.28 * h)) ** 2 < 1
        img[shadow] = np.array([38, 38, 44], np.float32)
        lab[shadow] = ground_cls
        inst[shadow] = 0
        depth[shadow] = row_depth[yy[shadow].astype(np.int64)]
        # body: rounded rectangle = rectangle with elliptical corners
        x0, x1, y0 = cx - w / 2, cx + w / 2, yb - h
        rx, ry = 0.18 * w, 0.3 * h
        ex = np.maximum(np.maximum(x0 + rx - xx, xx - (x1 - rx)), 0) / rx
        ey = np.maximum(np.maximum(y0 + ry - yy, yy - (yb - ry)), 0) / ry
        body = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= yb) & (ex ** 2 + ey ** 2 <= 1)
        img[body] = colour
        window = body & (yy < y0 + 0.4 * h) & (yy > y0 + 0.1 * h) & (xx > x0 + 0.15 * w) & (xx < x1 - 0.15 * w)
        img[window] = np.array([45, 55, 70], np.float32)
        stripe = body & (yy > yb - 0.2 * h)
        img[stripe] = colour * 0.55
        lab[body] = vehicle_cls
        inst[body] = k
        _stand(depth, body, yy, row_depth)

    def person(self, yb: float, cx: float, w: float, h: float, colour: np.ndarray, k: int) -> None:
        img, lab, inst, xx, yy = self.img, self.lab, self.inst, self.xx, self.yy
        head_r = 0.14 * h
        head = (xx - cx) ** 2 + (yy - (yb - h + head_r)) ** 2 < head_r ** 2
        torso = ((xx - cx) / (w / 2)) ** 2 + ((yy - (yb - 0.42 * h)) / (0.42 * h)) ** 2 < 1
        img[torso] = colour
        img[head] = np.array([225, 180, 150], np.float32)
        m = head | torso
        lab[m] = _C["person"]
        inst[m] = k
        _stand(self.depth, m, yy, self.row_depth)

    def objects(self, objects: list[tuple], vehicle_cls: int, ground_cls: int) -> list[int]:
        """Draw ``(kind, yb, cx, w, h, colour)`` objects far to near; returns the class of each instance."""
        classes: list[int] = []
        for kind, yb, cx, w, h, colour in sorted(objects, key=lambda o: o[1]):
            k = len(classes) + 1
            if kind == "vehicle":
                self.vehicle(yb, cx, w, h, colour, vehicle_cls, ground_cls, k)
                classes.append(vehicle_cls)
            else:
                self.person(yb, cx, w, h, colour, k)
                classes.append(_C["person"])
        return classes

    def finish(self, rng: np.random.Generator, inst_classes: list[int], scene: str, camera: SceneCamera) -> Scene:
        """Sensor noise, uint8, and the instances still visible (fully occluded ones dropped)."""
        H, W = self.lab.shape
        self.img += rng.normal(0, 3, (H, W, 1)).astype(np.float32)
        image = np.clip(self.img, 0, 255).astype(np.uint8)
        present = set(np.unique(self.inst).tolist()) - {0}
        remap = np.zeros(len(inst_classes) + 1, np.int32)
        classes = []
        for k in range(1, len(inst_classes) + 1):
            if k in present:
                classes.append(inst_classes[k - 1])
                remap[k] = len(classes)
        return Scene(image, self.lab, remap[self.inst], classes, scene, self.depth.astype(np.float32), camera)


class ContextScenes:
    """Deterministic procedural dataset; ``ds[i] -> (image_uint8_hwc, label_uint8_hw)``."""

    class_names = CONTEXT_CLASSES
    thing_classes = [_C[n] for n in CONTEXT_THINGS]
    ignore_index = 255

    def __init__(self, num_samples: int = 1000, height: int = 128, width: int = 256, seed: int = 0):
        self.num_samples = int(num_samples)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        yy, xx = np.mgrid[0:self.height, 0:self.width]
        self._yy = yy.astype(np.float32)
        self._xx = xx.astype(np.float32)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, idx: int):
        s = self.generate(idx)
        return s.image, s.label

    # ------------------------------------------------------------------ generation
    def _begin_scene(self, idx: int, scene: str | None, *stream: int):
        """The start every layout shares: the scene's own random stream (``stream`` keeps layouts'
        streams apart), empty image/label/instance maps, and the scene kind (drawn even when
        ``scene`` forces one, so forcing it changes nothing else)."""
        if not 0 <= idx < self.num_samples:
            raise IndexError(idx)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(idx), *stream]))
        H, W = self.height, self.width
        img = np.zeros((H, W, 3), np.float32)
        lab = np.zeros((H, W), np.uint8)
        inst = np.zeros((H, W), np.int32)
        drawn_scene = "street" if rng.random() < 0.5 else "harbour"
        scene = scene or drawn_scene
        if scene not in ("street", "harbour"):
            raise ValueError(scene)
        return rng, img, lab, inst, scene

    def generate(self, idx: int, scene: str | None = None) -> Scene:
        rng, img, lab, inst, scene = self._begin_scene(idx, scene)
        H, W = self.height, self.width
        yy, xx = self._yy, self._xx
        horizon = int(H * rng.uniform(0.36, 0.5))
        strip = max(2, int(H * rng.uniform(0.05, 0.09)))
        ground_top = horizon + strip
        camera = SceneCamera.for_horizon(H, W, horizon)
        row_depth = camera.ground_depth(np.arange(H))  # (H,) ground depth per row, inf above the horizon
        depth = np.full((H, W), np.inf, np.float64)  # sky
        canvas = _Canvas(img, lab, inst, depth, xx, yy, row_depth)

        # sky: vertical gradient
        canvas.sky(rng, horizon)

        # ground: both textures are always sampled (same RNG order); the scene picks one
        road, water = canvas.road_and_water(rng, horizon, 0.0, float(W))
        ground_mask = yy >= ground_top
        if scene == "street":
            img[ground_mask] = road[ground_mask]
            lab[ground_mask] = _C["road"]
        else:
            img[ground_mask] = water[ground_mask]
            lab[ground_mask] = _C["water"]
        ground_cls = _C["road"] if scene == "street" else _C["water"]

        # pavement / quay strip with tiles
        strip_mask = (yy >= horizon) & (yy < ground_top)
        tiles = 165 + 12 * (((xx.astype(np.int64) // 7) + (yy.astype(np.int64) // 3)) % 2)
        img[strip_mask] = tiles[strip_mask][:, None]
        lab[strip_mask] = _C["sidewalk"]
        depth[horizon:] = row_depth[horizon:, None]  # ground and strip: the plane
        edge_depth = row_depth[horizon]  # the strip's far edge, where the skyline stands

        # skyline: buildings with windows, then trees in front of them
        canvas.skyline(rng, horizon, strip, edge_depth, camera.fx)

        # objects (vehicles and people), far to near
        objects = []
        for _ in range(int(rng.integers(1, 4))):
            yb = rng.uniform(ground_top + 0.3 * (H - ground_top), H - 1)
            s = 0.5 + (yb - horizon) / max(H - horizon, 1)
            w = W * rng.uniform(0.1, 0.17) * s
            h = w * rng.uniform(0.42, 0.55)
            cx = rng.uniform(0.05 * W, 0.95 * W)
            colour = _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))] + rng.uniform(-12, 12, 3)
            objects.append(("vehicle", yb, cx, w, h, colour.astype(np.float32)))
        objects += _people(rng, H, W, horizon, ground_top)
        vehicle_cls = _C["car"] if scene == "street" else _C["boat"]
        inst_classes = canvas.objects(objects, vehicle_cls, ground_cls)
        return canvas.finish(rng, inst_classes, scene, camera)

    def instances(self, idx: int) -> list[tuple[int, np.ndarray]]:
        """[(class_id, bool mask)] of the thing instances of sample ``idx``."""
        s = self.generate(idx)
        return [(c, s.instance_map == k + 1) for k, c in enumerate(s.instance_classes)]
