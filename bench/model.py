"""Model cost benchmark: what the context modules cost over the baseline, and how cost scales.

Every figure times ``backend.infer`` of ``TorchBackend.from_model`` on a uint8 frame: the path the
node runs (normalisation, model, softmax/argmax and class graph inside), not a bare forward.

Writes out/bench/model.json:
- full_over_baseline: median latency full ÷ baseline at 512×1024 (--size), same process, interleaved runs
- gflop_per_frame: FLOPs of one full-model frame at 512×1024 (torch.utils.flop_counter)
- achieved_gflops: gflop_per_frame ÷ median full latency
- scaling_slope: log-log slope of full-model latency vs pixels from 0.5× to 2× the size (256×512 to 1024×2048)

Usage: python bench/model.py [--backbone swin_tiny] [--repeats 7] [--threads N] [--size 512 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.model import ContextSegmentor, ModelConfig  # noqa: E402
from casseg_ros.runtime import TorchBackend  # noqa: E402
from casseg_ros.text import Vocabulary  # noqa: E402

CITYSCAPES_CLASSES = 19


def build(backbone: str, context: bool, size: tuple[int, int]) -> TorchBackend:
    """Random-weight model (19 Cityscapes-sized classes) behind the PyTorch backend; every frame
    runs at its own size (``input_size=None``), so the scaling sweep needs no host resize."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = Vocabulary(
        names=[f"class_{i}" for i in range(CITYSCAPES_CLASSES)],
        embeddings=rng.standard_normal((CITYSCAPES_CLASSES, 384)).astype(np.float32),
    )
    cfg = ModelConfig(backbone=backbone, img_size=size, fusion=context, graph=context, contrastive=context)
    backend = TorchBackend.from_model(ContextSegmentor(cfg, vocab).eval(), "cpu", input_size=None)
    backend.load()
    return backend


def frame(size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)


def time_once(backend: TorchBackend, image: np.ndarray) -> float:
    start = time.perf_counter()
    backend.infer(image)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="swin_tiny")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"),
                        help="frame size; the scaling sweep runs at 0.5x, 1x, 1.5x and 2x of it")
    parser.add_argument("--out", default="out/bench/model.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    full, baseline = build(args.backbone, True, size), build(args.backbone, False, size)
    x = frame(size)
    result: dict = {"backbone": args.backbone, "input": list(size), "threads": args.threads,
                    "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__}
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
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
