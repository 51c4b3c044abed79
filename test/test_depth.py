"""3D from registered depth: back-projection, invalid depth, per-object geometry, point cloud messages."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointField

from casseg_ros.perception.depth import (
    POINT_DTYPE, InvalidDepth, PinholeCamera, check_depth, depth_in_metres, graph_in_3d, labelled_cloud,
    organised_points,
)
from casseg_ros.perception.scene_graph import segment_instances
from casseg_ros.pipeline import ClassLabels, FramePipeline, PipelineSettings, Products, depth_stride
from casseg_ros.ros.depth_conversions import depth_frame, depth_to_metres, pinhole_from_info
from casseg_ros.ros.messages import point_cloud_msg, scene_graph_to_msg
from casseg_ros.ros.stamp_cache import StampCache
from casseg_ros.runtime.base import InferenceResult
from casseg_ros.runtime.canned import CannedBackend

CAMERA = PinholeCamera(fx=500.0, fy=480.0, cx=63.5, cy=40.25, width=128, height=80)


def test_every_valid_point_projects_back_to_its_pixel():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 30.0, (80, 128)).astype(np.float32)
    depth[::7, ::5] = np.nan
    for stride in (1, 3):
        xyz = organised_points(depth, CAMERA, stride)
        assert xyz.shape == (-(-80 // stride), -(-128 // stride), 3) and xyz.dtype == np.float32
        rows, cols = np.mgrid[0:80:stride, 0:128:stride]
        valid = np.isfinite(xyz[..., 2])
        assert valid.sum() == np.isfinite(depth[::stride, ::stride]).sum()
        uv = CAMERA.project(xyz[valid].reshape(-1, 3))
        np.testing.assert_allclose(uv[:, 0], cols[valid], atol=0.01)
        np.testing.assert_allclose(uv[:, 1], rows[valid], atol=0.01)
        np.testing.assert_array_equal(xyz[..., 2][valid], depth[::stride, ::stride][valid])
        assert np.isnan(xyz[~valid]).all()


@pytest.mark.parametrize("encoding,raw,expected", [
    ("16UC1", np.array([[0, 1500, 65535]], np.uint16), [np.nan, 1.5, np.nan]),  # 0 invalid, 65.5 m > range
    ("32FC1", np.array([[np.nan, np.inf, 2.25, -1.0, 0.0, 19.5]], np.float32), [np.nan, np.nan, 2.25, np.nan, np.nan, 19.5]),
])
def test_depth_encodings_and_invalid_values(encoding, raw, expected):
    np.testing.assert_array_equal(depth_in_metres(raw, encoding, max_range_m=20.0), np.array([expected], np.float32))


def _depth_msg(metres: np.ndarray, encoding: str = "32FC1", pad: int = 0, bigendian: bool = False) -> Image:
    pixels = (np.round(metres * 1000).astype(np.uint16) if encoding == "16UC1" else metres.astype(np.float32))
    if bigendian:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">"))
    rows = pixels.view(np.uint8).reshape(metres.shape[0], -1)
    rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1)
    msg = Image(height=metres.shape[0], width=metres.shape[1], encoding=encoding, is_bigendian=int(bigendian),
                step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding,pad,bigendian", [("16UC1", 0, False), ("16UC1", 6, True), ("32FC1", 4, False),
                                                    ("32FC1", 0, True)])
def test_depth_message_layouts_decode_to_metres(encoding, pad, bigendian):
    metres = np.linspace(0.5, 9.5, 12, dtype=np.float32).reshape(3, 4)
    decoded = depth_to_metres(_depth_msg(metres, encoding, pad, bigendian), max_range_m=20.0)
    np.testing.assert_allclose(decoded, metres, atol=0.0006)


@pytest.mark.parametrize("mutate,reason", [
    (lambda m: setattr(m, "encoding", "rgb8"), "not one of 16UC1, 32FC1"),
    (lambda m: setattr(m, "step", 2), "too small"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-3]), "too small"),
    (lambda m: setattr(m, "width", 0), "empty depth image"),
])
def test_bad_depth_messages_are_rejected_with_a_reason(mutate, reason):
    msg = _depth_msg(np.ones((3, 4), np.float32))
    mutate(msg)
    with pytest.raises(InvalidDepth, match=reason):
        depth_to_metres(msg, 20.0)


def test_depth_must_match_the_image_and_camera_info():
    metres = np.ones((80, 128), np.float32)
    check_depth(metres, CAMERA, (80, 128))
    with pytest.raises(InvalidDepth, match="depth image is 128x80, the colour image 64x40"):
        check_depth(metres, CAMERA, (40, 64))
    with pytest.raises(InvalidDepth, match="camera_info is for 128x80"):
        check_depth(np.ones((40, 64), np.float32), CAMERA, (40, 64))
    with pytest.raises(InvalidDepth, match="no valid depth"):
        check_depth(np.full((80, 128), np.nan, np.float32), CAMERA, (80, 128))


def test_camera_info_intrinsics():
    info = CameraInfo(width=128, height=80)
    info.k = [500.0, 0.0, 63.5, 0.0, 480.0, 40.25, 0.0, 0.0, 1.0]
    assert pinhole_from_info(info) == CAMERA
    with pytest.raises(InvalidDepth, match="unusable camera_info"):
        pinhole_from_info(CameraInfo(width=128, height=80))  # all-zero K (uncalibrated driver)


def _plane_scene() -> tuple[np.ndarray, np.ndarray]:
    """Class map with two boxes on a background, and a depth where each box is a fronto-parallel
    plane (box 1 at 4 m, box 2 at 9 m, background at 20 m, a few invalid pixels in box 1)."""
    mask = np.zeros((80, 128), np.uint8)
    depth = np.full((80, 128), 20.0, np.float32)
    mask[10:30, 20:60], depth[10:30, 20:60] = 1, 4.0
    mask[40:70, 80:120], depth[40:70, 80:120] = 2, 9.0
    depth[12:14, 22:30] = np.nan
    return mask, depth


def test_object_centroids_and_extents_in_3d_within_a_centimetre():
    mask, depth = _plane_scene()
    graph, runs = segment_instances(mask, ["background", "box", "crate"], min_area=10)
    graph3d = graph_in_3d(graph, runs, depth, CAMERA)
    by_class = {inst.class_id: inst for inst in graph3d.instances}
    for class_id, (x0, x1, y0, y1, z) in {1: (20, 59, 10, 29, 4.0), 2: (80, 119, 40, 69, 9.0)}.items():
        inst = by_class[class_id]
        u, v = (x0 + x1) / 2, (y0 + y1) / 2
        expected = ((u - CAMERA.cx) * z / CAMERA.fx, (v - CAMERA.cy) * z / CAMERA.fy, z)
        np.testing.assert_allclose(inst.centroid_3d, expected, atol=0.01)
        np.testing.assert_allclose(inst.extent_3d, ((x1 - x0 + 1) * z / CAMERA.fx, (y1 - y0 + 1) * z / CAMERA.fy, 0.0),
                                   atol=0.01)
    box, crate = by_class[1], by_class[2]
    touching = [r for r in graph3d.relations if {r.source, r.target} == {box.instance_id, crate.instance_id}]
    assert not touching  # the two boxes do not touch; relations with the background carry distances
    background = by_class[0]
    rel = next(r for r in graph3d.relations if (r.source, r.target) == (box.instance_id, background.instance_id))
    assert rel.distance_3d == pytest.approx(float(np.linalg.norm(np.subtract(box.centroid_3d, background.centroid_3d))))
    assert json.loads(json.dumps(graph3d.to_dict()))["objects"]["centroids_3d"][0] is not None


def test_objects_without_valid_depth_stay_2d():
    mask, depth = _plane_scene()
    depth[mask == 2] = np.nan
    graph, runs = segment_instances(mask, ["background", "box", "crate"], min_area=10)
    graph3d = graph_in_3d(graph, runs, depth, CAMERA)
    crate = next(i for i in graph3d.instances if i.class_id == 2)
    assert crate.centroid_3d is None and crate.extent_3d is None
    assert all(r.distance_3d is None for r in graph3d.relations if crate.instance_id in (r.source, r.target))
    msg = scene_graph_to_msg(graph3d, CameraInfo().header)
    where = np.asarray(msg.centroids_3d).reshape(-1, 3)
    assert np.isnan(where[list(msg.class_ids).index(2)]).all()
    assert np.isfinite(where[list(msg.class_ids).index(1)]).all()


def test_point_cloud_message_is_organised_labelled_and_pixel_aligned():
    mask, depth = _plane_scene()
    rgb = np.random.default_rng(1).integers(0, 256, (80, 128, 3), dtype=np.uint8)
    confidence = np.random.default_rng(2).random((80, 128), dtype=np.float32)
    stride = 2
    cloud = labelled_cloud(organised_points(depth, CAMERA, stride), rgb, mask, confidence, stride)
    msg = point_cloud_msg(cloud, CameraInfo().header)
    assert (msg.height, msg.width, msg.point_step, msg.is_dense) == (40, 64, 24, False)
    assert msg.row_step == 64 * 24 and len(msg.data) == 40 * 64 * 24
    fields = {f.name: (f.offset, f.datatype) for f in msg.fields}
    assert fields == {"x": (0, PointField.FLOAT32), "y": (4, PointField.FLOAT32), "z": (8, PointField.FLOAT32),
                      "rgb": (12, PointField.FLOAT32), "label": (16, PointField.UINT16),
                      "confidence": (20, PointField.FLOAT32)}
    back = np.frombuffer(bytes(msg.data), dtype=POINT_DTYPE).reshape(40, 64)
    np.testing.assert_array_equal(back["label"], mask[::2, ::2])
    np.testing.assert_array_equal(back["confidence"], confidence[::2, ::2])
    packed = back["rgb"]
    np.testing.assert_array_equal(np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1), rgb[::2, ::2])
    valid = np.isfinite(back["z"])
    assert not valid[6, 11] and valid.sum() == np.isfinite(depth[::2, ::2]).sum()


def test_stamp_cache_waits_only_for_a_live_topic_and_stays_bounded():
    cache: StampCache[str] = StampCache(capacity=3)
    started = time.monotonic()
    assert cache.get(5, timeout=0.2) is None and time.monotonic() - started >= 0.2  # start-up: waits ...
    for stamp in range(StampCache.FIRST_MISSES - 1):
        cache.get(stamp, timeout=0.01)
    started = time.monotonic()  # ... but a topic that never delivers stops costing a wait
    assert cache.get(6, timeout=0.5) is None and time.monotonic() - started < 0.1
    for stamp in (1, 2, 3, 4):
        cache.put(stamp, f"m{stamp}")
    assert cache.get(1) is None and cache.get(4) == "m4"  # oldest evicted
    threading.Timer(0.05, cache.put, args=(5, "m5")).start()
    assert cache.get(5, timeout=2.0) == "m5"  # live topic: waited for the late message
    started = time.monotonic()
    assert cache.get(5 + 2 * StampCache.LIVE_WINDOW_NS, timeout=0.5) is None  # stale topic: no wait
    assert time.monotonic() - started < 0.1


def _info() -> CameraInfo:
    info = CameraInfo(width=128, height=80)
    info.k = [500.0, 0.0, 63.5, 0.0, 480.0, 40.25, 0.0, 0.0, 1.0]
    return info


def test_depth_is_decoded_only_at_the_stride_the_products_read():
    assert depth_stride(PipelineSettings(scene_graph_stride=4, points_stride=1), Products()) == 4
    assert depth_stride(PipelineSettings(scene_graph_stride=4, points_stride=1), Products(points=True)) == 1
    assert depth_stride(PipelineSettings(scene_graph_stride=4, points_stride=6), Products(points=True)) == 2
    mask, depth = _plane_scene()
    msg = _depth_msg(np.nan_to_num(depth, nan=0.0), "16UC1", pad=6)  # 0 mm: invalid
    full, sampled = depth_frame(msg, _info(), (80, 128), 30.0), depth_frame(msg, _info(), (80, 128), 30.0, stride=4)
    assert sampled.stride == 4 and sampled.metres.shape == (20, 32)
    np.testing.assert_array_equal(sampled.metres, full.metres[::4, ::4])  # the same values, NaN included
    # The frame's outputs are the same whichever decode the frame got.
    result = InferenceResult(mask.astype(np.int32)[None], np.full((1, 80, 128), 0.9, np.float32),
                             np.full((1, 3), 1 / 3, np.float32), np.full((1, 3, 3), 0.5, np.float32))
    pipeline = FramePipeline(CannedBackend(result), ClassLabels(("background", "box", "crate"),
                                                          np.zeros((3, 3), np.uint8)))
    rgb = np.zeros((80, 128, 3), np.uint8)
    for settings, products in ((PipelineSettings(min_instance_area=10), Products()),
                               (PipelineSettings(min_instance_area=10, points_stride=4), Products(points=True))):
        coarse = depth_frame(msg, _info(), (80, 128), 30.0, depth_stride(settings, products))
        assert coarse.stride == 4
        a, b = pipeline.process(rgb, settings, products, full), pipeline.process(rgb, settings, products, coarse)
        assert a.graph == b.graph and any(inst.centroid_3d for inst in b.graph.instances)
        assert (a.points is None and b.points is None) or a.points.tobytes() == b.points.tobytes()
    # A depth image of another size is refused even where its decimation would fit (79 rows -> 20).
    with pytest.raises(InvalidDepth, match="79"):
        depth_frame(_depth_msg(depth[:79], "16UC1"), _info(), (80, 128), 30.0, stride=4)
    with pytest.raises(ValueError, match="every 4th"):  # a cloud finer than the decoded depth
        pipeline.process(rgb, PipelineSettings(points_stride=1), Products(points=True), coarse)

