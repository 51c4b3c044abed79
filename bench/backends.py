"""Backend latency benchmark: every backend/variant available here on one model, same input.

Writes out/bench/backends.json with, per variant, the median latency of ``backend.infer`` on a
(1, H, W, 3) uint8 frame (default 512x1024; pre/post-processing included, all in the graph), the
load/compile time and the % of class pixels equal to PyTorch eager; plus
``best_cpu_speedup_over_eager`` = eager median / best fp32 CPU variant median, and the host-side
resize cost for a 720x1280 camera frame.

Variants (CPU): torch eager (the reference), torch channels_last, torch.compile (``--compile``),
torch bf16 autocast (reported separately: not fp32), onnxruntime (ORT_ENABLE_ALL, intra-op threads =
physical cores, idle threads not spinning — the backend default) and onnxruntime with ORT's default
thread spinning. GPU (only when CUDA is available): torch CUDA fp16/bf16 + channels_last,
onnxruntime CUDA/TensorRT EP, TensorRT fp16 — at ``--gpu-size`` (1024x2048), with FPS.

Timing is round-robin over the variants (one frame each per round) so that load from other
processes on a shared machine hits all of them alike; the JSON records the load average.

Model: random weights (latency does not depend on them), 19 classes (Cityscapes), built from
``--backbone``/``--decoder-dim`` (default swin_micro, D=128: a small Swin-T-shaped variant — 4 stages,
patch 4, window 7, embed 48 — that runs on a laptop CPU; Swin-T itself is ``--backbone swin_tiny``)
— or ``--config <training YAML>`` (e.g. the demo's) / ``--checkpoint <.safetensors>``.

    python bench/backends.py [--backbone swin_micro] [--size 512 1024] [--repeats 7] [--compile]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.model import ContextSegmentor, ModelConfig, load_model_config  # noqa: E402
from casseg_ros.model.checkpoint import save_checkpoint  # noqa: E402
from casseg_ros.runtime import BackendUnavailable, InferenceResult, available_backends, create_backend  # noqa: E402
from casseg_ros.runtime.base import physical_cpu_count, resize_images, resize_outputs  # noqa: E402
from casseg_ros.runtime.export import make_test_pattern  # noqa: E402
from casseg_ros.runtime.onnx_backend import resolve_onnx  # noqa: E402
from casseg_ros.text import Vocabulary  # noqa: E402

NUM_CLASSES = 19


def build_checkpoint(args, workdir: Path) -> tuple[Path, dict]:
    if args.checkpoint:
        return Path(args.checkpoint), {"checkpoint": args.checkpoint}
    if args.config:
        cfg = load_model_config(args.config)
        cfg.backbone_weights = None
        cfg.img_size = tuple(args.size)
    else:
        cfg = ModelConfig(backbone=args.backbone, decoder_dim=args.decoder_dim, img_size=tuple(args.size),
                          drop_path_rate=0.0, fusion=True, graph=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = Vocabulary(names=[f"class_{i}" for i in range(NUM_CLASSES)],
                       embeddings=rng.standard_normal((NUM_CLASSES, 384)).astype(np.float32), provider="bench")
    model = ContextSegmentor(cfg, vocab).eval()
    path = save_checkpoint(workdir / "bench_model.safetensors", model)
    return path, {"model_config": cfg.to_dict(), "num_classes": NUM_CLASSES,
                  "parameters_M": sum(p.numel() for p in model.parameters()) / 1e6}


def cpu_variants(args) -> list[tuple[str, str, dict]]:
    t = args.threads
    v = [
        ("torch_eager", "torch", dict(num_threads=t)),
        ("torch_channels_last", "torch", dict(num_threads=t, channels_last=True)),
        ("onnxruntime", "onnxruntime", dict(num_threads=t)),
        ("onnxruntime_spin", "onnxruntime", dict(num_threads=t, spin=True)),
    ]
    if args.compile:
        v.append(("torch_compile", "torch", dict(num_threads=t, compile=True)))
    if args.bf16:
        v.append(("torch_bf16_autocast", "torch", dict(num_threads=t, precision="bf16")))
    return v


def gpu_variants() -> list[tuple[str, str, dict]]:
    return [
        ("torch_cuda_fp16", "torch", dict(precision="fp16", channels_last=True)),
        ("torch_cuda_bf16", "torch", dict(precision="bf16", channels_last=True)),
        ("onnxruntime_cuda", "onnxruntime", dict(precision="fp16")),
        ("tensorrt_fp16", "tensorrt", dict(precision="fp16")),
    ]


def run_group(variants, ckpt: Path, device: str, size, repeats: int, warmup: int, onnx_cache: Path,
              image: np.ndarray) -> dict:
    results: dict[str, dict] = {}
    live = []
    for label, name, opts in variants:
        opts = dict(opts)
        precision = opts.pop("precision", None)
        entry: dict = {"backend": name, "device": device}
        try:
            be = create_backend(name, ckpt, device=device, input_size=size, precision=precision,
                                onnx_cache_dir=onnx_cache, **opts)
            t0 = time.perf_counter()
            be.load()
            be.warmup(warmup)
            entry["load_and_warmup_s"] = round(time.perf_counter() - t0, 2)
            entry["describe"] = be.describe()
            live.append((label, be))
        except BackendUnavailable as exc:
            entry["unavailable"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a variant that fails is reported, not fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"
        results[label] = entry
        print(f"[{label}] {entry.get('unavailable') or entry.get('error') or 'loaded'}", flush=True)
    times: dict[str, list[float]] = {label: [] for label, _ in live}
    outputs = {}
    for r in range(repeats):
        for label, be in live:
            t0 = time.perf_counter()
            res = be.infer(image)
            times[label].append(time.perf_counter() - t0)
            if r == 0:
                outputs[label] = res.class_ids
        print(f"round {r + 1}/{repeats}: " + ", ".join(f"{k}={1e3 * v[-1]:.0f}ms" for k, v in times.items()),
              flush=True)
    ref_label = next(iter(outputs), None)
    for label, _ in live:
        ms = [1e3 * t for t in times[label]]
        results[label].update(median_ms=round(statistics.median(ms), 2), min_ms=round(min(ms), 2),
                              max_ms=round(max(ms), 2), fps=round(1e3 / statistics.median(ms), 2),
                              runs_ms=[round(m, 1) for m in ms])
        if ref_label:
            results[label]["equal_pixels_vs_" + ref_label] = round(
                float((outputs[label] == outputs[ref_label]).mean() * 100), 3)
    return results


def host_resize_ms(size, repeats: int = 20) -> float:
    """Host per-frame work when the camera frame is 720x1280 and the model runs at ``size``."""
    frame = make_test_pattern(720, 1280)[None]
    k = NUM_CLASSES
    fake = InferenceResult(np.zeros((1, *size), np.int32), np.zeros((1, *size), np.float32),
                           np.zeros((1, k), np.float32), np.zeros((1, k, k), np.float32))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        resize_images(frame, size)
        resize_outputs(fake, (720, 1280))
        ts.append(time.perf_counter() - t0)
    return round(1e3 * statistics.median(ts), 3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="swin_micro")
    p.add_argument("--decoder-dim", type=int, default=128)
    p.add_argument("--config", help="training/model YAML (model: section) instead of --backbone")
    p.add_argument("--checkpoint", help="benchmark this checkpoint instead of a random-weight model")
    p.add_argument("--size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"))
    p.add_argument("--gpu-size", nargs=2, type=int, default=(1024, 2048), metavar=("H", "W"))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=physical_cpu_count())
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="include torch.compile (CPU: slow to compile on few cores)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="include torch CPU bf16 autocast (reported apart: not fp32)")
    p.add_argument("--no-cpu", action="store_true", help="GPU variants only")
    p.add_argument("--out", default="out/bench/backends.json")
    args = p.parse_args()
    size = tuple(args.size)
    report: dict = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "physical_cores": physical_cpu_count(),
                    "loadavg_start": os.getloadavg(), "platform": platform.platform(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "versions": {"torch": torch.__version__, "onnxruntime": _version("onnxruntime"),
                     "tensorrt": _version("tensorrt")},
        "availability": available_backends(),
        "settings": {"size": list(size), "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
                     "batch": 1},
    }
    with tempfile.TemporaryDirectory(prefix="casseg_bench_") as tmp:
        work = Path(tmp)
        ckpt, model_info = build_checkpoint(args, work)
        report["model"] = model_info
        onnx_cache = work / "onnx"
        t0 = time.perf_counter()
        resolve_onnx(ckpt, size, 1, cache_dir=onnx_cache)
        report["onnx_export_s"] = round(time.perf_counter() - t0, 2)
        image = make_test_pattern(*size)[None]
        if not args.no_cpu:
            cpu = run_group(cpu_variants(args), ckpt, "cpu", size, args.repeats, args.warmup, onnx_cache, image)
            report["cpu"] = cpu
            eager = cpu.get("torch_eager", {}).get("median_ms")
            fp32 = {k: v["median_ms"] for k, v in cpu.items() if "median_ms" in v and "bf16" not in k}
            if eager and fp32:
                best = min(fp32, key=fp32.get)
                report["best_cpu_variant"] = best
                report["best_cpu_speedup_over_eager"] = round(eager / fp32[best], 3)
                report["cpu_speedup_over_eager"] = {k: round(eager / v, 3) for k, v in fp32.items()}
            bf16 = cpu.get("torch_bf16_autocast", {}).get("median_ms")
            if eager and bf16:
                report["bf16_autocast_speedup_over_eager"] = round(eager / bf16, 3)
        report["host_resize_720x1280_ms"] = host_resize_ms(size)
        if torch.cuda.is_available():
            gsize = tuple(args.gpu_size)
            resolve_onnx(ckpt, gsize, 1, cache_dir=onnx_cache)
            report["gpu"] = run_group(gpu_variants(), ckpt, "cuda", gsize, max(args.repeats, 20), 5, onnx_cache,
                                      make_test_pattern(*gsize)[None])
            report["gpu_size"] = list(gsize)
        else:
            report["gpu"] = "no CUDA GPU on this machine: GPU variants not run"
    report["machine"]["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    atomic_write_text(out, json.dumps(report, indent=2))
    summary = {k: report.get(k) for k in ("best_cpu_variant", "best_cpu_speedup_over_eager", "cpu_speedup_over_eager",
                                          "bf16_autocast_speedup_over_eager", "host_resize_720x1280_ms")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    sys.exit(main())
