"""3D from a registered depth image: organised point cloud and per-object geometry (ROS-free).

Conventions (REP-103 optical frame, REP-118 depth): x right, y down, z forward, metres. A pixel
(u, v) — column, row, integer at the pixel centre as in the camera matrix K — with depth z is the
point ((u - cx) z / fx, (v - cy) z / fy, z). Invalid depth (0, NaN, +-inf, beyond `max_range_m`)
gives NaN points, so the cloud stays organised and pixel-aligned with the mask.

Decimation by an integer `stride` keeps pixels (s*r, s*c): cloud row r, column c is image pixel
(u = s*c, v = s*r), and the mask is decimated the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from casseg_ros.message_buffers import message_array
from casseg_ros.perception.scene_graph import InstanceRuns, SceneGraph

DEPTH_ENCODINGS = ("16UC1", "32FC1")


class InvalidDepth(ValueError):
    """A depth image that cannot be used for this frame; `reason` names what is wrong."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of the (rectified) image the mask is aligned with."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be > 0, got fx={self.fx} fy={self.fy}")

    def scaled(self, width: int, height: int) -> "PinholeCamera":
        """The intrinsics of this image resized to `width` x `height` (pixel centres kept: a pixel's
        centre u + 0.5 scales by width / self.width)."""
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx + 0.5) * sx - 0.5,
                             cy=(self.cy + 0.5) * sy - 0.5, width=int(width), height=int(height))

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N,3) points -> (N,2) pixel coordinates (u, v)."""
        points = np.asarray(points, dtype=np.float64)
        return np.stack([self.fx * points[:, 0] / points[:, 2] + self.cx,
                         self.fy * points[:, 1] / points[:, 2] + self.cy], axis=1)


def depth_in_metres(depth: np.ndarray, encoding: str, max_range_m: float) -> np.ndarray:
    """(H,W) 16UC1 millimetres or 32FC1 metres -> float32 metres, NaN where invalid."""
    if encoding == "16UC1":
        metres = depth.astype(np.float32) / np.float32(1000.0)
    elif encoding == "32FC1":
        metres = np.array(depth, dtype=np.float32, copy=True)
    else:
        raise InvalidDepth(f"depth encoding {encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)} (REP-118)")
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(metres) | (metres <= 0.0) | (metres > max_range_m)
    metres[invalid] = np.nan
    return metres


def check_depth(depth_m: np.ndarray, camera: PinholeCamera, image_shape: tuple[int, int],
                depth_shape: tuple[int, int] | None = None) -> None:
    """InvalidDepth unless depth, camera_info and the colour image have one size, with some valid depth.
    `depth_shape`: the depth image's own size, when `depth_m` holds only every s-th pixel of it (as
    decoded for the frame's products); default `depth_m.shape`."""
    depth_h, depth_w = depth_m.shape if depth_shape is None else depth_shape
    if (depth_h, depth_w) != tuple(image_shape):
        raise InvalidDepth(f"depth image is {depth_w}x{depth_h}, the colour image "
                           f"{image_shape[1]}x{image_shape[0]} (a registered depth image has its size)")
    if (camera.height, camera.width) != tuple(image_shape):
        raise InvalidDepth(f"camera_info is for {camera.width}x{camera.height}, the image is "
                           f"{image_shape[1]}x{image_shape[0]}")
    if not np.isfinite(depth_m).any():
        raise InvalidDepth("no valid depth in the image (all 0, NaN, inf or beyond max range)")


def decimate(array: np.ndarray, stride: int) -> np.ndarray:
    """Every `stride`-th row and column starting at 0 (a view, no copy)."""
    return array[::stride, ::stride]


def _decimated_shape(shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """The shape of `decimate(array_of_shape, stride)`."""
    return -(-int(shape[0]) // stride), -(-int(shape[1]) // stride)


def _check_camera(depth_m: np.ndarray, camera: PinholeCamera, depth_stride: int = 1) -> None:
    if depth_m.shape != _decimated_shape((camera.height, camera.width), depth_stride):
        raise InvalidDepth(f"depth image is {depth_m.shape[1]}x{depth_m.shape[0]} (every {depth_stride}th pixel), "
                           f"camera_info says {camera.width}x{camera.height}")


def _samples(depth_m: np.ndarray, depth_stride: int, stride: int) -> np.ndarray:
    """The depth of pixels (stride*r, stride*c), from `depth_m` holding pixels (depth_stride*r, ...)."""
    if stride % depth_stride:
        raise ValueError(f"depth decoded at every {depth_stride}th pixel cannot give every {stride}th")
    return decimate(depth_m, stride // depth_stride)


def _rays(camera: PinholeCamera, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(x/z per kept column (1,w'), y/z per kept row (h',1)), float32."""
    u = np.arange(0, camera.width, stride, dtype=np.float32)
    v = np.arange(0, camera.height, stride, dtype=np.float32)
    x_per_z = (u - np.float32(camera.cx)) / np.float32(camera.fx)
    y_per_z = (v - np.float32(camera.cy)) / np.float32(camera.fy)
    return x_per_z[None, :], y_per_z[:, None]


def _write_xyz(z: np.ndarray, camera: PinholeCamera, stride: int, x: np.ndarray, y: np.ndarray,
               z_out: np.ndarray) -> None:
    x_per_z, y_per_z = _rays(camera, stride)
    np.multiply(z, x_per_z, out=x)
    np.multiply(z, y_per_z, out=y)
    np.copyto(z_out, z)


def organised_points(depth_m: np.ndarray, camera: PinholeCamera, stride: int = 1) -> np.ndarray:
    """(H,W) metres -> (ceil(H/s), ceil(W/s), 3) float32 xyz, NaN where the depth is invalid."""
    _check_camera(depth_m, camera)
    z = decimate(depth_m, stride)
    xyz = np.empty(z.shape + (3,), dtype=np.float32)
    _write_xyz(z, camera, stride, xyz[..., 0], xyz[..., 1], xyz[..., 2])
    return xyz


@dataclass(frozen=True)
class ObjectGeometry:
    """Where the scene-graph objects are in 3D (optical frame, metres): one row per object, NaN for
    an object with no valid depth."""

    centroids: np.ndarray  # (N,3) x, y, z
    extents: np.ndarray  # (N,3) width (x), height (y), depth spread (z)
    valid_pixels: np.ndarray  # (N,) int64


# Depth percentiles of an object come from a per-object histogram (one bincount over its pixels
# instead of a sort): bins of DEPTH_BIN_M, so a percentile is exact to half a bin (2.5 mm).
DEPTH_BIN_M = 0.005


def _depth_percentiles(instance_map: np.ndarray, num_instances: int, depth_m: np.ndarray,
                       quantiles: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """((N, Q) depth percentiles in metres, NaN for an object with no valid depth; (N,) valid pixel counts)."""
    valid = (instance_map >= 0) & np.isfinite(depth_m)
    ids = instance_map[valid].astype(np.int64)
    depths = depth_m[valid]
    top = float(depths.max()) if depths.size else 0.0
    num_bins = int(top / DEPTH_BIN_M) + 1
    bins = np.minimum((depths * np.float32(1.0 / DEPTH_BIN_M)).astype(np.int64), num_bins - 1)
    histogram = np.bincount(ids * num_bins + bins, minlength=num_instances * num_bins).reshape(num_instances, num_bins)
    cumulative = np.cumsum(histogram, axis=1)
    counts = cumulative[:, -1]
    result = np.full((num_instances, len(quantiles)), np.nan)
    has = counts > 0
    for column, q in enumerate(quantiles):
        # The first bin whose cumulative count reaches the q-th sample (1-based rank).
        rank = np.maximum(np.ceil(q * counts[has]), 1)
        first = (cumulative[has] >= rank[:, None]).argmax(axis=1)
        result[has, column] = (first + 0.5) * DEPTH_BIN_M
    return result, counts


def object_geometry(instance_map: np.ndarray, num_instances: int, bboxes: np.ndarray, centroids: np.ndarray,
                    depth_m: np.ndarray, camera: PinholeCamera) -> ObjectGeometry:
    """Robust 3D position and size of every instance from its pixels' valid depths.

    `instance_map` (H,W) int: instance id per pixel, -1 elsewhere; `bboxes` (N,4) pixel
    (x, y, w, h); `centroids` (N,2) pixel (x, y). The object's depth is the median of its valid
    depths (robust to mixed pixels at its border; DEPTH_BIN_M resolution), its centroid the pixel
    centroid back-projected at that depth, its width/height the pixel box scaled to metres at
    that depth, and its depth spread the 10th-90th percentile range of its depths.
    """
    percentiles, counts = _depth_percentiles(instance_map, num_instances, depth_m, (0.1, 0.5, 0.9))
    z10, z, z90 = percentiles[:, 0], percentiles[:, 1], percentiles[:, 2]
    bboxes, centroids = np.asarray(bboxes, np.float64), np.asarray(centroids, np.float64)
    x = (centroids[:, 0] - camera.cx) * z / camera.fx
    y = (centroids[:, 1] - camera.cy) * z / camera.fy
    width, height = bboxes[:, 2] * z / camera.fx, bboxes[:, 3] * z / camera.fy
    return ObjectGeometry(np.stack([x, y, z], axis=1), np.stack([width, height, z90 - z10], axis=1), counts)


# One point of the organised cloud: xyz in metres, colour packed the PCL way (0xAARRGGBB in the
# bits of a float32 field named rgb), the mask's label and the confidence. 24 bytes, 4-aligned.
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("label", "<u2"),
                        ("_pad", "<u2"), ("confidence", "<f4")])


def _fill_attributes(cloud: np.ndarray, rgb: np.ndarray, mask: np.ndarray, confidence: np.ndarray,
                     stride: int) -> None:
    # B, G, R, A bytes read as a little-endian uint32 are 0xAARRGGBB: the PCL packing.
    bgra = cv2.cvtColor(np.ascontiguousarray(decimate(rgb, stride)), cv2.COLOR_RGB2BGRA)
    cloud["rgb"] = bgra.view("<u4")[..., 0]
    cloud["label"] = decimate(mask, stride)
    cloud["_pad"] = 0
    cloud["confidence"] = decimate(confidence, stride)


def labelled_cloud(xyz: np.ndarray, rgb: np.ndarray, mask: np.ndarray, confidence: np.ndarray,
                   stride: int) -> np.ndarray:
    """Organised (h',w') POINT_DTYPE cloud: `xyz` from `organised_points`, the other full-size
    images decimated with the same stride, so point (r, c) carries pixel (s*r, s*c)'s values."""
    cloud = np.empty(xyz.shape[:2], dtype=POINT_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    _fill_attributes(cloud, rgb, mask, confidence, stride)
    return cloud


def depth_cloud(depth_m: np.ndarray, camera: PinholeCamera, rgb: np.ndarray, mask: np.ndarray,
                confidence: np.ndarray, stride: int, depth_stride: int = 1) -> np.ndarray:
    """`labelled_cloud(organised_points(depth_m, camera, stride), rgb, mask, confidence, stride)`,
    with x, y, z written straight into the cloud's fields (no intermediate xyz image: one pass
    less over the cloud's memory, which at 1080p is 50 MB). `depth_m` may hold every
    `depth_stride`-th pixel only (a divisor of `stride`)."""
    _check_camera(depth_m, camera, depth_stride)
    z = _samples(depth_m, depth_stride, stride)
    cloud = message_array(z.shape, POINT_DTYPE)  # PointCloud2.data takes it without a copy
    _write_xyz(z, camera, stride, cloud["x"], cloud["y"], cloud["z"])
    _fill_attributes(cloud, rgb, mask, confidence, stride)
    return cloud


def graph_in_3d(graph: SceneGraph, runs: InstanceRuns, depth_m: np.ndarray, camera: PinholeCamera,
                depth_stride: int = 1) -> SceneGraph:
    """The graph with a 3D centroid and extent per object (NaN without valid depth) and the 3D
    distance of every relation whose two ends have one (NaN otherwise). The depths are those of
    the runs' samples (`depth_m[::s, ::s]` for a graph found at stride s); `depth_m` may hold every
    `depth_stride`-th pixel only (a divisor of s)."""
    n = graph.num_objects
    if n == 0:
        return graph
    geometry = object_geometry(runs.to_map(), n, graph.boxes, graph.centroids,
                               _samples(depth_m, depth_stride, runs.stride), camera)
    where = geometry.centroids
    distance = np.linalg.norm(where[graph.sources] - where[graph.targets], axis=1)
    return graph.with_3d(where, geometry.extents, distance)
