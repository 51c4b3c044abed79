"""Can TensorRT 10's ONNX parser take this graph? Checked without TensorRT or a GPU.

The parser's operator table (``data/tensorrt10_onnx_ops.json``: every operator, supported or not,
with its restriction text, copied from onnx-tensorrt's docs/operators.md at the release named in the
file) is the data; the restrictions that matter for casseg graphs are checked here, each beside the
table text it implements. ``tensorrt_problems(model)`` lists every violation (empty = ready):

* an operator outside the default ONNX domain or not supported by the parser;
* restricted attributes/inputs: ``axes`` of Pad/Slice/Squeeze/Unsqueeze/Reduce* and ``axis`` of
  CumSum must be build-time constants; Resize modes; ScatterND without reduction; pooling
  dilations; MaxPool without Indices; LayerNormalization's first output only; TopK sorted;
  Quantize/DequantizeLinear zero points 0 (TensorRT quantisation is symmetric);
* tensor types: UINT8 only as a network input or output, INT8 only between Q and DQ;
* static shapes (``shape_problems``): every input, output and intermediate shape fully known once
  the class count K is fixed (K, the ``class_embeddings`` rows, is the one dynamic axis: the engine
  covers it with an optimisation profile; EyeLike needs a static input even then) — and, for a
  resize-in-graph export, the image height and width (``pin_axes``; the same profile covers them). ONNX shape
  inference cannot follow the exporter's Shape/Gather arithmetic that TensorRT evaluates at build
  time, so check a graph whose shape arithmetic is folded (``quantize.fold_shape_arithmetic``; the
  int8 export already is).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

import numpy as np
import onnx
from onnx import numpy_helper

from .base import CLASS_AXIS

__all__ = ["OPERATOR_TABLE", "operator_table", "pin_axes", "pin_class_count", "shape_problems", "tensorrt_problems"]

OPERATOR_TABLE = "data/tensorrt10_onnx_ops.json"

# input index that must be a build-time constant ("`axes` must be an initializer" in the table)
_CONSTANT_INPUTS = {"Pad": 3, "Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "CumSum": 1, "ReduceL1": 1, "ReduceL2": 1,
                    "ReduceLogSum": 1, "ReduceLogSumExp": 1, "ReduceMax": 1, "ReduceMean": 1, "ReduceMin": 1,
                    "ReduceProd": 1, "ReduceSum": 1, "ReduceSumSquare": 1}
# Resize: "Supported resize transformation modes ... resize modes ... nearest modes ... aspect ratio policy"
_RESIZE = {"coordinate_transformation_mode": ("half_pixel", {"half_pixel", "pytorch_half_pixel",
                                                             "tf_half_pixel_for_nn", "asymmetric", "align_corners"}),
           "mode": ("nearest", {"nearest", "linear"}),
           "nearest_mode": ("round_prefer_floor", {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}),
           "keep_aspect_ratio_policy": ("stretch", {"stretch"})}
_UINT8, _INT8 = onnx.TensorProto.UINT8, onnx.TensorProto.INT8


@lru_cache(maxsize=1)
def operator_table() -> dict:
    """The parser's operator table with its provenance (``tensorrt``, ``source``, ``operators``)."""
    return json.loads(files("casseg_ros.runtime").joinpath(OPERATOR_TABLE).read_text())


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        g = self.model.graph
        self.initializers = {i.name: i for i in g.initializer}
        self.constants = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
        self.io = {v.name for v in list(g.input) + list(g.output)}
        self.types = {v.name: v.type.tensor_type for v in list(g.input) + list(g.output) + list(g.value_info)}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or name in self.constants

    def value(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        if name in self.constants:
            return numpy_helper.to_array(_attr(self.constants[name], "value"))
        return None

    def static(self, name: str) -> bool:
        t = self.types.get(name)
        return t is not None and t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)


def _node_problems(node: onnx.NodeProto, g: _Graph) -> list[str]:
    op, where = node.op_type, f"{node.op_type} node {node.name!r}"
    problems = []
    index = _CONSTANT_INPUTS.get(op)
    if index is not None and len(node.input) > index and node.input[index] and not g.is_constant(node.input[index]):
        problems.append(f"{where}: input {index} (axes/axis) must be an initializer")
    if op == "Resize":
        for name, (default, allowed) in _RESIZE.items():
            value = _text(_attr(node, name, default))
            if value not in allowed:
                problems.append(f"{where}: {name}={value!r} unsupported (supported: {sorted(allowed)})")
        if _attr(node, "antialias", 0):
            problems.append(f"{where}: antialiasing is not supported")
    elif op == "ScatterND" and _text(_attr(node, "reduction", "none")) != "none":
        problems.append(f"{where}: `reduction` is not supported")
    elif op in ("MaxPool", "AveragePool"):
        if any(d != 1 for d in _attr(node, "dilations", [])):
            problems.append(f"{where}: `dilations` must be empty or all ones")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            problems.append(f"{where}: the `Indices` output is unsupported")
    elif op == "LayerNormalization" and any(name and g.consumers.get(name) or name in g.io
                                            for name in node.output[1:]):
        problems.append(f"{where}: only the first output `Y` is supported")
    elif op == "TopK" and _attr(node, "sorted", 1) != 1:
        problems.append(f"{where}: `sorted` must be 1")
    elif op == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings") for a in node.attribute):
        problems.append(f"{where}: sparse/string values are unsupported")
    elif op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zero_point = g.value(node.input[2])
        if zero_point is None or np.any(zero_point != 0):
            problems.append(f"{where}: the zero point must be a constant 0 (TensorRT quantisation is symmetric)")
    return problems


def _type_problems(g: _Graph) -> list[str]:
    problems = []
    producers = {o: n for n in g.model.graph.node for o in n.output}
    for name, t in g.types.items():
        if t.elem_type == _UINT8 and name not in g.io:
            problems.append(f"tensor {name!r}: UINT8 is supported only as a network input or output")
        if t.elem_type == _INT8 and name not in g.initializers:
            producer = producers.get(name)
            if producer is None or producer.op_type != "QuantizeLinear":
                problems.append(f"tensor {name!r}: INT8 only as the output of QuantizeLinear (a quantized type)")
    return problems


def pin_axes(model: onnx.ModelProto, sizes: dict[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` whose symbolic input/output dims named in ``sizes`` have those sizes: the
    graph one TensorRT profile shape runs. Fold its shape arithmetic before ``shape_problems``."""
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    del pinned.graph.value_info[:]  # inferred again from the pinned inputs
    for value in list(pinned.graph.input) + list(pinned.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in sizes:
                dim.dim_value = int(sizes[dim.dim_param])  # replaces the oneof dim_param
    return pinned


def pin_class_count(model: onnx.ModelProto, classes: int) -> onnx.ModelProto:
    """``pin_axes`` of the class axis (the symbolic input dim ``classes``) to ``classes``."""
    return pin_axes(model, {CLASS_AXIS: classes})


def shape_problems(model: onnx.ModelProto) -> list[str]:
    """Tensors of ``model`` whose shape is not static after ONNX shape inference, and EyeLike nodes
    without a static input (empty list: none). An export's class axis is dynamic (an optimisation
    profile covers it): check ``pin_class_count(model, K)``, folded, for the shapes, and the export
    itself for EyeLike (TensorRT wants its input static even under a profile)."""
    g = _Graph(model)
    problems = [f"EyeLike node {n.name!r}: `input` must have static dimensions"
                for n in g.model.graph.node if n.op_type == "EyeLike" and not g.static(n.input[0])]
    for value in list(g.model.graph.input) + list(g.model.graph.output) + list(g.model.graph.value_info):
        if not g.static(value.name):
            problems.append(f"tensor {value.name!r}: shape not static")
    return problems


def tensorrt_problems(model: onnx.ModelProto, table: dict | None = None) -> list[str]:
    """Operators, restricted attributes and tensor types of ``model`` that TensorRT 10's ONNX parser
    would reject (empty list: none)."""
    operators = (table or operator_table())["operators"]
    g = _Graph(model)
    problems = []
    for node in g.model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type} node {node.name!r}: custom domain {node.domain!r}")
        elif not operators.get(node.op_type, {}).get("supported", False):
            problems.append(f"{node.op_type} node {node.name!r}: operator not supported by the TensorRT parser")
        problems += _node_problems(node, g)
    return problems + _type_problems(g)
