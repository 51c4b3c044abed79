"""Where a forward pass spends its time and memory, per context module (used by bench/model.py).

Parts of ``ContextSegmentor`` (casseg_ros/model/):

- ``fusion``: the cross-attention fusion module (pixels attend to the K class embeddings);
- ``graph``: the graph reasoning module (GCN over the K class nodes) and ``mask_pool`` (the mean
  feature of each class region: its node features);
- ``adjacency``: ``scene_adjacency``, the dense K x K class graph from the soft prediction (twice in
  the full model: the graph's input and the published adjacency);
- ``head``: the similarity head (K x D x pixels; twice with the graph on).

Everything else (backbone, decoder, the upsampling to the image and the softmax / argmax /
confidence / class scores at full resolution) is ``rest``; ``model`` is the whole
``ContextSegmentor.forward``, which in the export module stops at the stride-s logits
(``upsample=False``), so a frame minus ``model`` is the export module's tail
(casseg_ros/model/output_tail.py): normalisation, the upsampling, softmax, argmax, confidence and
class scores at full resolution.

PyTorch: forward hooks on the three modules and wrappers around the two functions, looked up in
``casseg_ros.model.segmentor`` at call time; CPU execution is synchronous, so wall time inside a
part is its compute. Peak memory: the process's peak resident set (Linux ``VmHWM``) reset before
each part (``/proc/self/clear_refs``), so a part's figure is what it allocates on top of what is
live when it starts. ONNX Runtime: its profiler's per-node kernel times, attributed by the module
scope the exporter kept in each node name (casseg_ros/runtime/onnx_export.py ``node_scope``).
"""
from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from casseg_ros.model import segmentor
from casseg_ros.runtime.onnx_backend import OnnxRuntimeBackend

PARTS = ("fusion", "graph", "adjacency", "head")
MODULE_PARTS = {"fusion": "fusion", "graph": "graph", "head": "head"}  # ContextSegmentor attribute -> part
FUNCTION_PARTS = {"mask_pool": "graph", "scene_adjacency": "adjacency"}  # segmentor function -> part
ONNX_SCOPES = {"/model/decoder/fusion/": "fusion", "/model/graph/": "graph", "/model/head": "head"}


def cpu_isa() -> str:
    """The widest vector ISA of this CPU: amx, avx512 or avx2 (what a timing depends on)."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown"
    for isa, flag in (("amx", "amx_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return isa
    return "other"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    return _status_kib("VmHWM") / 1024


def reset_peak_rss() -> None:
    """Set the peak resident set back to the current one (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class ContextParts:
    """Seconds (and, with ``memory=True``, peak MiB above the live set) per part of the forward
    passes run inside ``with parts:``; ``per_call()`` averages over ``calls`` forward passes."""

    def __init__(self, model, memory: bool = False) -> None:
        self.model, self.memory = model, memory
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak_mib: dict[str, float] = defaultdict(float)
        self.calls = 0
        self._handles: list = []
        self._started: dict[str, list] = defaultdict(list)
        self._saved: dict[str, Callable] = {}

    def _begin(self, part: str) -> None:
        if self.memory:
            reset_peak_rss()
            self._started[part].append((time.perf_counter(), rss_mib()))
        else:
            self._started[part].append((time.perf_counter(), 0.0))

    def _end(self, part: str) -> None:
        start, live = self._started[part].pop()
        self.seconds[part] += time.perf_counter() - start
        if self.memory:
            self.peak_mib[part] = max(self.peak_mib[part], peak_rss_mib() - live)

    def _timed(self, part: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            self._begin(part)
            try:
                return function(*args, **kwargs)
            finally:
                self._end(part)
        return wrapper

    def __enter__(self) -> "ContextParts":
        self._handles.append(self.model.register_forward_pre_hook(lambda *_: self._begin("model")))
        self._handles.append(self.model.register_forward_hook(lambda *_: self._end("model")))
        for attribute, part in MODULE_PARTS.items():
            module = getattr(self.model, attribute)
            if module is None:  # switched off in this model
                continue
            self._handles.append(module.register_forward_pre_hook(lambda *_, p=part: self._begin(p)))
            self._handles.append(module.register_forward_hook(lambda *_, p=part: self._end(p)))
        for name, part in FUNCTION_PARTS.items():
            self._saved[name] = getattr(segmentor, name)
            setattr(segmentor, name, self._timed(part, self._saved[name]))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name, function in self._saved.items():
            setattr(segmentor, name, function)
        self._saved.clear()

    def per_call(self) -> dict[str, float]:
        """Mean seconds per forward pass of each part and of the whole model."""
        return {part: self.seconds.get(part, 0.0) / max(self.calls, 1) for part in (*PARTS, "model")}


class ProfiledOnnxRuntimeBackend(OnnxRuntimeBackend):
    """The ONNX Runtime backend with ORT's profiler on (same graph, same session options)."""

    def __init__(self, *args, profile_prefix: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.profile_prefix = profile_prefix

    def session_options(self):
        options = super().session_options()
        options.enable_profiling = True
        options.profile_file_prefix = self.profile_prefix
        return options

    def end_profiling(self) -> Path:
        return Path(self.session.end_profiling())


def onnx_part_seconds(profile: Path, runs: int) -> dict[str, float]:
    """Mean seconds per run of each part over the last ``runs`` session runs of an ORT profile (the
    nodes' kernel times; ``rest`` = every other node, ``unattributed`` = nodes without a module
    scope, e.g. ones ORT made by fusing nodes of several modules)."""
    events = json.loads(profile.read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    if len(windows) < runs:
        raise ValueError(f"{profile}: {len(windows)} runs profiled, {runs} asked for")
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in windows):
            continue
        name = event["name"][: -len("_kernel_time")]
        part = next((p for scope, p in ONNX_SCOPES.items() if name.startswith(scope)), None)
        if part is None:
            part = "rest" if name.startswith("/") else "unattributed"
        totals[part] += event["dur"] * 1e-6
    return {part: totals.get(part, 0.0) / runs for part in (*PARTS, "rest", "unattributed")}


def memory_probe_env() -> dict[str, str]:
    """Environment for a memory probe process: glibc serves every allocation above 64 KiB with its
    own mapping and unmaps it on free (no dynamic threshold), so the resident set follows the live
    tensors instead of keeping freed ones."""
    return dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
