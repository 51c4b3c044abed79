"""Inference backends (torch / onnxruntime / tensorrt / openvino) behind one interface, and ONNX export.

    from casseg_ros.runtime import create_backend, BackendUnavailable
    backend = create_backend("onnxruntime", "models/demo.safetensors", device="cpu", input_size=(512, 1024))
    backend.load(); backend.warmup()
    res = backend.infer(images_uint8_bhwc_rgb)  # InferenceResult

``create_backend`` raises ``BackendUnavailable`` (message names what is missing) when the backend,
device or precision cannot run on this machine; it never imports TensorRT or OpenVINO unless asked
for them. ``"auto"`` builds the backend ``choose_backend(device)`` names and keeps the reason in
``backend.describe()["backend_choice"]``.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import torch

from casseg_ros.parameter_rules import BACKENDS

from .base import PRECISIONS, Backend, BackendUnavailable, InferenceResult
from .choice import choose_backend, onnxruntime_providers
from .onnx_backend import OnnxRuntimeBackend
from .openvino_backend import OpenVinoBackend, openvino_missing
from .tensorrt_backend import TensorRTBackend, tensorrt_missing
from .torch_backend import TorchBackend

_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch", "ov": "openvino"}

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "BackendUnavailable", "InferenceResult", "OnnxRuntimeBackend",
           "OpenVinoBackend", "TensorRTBackend", "TorchBackend", "available_backends", "choose_backend", "create_backend"]


def create_backend(name: str, model_path, device: str = "cpu", input_size: Sequence[int] | None = (512, 1024),
                   precision: str | None = None, **opts: Any) -> Backend:
    """Construct (not load) a backend. ``precision`` None = the backend's default (fp32 for torch,
    onnxruntime and openvino, fp16 for tensorrt); "auto": openvino measures its precisions at load
    (``precision_choice``), the others take their default (``describe()["precision_choice"]`` says so); ``name="auto"``: ``choose_backend(device)``'s. ``opts``: every backend takes ``resize_in_graph=True`` (the
    resize to ``input_size`` and back done in the graph, none on the host: see ``runtime.base``); the
    rest are backend-specific (see each backend's module):
    torch: compile, compile_mode, channels_last, num_threads (an in-memory model: ``TorchBackend.from_model``);
    onnxruntime: num_threads,
    providers, optimized_cache, onnx_cache_dir, batch_size; tensorrt: engine_cache_dir,
    workspace_bytes, onnx_cache_dir, batch_size, max_classes, min_image_size, max_image_size;
    openvino: openvino_device, num_threads, openvino_cache_dir, onnx_cache_dir, batch_size,
    static_classes, calibration + calibration_source + calibration_frames (int8)."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if precision == "auto" and key not in ("auto", "openvino"):
        # only OpenVINO measures its precisions (runtime/precision_choice.py); the others run their default
        backend = create_backend(key, model_path, device, input_size, None, **opts)
        backend.precision_choice = (f"auto: {backend.precision} (backend {backend.name}'s default; only backend "
                                    f"openvino measures which precision to run)")
        return backend
    if key == "auto":
        chosen, reason = choose_backend(device)
        backend = create_backend(chosen, model_path, device, input_size, precision, **opts)
        backend.backend_choice = f"auto: {chosen} ({reason})"
        return backend
    if key == "torch":
        return TorchBackend(model_path, device, input_size, precision or "fp32", **opts)
    if key == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            raise BackendUnavailable(
                "backend 'onnxruntime' needs the Python package 'onnxruntime' (not installed; pip install "
                "onnxruntime, or onnxruntime-gpu for CUDA)")
        return OnnxRuntimeBackend(model_path, device, input_size, precision or "fp32", **opts)
    if key == "tensorrt":
        return TensorRTBackend(model_path, device, input_size, precision or "fp16", **opts)
    if key == "openvino":
        missing = openvino_missing("fp32" if precision == "auto" else precision or "fp32")  # auto: int8 only with nncf
        if missing:
            raise BackendUnavailable(missing)
        return OpenVinoBackend(model_path, device, input_size, precision or "fp32", **opts)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def available_backends() -> dict[str, dict[str, str | None]]:
    """{backend: {device: None if it can run here else the reason}} — for diagnostics and benches."""
    out: dict[str, dict[str, str | None]] = {}
    cuda = None if torch.cuda.is_available() else "a CUDA GPU (torch.cuda.is_available() is False)"
    out["torch"] = {"cpu": None, "cuda": cuda}
    prov = onnxruntime_providers()
    if prov is None:
        out["onnxruntime"] = {"cpu": "the Python package 'onnxruntime'", "cuda": "the Python package 'onnxruntime-gpu'"}
    else:
        gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(prov)
        out["onnxruntime"] = {"cpu": None, "cuda": None if gpu and not cuda else
                              ("the CUDA/TensorRT execution provider (onnxruntime-gpu)" if not gpu else cuda)}
    out["tensorrt"] = {"cpu": "device 'cuda' (TensorRT runs on GPUs only)", "cuda": tensorrt_missing()}
    out["openvino"] = {"cpu": openvino_missing(), "cuda": "device 'cpu' with openvino_device (OpenVINO does not run on CUDA)"}
    return out
