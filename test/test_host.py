"""Host-path rules that issue 14's speed-ups restated: confidence image rounding, the point cloud
written straight into its buffer, the scene graph's float64 mean confidence, products handed to
their messages without a copy."""
from __future__ import annotations

import numpy as np
from std_msgs.msg import Header

from casseg_ros.message_buffers import backing_bytes
from casseg_ros.perception.depth import PinholeCamera, depth_cloud, labelled_cloud, organised_points
from casseg_ros.perception.overlay import colorize
from casseg_ros.perception.scene_graph import segment_instances
from casseg_ros.pipeline import (ClassLabels, DepthFrame, FramePipeline, PipelineSettings, Products,
                                 confidence_to_mono8)
from casseg_ros.ros.conversions import numpy_to_image
from casseg_ros.ros.messages import frame_messages
from casseg_ros.runtime.base import InferenceResult
from casseg_ros.runtime.canned import CannedBackend

CAMERA = PinholeCamera(fx=500.0, fy=480.0, cx=63.5, cy=40.25, width=128, height=80)


def test_confidence_image_is_the_float32_product_rounded_half_to_even():
    rng = np.random.default_rng(0)
    confidence = rng.random((60, 70), dtype=np.float32)
    # exact ties (k + 0.5 after * 255 in float32), the ends and values above 1 (saturated)
    ties = (np.arange(0, 255, dtype=np.float32) + np.float32(0.5)) / np.float32(255)
    confidence[0, :] = 0.0
    confidence[1, :] = 1.0
    confidence[2, :] = 1.7
    confidence[3:8, :51] = ties.reshape(5, 51)
    expected = np.clip(np.rint(confidence * np.float32(255)), 0, 255).astype(np.uint8)
    image = confidence_to_mono8(confidence)
    assert image.dtype == np.uint8 and image.shape == confidence.shape
    np.testing.assert_array_equal(image, expected)


def test_depth_cloud_is_the_labelled_cloud_of_the_organised_points():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 30.0, (80, 128)).astype(np.float32)
    depth[::7, ::5] = np.nan
    rgb = rng.integers(0, 256, (80, 128, 3), dtype=np.uint8)
    mask = rng.integers(0, 20, (80, 128)).astype(np.uint8)
    confidence = rng.random((80, 128), dtype=np.float32)
    for stride in (1, 3):
        direct = depth_cloud(depth, CAMERA, rgb, mask, confidence, stride)
        staged = labelled_cloud(organised_points(depth, CAMERA, stride), rgb, mask, confidence, stride)
        assert direct.dtype == staged.dtype and direct.shape == staged.shape
        assert direct.tobytes() == staged.tobytes()  # bit for bit, NaNs included


def test_colour_mask_is_the_palette_lookup_with_black_unknown():
    rng = np.random.default_rng(2)
    palette = rng.integers(0, 256, (7, 3), dtype=np.uint8)
    ids = rng.integers(0, 9, (50, 61)).astype(np.uint8)
    ids[0, :5] = 255
    colors, known = colorize(ids, palette)
    table = np.concatenate([palette, np.zeros((1, 3), np.uint8)])
    np.testing.assert_array_equal(colors, table[np.minimum(ids, 7)])
    np.testing.assert_array_equal(known, ids < 7)


def test_instance_score_is_the_float64_mean_confidence_rounded_once_to_float32():
    rng = np.random.default_rng(3)
    class_map = np.zeros((300, 1900), np.uint8)
    class_map[100:200, 400:1500] = 1
    confidence = rng.random(class_map.shape, dtype=np.float32)
    graph, _ = segment_instances(class_map, ["road", "car"], confidence, ignore_ids=())
    for inst in graph.instances:
        exact = confidence[class_map == inst.class_id].astype(np.float64).mean()
        assert inst.score == float(np.float32(exact))  # the message's float32; a float32 sum would be off
        assert inst.score != 1.0


def test_published_products_are_handed_to_their_messages_without_a_copy():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (80, 128, 3), dtype=np.uint8)
    class_ids = rng.integers(0, 5, (80, 128)).astype(np.int32)
    confidence = rng.random((80, 128), dtype=np.float32)
    depth = rng.uniform(0.5, 30.0, (80, 128)).astype(np.float32)
    result = InferenceResult(class_ids[None], confidence[None], np.full((1, 5), 0.2, np.float32),
                             np.eye(5, dtype=np.float32)[None])
    labels = ClassLabels(tuple("abcde"), rng.integers(0, 256, (5, 3), dtype=np.uint8))
    pipeline = FramePipeline(CannedBackend(result), labels)
    frame = pipeline.process(rgb, PipelineSettings(points_stride=2),
                             Products(overlay=True, color_mask=True, confidence_image=True, points=True),
                             DepthFrame(depth, CAMERA))
    messages = frame_messages(frame, labels, Header(frame_id="camera"))
    products = {"mask": frame.mask, "confidence": frame.confidence_image, "overlay": frame.overlay,
                "mask/color": frame.color_mask, "points": frame.points}
    for name, values in products.items():
        assert messages[name].data is backing_bytes(values), name  # the same buffer, not a copy
        assert bytes(messages[name].data) == np.ascontiguousarray(values).tobytes(), name
    # an array made elsewhere is copied, with the same bytes on the wire
    strided = rgb[:, ::2]
    assert backing_bytes(strided) is None
    assert bytes(numpy_to_image(strided, "rgb8", Header()).data) == np.ascontiguousarray(strided).tobytes()

