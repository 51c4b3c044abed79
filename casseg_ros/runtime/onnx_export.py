"""Deterministic, atomic ONNX export shared by the model (logits export) and the deployment export.

``export_onnx`` wraps ``torch.onnx.export`` and post-processes the resulting ``onnx.ModelProto`` so
that the same module (same weights) always produces the same bytes:

* the TorchScript exporter (``dynamo=False``) is used by default — it is fast and produces a
  static graph; the dynamo exporter is the fallback if the TorchScript one fails
  (``exporter="auto"``) or can be chosen explicitly;
* every doc_string is cleared, producer name/version are fixed, metadata_props are sorted;
* node names and intermediate value / initializer names are renamed canonically
  (``n0, n1, ...``, ``v0, v1, ...``, ``w0, w1, ...``) in graph order, so exporter-internal
  counters (which depend on what was traced earlier in the process) do not leak into the file;
  a node keeps the module scope the exporter gave it (``/model/graph/convs.0/n812``): the scope is
  the module path, not a counter, and the int8 quantisation selects what stays float by it;
* the file is written atomically (temp file in the same directory, fsync, ``os.replace``);
  a crash mid-write never leaves a partial ``.onnx`` at ``path``.

The model must fit in a single protobuf (< 2 GiB); all casseg models do.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import onnx
import torch
from torch import nn

from casseg_ros.fileio import atomic_write_bytes

PRODUCER_NAME = "casseg_ros"
PRODUCER_VERSION = "0.1.0"

__all__ = ["export_onnx", "canonicalize_onnx", "node_scope", "PRODUCER_NAME"]


def _strip_doc_strings(graph) -> None:
    graph.doc_string = ""
    for node in graph.node:
        node.doc_string = ""
        for attr in node.attribute:
            attr.doc_string = ""
            if attr.HasField("g"):
                _strip_doc_strings(attr.g)
            for g in attr.graphs:
                _strip_doc_strings(g)
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            vi.doc_string = ""
    for init in graph.initializer:
        init.doc_string = ""


def node_scope(name: str) -> str:
    """The module scope of an exported node name, with its trailing slash ('' when it has none):
    ``/model/graph/convs.0/MatMul_1`` -> ``/model/graph/convs.0/``."""
    return name[: name.rfind("/") + 1] if name.startswith("/") else ""


def canonicalize_onnx(model, keep_names: Sequence[str] = ()):
    """Make an ``onnx.ModelProto`` byte-deterministic (in place; also returned).

    Graph inputs/outputs keep their names (they are the public I/O contract); everything else in the
    top-level graph is renamed in order of appearance. Subgraphs (If/Loop bodies) are left as they are
    apart from doc strings, and names they reference from the outer scope are kept.
    """
    g = model.graph
    model.doc_string = ""
    model.producer_name = PRODUCER_NAME
    model.producer_version = PRODUCER_VERSION
    model.domain = ""
    model.model_version = 0
    props = sorted((p.key, p.value) for p in model.metadata_props)
    del model.metadata_props[:]
    for k, v in props:
        p = model.metadata_props.add()
        p.key, p.value = k, v
    _strip_doc_strings(g)

    keep = set(keep_names)
    keep.update(i.name for i in g.input)
    keep.update(o.name for o in g.output)
    keep.add("")
    # names referenced from inside subgraphs (outer-scope captures) must not be renamed
    for node in g.node:
        for attr in node.attribute:
            subs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sg in subs:
                for sn in sg.node:
                    keep.update(sn.input)

    mapping: dict[str, str] = {}
    n_w = 0
    for init in g.initializer:
        if init.name not in keep and init.name not in mapping:
            mapping[init.name] = f"w{n_w}"
            n_w += 1
    n_v = 0
    for node in g.node:
        for name in node.output:
            if name not in keep and name not in mapping:
                mapping[name] = f"v{n_v}"
                n_v += 1

    def ren(name: str) -> str:
        return mapping.get(name, name)

    for init in g.initializer:
        init.name = ren(init.name)
    for i, node in enumerate(g.node):
        node.name = f"{node_scope(node.name)}n{i}"
        for j, name in enumerate(node.input):
            node.input[j] = ren(name)
        for j, name in enumerate(node.output):
            node.output[j] = ren(name)
    for vi in g.value_info:
        vi.name = ren(vi.name)
    # value_info order is exporter-dependent; sort it for stable bytes
    vis = sorted(g.value_info, key=lambda v: v.name)
    del g.value_info[:]
    g.value_info.extend(vis)
    return model


def _export_to_proto(module: nn.Module, example_inputs: tuple, input_names, output_names, opset: int,
                     exporter: str, dynamic_axes: dict[str, dict[int, str]] | None = None):
    if exporter == "torchscript":
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript-exporter deprecation + tracer warnings
            torch.onnx.export(
                module, example_inputs, buf, input_names=list(input_names), output_names=list(output_names),
                opset_version=opset, dynamo=False, do_constant_folding=True, export_params=True,
                dynamic_axes=dynamic_axes,
            )
        return onnx.load_from_string(buf.getvalue())
    if exporter == "dynamo":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                module, example_inputs, None, input_names=list(input_names), output_names=list(output_names),
                opset_version=opset, dynamo=True, optimize=True, verify=False, report=False,
                dynamic_axes=dynamic_axes,
            )
        return prog.model_proto
    raise ValueError(f"unknown exporter {exporter!r} (expected 'auto', 'torchscript' or 'dynamo')")


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | os.PathLike,
    input_names: list[str],
    output_names: list[str],
    opset: int = 17,
    exporter: str = "auto",
    check: bool = True,
    metadata: dict[str, str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    output_shapes: dict[str, Sequence[int | str]] | None = None,
) -> Path:
    """Export ``module`` (static shapes of ``example_inputs``) to ``path``; deterministic and atomic.

    ``dynamic_axes`` ({input/output name: {axis: symbolic name}}) leaves those axes free; every
    other axis keeps the example's size. With dynamic axes the TorchScript exporter declares every
    output dim it cannot trace back to an input as symbolic; ``output_shapes`` ({output name:
    dims, an int or a symbolic name each}) declares the outputs' shapes as they are.

    ``exporter``: ``"torchscript"`` (``dynamo=False``), ``"dynamo"``, or ``"auto"`` (TorchScript,
    falling back to dynamo if it raises). The module is put in eval mode for the export and every
    submodule's previous mode is restored afterwards. Returns ``Path(path)``.
    """
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (got {opset})")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    # remember every submodule's mode: wrappers such as ``export_module()`` are fresh nn.Modules
    # (training=True) around an eval-mode model, so restoring only the top-level flag would leave
    # the wrapped model in training mode (drop-path on) after the export.
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            if exporter == "auto":
                try:
                    proto = _export_to_proto(module, example_inputs, input_names, output_names, opset,
                                             "torchscript", dynamic_axes)
                except Exception as ts_err:  # noqa: BLE001 - fall back to the dynamo exporter
                    try:
                        proto = _export_to_proto(module, example_inputs, input_names, output_names, opset,
                                                 "dynamo", dynamic_axes)
                    except Exception as dy_err:
                        raise RuntimeError(
                            f"ONNX export failed with both exporters: torchscript: {ts_err}; dynamo: {dy_err}"
                        ) from dy_err
            else:
                proto = _export_to_proto(module, example_inputs, input_names, output_names, opset, exporter,
                                         dynamic_axes)
    finally:
        for m, training in modes:
            m.training = training
    outputs = {o.name: o for o in proto.graph.output}
    for name, dims in (output_shapes or {}).items():
        shape = outputs[name].type.tensor_type.shape
        del shape.dim[:]
        for size in dims:
            dim = shape.dim.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = int(size)
    for k, v in (metadata or {}).items():
        p = proto.metadata_props.add()
        p.key, p.value = str(k), str(v)
    canonicalize_onnx(proto)
    data = proto.SerializeToString(deterministic=True)
    if check:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=False)
    return atomic_write_bytes(path, data)
