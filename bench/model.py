"""Model cost benchmark: what the context modules cost over the baseline, how cost scales with the
image, and (``--classes``) what the class count K costs.

Every figure times ``backend.infer`` of ``TorchBackend.from_model`` on a uint8 frame: the path the
node runs (normalisation, model, softmax/argmax and class graph inside), not a bare forward.

Writes out/bench/model.json:
- full_over_baseline: median latency full ÷ baseline at 512×1024 (--size), same process, interleaved runs
- gflop_per_frame: FLOPs of one full-model frame at 512×1024 (torch.utils.flop_counter)
- achieved_gflops: gflop_per_frame ÷ median full latency
- scaling_slope: log-log slope of full-model latency vs pixels from 0.5× to 2× the size (256×512 to 1024×2048)

``--classes 19 66 124 150`` (Cityscapes, Vistas v1.2 / v2.0, ADE20K) runs instead the class sweep,
on the full model (fusion and graph on) with K random text embeddings swapped in through
``Backend.set_vocabulary`` (weights do not depend on K), and merges its keys into model.json:
- classes_latency_ms[backend][K]: median ``infer`` latency, rounds interleaved over backends and K;
  backends: torch and onnxruntime (the model exported once: the class count is an input), plus any
  other ``--backends`` name ``create_backend`` knows (e.g. an OpenVINO backend), run on that export;
- classes_parts_ms[backend][K]: mean ms per frame in each context module (fusion, graph, class
  adjacency, head; bench/model_parts.py) and the rest, from hooked (torch) / profiled (ORT) runs;
  torch also ``output_tail``: the frame minus the model's forward, which stops at the stride-s
  logits (the export module's tail, casseg_ros/model/output_tail.py: normalisation, the upsampling,
  softmax, argmax, confidence and class scores over the K full-resolution logit maps, a band of
  rows at a time); on ORT the graph is its GCN module only (mask pooling and the adjacency sit in
  ``rest`` with the other nodes of the model's own scope);
- classes_memory_mib[backend][K]: peak resident memory of the first forward above the loaded model,
  and (torch) per context module, each in a fresh process (bench/model_parts.py);
- classes_host_ms[K]: the node's host work with K classes on a context-scenes frame at --size whose
  class ids are spread over 0..K-1 (FramePipeline with a stand-in backend: mask rule, overlay,
  colour mask, confidence image, scene graph; the ROS messages; label_info; the palette);
- classes_vocabulary_swap: the ~/set_vocabulary path with ADE20K's 150 names: text embedding
  through the node's request function (first call, which loads MiniLM, and again), the swap, and
  the first frame after it per backend;
- k150_over_k19 = torch latency at K=150 ÷ K=19; context_share_k150 = (fusion + graph + adjacency +
  head) ÷ the hooked frame at K=150 (same run); *_onnxruntime: the same on ONNX Runtime.

Last measured (issue 25, 2 threads). Zen 3 (AVX2 only), load 0.9-1.4, the tail that upsamples
its cache-sized bands itself (casseg_ros/model/output_tail.py): k150_over_k19 1.12,
context_share_k150 0.027 (ORT 0.016); hooked: the tail 43 -> 221 ms at K = 19 -> 150. Runs of
the same sweep vary more than that from frame to frame on these shared cores (one earlier run
gave K = 66 slower than K = 150), so the load-robust comparison is bench/output_tail.py (tails
interleaved in one process): k150_over_k19 1.13 (CPU time 1.15) against 1.45 for the whole map;
the banded tail before this one (PyTorch's channels-last bilinear kernel and argmax) gave 1.48
there. Earlier (AMD EPYC with AVX-512, that tail): 1.28 with 2 threads on a quiet machine.
torch forward peak memory at K=150 183 MiB (flat in K; 372 MiB before the bands).

Usage: python bench/model.py [--backbone swin_tiny] [--repeats 7] [--threads N] [--size 512 1024]
       python bench/model.py --classes 19 66 124 150 [--backends torch onnxruntime] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from casseg_msgs.srv import SetVocabulary
from std_msgs.msg import Header
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.model import ContextSegmentor, ModelConfig  # noqa: E402
from casseg_ros.perception.palette import palette_for_names  # noqa: E402
from casseg_ros.pipeline import ClassLabels, FramePipeline, PipelineSettings, Products  # noqa: E402
from casseg_ros.ros.frame_io import frame_outputs  # noqa: E402
from casseg_ros.ros.messages import label_info_msg  # noqa: E402
from casseg_ros.ros.vocabulary_request import vocabulary_from_request  # noqa: E402
from casseg_ros.runtime import Backend, BackendUnavailable, InferenceResult, TorchBackend, create_backend  # noqa: E402
from casseg_ros.runtime.canned import CannedBackend  # noqa: E402
from casseg_ros.runtime.model_export import export_model  # noqa: E402
from casseg_ros.runtime.onnx_backend import OnnxRuntimeBackend  # noqa: E402
from casseg_ros.text import Vocabulary  # noqa: E402
from host import smooth_confidence  # noqa: E402  (bench/host.py: the host path's confidence stand-in)
from model_parts import (PARTS, ContextParts, ProfiledOnnxRuntimeBackend, cpu_isa, memory_probe_env,  # noqa: E402
                         onnx_part_seconds, peak_rss_mib, reset_peak_rss, rss_mib)
from training.datasets import ADE20K_CLASSES  # noqa: E402
from training.datasets.context_scenes import CONTEXT_CLASSES, ContextScenes  # noqa: E402

CITYSCAPES_CLASSES = 19
EMBEDDING_DIM = 384  # all-MiniLM-L6-v2, the default text provider
HOST_PRODUCTS = Products(overlay=True, color_mask=True, confidence_image=True)


def class_vocabulary(k: int) -> Vocabulary:
    """K random (seeded) text embeddings; the first 19 are the same for every K."""
    rng = np.random.default_rng(0)
    return Vocabulary(names=[f"class_{i}" for i in range(k)],
                      embeddings=rng.standard_normal((k, EMBEDDING_DIM)).astype(np.float32))


def build_model(backbone: str, context: bool, size: tuple[int, int]) -> ContextSegmentor:
    """Random-weight model (seed 0) with 19 Cityscapes-sized classes; fusion and graph on with ``context``."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, img_size=size, fusion=context, graph=context, contrastive=context)
    return ContextSegmentor(cfg, class_vocabulary(CITYSCAPES_CLASSES)).eval()


def build(backbone: str, context: bool, size: tuple[int, int]) -> TorchBackend:
    """The model behind the PyTorch backend; every frame runs at its own size (``input_size=None``),
    so the scaling sweep needs no host resize."""
    backend = TorchBackend.from_model(build_model(backbone, context, size), "cpu", input_size=None)
    backend.load()
    return backend


def frame(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)


def time_once(backend: Backend, image: np.ndarray) -> float:
    start = time.perf_counter()
    backend.infer(image)
    return time.perf_counter() - start


def machine(args) -> dict:
    return {"machine": platform.processor() or platform.machine(), "isa": cpu_isa(), "threads": args.threads,
            "torch": torch.__version__}


def context_ratio(args) -> dict:
    """Full model vs baseline, FLOPs, and latency vs image size (the default run)."""
    size = tuple(args.size)
    full, baseline = build(args.backbone, True, size), build(args.backbone, False, size)
    x = frame(size)
    result: dict = {"backbone": args.backbone, "input": list(size), "repeats": args.repeats, **machine(args),
                    "load_before": os.getloadavg()}
    for backend in (full, baseline):  # warm-up: allocator, oneDNN primitive caches
        time_once(backend, x)
    t_full, t_base = [], []
    for _ in range(args.repeats):  # interleaved so drifting machine load hits both alike
        t_full.append(time_once(full, x))
        t_base.append(time_once(baseline, x))
    result["full_ms"] = 1e3 * statistics.median(t_full)
    result["baseline_ms"] = 1e3 * statistics.median(t_base)
    result["full_over_baseline"] = statistics.median(t_full) / statistics.median(t_base)

    counter = FlopCounterMode(display=False)
    with counter:
        full.infer(x)
    flops_full = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        baseline.infer(x)
    result["gflop_per_frame"] = flops_full / 1e9
    result["baseline_gflop_per_frame"] = counter.get_total_flops() / 1e9
    result["achieved_gflops"] = result["gflop_per_frame"] / (result["full_ms"] / 1e3)

    sizes = [(int(size[0] * f), int(size[1] * f)) for f in (0.5, 1.0, 1.5, 2.0)]
    pixels, latencies = [], []
    for h, w in sizes:
        xs = frame((h, w))
        time_once(full, xs)
        runs = [time_once(full, xs) for _ in range(max(2, args.repeats // 2))]
        pixels.append(h * w)
        latencies.append(statistics.median(runs))
    slope = np.polyfit(np.log(pixels), np.log(latencies), 1)[0]
    result["scaling"] = [{"size": list(s), "ms": 1e3 * t} for s, t in zip(sizes, latencies)]
    result["scaling_slope"] = float(slope)
    result["load_after"] = os.getloadavg()
    return result


# ----------------------------------------------------------------------------- the class sweep
def sweep_backends(args, model: ContextSegmentor, onnx_path: Path) -> dict[str, Backend | str]:
    """Name -> loaded backend (or why it is unavailable) for every ``--backends`` name."""
    size, backends = tuple(args.size), {}
    for name in args.backends:
        try:
            if name == "torch":
                backend = TorchBackend.from_model(model, "cpu", input_size=None, num_threads=args.threads)
            elif name == "onnxruntime":
                backend = OnnxRuntimeBackend(onnx_path, "cpu", size, num_threads=args.threads)
            else:  # any other backend create_backend knows, on the same export (e.g. OpenVINO)
                backend = create_backend(name, onnx_path, "cpu", input_size=size, num_threads=args.threads)
            backends[name] = backend.load()
        except BackendUnavailable as exc:
            backends[name] = f"unavailable: {exc}"
    return backends


def interleaved_latency(backends: dict[str, Backend], ks: list[int], image: np.ndarray, repeats: int) -> dict:
    """Median ms per (backend, K); each round visits every pair, in an order rotated per round."""
    vocabularies = {k: class_vocabulary(k) for k in ks}
    pairs = [(name, k) for name in backends for k in ks]
    for name, k in pairs:  # warm-up at every class count (allocations for the K-sized tensors)
        backends[name].set_vocabulary(vocabularies[k])
        time_once(backends[name], image)
    samples: dict = {pair: [] for pair in pairs}
    for r in range(repeats):
        for name, k in pairs[r % len(pairs):] + pairs[: r % len(pairs)]:
            backends[name].set_vocabulary(vocabularies[k])
            samples[(name, k)].append(time_once(backends[name], image))
    return {name: {k: 1e3 * statistics.median(samples[(name, k)]) for k in ks} for name in backends}


def torch_parts(backend: TorchBackend, ks: list[int], image: np.ndarray, repeats: int) -> dict:
    """Mean ms per context module and the rest, per K, from hooked frames (rounds over K)."""
    vocabularies = {k: class_vocabulary(k) for k in ks}
    parts = {k: ContextParts(backend.model) for k in ks}
    total = {k: 0.0 for k in ks}
    for _ in range(repeats):
        for k in ks:
            backend.set_vocabulary(vocabularies[k])
            with parts[k]:
                total[k] += time_once(backend, image)
            parts[k].calls += 1
    out = {}
    for k in ks:
        per_call = {part: 1e3 * s for part, s in parts[k].per_call().items()}
        model_ms = per_call.pop("model")
        frame_ms = 1e3 * total[k] / repeats
        out[k] = {**per_call, "rest": frame_ms - sum(per_call.values()), "frame": frame_ms,
                  "output_tail": frame_ms - model_ms}
    return out


def onnx_parts(args, onnx_path: Path, ks: list[int], image: np.ndarray, workdir: Path) -> dict:
    """The same split on ONNX Runtime: one profiled session per K (ORT's profile of its runs)."""
    out = {}
    for k in ks:
        backend = ProfiledOnnxRuntimeBackend(onnx_path, "cpu", tuple(args.size), num_threads=args.threads,
                                             profile_prefix=str(workdir / f"ort_k{k}")).load()
        backend.set_vocabulary(class_vocabulary(k))
        backend.infer(image)  # warm-up: left out of the profile's figures
        start = time.perf_counter()
        for _ in range(args.part_repeats):
            backend.infer(image)
        frame_ms = 1e3 * (time.perf_counter() - start) / args.part_repeats
        seconds = onnx_part_seconds(backend.end_profiling(), args.part_repeats)
        out[k] = {**{part: 1e3 * s for part, s in seconds.items()}, "frame": frame_ms}
    return out


def memory_probe(args) -> dict:
    """(Run in a fresh process.) Peak MiB of the first forward at K above the loaded model; with
    torch also per context module (a second, hooked forward)."""
    name, k = args.memory_probe[0], int(args.memory_probe[1])
    model = build_model(args.backbone, True, tuple(args.size)) if name == "torch" else None
    backend = sweep_backends(argparse.Namespace(**{**vars(args), "backends": [name]}), model,
                             Path(args.onnx))[name]
    if isinstance(backend, str):
        return {"error": backend}
    backend.set_vocabulary(class_vocabulary(k))
    image = frame(tuple(args.size))
    loaded = rss_mib()
    reset_peak_rss()
    backend.infer(image)
    result = {"loaded_rss_mib": loaded, "forward_peak_mib": peak_rss_mib() - loaded}
    if name == "torch":
        parts = ContextParts(model, memory=True)
        with parts:
            backend.infer(image)
        result["parts_peak_mib"] = {part: parts.peak_mib.get(part, 0.0) for part in PARTS}
    return result


def probe_memory(args, ks: list[int], names: list[str], onnx_path: Path) -> dict:
    out: dict = {name: {} for name in names}
    for name in names:
        for k in ks:
            cmd = [sys.executable, __file__, "--memory-probe", name, str(k), "--onnx", str(onnx_path),
                   "--backbone", args.backbone, "--size", *map(str, args.size), "--threads", str(args.threads)]
            run = subprocess.run(cmd, capture_output=True, text=True, env=memory_probe_env(), timeout=1800)
            lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
            out[name][k] = json.loads(lines[-1]) if run.returncode == 0 and lines else {
                "error": f"probe exited {run.returncode}: {run.stderr[-500:]}"}
    return out


def host_frame(k: int, size: tuple[int, int]) -> tuple[FramePipeline, np.ndarray]:
    """A context scene at ``size`` whose 9 classes get ids spread over 0..K-1, behind a stand-in
    backend (no forward), with K names and their palette (palette_for_names)."""
    scene = ContextScenes(1, *size, seed=0).generate(0)
    spread = np.linspace(0, k - 1, len(CONTEXT_CLASSES)).round().astype(np.int32)
    adjacency = np.random.default_rng(0).random((1, k, k), dtype=np.float32)
    result = InferenceResult(spread[scene.label][None], smooth_confidence(*size, seed=0)[None],
                             np.full((1, k), 1 / k, np.float32), adjacency)
    names = tuple(f"class_{i}" for i in range(k))
    labels = ClassLabels(names, palette_for_names(names))
    return FramePipeline(CannedBackend(result), labels), scene.image


def host_cost(ks: list[int], size: tuple[int, int], repeats: int) -> dict:
    """Median ms of the node's host steps with K classes (rounds over K)."""
    frames = {k: host_frame(k, size) for k in ks}
    results = {k: pipeline.process(rgb, PipelineSettings(), HOST_PRODUCTS) for k, (pipeline, rgb) in frames.items()}
    header = Header(frame_id="camera_optical_frame")
    steps = {
        "pipeline": lambda k, p, rgb: p.process(rgb, PipelineSettings(), HOST_PRODUCTS),
        "messages": lambda k, p, rgb: frame_outputs(results[k], p.labels, header),  # the node's output step
        "label_info": lambda k, p, rgb: label_info_msg(p.labels, 0.0, header.stamp),
        "palette": lambda k, p, rgb: palette_for_names(p.labels.names),
    }
    samples = {(k, step): [] for k in ks for step in steps}
    for _ in range(repeats):
        for k in ks:
            pipeline, rgb = frames[k]
            for step, run in steps.items():
                start = time.perf_counter()
                run(k, pipeline, rgb)
                samples[(k, step)].append(time.perf_counter() - start)
    out = {k: {step: 1e3 * statistics.median(samples[(k, step)]) for step in steps} for k in ks}
    for k in ks:
        out[k]["instances"], out[k]["relations"] = results[k].graph.num_objects, results[k].graph.num_relations
    return out


def vocabulary_swap(backends: dict[str, Backend], names: list[str], image: np.ndarray) -> dict:
    """The ~/set_vocabulary path with ``names``: the node's request -> Vocabulary function (text
    embedding with the local provider; the first call loads the text model), then the swap
    (FramePipeline.set_vocabulary: what the worker does between two batches) and the first frame
    after it, per backend."""
    request = SetVocabulary.Request(class_names=list(names))
    out: dict = {"classes": len(names)}
    for attempt in ("embed_first_s", "embed_again_s"):
        start = time.perf_counter()
        vocabulary = vocabulary_from_request(request, "local")
        out[attempt] = time.perf_counter() - start
    for name, backend in backends.items():
        pipeline = FramePipeline(backend)
        start = time.perf_counter()
        pipeline.set_vocabulary(vocabulary)
        out[f"swap_ms_{name}"] = 1e3 * (time.perf_counter() - start)
        out[f"first_frame_ms_{name}"] = 1e3 * time_once(backend, image)
    return out


def context_share(parts: dict) -> float:
    return sum(parts[p] for p in PARTS) / parts["frame"]


def class_sweep(args) -> dict:
    ks = sorted(set(args.classes))
    size = tuple(args.size)
    result: dict = {"classes": ks, "classes_setup": {"backbone": args.backbone, "input": list(size),
                                                      "repeats": args.repeats, "part_repeats": args.part_repeats,
                                                      **machine(args), "load_before": os.getloadavg()}}
    model = build_model(args.backbone, True, size)
    image = frame(size)
    with tempfile.TemporaryDirectory(prefix="casseg_classes_") as tmp:
        workdir = Path(tmp)
        onnx_path = export_model(model, workdir / "classes.onnx", input_size=size)
        backends = sweep_backends(args, model, onnx_path)
        usable = {name: b for name, b in backends.items() if not isinstance(b, str)}
        result["classes_unavailable"] = {name: b for name, b in backends.items() if isinstance(b, str)}
        result["classes_latency_ms"] = interleaved_latency(usable, ks, image, args.repeats)
        parts = {}
        if "torch" in usable:
            parts["torch"] = torch_parts(usable["torch"], ks, image, args.part_repeats)
        if "onnxruntime" in usable:
            parts["onnxruntime"] = onnx_parts(args, onnx_path, ks, image, workdir)
        result["classes_parts_ms"] = parts
        result["classes_vocabulary_swap"] = vocabulary_swap(usable, ADE20K_CLASSES, image)
        del usable, backends
        result["classes_memory_mib"] = probe_memory(args, ks, [n for n in ("torch", "onnxruntime")
                                                               if n in parts], onnx_path)
    result["classes_host_ms"] = host_cost(ks, size, args.repeats)
    low, high = min(ks), max(ks)
    for name, latency in result["classes_latency_ms"].items():
        suffix = "" if name == "torch" else f"_{name}"
        result[f"k{high}_over_k{low}{suffix}"] = latency[high] / latency[low]
    for name, per_k in parts.items():
        suffix = "" if name == "torch" else f"_{name}"
        result[f"context_share_k{high}{suffix}"] = context_share(per_k[high])
    result["classes_setup"]["load_after"] = os.getloadavg()
    return result


SWEEP_KEY = re.compile(r"^(classes.*|k\d+_over_k\d+.*|context_share_k\d+.*)$")


def write_merged(path: Path, sweep: dict) -> dict:
    """model.json with the sweep's keys replaced and the other keys (a default run's) kept."""
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged = {key: value for key, value in merged.items() if not SWEEP_KEY.match(key)}
    merged.update(sweep)
    atomic_write_text(path, json.dumps(merged, indent=2))
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="swin_tiny")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"),
                        help="frame size; the scaling sweep runs at 0.5x, 1x, 1.5x and 2x of it")
    parser.add_argument("--classes", nargs="+", type=int, default=None,
                        help="run the class sweep at these class counts (e.g. 19 66 124 150) instead")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"],
                        help="class sweep: backends to time (any name create_backend knows)")
    parser.add_argument("--part-repeats", type=int, default=3, help="class sweep: hooked / profiled frames per K")
    parser.add_argument("--memory-probe", nargs=2, metavar=("BACKEND", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="out/bench/model.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args)))
        return
    out = Path(args.out)
    if args.classes:
        result = write_merged(out, class_sweep(args))
    else:
        result = context_ratio(args)
        atomic_write_text(out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
