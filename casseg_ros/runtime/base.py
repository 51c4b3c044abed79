"""Backend interface shared by the torch, onnxruntime, tensorrt and openvino inference backends.

A backend runs the model's *export module* (``ContextSegmentor.export_module()``): uint8 NHWC RGB in,
``(class_ids int32, confidence, class_scores, adjacency)`` out, with normalisation, upsampling,
softmax and argmax inside the graph. The host only converts/copies buffers, and — only when an image
is not already ``input_size`` — resizes the image (bilinear) and the two per-pixel outputs back
(nearest). Both resizes are single ``cv2.resize`` calls per image (~0.6 ms in, ~7.5 ms out for a
1080p camera and a 512x1024 model on the 2-core build machine).

``resize_in_graph=True`` (an option of every backend, ``create_backend(..., resize_in_graph=True)``)
moves both into the graph (``SegmentationPipeline(model, model_size)``): ``input_size`` is then the
size the model runs at inside the graph, images of any size go to the runtime as they are, and the
graph returns the per-pixel outputs at the images' own size (bilinear logits, softmax and argmax
there): ``infer`` does no per-pixel work on the host.

``last_runtime_s`` is the wall time of the runtime calls proper of the last ``infer`` (ORT
``session.run``, the torch forward with its device sync, TensorRT's copies, execute and sync), so
``infer``'s wall time minus it is what the host spent around them.

The classes are data, not weights: ``set_vocabulary`` swaps the class (text) embeddings the model
scores against, atomically (all or nothing), for any class count K >= 1 — the exported graphs take
them as their second input ``class_embeddings`` (K,E) float32 with a dynamic K.
"""
from __future__ import annotations

import abc
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import psutil

from casseg_ros.parameter_rules import PRECISION_SETTINGS, PRECISIONS  # int8: a quantised model (ORT QDQ export, OpenVINO NNCF)
from casseg_ros.text.vocabulary import Vocabulary

__all__ = [
    "Backend",
    "BackendUnavailable",
    "CLASS_AXIS",
    "CLASS_EMBEDDINGS_NAME",
    "InferenceResult",
    "PRECISIONS",
    "VocabularyUnsupported",
    "physical_cpu_count",
    "resize_images",
    "resize_outputs",
]

OUTPUT_NAMES = ("class_ids", "confidence", "class_scores", "adjacency")
INPUT_NAME = "images"
CLASS_EMBEDDINGS_NAME = "class_embeddings"  # second graph input: (K,E) float32 text embeddings, K dynamic
CLASS_AXIS = "classes"  # the symbolic name of K, the one dynamic axis of an exported graph


class BackendUnavailable(Exception):
    """The requested backend/device/precision cannot run on this machine.

    The message names what is missing (a Python package, a GPU, an execution provider, ...).
    CLIs print it and exit with status 2 instead of showing a traceback.
    """


class VocabularyUnsupported(ValueError):
    """``Backend.set_vocabulary`` refused a vocabulary; the message says why (a graph exported
    without the class-embedding input, an embedding width the model does not take, more classes
    than a TensorRT engine's profile allows, ...). The backend's vocabulary is unchanged."""


@dataclass
class InferenceResult:
    """Per-batch outputs, all numpy, at the resolution of the images given to ``infer``."""

    class_ids: np.ndarray  # (B,H,W) int32
    confidence: np.ndarray  # (B,H,W) float32, max softmax probability
    class_scores: np.ndarray  # (B,K) float32, mean softmax probability per class
    adjacency: np.ndarray  # (B,K,K) float32 class-graph weights in [0,1]

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    def frame(self, i: int) -> "InferenceResult":
        """The i-th frame as a batch of one."""
        return InferenceResult(self.class_ids[i : i + 1], self.confidence[i : i + 1],
                               self.class_scores[i : i + 1], self.adjacency[i : i + 1])


def check_embedding_dim(vocabulary: Vocabulary, dim: int | None, model: str) -> None:
    """VocabularyUnsupported unless the vocabulary's embedding width is the model's text width ``dim``."""
    if dim is not None and vocabulary.embedding_dim != dim:
        raise VocabularyUnsupported(
            f"vocabulary embeddings have dimension {vocabulary.embedding_dim} (provider {vocabulary.provider!r}), "
            f"but {model} takes text embeddings of dimension {dim}: embed the names with the provider the "
            f"model was trained with")


def physical_cpu_count() -> int:
    """Physical cores usable by this process (falls back to logical CPUs in the affinity mask)."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False)  # None where the platform cannot tell
    if not physical:
        return max(1, logical)
    return max(1, min(physical, logical))


def _as_batch(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B,H,W,3) or (H,W,3) uint8 RGB, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    return images


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear host resize of a uint8 (B,H,W,3) batch to ``size`` = (H, W); no-op when equal."""
    h, w = size
    if images.shape[1:3] == (h, w):
        return images
    out = np.empty((images.shape[0], h, w, 3), dtype=np.uint8)
    for i in range(images.shape[0]):
        out[i] = cv2.resize(images[i], (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def resize_outputs(result: InferenceResult, size: tuple[int, int]) -> InferenceResult:
    """Nearest-neighbour resize of the per-pixel outputs back to ``size`` = (H, W); no-op when equal."""
    h, w = size
    if result.class_ids.shape[1:3] == (h, w):
        return result
    b = result.class_ids.shape[0]
    ids = np.empty((b, h, w), dtype=np.int32)
    conf = np.empty((b, h, w), dtype=np.float32)
    for i in range(b):  # straight into the batch arrays (dst): no temporary full-size copy
        cv2.resize(result.class_ids[i], (w, h), dst=ids[i], interpolation=cv2.INTER_NEAREST)
        cv2.resize(result.confidence[i], (w, h), dst=conf[i], interpolation=cv2.INTER_NEAREST)
    return InferenceResult(ids, conf, result.class_scores, result.adjacency)


class Backend(abc.ABC):
    """One inference backend. Subclasses implement ``_load`` and ``_run`` (fixed-size batch).

    ``model_path``: a checkpoint (``.safetensors``) or, for onnxruntime/tensorrt, an exported
    ``.onnx`` (None only for ``TorchBackend.from_model``, an in-memory model). ``input_size``: (H, W)
    the model runs at; images of another size are resized on the host, or inside the graph with
    ``resize_in_graph=True`` (see the module docstring). ``None``: torch runs every image at its own
    size (with ``resize_in_graph``: at the checkpoint's ``model_config.img_size``); onnxruntime and
    tensorrt use the .onnx's model size or the checkpoint's ``model_config.img_size``.
    """

    name: str = "base"
    precisions: tuple[str, ...] = PRECISIONS  # what this backend takes (a device may still refuse one)

    def __init__(self, model_path: str | os.PathLike | None, device: str = "cpu",
                 input_size: Sequence[int] | None = (512, 1024), precision: str = "fp32", **opts: Any):
        if precision not in PRECISION_SETTINGS:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_SETTINGS)}, got {precision!r}")
        if precision not in self.precisions:
            raise BackendUnavailable(f"backend {self.name!r} runs precision {', '.join(self.precisions)} "
                                     f"(asked for {precision})")
        if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
        self.model_path = None if model_path is None else Path(model_path)  # None: in-memory model
        self.device = str(device)
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.precision = precision
        self.opts = dict(opts)
        self.resize_in_graph = bool(opts.get("resize_in_graph", False))
        self._vocabulary = None
        self._loaded = False
        self.load_seconds: float | None = None
        self.last_runtime_s: float | None = None  # seconds in the runtime calls of the last infer
        self.backend_choice: str | None = None  # create_backend("auto", ...): what it chose and why
        self.precision_choice: str | None = None  # precision "auto": what it chose and why

    # ------------------------------------------------------------------ public API
    def load(self) -> "Backend":
        """Load the model (build/convert where needed). Idempotent; returns self."""
        if not self._loaded:
            t0 = time.perf_counter()
            self._load()
            self.load_seconds = time.perf_counter() - t0
            self._loaded = True
        return self

    def warmup(self, iterations: int = 3, size: Sequence[int] | None = None) -> None:
        """Run ``iterations`` dummy batches (allocations, autotuning, lazy init) of images of ``size``
        (H, W), default ``input_size``, through ``infer``; with ``resize_in_graph`` pass the camera's
        size: it is the one the runtime then sees."""
        self.load()
        h, w = size or self.input_size or (512, 1024)
        dummy = np.zeros((self.batch_size or 1, h, w, 3), dtype=np.uint8)
        dummy[:, h // 4 : h // 2, w // 4 : w // 2] = 127
        for _ in range(max(0, int(iterations))):
            self.infer(dummy)

    def infer(self, images: np.ndarray, resize_back: bool = True) -> InferenceResult:
        """uint8 RGB (B,H,W,3) (or (H,W,3)) -> InferenceResult at the images' own resolution, or with
        `resize_back=False` at the model's (`input_size`: no host resize of the outputs; a graph
        that resizes in itself still returns the images' size)."""
        self.load()
        images = _as_batch(images)
        orig = images.shape[1:3]
        x = images if self.resize_in_graph else resize_images(images, self.input_size or orig)
        self.last_runtime_s = 0.0
        bs = self.batch_size
        if bs is None or x.shape[0] == bs:
            res = self._run(np.ascontiguousarray(x))
        else:  # static-batch engines: run in chunks of the engine's batch size (pad the last one)
            parts = []
            for s in range(0, x.shape[0], bs):
                chunk = x[s : s + bs]
                n = chunk.shape[0]
                if n < bs:
                    chunk = np.concatenate([chunk, np.zeros((bs - n,) + chunk.shape[1:], np.uint8)])
                r = self._run(np.ascontiguousarray(chunk))
                parts.append(InferenceResult(r.class_ids[:n], r.confidence[:n], r.class_scores[:n],
                                             r.adjacency[:n]))
            res = InferenceResult(*(np.concatenate([getattr(p, f) for p in parts]) for f in OUTPUT_NAMES))
        return res if self.resize_in_graph or not resize_back else resize_outputs(res, orig)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "precision": self.precision,
            "input_size": list(self.input_size) if self.input_size is not None else None,
            "resize_in_graph": self.resize_in_graph,
            **({"backend_choice": self.backend_choice} if self.backend_choice else {}),
            **({"precision_choice": self.precision_choice} if self.precision_choice else {}),
        }

    @property
    def vocabulary(self) -> Vocabulary:
        """The class vocabulary (names, palette, embeddings) the next ``infer`` scores against."""
        self.load()
        return self._vocabulary

    def set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Score the next frames against ``vocabulary``'s class embeddings (any K >= 1).

        All or nothing: on success ``infer`` and ``vocabulary`` use the new classes; on failure
        ``VocabularyUnsupported`` says why and nothing changed. Not thread-safe against ``infer``:
        call it between two frames (the node does, from its worker thread).
        """
        self.load()
        if not isinstance(vocabulary, Vocabulary):
            raise VocabularyUnsupported(f"set_vocabulary takes a casseg_ros.text.Vocabulary, got "
                                        f"{type(vocabulary).__name__}")
        self._set_vocabulary(vocabulary)

    @property
    def batch_size(self) -> int | None:
        """Static batch size of the compiled model, or None when any batch size works."""
        return None

    # ------------------------------------------------------------------ subclass hooks
    @contextmanager
    def _runtime_call(self) -> Iterator[None]:
        """Wrap the runtime call proper of ``_run``: its wall time adds to ``last_runtime_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.last_runtime_s = (self.last_runtime_s or 0.0) + time.perf_counter() - start

    @abc.abstractmethod
    def _load(self) -> None:
        """Load the model; must set ``self._vocabulary``."""

    @abc.abstractmethod
    def _run(self, images: np.ndarray) -> InferenceResult:
        """Run a contiguous uint8 (B,H,W,3) batch: at ``input_size``, or any size with ``resize_in_graph``;
        the runtime call proper goes in ``with self._runtime_call():``."""

    def _set_vocabulary(self, vocabulary: Vocabulary) -> None:
        """Validate ``vocabulary`` for this model, then swap it in (state changes only on success)."""
        raise VocabularyUnsupported(f"backend {self.name!r} cannot change its vocabulary")

    def __repr__(self) -> str:
        d = self.describe()
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in d.items())})"
