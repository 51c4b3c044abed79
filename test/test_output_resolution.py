"""output_resolution: model — the per-pixel outputs at the model's size, with the camera_info scaled
so that a consumer projecting 3D points (Nav2's semantic layer, RViz) finds the same class as at
the camera's resolution; and what the products and the depth become at that size."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from casseg_ros.parameter_rules import problem
from casseg_ros.perception.depth import PinholeCamera
from casseg_ros.pipeline import ClassLabels, DepthFrame, FrameInput, FramePipeline, PipelineSettings, Products
from casseg_ros.ros.frame_io import frame_outputs
from casseg_ros.runtime.base import InferenceResult
from casseg_ros.runtime.canned import CannedBackend

MODEL = (96, 192)
CAMERA = (720, 1280)
K = (600.0, 0.0, 639.5, 0.0, 610.0, 359.5, 0.0, 0.0, 1.0)


def _pipeline() -> FramePipeline:
    ids = np.zeros((1, *MODEL), np.int32)
    cols, rows = np.meshgrid(np.arange(MODEL[1]), np.arange(MODEL[0]))
    ids[0] = (cols // 8 + 2 * (rows // 4)) % 4  # 8x4-pixel cells of 4 classes
    k = 4
    backend = CannedBackend(InferenceResult(ids, np.ones((1, *MODEL), np.float32), np.full((1, k), 0.25, np.float32),
                                            np.zeros((1, k, k), np.float32)), input_size=MODEL)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    return FramePipeline(backend, ClassLabels(("a", "b", "c", "d"), palette))


def _info() -> CameraInfo:
    info = CameraInfo(height=CAMERA[0], width=CAMERA[1], distortion_model="plumb_bob", d=[0.1, 0.0, 0.0, 0.0, 0.0])
    info.k = list(K)
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [K[0], 0.0, K[2], 0.0, 0.0, K[4], K[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def _outputs(resolution: str, products: Products = Products()):
    pipeline = _pipeline()
    rgb = np.full((*CAMERA, 3), 90, np.uint8)
    result = pipeline.process_batch([FrameInput(rgb, products)], PipelineSettings(output_resolution=resolution))[0]
    return result, frame_outputs(result, pipeline.labels, Header(frame_id="cam"), _info())


def _project(info: CameraInfo, points: np.ndarray) -> np.ndarray:
    """(N,3) -> (N,2) integer pixels (column, row) through the camera_info's K, as a consumer does."""
    k = np.asarray(info.k).reshape(3, 3)
    uvw = points @ k.T
    return np.floor(uvw[:, :2] / uvw[:, 2:] + 0.5).astype(int)


def test_a_point_projects_to_the_same_class_through_the_scaled_camera_info():
    at_camera, camera_messages = _outputs("camera")
    at_model, model_messages = _outputs("model")
    assert at_camera.mask.shape == CAMERA and at_model.mask.shape == MODEL
    scaled = model_messages["camera_info"]
    assert (scaled.height, scaled.width) == MODEL and (scaled.binning_x, scaled.binning_y) == (0, 0)
    assert list(scaled.d) == [0.1, 0.0, 0.0, 0.0, 0.0] and camera_messages["camera_info"].width == CAMERA[1]
    # the camera's principal point is its image centre: the scaled one is the model image's centre
    assert (scaled.k[2], scaled.k[5]) == pytest.approx(((MODEL[1] - 1) / 2, (MODEL[0] - 1) / 2))
    assert (scaled.p[2], scaled.p[6]) == pytest.approx(((MODEL[1] - 1) / 2, (MODEL[0] - 1) / 2))
    # points in front of the camera at the centres of the model's cells (clear of their edges)
    rng = np.random.default_rng(0)
    cells = np.stack([rng.integers(0, MODEL[1] // 8, 300) * 8 + 4, rng.integers(0, MODEL[0] // 4, 300) * 4 + 2], 1)
    depth = rng.uniform(1.0, 50.0, 300)
    model_k = np.asarray(scaled.k).reshape(3, 3)
    rays = np.column_stack([cells + 0.0, np.ones(300)]) @ np.linalg.inv(model_k).T
    points = rays * depth[:, None]
    in_model, in_camera = _project(scaled, points), _project(camera_messages["camera_info"], points)
    assert (in_camera >= 0).all() and (in_camera < [CAMERA[1], CAMERA[0]]).all()
    model_class = at_model.mask[in_model[:, 1], in_model[:, 0]]
    camera_class = at_camera.mask[in_camera[:, 1], in_camera[:, 0]]
    assert np.array_equal(model_class, camera_class)
    assert len(set(camera_class.tolist())) == 4


def test_the_products_and_the_depth_at_the_model_size():
    result, messages = _outputs("model", Products(overlay=True, color_mask=True, confidence_image=True))
    assert result.overlay.shape == (*MODEL, 3) and result.color_mask.shape == (*MODEL, 3)
    assert result.confidence_image.shape == MODEL
    assert (messages["mask"].height, messages["mask"].width) == MODEL
    camera = PinholeCamera(fx=K[0], fy=K[4], cx=K[2], cy=K[5], width=CAMERA[1], height=CAMERA[0])
    metres = np.tile(np.linspace(1.0, 10.0, CAMERA[1] // 4, dtype=np.float32), (CAMERA[0] // 4, 1))
    small = DepthFrame(metres, camera, stride=4).resampled(*MODEL)
    assert small.metres.shape == MODEL and small.stride == 1
    assert (small.camera.width, small.camera.height) == (MODEL[1], MODEL[0])
    assert small.camera.fx == pytest.approx(K[0] * MODEL[1] / CAMERA[1])
    # each model pixel takes the depth of the camera pixel under its centre
    column = 100
    camera_column = (column + 0.5) * CAMERA[1] / MODEL[1] - 0.5
    assert small.metres[0, column] == metres[0, int(round(camera_column / 4))]


def test_the_output_resolution_rule():
    assert problem("output_resolution", "model") is None
    assert problem("output_resolution", "native") == "output_resolution must be one of 'camera', 'model', got 'native'"
