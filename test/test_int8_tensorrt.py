"""TensorRT without a GPU: the builder flags an int8 (explicit quantisation) engine is built with,
through a stand-in ``tensorrt`` module that records the TensorRT 10 calls; and the exported fp32 and
int8 graphs checked against TensorRT 10's ONNX parser operator table (operators, constrained
attributes, tensor types, static shapes)."""
from __future__ import annotations

import sys
import types

import onnx
import pytest
import torch
from onnx import helper

from casseg_ros.export.parity import make_test_pattern
from casseg_ros.export.quantize import Int8Settings, fold_shape_arithmetic, quantize_onnx
from casseg_ros.model.checkpoint import save_checkpoint
from casseg_ros.runtime.base import VocabularyUnsupported
from casseg_ros.runtime.model_export import export_checkpoint
from casseg_ros.runtime.tensorrt_backend import build_engine, builder_settings, check_class_count, class_profile
from casseg_ros.runtime.tensorrt_support import operator_table, pin_class_count, shape_problems, tensorrt_problems
from model_factory import tiny_model

torch.set_num_threads(1)
SIZE = (64, 128)


class _Flag(int):
    """A pybind11 enum member as TensorRT's Python API has them (int() gives the bit index)."""


def fake_tensorrt(calls: list, dynamic_classes: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.0-fake"
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=_Flag(1))
    trt.BuilderFlag = types.SimpleNamespace(FP16=_Flag(0), BF16=_Flag(17), INT8=_Flag(1))
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def set_int8_calibrator(self, calibrator):  # must never be called: explicit quantisation
            calls.append(("set_int8_calibrator", calibrator))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile", profile.shapes))
            return 0

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's keyword names
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        """What OnnxParser.parse leaves: the graph inputs with -1 for a dynamic axis."""

        def __init__(self):
            self.inputs = [Tensor("images", (1, *SIZE, 3))] + (
                [Tensor("class_embeddings", (-1, 384))] if dynamic_classes else [])

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return b"engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            calls.append(("parse", len(data)))
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


@pytest.mark.parametrize("precision, strongly_typed, network_flags, builder_flags", [
    ("int8", False, 0, ["INT8", "FP16"]),       # Q/DQ honoured, float layers may run in fp16
    ("int8", True, 1 << 1, []),                 # strongly typed: no precision flag allowed
    ("fp16", False, 0, ["FP16"]),
    ("fp32", False, 0, []),
])
def test_build_engine_flags(monkeypatch, precision, strongly_typed, network_flags, builder_flags):
    calls: list = []
    trt = fake_tensorrt(calls)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    assert build_engine(b"onnx-bytes", precision, 1 << 30, strongly_typed=strongly_typed,
                        classes=(1, 5, 256)) == b"engine"
    assert ("create_network", network_flags) in calls
    flags = [c[1] for c in calls if c[0] == "set_flag"]
    assert flags == [getattr(trt.BuilderFlag, name) for name in builder_flags]
    assert not any(c[0] == "set_int8_calibrator" for c in calls)
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 30) in calls and calls[-1] == ("build_serialized_network",)


def test_build_engine_profile_over_the_class_count(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    build_engine(b"onnx-bytes", "fp16", 1 << 30, classes=class_profile(9, 64))
    profiles = [c[1] for c in calls if c[0] == "add_optimization_profile"]
    assert profiles == [{"class_embeddings": ((1, 384), (9, 384), (64, 384))}]
    with pytest.raises(ValueError, match="classes="):  # a dynamic class input needs a profile
        build_engine(b"onnx-bytes", "fp16", 1 << 30)
    calls.clear()  # an old export (static classes): no profile
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, dynamic_classes=False))
    build_engine(b"onnx-bytes", "fp16", 1 << 30, classes=(1, 5, 256))
    assert not [c for c in calls if c[0] == "add_optimization_profile"]


def test_class_profile_and_count_check():
    assert class_profile(9) == (1, 9, 256)
    with pytest.raises(ValueError, match="max_classes"):
        class_profile(300)
    check_class_count(256, (1, 9, 256))
    for k in (0, 257):
        with pytest.raises(VocabularyUnsupported, match="profile"):
            check_class_count(k, (1, 9, 256))


def test_builder_settings_refuses_strong_typing_without_qdq():
    assert builder_settings("int8") == ([], ["INT8", "FP16"])
    with pytest.raises(ValueError, match="int8"):
        builder_settings("fp16", strongly_typed=True)
    with pytest.raises(ValueError, match="precision"):
        builder_settings("int4")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    ckpt = save_checkpoint(root / "m.safetensors", tiny_model(num_classes=5))
    fp32, _ = export_checkpoint(ckpt, root / "fp32.onnx", SIZE)
    int8 = quantize_onnx(fp32, root / "int8.onnx", [make_test_pattern(*SIZE)], "pattern", Int8Settings(max_frames=1))
    paths = {"fp32": fp32, "int8": int8}
    for name in ("fp32", "int8"):  # what one profile shape (K = 7 classes) builds: the class axis pinned
        pinned = root / f"{name}-k7.onnx"
        onnx.save(pin_class_count(onnx.load(str(paths[name])), 7), str(pinned))
        paths[f"{name}_k7_folded"] = root / f"{name}-k7-folded.onnx"
        fold_shape_arithmetic(pinned, paths[f"{name}_k7_folded"])
    return {name: onnx.load(str(path)) for name, path in paths.items()}


def test_operator_table_names_its_source():
    table = operator_table()
    assert table["tensorrt"].startswith("10.")
    assert table["source"]["repository"] == "https://github.com/onnx/onnx-tensorrt"
    assert len(table["source"]["commit"]) == 40 and table["source"]["path"] == "docs/operators.md"
    ops = table["operators"]
    assert ops["QuantizeLinear"]["supported"] and not ops["MatMulInteger"]["supported"]
    assert "zero" in ops["DequantizeLinear"]["restrictions"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp32", "int8"])
def test_exported_graphs_parse_in_tensorrt10(graphs, name):
    assert tensorrt_problems(graphs[name]) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp32_k7_folded", "int8_k7_folded"])
def test_exported_graphs_have_static_shapes_for_a_class_count(graphs, name):
    assert shape_problems(graphs[name]) == []


@pytest.mark.parametrize("name", ["fp32", "int8"])
def test_the_class_count_is_the_only_dynamic_axis(graphs, name):
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(graphs[name].graph.input) + list(graphs[name].graph.output)}
    assert dims == {"images": [1, *SIZE, 3], "class_embeddings": ["classes", 384], "class_ids": [1, *SIZE],
                    "confidence": [1, *SIZE], "class_scores": [1, "classes"],
                    "adjacency": [1, "classes", "classes"]}
    # EyeLike needs a static input even under an optimisation profile
    assert not [p for p in shape_problems(graphs[name]) if "EyeLike" in p]


def test_the_checker_finds_what_tensorrt_rejects(graphs):
    model = onnx.ModelProto()
    model.CopyFrom(graphs["int8"])
    g = model.graph
    resize = next(n for n in g.node if n.op_type == "Resize")
    resize.attribute.append(helper.make_attribute("antialias", 1))
    dq = next(n for n in g.node if n.op_type == "DequantizeLinear" and len(n.input) > 2)
    zp = next(i for i in g.initializer if i.name == dq.input[2])
    zp.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(zp) + 1, zp.name))
    g.node.append(helper.make_node("Unique", [g.input[0].name], ["u"], name="unique"))
    problems = "\n".join(tensorrt_problems(model))
    assert "antialiasing is not supported" in problems
    assert "zero point must be a constant 0" in problems
    assert "Unique node 'unique': operator not supported" in problems
    g.input[0].type.tensor_type.shape.dim[1].dim_param = "height"  # a dynamic input dimension
    assert any("shape not static" in p for p in shape_problems(pin_class_count(model, 7)))
