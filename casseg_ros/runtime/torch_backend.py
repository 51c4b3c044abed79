"""PyTorch backend: the model's export module under ``torch.inference_mode``.

CPU: fp32 (bf16 autocast if asked; only useful on CPUs with AMX/AVX512-BF16), threads = physical
cores (``num_threads`` to override). CUDA: fp16/bf16 autocast, channels_last weights, pinned host
buffers with non-blocking copies. ``compile=True`` wraps the module in ``torch.compile``
(static shapes, inductor freezing on unless ``compile_freezing=False``; opt-in: the first call
compiles for minutes on a small CPU, and on the 2-core build machine it was only ~1.1x faster than
eager — measure with bench/backends.py before turning it on). ``resize_in_graph=True``: the module
is ``export_module(model_size=input_size)`` (default the checkpoint's ``img_size``), the same graph
the other backends export; with ``compile=True`` each new camera size compiles once.

``TorchBackend.from_model(model, device, input_size)`` runs an in-memory ``ContextSegmentor``
(training's evaluation, the ablation, benchmarks, tests) through the same path as a checkpoint.

The class embeddings are an input of every forward pass (like the exported graphs' second input),
not the model's buffer: ``set_vocabulary`` swaps one tensor, leaves a caller's model untouched and
works under ``torch.compile`` with freezing (which folds buffers into the graph). With
``compile=True`` a new class count recompiles once (static shapes).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from casseg_ros.model import ContextSegmentor
from casseg_ros.model.checkpoint import load_checkpoint
from casseg_ros.text.vocabulary import Vocabulary

from .base import Backend, BackendUnavailable, InferenceResult, check_embedding_dim, physical_cpu_count


def cuda_missing(backend: str, device: str) -> str | None:
    if torch.cuda.is_available():
        return None
    built = torch.version.cuda
    return (f"backend '{backend}' with device '{device}' needs a CUDA GPU (torch.cuda.is_available() is False; "
            f"this torch {torch.__version__} is built {'with CUDA ' + built if built else 'without CUDA'})")


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model_path, device: str = "cpu", input_size=(512, 1024), precision: str = "fp32",
                 **opts: Any):
        super().__init__(model_path, device, input_size, precision, **opts)
        if precision == "int8":
            raise BackendUnavailable("backend 'torch' has no int8 path; export an int8 model (casseg-export --int8) "
                                     "and run it with backend 'onnxruntime' or 'tensorrt'")
        if self.device.startswith("cuda"):
            missing = cuda_missing("torch", self.device)
            if missing:
                raise BackendUnavailable(missing)
        elif precision == "fp16":
            raise BackendUnavailable("backend 'torch' on device 'cpu' supports fp32 and bf16, not fp16 "
                                     "(fp16 needs device 'cuda')")
        self.compile = bool(opts.get("compile", False))
        self.compile_mode = opts.get("compile_mode", "default")
        self.compile_freezing = bool(opts.get("compile_freezing", True))
        self.channels_last = bool(opts.get("channels_last", self.device.startswith("cuda")))
        self.num_threads = int(opts.get("num_threads") or physical_cpu_count())
        self.model: ContextSegmentor | None = None

    @classmethod
    def from_model(cls, model: ContextSegmentor, device: str = "cpu", input_size: Sequence[int] | None = None,
                   precision: str = "fp32", **opts: Any) -> "TorchBackend":
        """A backend over an already-built model (no file). The model stays the caller's: unless
        asked otherwise, its weights keep their memory format (``channels_last=False``) and the
        process keeps its torch thread count (``num_threads=torch.get_num_threads()``)."""
        opts.setdefault("channels_last", False)
        opts.setdefault("num_threads", torch.get_num_threads())
        backend = cls(None, device, input_size, precision, **opts)
        backend.model = model
        return backend

    def _load(self) -> None:
        if self.model is None:
            self.model = load_checkpoint(self.model_path)
        if self.device == "cpu":
            torch.set_num_threads(self.num_threads)
        self._device = torch.device(self.device)
        self._vocabulary, self._class_embeddings = self._classes(self.model.vocabulary)
        if self.resize_in_graph and self.input_size is None:
            self.input_size = tuple(int(v) for v in self.model.config.img_size)
        model_size = self.input_size if self.resize_in_graph else None
        module = self.model.export_module(model_size=model_size).to(self._device).eval()
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.compile:
            if self.compile_freezing:
                # constant-fold the (inference-only) weights into the graph; lets inductor pre-pack
                # conv/linear weights on the CPU. Process-global inductor setting. Imported only
                # here: loading inductor costs seconds and only torch.compile needs it.
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True
            module = torch.compile(module, mode=self.compile_mode, dynamic=False)
        self._module = module
        self._amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self._cuda = self._device.type == "cuda"

    def _classes(self, vocabulary: Vocabulary) -> tuple[Vocabulary, torch.Tensor]:
        emb = torch.as_tensor(np.asarray(vocabulary.embeddings), dtype=torch.float32)
        return vocabulary, emb.to(self._device)

    def _set_vocabulary(self, vocabulary: Vocabulary) -> None:
        check_embedding_dim(vocabulary, self.model.text_dim, f"the model of {self.model_path or 'this backend'}")
        # both built before either is assigned: a failure above leaves the old pair in place
        self._vocabulary, self._class_embeddings = self._classes(vocabulary)

    def _run(self, images: np.ndarray) -> InferenceResult:
        x = torch.from_numpy(images)
        if x.stride() != self._canonical_strides(x.shape):
            # numpy gives inserted size-1 axes (img[None]) stride 0; same memory, but torch.compile
            # guards on strides and would recompile (minutes on a CPU) on the first such frame.
            x = x.as_strided(x.shape, self._canonical_strides(x.shape))
        with torch.inference_mode(), self._runtime_call():  # .cpu() is the device sync
            if self._cuda:
                x = x.pin_memory().to(self._device, non_blocking=True)
            if self._amp_dtype is not None:
                with torch.autocast(device_type=self._device.type, dtype=self._amp_dtype):
                    ids, conf, scores, adj = self._module(x, self._class_embeddings)
            else:
                ids, conf, scores, adj = self._module(x, self._class_embeddings)
            out = [t.float() if t.is_floating_point() else t for t in (ids, conf, scores, adj)]
            out = [t.cpu() for t in out] if self._cuda else out
        ids, conf, scores, adj = (t.numpy() for t in out)
        return InferenceResult(ids.astype(np.int32, copy=False), conf, scores, adj)

    @staticmethod
    def _canonical_strides(shape) -> tuple[int, ...]:
        strides, acc = [], 1
        for n in reversed(shape):
            strides.append(acc)
            acc *= int(n)
        return tuple(reversed(strides))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(compile=self.compile, channels_last=self.channels_last,
                 num_threads=self.num_threads if self.device == "cpu" else None)
        return d
