"""fp32 segmentation ONNX -> static int8 QDQ ONNX (ONNX Runtime quantisation), calibrated on camera frames.

Recipe (ONNX Runtime's "Quantize ONNX models" guide): pre-process (``quant_pre_process``: ONNX shape
inference + ORT's basic graph optimisation, which folds the exporter's shape arithmetic into
constants), then ``quantize_static`` in QDQ format with S8S8 — int8 activations and int8 weights,
"the default setting [that] balances performance and accuracy ... the first choice" on x86-64; the
U8S8 saturation caveat applies only to AVX2/AVX512 CPUs without VNNI — per-channel weights and
symmetric activations (zero point 0: what TensorRT's explicit quantisation requires, so the same
file also builds a TensorRT int8 engine). MinMax calibration over a bounded number of frames.

What stays float (measured by ``bench/backends.py``, its ``INT8_VARIANTS``, on the demo weights; see
docs/RUNTIME.md): only Conv / MatMul / Gemm are quantised (``QUANTIZED_OP_TYPES``; LayerNorm,
Softmax, GELU, the softmax/argmax output tail stay float by op type), and of those the rules in
``DEFAULT_KEEP_FLOAT`` are excluded by node: the activation x activation MatMuls (attention logits
and attention x values: no weight to quantise per channel, a wide dynamic range, and in ORT on CPU
slower as QLinearMatMul than in float).

The output is deterministic (same fp32 ONNX + same frames -> same bytes: names canonicalised,
metadata sorted) and written atomically; its metadata says how it was calibrated.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx

from casseg_ros.fileio import atomic_write_bytes
from casseg_ros.runtime.base import CLASS_EMBEDDINGS_NAME
from casseg_ros.runtime.calibration_reader import FrameCalibrationReader
from casseg_ros.runtime.engine_cache import file_sha256
from casseg_ros.runtime.model_export import (
    META_CALIBRATION,
    META_PRECISION,
    META_SOURCE_ONNX,
    onnx_metadata,
    onnx_precision,
    onnx_vocabulary,
    read_onnx,
)
from casseg_ros.runtime.onnx_backend import onnx_input_shape
from casseg_ros.runtime.onnx_export import canonicalize_onnx, node_scope

__all__ = ["ALL_OP_TYPES", "DEFAULT_KEEP_FLOAT", "FLOAT_RULES", "QUANTIZED_OP_TYPES", "FrameCalibrationReader", "Int8Settings",
           "float_nodes", "fold_shape_arithmetic", "quantize_onnx"]

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm")  # where the time goes (ORT profile: Gemm ~35 %, Conv ~11 %)
ALL_OP_TYPES = "all"  # every op type ONNX Runtime's quantiser knows (only for sensitivity measurements)


def _activation_matmul(node: onnx.NodeProto, initializers: set[str]) -> bool:
    return node.op_type == "MatMul" and not any(name in initializers for name in node.input)


def _in_scope(prefix: str) -> Callable[[onnx.NodeProto, set[str]], bool]:
    return lambda node, _initializers: node.name.startswith(prefix)


def _output_tail(node: onnx.NodeProto, _initializers: set[str]) -> bool:
    # nodes of the export wrapper itself (pre-processing, softmax/argmax/confidence, class scores):
    # scope "/" or "/model/" with no sub-module below it
    return node_scope(node.name) in ("", "/", "/model/")


# rule name -> predicate(node, initializer names): True = keep this node in float
FLOAT_RULES: dict[str, Callable[[onnx.NodeProto, set[str]], bool]] = {
    "attention_logits": _activation_matmul,
    "graph_module": _in_scope("/model/graph/"),
    "fusion_module": _in_scope("/model/decoder/fusion/"),
    "head": _in_scope("/model/head"),
    "output_tail": _output_tail,
}
DEFAULT_KEEP_FLOAT = ("attention_logits",)


@dataclass(frozen=True)
class Int8Settings:
    """What is quantised and how; stored (with the calibration source) in the model's metadata."""

    op_types: tuple[str, ...] | str = QUANTIZED_OP_TYPES
    keep_float: tuple[str, ...] = DEFAULT_KEEP_FLOAT
    per_channel: bool = True
    calibrate_method: str = "MinMax"
    max_frames: int = 32
    extra: dict = field(default_factory=dict)  # more ORT extra_options (measurements only)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.keep_float) - set(FLOAT_RULES))
        if unknown:
            raise ValueError(f"unknown keep_float rule(s) {unknown}; known: {sorted(FLOAT_RULES)}")
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 (got {self.max_frames})")


def float_nodes(model: onnx.ModelProto, rules: Iterable[str]) -> list[str]:
    """Names of the nodes of ``model`` that the named ``FLOAT_RULES`` keep in float."""
    initializers = {i.name for i in model.graph.initializer}
    predicates = [FLOAT_RULES[r] for r in rules]
    return [n.name for n in model.graph.node if any(p(n, initializers) for p in predicates)]


def _as_ort_reader(first: dict[str, np.ndarray], reader: FrameCalibrationReader):
    from onnxruntime.quantization import CalibrationDataReader  # optional dependency (onnxruntime)

    pending = [first]

    class _Reader(CalibrationDataReader):
        def get_next(self):
            return pending.pop() if pending else reader.get_next()

    return _Reader()


def fold_shape_arithmetic(onnx_path: str | os.PathLike, output: str | os.PathLike) -> None:
    """ONNX Runtime's quantisation pre-processing: ONNX shape inference + basic graph optimisation,
    which folds the exporter's Shape/Gather/Concat arithmetic of a static-shape graph into constants."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # optional dependency (onnxruntime)

    # symbolic shape inference is for dynamic shapes; this graph is static (and the symbolic pass
    # cannot follow the window padding arithmetic), so ONNX shape inference does it
    quant_pre_process(str(onnx_path), str(output), skip_symbolic_shape=True)


def quantize_onnx(fp32_onnx: str | os.PathLike, output: str | os.PathLike, frames: Iterable[np.ndarray],
                  calibration_source: str, settings: Int8Settings = Int8Settings()) -> Path:
    """Quantise the fp32 segmentation export ``fp32_onnx`` to ``output`` (static int8, QDQ),
    calibrated on up to ``settings.max_frames`` of ``frames``; ``calibration_source`` (e.g.
    ``data/demo.mcap:/camera/image_raw``) goes into the metadata. Returns ``Path(output)``."""
    from onnxruntime import __version__ as ort_version  # optional dependency (onnxruntime)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32_onnx = Path(fp32_onnx)
    metadata = onnx_metadata(fp32_onnx)
    if onnx_precision(metadata) != "fp32":
        raise ValueError(f"{fp32_onnx} is already a {onnx_precision(metadata)} export; quantise the fp32 one")
    graph_inputs = [i.name for i in read_onnx(fp32_onnx).graph.input]
    classes = None
    if CLASS_EMBEDDINGS_NAME in graph_inputs:  # calibrate the text path on the export's own classes
        vocabulary = onnx_vocabulary(metadata, str(fp32_onnx))
        if vocabulary is None:
            raise ValueError(f"{fp32_onnx} takes '{CLASS_EMBEDDINGS_NAME}' but carries no vocabulary to calibrate with")
        classes = vocabulary.embeddings
    reader = FrameCalibrationReader(frames, onnx_input_shape(fp32_onnx), settings.max_frames, classes)
    first = reader.get_next()
    if first is None:
        raise ValueError(f"no calibration frames from {calibration_source} (the graph takes batches of "
                         f"{onnx_input_shape(fp32_onnx)[0]})")
    with tempfile.TemporaryDirectory(prefix="casseg_int8_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        fold_shape_arithmetic(fp32_onnx, pre)
        pre_model = onnx.load(str(pre))
        keep_float = float_nodes(pre_model, settings.keep_float)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre), str(quantized), _as_ort_reader(first, reader), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=None if settings.op_types == ALL_OP_TYPES else list(settings.op_types),
            per_channel=settings.per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float, calibrate_method=getattr(CalibrationMethod, settings.calibrate_method),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, **settings.extra})
        model = onnx.load(str(quantized))
    calibration = {
        "source": calibration_source, "frames": reader.frames_used, "method": settings.calibrate_method,
        "format": "QDQ", "activations": "int8 symmetric per-tensor", "weights": "int8 symmetric " + (
            "per-channel" if settings.per_channel else "per-tensor"),
        "op_types": settings.op_types if isinstance(settings.op_types, str) else list(settings.op_types),
        "keep_float": list(settings.keep_float), "float_nodes": len(keep_float),
        "quantizer": f"onnxruntime {ort_version}", **({"extra_options": settings.extra} if settings.extra else {}),
    }
    del model.metadata_props[:]
    metadata.update({META_PRECISION: "int8", META_SOURCE_ONNX: file_sha256(fp32_onnx),
                     META_CALIBRATION: json.dumps(calibration, sort_keys=True)})
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    canonicalize_onnx(model)
    data = model.SerializeToString(deterministic=True)
    onnx.checker.check_model(onnx.load_from_string(data), full_check=False)
    return atomic_write_bytes(output, data)

