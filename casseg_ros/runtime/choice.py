"""``backend: auto``: which backend runs best on this machine, and why.

The order (measured on the 2-core AVX-512 build machine, docs/RUNTIME.md): on a CUDA device
TensorRT where TensorRT is installed, else ONNX Runtime with a CUDA/TensorRT execution provider,
else torch; on the CPU OpenVINO on x86-64 where it is installed, else ONNX Runtime, else torch.
Only what can be told without loading a model is looked at: installed packages, the CPU
architecture, ``torch.cuda.is_available()`` and ONNX Runtime's providers.
"""
from __future__ import annotations

import importlib.util
import platform

import torch

from .openvino_backend import openvino_missing
from .tensorrt_backend import tensorrt_missing

__all__ = ["X86_MACHINES", "choose_backend", "onnxruntime_providers"]

X86_MACHINES = ("x86_64", "amd64", "i386", "i686")  # platform.machine() of the CPUs OpenVINO's CPU plugin is built for


def onnxruntime_providers() -> list[str] | None:
    """ONNX Runtime's execution providers here, or None where onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort  # optional dependency: only when installed (checked just above)

    return list(ort.get_available_providers())


def choose_backend(device: str = "cpu", machine: str | None = None) -> tuple[str, str]:
    """(backend name, the reason in one line) for ``device`` ('cpu', 'cuda', 'cuda:N')."""
    providers = onnxruntime_providers()
    if str(device).startswith("cuda"):
        trt = tensorrt_missing()
        if trt is None:
            return "tensorrt", f"device {device}: CUDA and TensorRT are present"
        if providers and {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(providers) \
                and torch.cuda.is_available():
            return "onnxruntime", f"device {device}: {trt}; onnxruntime has a CUDA execution provider"
        return "torch", f"device {device}: {trt}; onnxruntime has no CUDA execution provider"
    machine = (machine or platform.machine()).lower()
    ov = openvino_missing()
    if machine in X86_MACHINES and ov is None:
        return "openvino", f"device cpu on {machine}: OpenVINO is installed"
    why = f"not an x86 CPU ({machine})" if machine not in X86_MACHINES else ov
    if providers is not None:
        return "onnxruntime", f"device cpu: OpenVINO not used ({why}); onnxruntime is installed"
    return "torch", f"device cpu: OpenVINO not used ({why}); onnxruntime is not installed"
