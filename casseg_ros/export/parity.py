"""Export parity checks: does an exported model segment like the PyTorch model (or another export)?

Both sides run through the backends (`TorchBackend.from_model`, `OnnxRuntimeBackend`), the path the
node uses. `make_test_pattern` is the deterministic image used when no real one is given.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from casseg_ros.model import ContextSegmentor

from casseg_ros.runtime.model_export import onnx_metadata, onnx_model_size
from casseg_ros.runtime.onnx_backend import OnnxRuntimeBackend, onnx_input_shape
from casseg_ros.runtime.torch_backend import TorchBackend


def make_test_pattern(h: int, w: int) -> np.ndarray:
    """Deterministic structured RGB test image (gradients, blocks, stripes) when no image is given."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1),
                    127.5 + 127.5 * np.sin(xx / 9.0) * np.cos(yy / 13.0)], axis=-1)
    img[(yy // max(h // 4, 1) + xx // max(w // 8, 1)) % 2 == 0] *= 0.5
    img[h // 3 : h // 2, w // 5 : w // 2] = (200, 30, 40)
    return np.clip(img, 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def onnx_run_settings(onnx_path: str | os.PathLike) -> dict:
    """The backend options an export runs with: batch_size, input_size (its static size or the model
    size of a resize-in-graph export) and resize_in_graph."""
    batch, h, w, _ = onnx_input_shape(onnx_path)
    model_size = onnx_model_size(onnx_metadata(onnx_path))
    return {"batch_size": batch, "input_size": model_size or (h, w), "resize_in_graph": model_size is not None}


def compare_onnx_with_torch(model: ContextSegmentor, onnx_path: str | os.PathLike,
                            image_rgb: np.ndarray) -> dict[str, float]:
    """Run ``model`` (PyTorch backend) and the ONNX (ONNX Runtime backend, CPU) on ``image_rgb`` the
    way the ONNX runs (its input size; a resize-in-graph export at the image's own size). Returns
    equal-pixel % and max abs differences."""
    run = onnx_run_settings(onnx_path)
    reference = TorchBackend.from_model(model, "cpu", run["input_size"],
                                        resize_in_graph=run["resize_in_graph"]).infer(image_rgb)
    exported = OnnxRuntimeBackend(onnx_path, "cpu", **run).infer(image_rgb)
    return {
        "equal_pixels_percent": float((exported.class_ids == reference.class_ids).mean() * 100.0),
        "max_abs_confidence": float(np.abs(exported.confidence - reference.confidence).max()),
        "max_abs_class_scores": float(np.abs(exported.class_scores - reference.class_scores).max()),
        "max_abs_adjacency": float(np.abs(exported.adjacency - reference.adjacency).max()),
    }


def compare_onnx(reference_onnx: str | os.PathLike, onnx_path: str | os.PathLike,
                 image_rgb: np.ndarray) -> float:
    """% of class pixels on which two exports of the same model agree (ONNX Runtime, CPU)."""
    reference = OnnxRuntimeBackend(reference_onnx, "cpu", **onnx_run_settings(reference_onnx)).infer(image_rgb)
    other = OnnxRuntimeBackend(onnx_path, "cpu", **onnx_run_settings(onnx_path)).infer(image_rgb)
    return float((other.class_ids == reference.class_ids).mean() * 100.0)
