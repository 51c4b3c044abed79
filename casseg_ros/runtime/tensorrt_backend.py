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
"""
from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from .base import INPUT_NAME, OUTPUT_NAMES, Backend, BackendUnavailable, InferenceResult
from .engine_cache import EngineCache, EngineCacheKey
from .model_export import onnx_metadata, onnx_precision
from .onnx_backend import default_static_size, resolve_onnx

DEFAULT_WORKSPACE = 4 << 30  # 4 GiB


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
                 logger=None, strongly_typed: bool = False) -> bytes:
    """Parse an ONNX model and build a serialized TensorRT engine (static shapes); int8 needs a QDQ
    graph (explicit quantisation, no calibrator)."""
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
                                                   cache_dir=self.opts.get("onnx_cache_dir"))
        model_precision = onnx_precision(onnx_metadata(onnx_path))
        if (self.precision == "int8") != (model_precision == "int8"):
            raise BackendUnavailable(f"backend 'tensorrt' precision '{self.precision}' cannot build from a "
                                     f"{model_precision} export ({onnx_path}); int8 engines come from the int8 QDQ "
                                     f"export (casseg-export --int8), the other precisions from the fp32 one")
        dev = torch.device(self.device)
        torch.cuda.set_device(dev)
        gpu = torch.cuda.get_device_name(dev)
        cc = ".".join(map(str, torch.cuda.get_device_capability(dev)))
        key = EngineCacheKey.create(onnx_path, (self._batch, *self.input_size, 3), self.precision,
                                    trt.__version__, gpu, compute_capability=cc,
                                    workspace=self.workspace_bytes, strongly_typed=self.strongly_typed)
        self.cache_key = key
        logger = trt.Logger(trt.Logger.WARNING)
        data, self.engine_was_cached = self.engine_cache.get_or_build(
            key, lambda: build_engine(onnx_path.read_bytes(), self.precision, self.workspace_bytes, logger,
                                      self.strongly_typed))
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:  # e.g. corrupted or from another TensorRT build: drop it and rebuild once
            self.engine_cache._remove(key)
            data = build_engine(onnx_path.read_bytes(), self.precision, self.workspace_bytes, logger,
                                self.strongly_typed)
            self.engine_cache.store(key, data)
            self.engine_was_cached = False
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise RuntimeError("TensorRT could not deserialize the freshly built engine")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream(dev)
        self._buffers: dict[str, torch.Tensor] = {}
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(tname))
            np_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(tname)))
            t_dtype = torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype
            buf = torch.empty(shape, dtype=t_dtype, device=dev)
            self._buffers[tname] = buf
            self._context.set_tensor_address(tname, int(buf.data_ptr()))
            (inputs if engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT else outputs).append(tname)
        if inputs != [INPUT_NAME] or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise RuntimeError(f"unexpected engine I/O: inputs {inputs}, outputs {outputs}; expected "
                               f"{[INPUT_NAME]} and {list(OUTPUT_NAMES)}")
        self._host_in = torch.empty(self._buffers[INPUT_NAME].shape, dtype=torch.uint8).pin_memory()
        self._host_out = {n: torch.empty(self._buffers[n].shape, dtype=self._buffers[n].dtype).pin_memory()
                          for n in OUTPUT_NAMES}

    def _run(self, images: np.ndarray) -> InferenceResult:
        self._host_in.numpy()[...] = images
        with torch.cuda.stream(self._stream):
            self._buffers[INPUT_NAME].copy_(self._host_in, non_blocking=True)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            for n in OUTPUT_NAMES:
                self._host_out[n].copy_(self._buffers[n], non_blocking=True)
        self._stream.synchronize()
        o = {n: self._host_out[n].numpy().copy() for n in OUTPUT_NAMES}
        return InferenceResult(o["class_ids"].astype(np.int32, copy=False),
                               o["confidence"].astype(np.float32, copy=False),
                               o["class_scores"].astype(np.float32, copy=False),
                               o["adjacency"].astype(np.float32, copy=False))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["engine_cache"] = str(self.engine_cache.root)
        d["engine_was_cached"] = self.engine_was_cached
        return d
