"""ONNX Runtime backend: TensorRT EP -> CUDA EP -> CPU EP (whichever this onnxruntime build has).

``model_path`` may be an exported ``.onnx`` (static shape) or a checkpoint; a checkpoint is exported
on demand into a cache (default ``~/.cache/casseg_ros/onnx``, env ``CASSEG_ONNX_CACHE``) keyed by
the checkpoint's sha256, the input shape, the opset, the export version and the torch version.
With ``resize_in_graph=True`` it is the resize-in-graph export (``model_export``; images of any
height and width, one session for every camera size), cached under its model size
(``input_size``); an ``.onnx`` must then be one (``casseg-export --resize-in-graph``).

CPU session: intra-op threads = physical cores (``num_threads`` to override), inter-op 1,
sequential execution, ``ORT_ENABLE_ALL`` graph optimisation, no busy-waiting of idle threads
(``spin=True`` to turn ORT's default spinning back on); with ``optimized_cache=True`` the
optimised graph is saved next to the ONNX and reused (it is specific to this ORT version and CPU).

The graph's second input ``class_embeddings`` (K,E) is fed the current vocabulary's embeddings on
every run, so ``set_vocabulary`` needs no new export or session. A graph exported before export
version 4 has no such input: it still runs with its built-in classes and refuses ``set_vocabulary``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from casseg_ros.model.checkpoint import check_safetensors_file
from casseg_ros.text.vocabulary import Vocabulary

from .base import (
    CLASS_EMBEDDINGS_NAME,
    INPUT_NAME,
    OUTPUT_NAMES,
    Backend,
    BackendUnavailable,
    InferenceResult,
    VocabularyUnsupported,
    check_embedding_dim,
    physical_cpu_count,
)
from .engine_cache import file_sha256
from .model_export import (
    EXPORT_VERSION,
    META_KIND,
    export_checkpoint,
    onnx_metadata,
    onnx_model_size,
    onnx_precision,
    onnx_vocabulary,
    read_onnx,
)

DEFAULT_OPSET = 17


def default_onnx_cache_dir() -> Path:
    env = os.environ.get("CASSEG_ONNX_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/casseg_ros/onnx").expanduser()


def onnx_input_shape(path: str | os.PathLike) -> list[int]:
    proto = read_onnx(path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def default_static_size(model_path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) to run a static-shape backend at when the caller gives no input_size: the .onnx's own
    input shape (a resize-in-graph export's model size), or the checkpoint's nominal
    ``model_config.img_size`` (read from its metadata only)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    if model_path.suffix == ".onnx":
        model_size = onnx_model_size(onnx_metadata(model_path))
        if model_size is not None:
            return model_size
        shape = onnx_input_shape(model_path)
        if len(shape) == 4 and min(shape[1:3]) > 0:
            return int(shape[1]), int(shape[2])
        raise ValueError(f"{model_path} has no static (B,H,W,3) input shape: {shape}")
    if model_path.suffix == ".safetensors":
        check_safetensors_file(model_path)
        with safe_open(str(model_path), framework="np") as handle:
            meta = handle.metadata() or {}
        try:
            size = json.loads(meta["model_config"])["img_size"]
            return int(size[0]), int(size[1])
        except (KeyError, ValueError, TypeError, IndexError):
            pass
    raise ValueError(f"cannot tell the input size of {model_path}; pass input_size=(H, W)")


def resolve_onnx(model_path: str | os.PathLike, input_size, batch_size: int = 1,
                 cache_dir: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                 resize_in_graph: bool = False) -> tuple[Path, Vocabulary | None]:
    """(path of a segmentation ONNX for ``input_size``, Vocabulary): a static-shape one, or with
    ``resize_in_graph`` one that takes any image size and runs the model at ``input_size``.

    An ``.onnx`` is used as it is (its input shape must be (batch_size, H, W, 3), or for
    ``resize_in_graph`` its model size ``input_size``); a checkpoint is exported into the cache
    unless an export for the same key is already there.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    h, w = int(input_size[0]), int(input_size[1])
    if model_path.suffix == ".onnx":
        _check_onnx_shape(model_path, (h, w), batch_size, resize_in_graph)
        onnx_path = model_path
    else:
        shape = [batch_size, h, w, 3]
        key_fields = {"ckpt": file_sha256(model_path), "shape": shape, "opset": opset, "export": EXPORT_VERSION,
                      "torch": torch.__version__}
        if resize_in_graph:  # a field only then: the static exports keep their cache keys
            key_fields["resize_in_graph"] = True
        key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
        root = Path(cache_dir).expanduser() if cache_dir else default_onnx_cache_dir()
        kind = "rig" if resize_in_graph else "b"
        onnx_path = root / f"{model_path.stem}-{kind}{batch_size}-{h}x{w}-{key}.onnx"
        if not onnx_path.is_file():
            export_checkpoint(model_path, onnx_path, (h, w), batch_size, opset, resize_in_graph=resize_in_graph)
    meta = onnx_metadata(onnx_path)
    if meta.get(META_KIND, "segmentation") != "segmentation":
        raise ValueError(f"{onnx_path} is a {meta.get(META_KIND)!r} export, not a segmentation export")
    return onnx_path, onnx_vocabulary(meta, str(onnx_path))


def _check_onnx_shape(path: Path, size: tuple[int, int], batch_size: int, resize_in_graph: bool) -> None:
    """ValueError unless the .onnx at ``path`` runs ``size`` = (H, W) the way the caller asks."""
    h, w = size
    shape, model_size = onnx_input_shape(path), onnx_model_size(onnx_metadata(path))
    if resize_in_graph:
        if model_size is None:
            raise ValueError(f"{path} has a static input shape {shape} (no resize in its graph); export it with "
                             f"casseg-export --resize-in-graph, pass the checkpoint, or drop resize_in_graph")
        if model_size != (h, w) or shape[0] != batch_size:
            raise ValueError(f"{path} runs the model at {list(model_size)} with batch {shape[0]}, but input_size="
                             f"{[h, w]} and batch_size={batch_size} were asked for")
    elif shape != [batch_size, h, w, 3]:
        hint = " (it resizes in its graph: pass resize_in_graph=True)" if model_size is not None else ""
        raise ValueError(f"{path} has input shape {shape}{hint}, but input_size={[h, w]} and batch_size="
                         f"{batch_size} need {[batch_size, h, w, 3]}; export it again with "
                         f"casseg-export --input-size {h} {w} or pass the checkpoint instead")


def select_providers(device: str, precision: str = "fp32", available: list[str] | None = None,
                     trt_cache_dir: str | None = None) -> list:
    """Provider list for ``InferenceSession``: TensorRT EP -> CUDA EP -> CPU EP, filtered by what
    this onnxruntime build offers; CPU only for device 'cpu'. Raises BackendUnavailable when a CUDA
    device is requested but no GPU provider exists."""
    if available is None:
        import onnxruntime as ort  # optional dependency: create_backend reports it missing

        available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    dev_id = int(device.split(":")[1]) if ":" in device else 0
    chosen: list = []
    if "TensorrtExecutionProvider" in available:
        trt_opts = {"device_id": dev_id, "trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": trt_cache_dir or str(Path("~/.cache/casseg_ros/ort_trt").expanduser())}
        if precision == "bf16":  # only newer ORT builds know this option; pass it only when asked for
            trt_opts["trt_bf16_enable"] = True
        chosen.append(("TensorrtExecutionProvider", trt_opts))
    if "CUDAExecutionProvider" in available:
        chosen.append(("CUDAExecutionProvider", {"device_id": dev_id}))
    if not chosen:
        raise BackendUnavailable(
            f"backend 'onnxruntime' with device '{device}' needs an onnxruntime build with the CUDA or "
            f"TensorRT execution provider (pip install onnxruntime-gpu) and a CUDA GPU; this onnxruntime "
            f"offers only {available}")
    chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_path, device: str = "cpu", input_size=(512, 1024), precision: str = "fp32",
                 **opts: Any):
        super().__init__(model_path, device, input_size, precision, **opts)
        if device == "cpu" and precision not in ("fp32", "int8"):
            raise BackendUnavailable(f"backend 'onnxruntime' on device 'cpu' runs fp32 and int8 (QDQ) exports "
                                     f"(asked for {precision})")
        self._batch = int(opts.get("batch_size", 1))
        self.providers = opts.get("providers") or select_providers(self.device, precision,
                                                                   trt_cache_dir=opts.get("ort_trt_cache_dir"))
        self.num_threads = int(opts.get("num_threads") or physical_cpu_count())

    @property
    def batch_size(self) -> int:
        return self._batch

    def session_options(self):
        import onnxruntime as ort  # optional dependency: create_backend reports it missing

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = self.num_threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Idle intra-op threads busy-wait by default in ORT. On a robot computer the node shares the
        # cores with ROS executors, cameras and other nodes, and spinning threads steal their time (on
        # the 2-core shared bench machine spinning made ORT ~1.4x slower and slowed torch run after it),
        # so spinning is off unless spin=True.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.opts.get("spin") else "0")
        return so

    def _load(self) -> None:
        import onnxruntime as ort  # optional dependency: create_backend reports it missing

        if self.input_size is None:  # static graph: the model's own size (.onnx shape / config img_size)
            self.input_size = default_static_size(self.model_path)
        onnx_path, self._vocabulary = resolve_onnx(self.model_path, self.input_size, self._batch,
                                                   cache_dir=self.opts.get("onnx_cache_dir"),
                                                   resize_in_graph=self.resize_in_graph)
        self.onnx_path = onnx_path
        # an int8 export loads like any other; precision="int8" only insists that it is one
        self.model_precision = onnx_precision(onnx_metadata(onnx_path))
        if self.precision == "int8" and self.model_precision != "int8":
            raise BackendUnavailable(f"precision 'int8' needs an int8 export (casseg-export --int8 --calibration ...); "
                                     f"{self.model_path} is {self.model_precision}")
        so = self.session_options()
        load_path = onnx_path
        if self.opts.get("optimized_cache") and self.device == "cpu":
            opt_path = onnx_path.with_name(f"{onnx_path.stem}.ort{ort.__version__}-cpu-opt.onnx")
            if opt_path.is_file():
                load_path = opt_path
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            else:
                so.optimized_model_filepath = str(opt_path)
        self.session = ort.InferenceSession(str(load_path), so, providers=self.providers)
        names = [o.name for o in self.session.get_outputs()]
        inputs = {i.name: i for i in self.session.get_inputs()}
        if sorted(inputs) not in ([INPUT_NAME], sorted([INPUT_NAME, CLASS_EMBEDDINGS_NAME])) \
                or sorted(names) != sorted(OUTPUT_NAMES):
            raise RuntimeError(f"{onnx_path} is not a segmentation export (inputs {sorted(inputs)}, outputs {names})")
        self._out_names = list(OUTPUT_NAMES)
        self.active_providers = self.session.get_providers()
        # (K,E) input: E is static in the graph (the text projection's width); None = an old export
        classes = inputs.get(CLASS_EMBEDDINGS_NAME)
        self.text_dim = int(classes.shape[1]) if classes is not None else None
        self._class_feed = self._feed(self._vocabulary) if classes is not None else {}

    @staticmethod
    def _feed(vocabulary: Vocabulary) -> dict[str, np.ndarray]:
        return {CLASS_EMBEDDINGS_NAME: np.ascontiguousarray(vocabulary.embeddings, dtype=np.float32)}

    def _set_vocabulary(self, vocabulary: Vocabulary) -> None:
        if self.text_dim is None:
            raise VocabularyUnsupported(
                f"{self.onnx_path} was exported before run-time vocabularies (it has no "
                f"'{CLASS_EMBEDDINGS_NAME}' input, its classes are fixed): export it again with casseg-export, "
                f"or give the backend the checkpoint")
        check_embedding_dim(vocabulary, self.text_dim, str(self.onnx_path))
        feed = self._feed(vocabulary)
        self._vocabulary, self._class_feed = vocabulary, feed

    def _run(self, images: np.ndarray) -> InferenceResult:
        with self._runtime_call():
            ids, conf, scores, adj = self.session.run(self._out_names, {INPUT_NAME: images, **self._class_feed})
        return InferenceResult(ids, conf, scores, adj)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        providers = getattr(self, "active_providers", None)
        d["providers"] = providers
        if providers and providers[0] != "TensorrtExecutionProvider":
            d["precision"] = self.model_precision  # CUDA/CPU EPs run the graph as exported (fp32 or int8 QDQ)
        d["num_threads"] = self.num_threads if self.device == "cpu" else None
        return d
