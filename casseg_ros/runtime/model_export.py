"""Segmentation model -> static-shape ONNX that carries what a backend needs to run from it alone.

The graph is ``model.export_module()`` (uint8 NHWC images and the (K,E) float32 class embeddings
in; class ids, confidence, class scores, adjacency out; pre/post-processing inside), written by
``onnx_export.export_onnx`` (deterministic bytes, atomic write). The images are static; the class
count K is the one dynamic axis (``classes``), so the same file runs any vocabulary of the model's
embedding width E. ``metadata_props`` carry the vocabulary (``Vocabulary.to_bytes``, base64:
the one vocabulary codec), the model config, the input shape and the source checkpoint's sha256.

``resize_in_graph=True`` exports ``model.export_module(model_size=input_size)`` instead: the images'
height and width are dynamic too (``height``, ``width``; the class ids and confidence come out at
that size), the graph resizes them to the model size itself, and ``casseg.model_size`` records that
size. Such a file is new to old readers, which refuse it (its input shape is not static); the
static export is unchanged byte for byte, so the export version stays.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Sequence

import onnx
import torch
from google.protobuf.message import DecodeError

from casseg_ros.model import ContextSegmentor, LogitsPipeline
from casseg_ros.model.checkpoint import load_checkpoint
from casseg_ros.text.vocabulary import Vocabulary, VocabularyError

from .base import CLASS_AXIS, CLASS_EMBEDDINGS_NAME, INPUT_NAME, OUTPUT_NAMES
from .engine_cache import file_sha256
from .onnx_export import export_onnx

__all__ = ["EXPORT_VERSION", "HEIGHT_AXIS", "META_CALIBRATION", "META_CHECKPOINT", "META_CONFIG", "META_INPUT",
           "META_KIND", "META_MODEL_SIZE", "META_PRECISION", "META_SOURCE_ONNX", "META_VOCAB", "WIDTH_AXIS",
           "export_checkpoint", "export_model", "onnx_metadata", "onnx_model_size", "onnx_precision",
           "onnx_vocabulary", "read_onnx"]

# bump when the exported graph or its metadata layout changes (cache key); 3: node scopes;
# 4: class embeddings as a second input with a dynamic class count; 5: argmax then the max logit
# gathered, class scores as one matrix-vector product, no Slice when nothing is cropped
EXPORT_VERSION = "5"
META_VOCAB = "casseg.vocabulary"
META_CONFIG = "casseg.model_config"
META_CHECKPOINT = "casseg.checkpoint_sha256"
META_INPUT = "casseg.input_shape"
META_KIND = "casseg.kind"
META_PRECISION = "casseg.precision"  # "int8" in a quantised export; absent = the fp32 graph
META_CALIBRATION = "casseg.calibration"  # JSON: how an int8 export was calibrated
META_SOURCE_ONNX = "casseg.source_onnx_sha256"  # the fp32 graph an int8 export was made from
META_MODEL_SIZE = "casseg.model_size"  # JSON [H, W] a resize-in-graph export runs the model at; absent = static
HEIGHT_AXIS, WIDTH_AXIS = "height", "width"  # symbolic image axes of a resize-in-graph export


def read_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """The ONNX model at ``path`` (external weights not loaded); ValueError naming the file when it
    is not one (protobuf alone would say "Wire format was corrupt", or parse an empty file)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise ValueError(f"{path} is not an ONNX model (protobuf cannot parse it: {exc})") from None
    if not proto.graph.input or not proto.opset_import:
        raise ValueError(f"{path} is not an ONNX model (no graph inputs or no opset: empty or not ONNX)")
    return proto


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (weights not loaded)."""
    return {p.key: p.value for p in read_onnx(path).metadata_props}


def onnx_precision(metadata: dict[str, str]) -> str:
    """"int8" for a quantised export, else "fp32"."""
    return metadata.get(META_PRECISION, "fp32")


def onnx_model_size(metadata: dict[str, str]) -> tuple[int, int] | None:
    """(H, W) of a resize-in-graph export (any image size in, resized in the graph), None for a static one."""
    if META_MODEL_SIZE not in metadata:
        return None
    h, w = json.loads(metadata[META_MODEL_SIZE])
    return int(h), int(w)


def onnx_vocabulary(metadata: dict[str, str], source: str) -> Vocabulary | None:
    """The vocabulary stored by ``export_model``, or None when the ONNX carries none."""
    if META_VOCAB not in metadata:
        return None
    try:
        return Vocabulary.from_bytes(base64.b64decode(metadata[META_VOCAB], validate=True), source=source)
    except (binascii.Error, VocabularyError) as exc:
        raise ValueError(f"{source}: unreadable '{META_VOCAB}' metadata (exported by another casseg-export "
                         f"version? export it again): {exc}") from None


def export_model(model: ContextSegmentor, output: str | os.PathLike, input_size: Sequence[int] = (512, 1024),
                 batch_size: int = 1, opset: int = 17, exporter: str = "auto", logits: bool = False,
                 checkpoint_sha256: str | None = None, resize_in_graph: bool = False) -> Path:
    """Export a ``ContextSegmentor`` (static shape (B,H,W,3) uint8) to ``output``; returns the path.

    ``logits=True`` exports the ``LogitsPipeline`` (raw logits output) used for parity checks.
    ``resize_in_graph=True``: images of any (H', W'), resized to ``input_size`` in the graph (see
    the module docstring).
    """
    if logits and resize_in_graph:
        raise ValueError("resize_in_graph applies to the segmentation export, not the logits one")
    h, w = int(input_size[0]), int(input_size[1])
    module = LogitsPipeline(model) if logits else model.export_module(model_size=(h, w) if resize_in_graph else None)
    outputs = ["logits"] if logits else list(OUTPUT_NAMES)
    b, k = int(batch_size), CLASS_AXIS
    # trace the resize at a size other than the model's, so that nothing in it is an identity
    example_hw = (h + h // 2, w + w // 2) if resize_in_graph else (h, w)
    example = torch.zeros((b, *example_hw, 3), dtype=torch.uint8)
    classes = model.class_embeddings.detach().cpu().float()
    ih, iw = (HEIGHT_AXIS, WIDTH_AXIS) if resize_in_graph else (h, w)
    shapes = {"logits": [b, k, h, w]} if logits else {
        "class_ids": [b, ih, iw], "confidence": [b, ih, iw], "class_scores": [b, k], "adjacency": [b, k, k]}
    dynamic = {CLASS_EMBEDDINGS_NAME: {0: k}}
    if resize_in_graph:
        dynamic[INPUT_NAME] = {1: HEIGHT_AXIS, 2: WIDTH_AXIS}
    dynamic.update({name: {axis: size for axis, size in enumerate(dims) if isinstance(size, str)}
                    for name, dims in shapes.items()})
    metadata = {
        META_VOCAB: base64.b64encode(model.vocabulary.to_bytes()).decode("ascii"),
        META_CONFIG: json.dumps(model.config.to_dict(), sort_keys=True),
        META_INPUT: json.dumps([int(batch_size), h, w, 3]),
        META_KIND: "logits" if logits else "segmentation",
    }
    if checkpoint_sha256:
        metadata[META_CHECKPOINT] = checkpoint_sha256
    if resize_in_graph:
        metadata[META_INPUT] = json.dumps([b, -1, -1, 3])  # any image size; the model's is META_MODEL_SIZE
        metadata[META_MODEL_SIZE] = json.dumps([h, w])
    return export_onnx(module, (example, classes), output, [INPUT_NAME, CLASS_EMBEDDINGS_NAME], outputs, opset=opset,
                       exporter=exporter, metadata=metadata, dynamic_axes=dynamic, output_shapes=shapes)


def export_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, input_size=(512, 1024),
                      batch_size: int = 1, opset: int = 17, exporter: str = "auto",
                      logits: bool = False, resize_in_graph: bool = False) -> tuple[Path, ContextSegmentor]:
    """Load ``checkpoint`` and export it; returns (onnx path, model)."""
    model = load_checkpoint(checkpoint)
    path = export_model(model, output, input_size, batch_size, opset, exporter, logits,
                        checkpoint_sha256=file_sha256(checkpoint), resize_in_graph=resize_in_graph)
    return path, model
