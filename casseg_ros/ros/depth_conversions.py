"""Camera inputs besides the image: CameraInfo -> intrinsics, registered depth Image -> metres, and
the CameraInfo of the mask when it is published at the model's resolution."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from casseg_ros.perception.depth import (DEPTH_ENCODINGS, InvalidDepth, PinholeCamera, check_depth, decimate,
                                        depth_in_metres)
from casseg_ros.pipeline import DepthFrame

_DEPTH_DTYPES = {"16UC1": np.dtype("<u2"), "32FC1": np.dtype("<f4")}


def pinhole_from_info(info: CameraInfo) -> PinholeCamera:
    """Intrinsics from the camera matrix K of the image the mask is aligned with."""
    k = info.k
    try:
        return PinholeCamera(fx=float(k[0]), fy=float(k[4]), cx=float(k[2]), cy=float(k[5]),
                             width=int(info.width), height=int(info.height))
    except ValueError as exc:
        raise InvalidDepth(f"unusable camera_info: {exc}") from exc


def scaled_camera_info(info: CameraInfo, width: int, height: int) -> CameraInfo:
    """`info` for its image resized to `width` x `height` (output_resolution: model): K and P scaled
    as `PinholeCamera.scaled` does (focal lengths by the size ratio, principal point with the pixel
    centres), P's translation column too; D and R unchanged (they act on normalised coordinates).
    Binning stays 0 — the ratio is rarely an integer, so the scaled K itself describes the image,
    which is what image_geometry and RViz read — and a set ROI is scaled with the image."""
    sx, sy = width / info.width, height / info.height
    k, p = np.asarray(info.k, np.float64).copy(), np.asarray(info.p, np.float64).copy()
    for m, fx, cx, fy, cy in ((k, 0, 2, 4, 5), (p, 0, 2, 5, 6)):
        m[fx] *= sx
        m[fy] *= sy
        m[cx] = (m[cx] + 0.5) * sx - 0.5
        m[cy] = (m[cy] + 0.5) * sy - 0.5
    p[3] *= sx  # Tx = -fx' * baseline
    p[7] *= sy
    out = CameraInfo(header=info.header, height=int(height), width=int(width), distortion_model=info.distortion_model,
                     d=list(info.d), k=k.tolist(), r=list(info.r), p=p.tolist(), binning_x=0, binning_y=0)
    roi = info.roi
    out.roi.do_rectify = roi.do_rectify
    if roi.width and roi.height:
        out.roi.x_offset, out.roi.y_offset = int(round(roi.x_offset * sx)), int(round(roi.y_offset * sy))
        out.roi.width, out.roi.height = int(round(roi.width * sx)), int(round(roi.height * sy))
    return out


def depth_to_metres(msg: Image, max_range_m: float, stride: int = 1) -> np.ndarray:
    """REP-118 depth image (16UC1 mm or 32FC1 m, any row padding, either byte order) -> (H,W)
    float32 metres with NaN where invalid; with `stride`, of every stride-th pixel of every
    stride-th row only (the rest is never read). InvalidDepth names what is wrong."""
    if msg.encoding not in _DEPTH_DTYPES:
        raise InvalidDepth(f"depth encoding {msg.encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)} (REP-118)")
    dtype = _DEPTH_DTYPES[msg.encoding]
    if msg.is_bigendian:
        dtype = dtype.newbyteorder(">")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InvalidDepth(f"empty depth image ({width}x{height})")
    if step < width * dtype.itemsize or len(msg.data) < step * height:
        raise InvalidDepth(f"depth data length {len(msg.data)} / step {step} too small for {width}x{height} "
                           f"{msg.encoding}")
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, :width * dtype.itemsize].view(dtype)
    return depth_in_metres(decimate(pixels, stride), msg.encoding, max_range_m)


def depth_frame(depth: Image, info: CameraInfo | None, image_shape: tuple[int, int], max_range_m: float,
                stride: int = 1) -> DepthFrame:
    """The registered depth of a frame, checked against its camera_info and image (the node's and
    replay's one rule), decoded at every `stride`-th pixel (`pipeline.depth_stride`: what the
    frame's products read). InvalidDepth names what is wrong; the caller keeps the 2D outputs."""
    if info is None:
        raise InvalidDepth("no camera_info with the frame's stamp (needed to place depth in 3D)")
    camera = pinhole_from_info(info)
    metres = depth_to_metres(depth, max_range_m, stride)
    check_depth(metres, camera, image_shape, (int(depth.height), int(depth.width)))
    return DepthFrame(metres, camera, stride)
