"""TensorRT backend (TensorRT 10 Python API; CUDA buffers are torch tensors).

UNVERIFIED: no GPU / TensorRT is available where this was written. The pure parts (engine-cache key,
invalidation, atomic writes) are covered by tests; ``build_engine`` and ``TensorRTBackend._load`` /
``_run`` have not been run. See README "Unverified".

Flow: checkpoint -> (cached) static-shape ONNX (``onnx_backend.resolve_onnx``) -> engine cache lookup
(key: ONNX sha256, input shape, precision, TensorRT version, GPU name, workspace) -> on a miss
``build_engine`` (OnnxParser, workspace limit, the flags of ``builder_settings``,
build_serialized_network) and an atomic cache write -> deserialize -> one execution context with I/O bound by tensor name to
preallocated torch CUDA tensors -> ``warmup`` before the first frame.

int8 is explicit quantisation from the int8 QDQ export (``casseg-export --int8``; TensorRT 10 has
deprecated calibrators, none is used): the Q/DQ nodes say which tensors are int8. Default: a
weakly typed network with ``BuilderFlag.INT8`` + ``BuilderFlag.FP16``, so the layers the QDQ graph
keeps in float may run in fp16; ``strongly_typed=True``: a ``STRONGLY_TYPED`` network with no
precision flag (TensorRT's recommendation for QDQ graphs; float layers then run in fp32 as written).

Classes: the graph's ``class_embeddings`` input (K,E) is the one dynamic axis. The engine is built
with one optimisation profile over K, ``class_profile(K, max_classes)`` = (1, K of the model's own
vocabulary, ``max_classes``, default 256), and ``set_vocabulary`` sets the input shape of the
execution context to the new K (no rebuild) with freshly bound K-sized buffers; a K outside the
profile is refused (``VocabularyUnsupported``). UNVERIFIED like the rest of this module.

``resize_in_graph=True``: the engine is built from the resize-in-graph export (images of any height
and width, resized to the model size ``input_size`` in the graph), with the image axes in the same
optimisation profile as K: ``image_profile`` = (``min_image_size`` default 64x64, the model size,
``max_image_size`` default 2160x3840). A new camera size sets the input shape of the execution
context and binds buffers of that size (once per size change, not per frame). UNVERIFIED too.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

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
)
from .engine_cache import EngineCache, EngineCacheKey
from .model_export import onnx_metadata, onnx_precision
from .onnx_backend import default_static_size, resolve_onnx

DEFAULT_WORKSPACE = 4 << 30  # 4 GiB
DEFAULT_MAX_CLASSES = 256  # top of the class-count profile (a mono8 mask holds 255 classes + unknown)
CLASS_OUTPUTS = ("class_scores", "adjacency")  # the outputs whose shape follows the class count K
PIXEL_OUTPUTS = ("class_ids", "confidence")  # the outputs at the images' (H, W)
DEFAULT_MIN_IMAGE = (64, 64)  # smallest camera image of a resize-in-graph engine's profile
DEFAULT_MAX_IMAGE = (2160, 3840)  # largest: 4K UHD

Size = tuple[int, int]


def image_profile(model_size: Size, min_size: Size = DEFAULT_MIN_IMAGE,
                  max_size: Size = DEFAULT_MAX_IMAGE) -> tuple[Size, Size, Size]:
    """(min, opt, max) (H, W) of a resize-in-graph engine's images: tuned for the model size."""
    low, opt, high = (tuple(int(v) for v in s) for s in (min_size, model_size, max_size))
    if not (low[0] <= high[0] and low[1] <= high[1]):
        raise ValueError(f"min_image_size {list(low)} must not exceed max_image_size {list(high)}")
    # opt must lie inside [min, max] per axis, or TensorRT rejects the profile
    opt = (min(max(opt[0], low[0]), high[0]), min(max(opt[1], low[1]), high[1]))
    return low, opt, high


def class_profile(classes: int, max_classes: int = DEFAULT_MAX_CLASSES) -> tuple[int, int, int]:
    """(min, opt, max) class count of the engine's optimisation profile: any K from 1 to
    ``max_classes``, tuned for ``classes`` (the model's own vocabulary)."""
    if not 1 <= classes <= max_classes:
        raise ValueError(f"the model has {classes} classes; max_classes={max_classes} must be at least that")
    return 1, int(classes), int(max_classes)


def check_class_count(classes: int, profile: tuple[int, int, int]) -> None:
    """VocabularyUnsupported unless the engine's class profile (min, opt, max) covers ``classes``."""
    low, _, high = profile
    if not low <= classes <= high:
        raise VocabularyUnsupported(f"{classes} classes is outside the TensorRT engine's class-count profile "
                                    f"[{low}, {high}]; rebuild the engine with max_classes >= {classes}")


def tensorrt_missing() -> str | None:
    """None when TensorRT can run here, else a message naming what is missing."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the Python package 'tensorrt' (not installed; pip install tensorrt)")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if not missing:
        return None
    return "backend 'tensorrt' needs " + " and ".join(missing)


def builder_settings(precision: str, strongly_typed: bool = False) -> tuple[list[str], list[str]]:
    """(``trt.NetworkDefinitionCreationFlag`` names, ``trt.BuilderFlag`` names) for ``precision``."""
    if precision == "int8":
        if strongly_typed:  # tensor types come from the QDQ graph; precision flags are not allowed with it
            return ["STRONGLY_TYPED"], []
        return [], ["INT8", "FP16"]  # INT8 honours the Q/DQ nodes; FP16 is the float layers' fallback
    if strongly_typed:
        raise ValueError("strongly_typed applies to int8 (QDQ) graphs only")
    flags = {"fp32": [], "fp16": ["FP16"], "bf16": ["BF16"]}
    if precision not in flags:
        raise ValueError(f"TensorRT precision must be one of fp32, fp16, bf16, int8 (got {precision!r})")
    return [], flags[precision]


def build_engine(onnx_bytes: bytes, precision: str = "fp16", workspace_bytes: int = DEFAULT_WORKSPACE,
                 logger=None, strongly_typed: bool = False,
                 classes: tuple[int, int, int] | None = None,
                 images: tuple[Size, Size, Size] | None = None) -> bytes:
    """Parse an ONNX model and build a serialized TensorRT engine; int8 needs a QDQ graph (explicit
    quantisation, no calibrator). One optimisation profile covers the dynamic inputs: K =
    ``classes`` (min, opt, max) when the graph takes ``class_embeddings`` (K,E), and the images'
    (H, W) = ``images`` (min, opt, max; ``image_profile``) when their height and width are dynamic
    (a resize-in-graph export); each is needed then."""
    import tensorrt as trt  # optional dependency (GPU machines only): tensorrt_missing() names it

    network_flags, builder_flags = builder_settings(precision, strongly_typed)
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = 0  # TensorRT 10: explicit batch is the only mode
    for name in network_flags:
        creation |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    dynamic_images = INPUT_NAME in inputs and -1 in tuple(inputs[INPUT_NAME].shape)
    if CLASS_EMBEDDINGS_NAME in inputs or dynamic_images:
        profile = builder.create_optimization_profile()
        if CLASS_EMBEDDINGS_NAME in inputs:
            if classes is None:
                raise ValueError(f"the graph takes '{CLASS_EMBEDDINGS_NAME}' (dynamic class count): give classes="
                                 f"(min, opt, max)")
            dim = int(inputs[CLASS_EMBEDDINGS_NAME].shape[1])  # E is static; K is -1 in the parsed network
            profile.set_shape(CLASS_EMBEDDINGS_NAME, (classes[0], dim), (classes[1], dim), (classes[2], dim))
        if dynamic_images:
            if images is None:
                raise ValueError(f"the graph's '{INPUT_NAME}' have a dynamic height and width (resize in the "
                                 f"graph): give images=image_profile(model_size)")
            batch = int(inputs[INPUT_NAME].shape[0])  # static
            profile.set_shape(INPUT_NAME, *((batch, h, w, 3) for h, w in images))
        config.add_optimization_profile(profile)
    if "FP16" in builder_flags and not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in TRT 10
        raise BackendUnavailable(f"backend 'tensorrt' precision '{precision}' needs a GPU with fast FP16")
    for name in builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (build_serialized_network returned None)")
    return bytes(serialized)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, model_path, device: str = "cuda", input_size=(512, 1024), precision: str = "fp16",
                 **opts: Any):
        if device == "cpu":
            missing = tensorrt_missing()
            raise BackendUnavailable("backend 'tensorrt' runs only on device 'cuda' (got device 'cpu')"
                                     + (f"; it also needs {missing.split(' needs ', 1)[1]}" if missing else ""))
        super().__init__(model_path, device, input_size, precision, **opts)
        missing = tensorrt_missing()
        if missing:
            raise BackendUnavailable(missing)
        self._batch = int(opts.get("batch_size", 1))
        self.engine_cache = EngineCache(opts.get("engine_cache_dir"))
        self.workspace_bytes = int(opts.get("workspace_bytes", DEFAULT_WORKSPACE))
        self.strongly_typed = bool(opts.get("strongly_typed", False))
        self.max_classes = int(opts.get("max_classes", DEFAULT_MAX_CLASSES))
        self.min_image_size = tuple(opts.get("min_image_size", DEFAULT_MIN_IMAGE))
        self.max_image_size = tuple(opts.get("max_image_size", DEFAULT_MAX_IMAGE))
        builder_settings(precision, self.strongly_typed)  # a bad combination fails here, not after the export
        self.engine_was_cached: bool | None = None

    @property
    def batch_size(self) -> int:
        return self._batch

    def _load(self) -> None:
        import tensorrt as trt  # optional dependency (GPU machines only): tensorrt_missing() names it

        if self.input_size is None:  # static engine: the model's own size (.onnx shape / config img_size)
            self.input_size = default_static_size(self.model_path)
        onnx_path, self._vocabulary = resolve_onnx(self.model_path, self.input_size, self._batch,
                                                   cache_dir=self.opts.get("onnx_cache_dir"),
                                                   resize_in_graph=self.resize_in_graph)
        model_precision = onnx_precision(onnx_metadata(onnx_path))
        if (self.precision == "int8") != (model_precision == "int8"):
            raise BackendUnavailable(f"backend 'tensorrt' precision '{self.precision}' cannot build from a "
                                     f"{model_precision} export ({onnx_path}); int8 engines come from the int8 QDQ "
                                     f"export (casseg-export --int8), the other precisions from the fp32 one")
        dev = torch.device(self.device)
        torch.cuda.set_device(dev)
        gpu = torch.cuda.get_device_name(dev)
        cc = ".".join(map(str, torch.cuda.get_device_capability(dev)))
        classes = class_profile(len(self._vocabulary), self.max_classes)
        images, extra = None, {}
        if self.resize_in_graph:  # a key field only then: static engines keep their cache keys
            images = image_profile(self.input_size, self.min_image_size, self.max_image_size)
            extra["images"] = "/".join(f"{h}x{w}" for h, w in images)
        key = EngineCacheKey.create(onnx_path, (self._batch, *self.input_size, 3), self.precision,
                                    trt.__version__, gpu, compute_capability=cc,
                                    workspace=self.workspace_bytes, strongly_typed=self.strongly_typed,
                                    classes="/".join(map(str, classes)), **extra)
        self.cache_key = key
        logger = trt.Logger(trt.Logger.WARNING)
        data, self.engine_was_cached = self.engine_cache.get_or_build(
            key, lambda: build_engine(onnx_path.read_bytes(), self.precision, self.workspace_bytes, logger,
                                      self.strongly_typed, classes, images))
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:  # e.g. corrupted or from another TensorRT build: drop it and rebuild once
            self.engine_cache._remove(key)
            data = build_engine(onnx_path.read_bytes(), self.precision, self.workspace_bytes, logger,
                                self.strongly_typed, classes, images)
            self.engine_cache.store(key, data)
            self.engine_was_cached = False
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise RuntimeError("TensorRT could not deserialize the freshly built engine")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream(dev)
        self._dev = dev
        self._buffers: dict[str, torch.Tensor] = {}
        self._host: dict[str, torch.Tensor] = {}  # pinned host twins of the input and output buffers
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT else outputs).append(tname)
        if sorted(inputs) not in ([INPUT_NAME], sorted([INPUT_NAME, CLASS_EMBEDDINGS_NAME])) \
                or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise RuntimeError(f"unexpected engine I/O: inputs {inputs}, outputs {outputs}; expected "
                               f"{[INPUT_NAME, CLASS_EMBEDDINGS_NAME]} and {list(OUTPUT_NAMES)}")
        # (min, opt, max) class count of profile 0; None: an engine of an old export, classes fixed
        self.class_profile, self.text_dim = None, None
        if CLASS_EMBEDDINGS_NAME in inputs:
            low, opt, high = engine.get_tensor_profile_shape(CLASS_EMBEDDINGS_NAME, 0)
            self.class_profile = (int(low[0]), int(opt[0]), int(high[0]))
            self.text_dim = int(engine.get_tensor_shape(CLASS_EMBEDDINGS_NAME)[1])
            buffers, host = self._class_buffers(self._vocabulary)
        else:
            buffers, host = {}, {}
        image_buffers, image_host = self._image_buffers(self.input_size)
        buffers.update(image_buffers)
        host.update(image_host)
        for tname in inputs + outputs:  # the static tensors (every shape known without K)
            if tname not in buffers:
                buffers[tname] = self._device_buffer(tname, tuple(engine.get_tensor_shape(tname)))
                if tname in OUTPUT_NAMES:
                    host[tname] = torch.empty(buffers[tname].shape, dtype=buffers[tname].dtype).pin_memory()
        self._bind(buffers, host)

    def _device_buffer(self, tname: str, shape: tuple[int, ...]) -> torch.Tensor:
        import tensorrt as trt  # optional dependency (GPU machines only): tensorrt_missing() names it

        np_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(tname)))
        t_dtype = torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype
        return torch.empty(shape, dtype=t_dtype, device=self._dev)

    def _class_buffers(self, vocabulary: Vocabulary) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Device buffers for ``vocabulary``'s K (its embeddings copied in) and pinned host outputs."""
        k = len(vocabulary)
        classes = self._device_buffer(CLASS_EMBEDDINGS_NAME, (k, self.text_dim))
        classes.copy_(torch.from_numpy(np.ascontiguousarray(vocabulary.embeddings)))
        b = self._batch
        device = {CLASS_EMBEDDINGS_NAME: classes, "class_scores": self._device_buffer("class_scores", (b, k)),
                  "adjacency": self._device_buffer("adjacency", (b, k, k))}
        host = {n: torch.empty(device[n].shape, dtype=device[n].dtype).pin_memory() for n in CLASS_OUTPUTS}
        return device, host

    def _image_buffers(self, size: Size) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Device buffers of the images and per-pixel outputs at ``size`` = (H, W), and their pinned
        host twins (the pinned input under INPUT_NAME)."""
        b, (h, w) = self._batch, size
        device = {INPUT_NAME: self._device_buffer(INPUT_NAME, (b, h, w, 3))}
        device.update({n: self._device_buffer(n, (b, h, w)) for n in PIXEL_OUTPUTS})
        host = {n: torch.empty(t.shape, dtype=t.dtype).pin_memory() for n, t in device.items()}
        return device, host

    def _bind(self, buffers: dict[str, torch.Tensor], host: dict[str, torch.Tensor]) -> None:
        """Set the shapes of the dynamic inputs among ``buffers`` (the class input; the images of a
        resize-in-graph engine), then bind ``buffers`` to the context by name."""
        dynamic = [n for n in (CLASS_EMBEDDINGS_NAME, INPUT_NAME)
                   if n in buffers and -1 in tuple(self._engine.get_tensor_shape(n))]
        for tname in dynamic:
            shape = tuple(buffers[tname].shape)
            if not self._context.set_input_shape(tname, shape):
                raise VocabularyUnsupported(f"TensorRT refused the {tname} input shape {shape} (outside the "
                                            f"engine's optimisation profile: {self._engine.get_tensor_profile_shape(tname, 0)})")
        if dynamic:
            unresolved = self._context.infer_shapes()
            if unresolved:
                raise RuntimeError(f"TensorRT cannot infer the shapes of {unresolved}")
        for tname, buf in buffers.items():
            expected = tuple(self._context.get_tensor_shape(tname))
            if expected != tuple(buf.shape):
                raise RuntimeError(f"TensorRT expects {tname} of shape {expected}, the buffer is {tuple(buf.shape)}")
            self._context.set_tensor_address(tname, int(buf.data_ptr()))
        self._buffers.update(buffers)
        self._host.update(host)

    def _set_vocabulary(self, vocabulary: Vocabulary) -> None:
        if self.class_profile is None:
            raise VocabularyUnsupported(
                f"the TensorRT engine of {self.model_path} has no '{CLASS_EMBEDDINGS_NAME}' input (an ONNX exported "
                f"before run-time vocabularies): export it again with casseg-export, or give the checkpoint")
        check_embedding_dim(vocabulary, self.text_dim, f"the TensorRT engine of {self.model_path}")
        check_class_count(len(vocabulary), self.class_profile)
        buffers, host = self._class_buffers(vocabulary)
        previous = {n: self._buffers[n] for n in buffers}, {n: self._host[n] for n in host}
        try:
            self._bind(buffers, host)
        except Exception:
            self._bind(*previous)  # back to the old shape and addresses
            raise
        self._vocabulary = vocabulary

    def _run(self, images: np.ndarray) -> InferenceResult:
        if tuple(images.shape) != tuple(self._buffers[INPUT_NAME].shape):  # a new camera size (resize in graph)
            try:
                self._bind(*self._image_buffers(images.shape[1:3]))
            except VocabularyUnsupported as exc:
                raise ValueError(str(exc)) from None
        self._host[INPUT_NAME].numpy()[...] = images
        with self._runtime_call():
            with torch.cuda.stream(self._stream):
                self._buffers[INPUT_NAME].copy_(self._host[INPUT_NAME], non_blocking=True)
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                for n in OUTPUT_NAMES:
                    self._host[n].copy_(self._buffers[n], non_blocking=True)
            self._stream.synchronize()
        o = {n: self._host[n].numpy().copy() for n in OUTPUT_NAMES}
        return InferenceResult(o["class_ids"].astype(np.int32, copy=False),
                               o["confidence"].astype(np.float32, copy=False),
                               o["class_scores"].astype(np.float32, copy=False),
                               o["adjacency"].astype(np.float32, copy=False))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["engine_cache"] = str(self.engine_cache.root)
        d["engine_was_cached"] = self.engine_was_cached
        return d
