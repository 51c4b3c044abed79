"""OpenVINO backend: the project's exported ONNX graph compiled by OpenVINO (CPU; GPU, NPU, AUTO untested).

``model_path`` is an exported ``.onnx`` or a checkpoint, resolved by ``onnx_backend.resolve_onnx``
(the one export path: the same cached ONNX, static image shape or resize-in-graph, that ONNX
Runtime runs). OpenVINO reads the ONNX itself (``Core.read_model``); no conversion tool runs.

Options (``create_backend("openvino", ..., **opts)``):

* ``openvino_device``: ``CPU`` (default), ``GPU``, ``NPU`` or ``AUTO``. Only ``CPU`` is verified: the
  build machine has no Intel GPU or NPU. A device that ``Core().available_devices`` does not list
  raises ``BackendUnavailable`` naming the devices there are. The backend's ``device`` (the host
  side, as for every backend) stays ``cpu``; ``cuda`` is refused (OpenVINO does not run on CUDA).
* ``num_threads``: CPU inference threads (default ``physical_cpu_count()``); ``PERFORMANCE_HINT``
  is ``LATENCY`` (one frame at a time, as the node runs).
* ``precision``: ``fp32`` (``INFERENCE_PRECISION_HINT`` f32: OpenVINO would otherwise pick bf16 on
  CPUs with AMX), ``bf16`` (only where the device lists BF16 in ``OPTIMIZATION_CAPABILITIES``, else
  ``BackendUnavailable`` saying so) or ``int8``: NNCF post-training quantisation
  (``nncf.quantize``, transformer preset) of the OpenVINO model, calibrated on ``calibration`` —
  a callable returning ``(frames, source)``, e.g. ``functools.partial(casseg_ros.ros.calibration_frames.
  calibration_frames, "data/demo.mcap")``, the frames ``casseg-export --int8 --calibration`` uses,
  batched by ``calibration_reader.FrameCalibrationReader`` as for the ONNX Runtime quantiser;
  called only when the cache has no int8 model for ``calibration_source`` (the frames' name, part
  of the cache key; required with ``calibration``) yet. ``calibration_frames``: at most this many
  frames (default 32, as ``casseg-export``). This package is ROS-free and cannot read a bag itself:
  without ``calibration`` and no int8 model in the cache, int8 is a ``ValueError`` saying so. ``describe()["precision"]`` is what OpenVINO
  reports it ran (``compiled.get_property("INFERENCE_PRECISION_HINT")`` read back), or ``int8``
  with the float parts' precision in ``inference_precision``. ``auto``: at load, the fastest of fp32,
  bf16 (where the device lists it) and int8 (where NNCF is installed) whose class ids agree with
  fp32 on >= 99 % of the pixels of the first 16 ``calibration`` frames (``precision_choice``:
  interleaved timing rounds); the choice, its measurements and its key (model and ONNX sha256,
  shape, device, threads, OpenVINO/NNCF versions, calibration source) are recorded in
  ``<openvino_cache_dir>/precision/*.json`` and read back by later loads, and
  ``describe()["precision_choice"]`` says what was chosen and why. Without ``calibration``: fp32
  (nothing to measure on; not recorded).
* ``openvino_cache_dir``: the compiled-model cache (default ``~/.cache/casseg_ros/openvino``, env
  ``CASSEG_OPENVINO_CACHE``); ``onnx_cache_dir``, ``batch_size``, ``resize_in_graph`` as for ONNX
  Runtime; ``static_classes`` (default True, see below).

Cache: one folder per key — the sha256 of the model file and of the ONNX graph, the input shape
(or resize-in-graph), the precision, the device, the OpenVINO version (and for int8 the
calibration source, frame count and NNCF version). It holds OpenVINO's own compiled-model cache
(``CACHE_DIR``: a second load imports the compiled blob instead of compiling,
``loaded_from_cache``), the int8 IR (``int8/model.xml``; written into a temporary folder, then
renamed into place) and ``entry.json`` with the key fields. A changed checkpoint is another key,
another folder.

Classes: the ONNX takes ``class_embeddings`` (K,E) with a dynamic K. Measured at 512x1024 on the
2-core build machine (AVX-512, no AMX; ``bench/openvino_classes.py``, alternating order), a dynamic
K cost 8-11 % latency against the same model reshaped to a static K in 3 of 3 runs, so by default
the model is reshaped to the vocabulary's K and compiled;
``set_vocabulary`` with another K compiles again (about a second; a K seen before comes from the
cache) and swaps model and request in only when that succeeded. ``static_classes=False`` keeps K
dynamic (no compile on a swap).

OpenVINO (and NNCF, for int8) are optional heavy dependencies, imported only when this backend
loads; ``create_backend`` reports them missing with the install hint. Their usage telemetry
(openvino-telemetry, Google Analytics) is kept off: see ``import_openvino``.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import json
import os
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

import numpy as np

from casseg_ros.fileio import atomic_write_bytes
from casseg_ros.parameter_rules import OPENVINO_DEVICES
from casseg_ros.parameter_rules import problem as setting_problem
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
from .calibration_reader import FrameCalibrationReader
from .engine_cache import file_sha256
from .onnx_backend import default_static_size, onnx_input_shape, resolve_onnx
from .precision_choice import AGREEMENT_FRAMES, MIN_AGREEMENT, measure_precisions, pick_precision, read_choice, \
    record_choice

__all__ = ["OPENVINO_DEVICES", "OpenVinoBackend", "default_openvino_cache_dir", "import_openvino", "openvino_missing"]

CACHE_FORMAT = 1
DEFAULT_CALIBRATION_FRAMES = 32  # as casseg-export --calibration-frames
# OpenVINO's element type names -> the project's precision names
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def openvino_missing(precision: str = "fp32") -> str | None:
    """Why backend 'openvino' cannot be built here (a package missing), or None."""
    if importlib.util.find_spec("openvino") is None:
        return "backend 'openvino' needs the Python package 'openvino' (not installed; pip install openvino)"
    if precision == "int8" and importlib.util.find_spec("nncf") is None:
        return ("backend 'openvino' with precision 'int8' needs the Python package 'nncf' to quantise the model "
                "(not installed; pip install nncf)")
    return None


def import_openvino(name: str = "openvino") -> ModuleType:
    """``import openvino`` (or ``nncf``) with their usage telemetry off.

    Both start openvino-telemetry when imported (``openvino.tools.ovc`` at ``import openvino``,
    NNCF at ``import nncf``): without a consent file it writes a client id and a usage counter into
    ``~/intel`` and, NNCF unless told otherwise, sends events to Google Analytics. Their documented
    opt-out is the command ``opt_in_out --opt_out`` (a consent file "0" in ``~/intel``: the user's
    home, a decision for the user); the one that needs no file is openvino-telemetry's CI check,
    which both tools enable (``disable_in_ci=True``) and which reads ``CI=true`` once, when the
    telemetry object is made — at that first import. So ``CI`` is ``true`` for the import only
    (then restored: other tools read it too), and ``NNCF_CI`` (NNCF's switch to its no-op
    telemetry stub) is set unless the environment sets it.
    """
    if name in sys.modules:
        return sys.modules[name]
    os.environ.setdefault("NNCF_CI", "1")
    previous = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        return importlib.import_module(name)
    finally:
        if previous is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = previous


def default_openvino_cache_dir() -> Path:
    env = os.environ.get("CASSEG_OPENVINO_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/casseg_ros/openvino").expanduser()


def device_available(device: str, available: Iterable[str]) -> bool:
    """Whether ``device`` (CPU, GPU, NPU, AUTO) can run given ``Core().available_devices`` (GPU.0, ...)."""
    available = list(available)
    if device == "AUTO":  # a virtual device: it picks among the real ones
        return bool(available)
    return any(d == device or d.startswith(device + ".") for d in available)


class OpenVinoBackend(Backend):
    name = "openvino"
    precisions = ("auto", "fp32", "bf16", "int8")

    def __init__(self, model_path, device: str = "cpu", input_size=(512, 1024), precision: str = "fp32",
                 **opts: Any):
        super().__init__(model_path, device, input_size, precision, **opts)
        if self.device != "cpu":
            raise BackendUnavailable(f"backend 'openvino' runs on Intel CPUs, GPUs and NPUs chosen with openvino_device "
                                     f"({', '.join(OPENVINO_DEVICES)}), not on device '{self.device}' (CUDA): use "
                                     f"backend 'tensorrt' or 'onnxruntime' there")
        self.openvino_device = str(opts.get("openvino_device") or "CPU")
        reason = setting_problem("openvino_device", self.openvino_device)  # the node's and CLI's rule
        if reason:
            raise ValueError(reason)
        self._batch = int(opts.get("batch_size", 1))
        self.num_threads = int(opts.get("num_threads") or physical_cpu_count())
        self.static_classes = bool(opts.get("static_classes", True))
        self.cache_root = Path(opts.get("openvino_cache_dir") or default_openvino_cache_dir()).expanduser()
        self._calibration: Callable[[], tuple[Iterable[np.ndarray], str]] | None = opts.get("calibration")
        self.calibration_source: str | None = opts.get("calibration_source")
        self.calibration_frames = int(opts.get("calibration_frames") or DEFAULT_CALIBRATION_FRAMES)
        if self._calibration is not None and not self.calibration_source:
            raise ValueError("calibration needs calibration_source, the name of its frames (a bag:topic, a folder): "
                             "the int8 model is cached under it")
        self.loaded_from_cache: bool | None = None
        self._model_key: dict[str, Any] | None = None  # _model_fields, hashed once
        self.inference_precision: str | None = None

    @property
    def batch_size(self) -> int:
        return self._batch

    @property
    def compiled_model(self):
        """The ``openvino.CompiledModel`` the next ``infer`` runs (properties: ``get_property``)."""
        self.load()
        return self._compiled

    # ------------------------------------------------------------------ load
    def _load(self) -> None:
        ov = import_openvino()
        self._ov = ov
        self.core = ov.Core()
        available = self.core.available_devices
        if not device_available(self.openvino_device, available):
            raise BackendUnavailable(f"backend 'openvino': device '{self.openvino_device}' is not available here; "
                                     f"OpenVINO {ov.__version__} sees {', '.join(available) or 'no devices'}")
        if self.precision == "bf16":
            reason = self._bf16_problem()
            if reason:
                raise BackendUnavailable(f"backend 'openvino' with precision 'bf16': {reason}; use fp32 or int8")
        if self.input_size is None:  # static graph: the model's own size (.onnx shape / config img_size)
            self.input_size = default_static_size(self.model_path)
        onnx_path, self._vocabulary = resolve_onnx(self.model_path, self.input_size, self._batch,
                                                   cache_dir=self.opts.get("onnx_cache_dir"),
                                                   resize_in_graph=self.resize_in_graph)
        self.onnx_path = onnx_path
        if self.precision == "auto":
            self.precision, self.precision_choice = self._choose_precision(onnx_path)
        self.cache_dir = self._cache_entry(onnx_path)
        model = self._int8_model(onnx_path) if self.precision == "int8" else self.core.read_model(str(onnx_path))
        inputs = {i.get_any_name(): i for i in model.inputs}
        outputs = sorted(o.get_any_name() for o in model.outputs)
        if sorted(inputs) not in ([INPUT_NAME], sorted([INPUT_NAME, CLASS_EMBEDDINGS_NAME])) \
                or outputs != sorted(OUTPUT_NAMES):
            raise RuntimeError(f"{onnx_path} is not a segmentation export (inputs {sorted(inputs)}, outputs {outputs})")
        classes = inputs.get(CLASS_EMBEDDINGS_NAME)
        # (K,E): E is static (the text projection's width); None = an export without the class input
        self.text_dim = int(classes.get_partial_shape()[1].get_length()) if classes is not None else None
        self._model = model  # K dynamic; each compile reshapes a clone of it
        self._compiled, self._request, self._class_feed = self._compile(self._vocabulary)

    def _bf16_problem(self) -> str | None:
        """Why the device cannot run bf16, or None (AUTO: None, it has no capabilities of its own;
        the device it picks reports the precision it ran)."""
        if self.openvino_device == "AUTO":
            return None
        device = next(d for d in self.core.available_devices if d.split(".")[0] == self.openvino_device)
        caps = list(self.core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        if "BF16" in caps:
            return None
        name = self.core.get_property(device, "FULL_DEVICE_NAME")
        return (f"{device} ({name}) has no bf16 support (OPTIMIZATION_CAPABILITIES: {', '.join(caps)}; bf16 needs "
                f"AVX512-BF16 or AMX on a CPU)")

    def _choose_precision(self, onnx_path: Path) -> tuple[str, str]:
        """Precision auto: (precision, reason). Read from the record of this key, or measured on the
        calibration frames (``precision_choice``) and recorded; fp32 without calibration frames."""
        if self._calibration is None:
            return "fp32", ("auto: fp32 (no calibration frames to measure bf16/int8 agreement on: give a bag or an "
                            "image folder as calibration)")
        h, w = self.input_size
        key = {**self._model_fields(onnx_path), "nncf": _nncf_version(), "calibration": self.calibration_source,
               "calibration_frames": self.calibration_frames, "agreement_frames": AGREEMENT_FRAMES,
               "min_agreement": MIN_AGREEMENT, "num_threads": self.num_threads}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        record = self.cache_root / "precision" / f"{self.model_path.stem}-{h}x{w}-{self.openvino_device.lower()}-{digest}.json"
        recorded = read_choice(record, key)
        if recorded is not None:
            return recorded[0], f"auto: {recorded[0]} ({recorded[1]})"
        frames_iter, source = self._calibration()
        frames = [np.asarray(f, dtype=np.uint8) for f in itertools.islice(frames_iter, self.calibration_frames)]
        if not frames:
            raise ValueError(f"precision auto: no calibration frames in {source}")
        candidates = ["fp32"]
        if self.openvino_device != "AUTO" and self._bf16_problem() is None:
            candidates.append("bf16")
        if importlib.util.find_spec("nncf") is not None:
            candidates.append("int8")
        opts = {**self.opts, "calibration": lambda: (iter(frames), source)}  # the frames read once, shared
        trials = measure_precisions(
            lambda p: OpenVinoBackend(self.model_path, self.device, self.input_size, p, **opts),
            candidates, frames[:AGREEMENT_FRAMES])
        precision, reason = pick_precision(trials)
        record_choice(record, key, precision, reason, trials)
        return precision, f"auto: {precision} ({reason}; measured on {min(len(frames), AGREEMENT_FRAMES)} frames of {source})"

    def _model_fields(self, onnx_path: Path) -> dict[str, Any]:
        """What every cache key of this backend starts with: the model and its ONNX (sha256), the
        input shape, the device and the OpenVINO version. Hashed once per load (the precision record
        and the cache entry both take it)."""
        if self._model_key is None:
            h, w = self.input_size
            self._model_key = {
                "format": CACHE_FORMAT, "model_sha256": file_sha256(self.model_path),
                "onnx_sha256": file_sha256(onnx_path),
                "input_shape": [self._batch, -1, -1, 3] if self.resize_in_graph else [self._batch, h, w, 3],
                "model_size": [h, w], "device": self.openvino_device, "openvino": self._ov.__version__}
        return self._model_key

    def _cache_entry(self, onnx_path: Path) -> Path:
        """The folder of this model/shape/precision/device/OpenVINO version (created with its entry.json)."""
        h, w = self.input_size
        fields: dict[str, Any] = {**self._model_fields(onnx_path), "precision": self.precision}
        if self.precision == "int8":
            fields.update(calibration=self.calibration_source, calibration_frames=self.calibration_frames,
                          nncf=_nncf_version())
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
        kind = "rig" if self.resize_in_graph else "b"
        entry = self.cache_root / f"{self.model_path.stem}-{kind}{self._batch}-{h}x{w}-{self.precision}-" \
                                  f"{self.openvino_device.lower()}-{digest}"
        if not (entry / "entry.json").is_file():
            entry.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(entry / "entry.json", json.dumps(fields, indent=1, sort_keys=True).encode())
        return entry

    def _int8_model(self, onnx_path: Path):
        """The NNCF-quantised model from the cache entry, quantised (and saved) first on a miss."""
        xml = self.cache_dir / "int8" / "model.xml"
        if xml.is_file():
            return self.core.read_model(str(xml))
        if self._calibration is None:
            raise ValueError(f"precision 'int8' on backend 'openvino' quantises the model on calibration frames: pass "
                             f"calibration=<callable returning (frames, source)> (casseg_ros.ros.calibration_frames."
                             f"calibration_frames over a bag or an image folder); {self.cache_dir} has no int8 "
                             f"model for source {self.calibration_source!r} yet")
        nncf = import_openvino("nncf")
        frames, source = self._calibration()
        model = self.core.read_model(str(onnx_path))
        # the batches of the ONNX Runtime int8 export: frames resized to the model input as the
        # backends do (at the camera's size for a resize-in-graph graph), with the export's own classes
        classes = self._vocabulary.embeddings if self._vocabulary is not None else None
        batches = list(FrameCalibrationReader(frames, onnx_input_shape(onnx_path), self.calibration_frames,
                                              classes).batches())
        if not batches:
            raise ValueError(f"no calibration frames from {source} (the graph takes batches of {self._batch})")
        quantized = nncf.quantize(model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(batches))
        quantized.set_rt_info(json.dumps({"source": source, "frames": len(batches) * self._batch}),
                              ["casseg", "calibration"])
        # written into a temporary folder beside the entry, then renamed into place: a crash
        # leaves no half-written IR where a later load would find it
        tmp = Path(tempfile.mkdtemp(prefix=".int8-", suffix=".tmp", dir=self.cache_dir))
        try:
            self._ov.save_model(quantized, str(tmp / "model.xml"), compress_to_fp16=False)
            os.replace(tmp, xml.parent)
        except OSError:
            if not xml.is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.core.read_model(str(xml))

    def _compile(self, vocabulary: Vocabulary | None):
        """(compiled model, infer request, class feed) for ``vocabulary``; nothing of self changes."""
        model = self._model
        feed: dict[str, np.ndarray] = {}
        if self.text_dim is not None and vocabulary is not None:
            feed = {CLASS_EMBEDDINGS_NAME: np.ascontiguousarray(vocabulary.embeddings, dtype=np.float32)}
            if self.static_classes:
                model = model.clone()
                model.reshape({CLASS_EMBEDDINGS_NAME: list(feed[CLASS_EMBEDDINGS_NAME].shape)})
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "CACHE_DIR": str(self.cache_dir / "blobs")}
        if self.openvino_device in ("CPU", "AUTO"):
            config["INFERENCE_NUM_THREADS"] = self.num_threads
        # int8: the quantised ops run int8, the rest f32 (as fp32)
        config["INFERENCE_PRECISION_HINT"] = "bf16" if self.precision == "bf16" else "f32"
        compiled = self.core.compile_model(model, self.openvino_device, config)
        self.loaded_from_cache = bool(_property(compiled, "LOADED_FROM_CACHE", False))
        ran = _property(compiled, "INFERENCE_PRECISION_HINT", None)
        self.inference_precision = _PRECISION_NAMES.get(ran.get_type_name(), ran.get_type_name()) if ran else None
        return compiled, compiled.create_infer_request(), feed

    # ------------------------------------------------------------------ run
    def _set_vocabulary(self, vocabulary: Vocabulary) -> None:
        if self.text_dim is None:
            raise VocabularyUnsupported(
                f"{self.onnx_path} was exported before run-time vocabularies (it has no '{CLASS_EMBEDDINGS_NAME}' "
                f"input, its classes are fixed): export it again with casseg-export, or give the backend the checkpoint")
        check_embedding_dim(vocabulary, self.text_dim, str(self.onnx_path))
        if self.static_classes and len(vocabulary.names) != len(self._vocabulary.names):
            compiled, request, feed = self._compile(vocabulary)  # another K: compile first, swap after
        else:
            compiled, request = self._compiled, self._request
            feed = {CLASS_EMBEDDINGS_NAME: np.ascontiguousarray(vocabulary.embeddings, dtype=np.float32)}
        self._vocabulary, self._compiled, self._request, self._class_feed = vocabulary, compiled, request, feed

    def _run(self, images: np.ndarray) -> InferenceResult:
        with self._runtime_call():
            out = self._request.infer({INPUT_NAME: images, **self._class_feed}, share_inputs=True)
        named = {k.get_any_name(): v for k, v in out.items()}
        ids, conf, scores, adj = (named[n] for n in OUTPUT_NAMES)
        return InferenceResult(ids.astype(np.int32, copy=False), conf, scores, adj)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["openvino_device"] = self.openvino_device
        compiled = getattr(self, "_compiled", None)
        if compiled is not None:
            d["execution_devices"] = list(_property(compiled, "EXECUTION_DEVICES", []))
            if self.precision != "int8" and self.inference_precision:
                d["precision"] = self.inference_precision  # what OpenVINO ran, read back
            d["inference_precision"] = self.inference_precision
        d["num_threads"] = self.num_threads
        d["static_classes"] = self.static_classes
        return d


def _property(compiled, name: str, default):
    try:
        return compiled.get_property(name)
    except RuntimeError:  # a device that does not report this property
        return default


def _nncf_version() -> str | None:
    """NNCF's version where it is installed (part of the int8 and precision-record keys), else None."""
    return _distribution_version("nncf") if importlib.util.find_spec("nncf") else None


def _distribution_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
