"""The export module's output tail in PyTorch: banded (``segmentation_tail``, what the torch backend
runs) against the whole map in one band (``whole_map_tail``: the exported graph's ops, and the
eager tail before issue 25), through ``backend.infer`` of the class sweep's model (bench/model.py).

Rounds interleave every (tail, K) pair in one process, so machine load hits both alike; per pair:
median frame wall ms, median frame CPU ms (process time: less sensitive to other jobs on the cores
than wall time with 2 threads, whose barriers wait for a descheduled thread), median tail wall ms,
and k{max}_over_k{min} per tail from the frame medians. Writes out/bench/output_tail.json.

Usage: python bench/output_tail.py [--classes 19 150] [--repeats 5] [--threads N] [--size 512 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.model import output_tail, segmentor  # noqa: E402
from casseg_ros.runtime import TorchBackend  # noqa: E402
from model import build_model, class_vocabulary, frame, machine  # noqa: E402  (bench/model.py)

TAILS: dict[str, Callable] = {"banded": output_tail.segmentation_tail, "whole_map": output_tail.whole_map_tail}


class TimedTail:
    """``segmentor.segmentation_tail`` replaced by one of TAILS, its wall time kept per call."""

    def __init__(self) -> None:
        self.tail: Callable = TAILS["banded"]
        self.last_s = 0.0

    def __call__(self, grid_logits, size, stride, output_size=None):
        start = time.perf_counter()
        out = self.tail(grid_logits, size, stride, output_size)
        self.last_s = time.perf_counter() - start
        return out


def compare(args) -> dict:
    ks = sorted(set(args.classes))
    backend = TorchBackend.from_model(build_model(args.backbone, True, tuple(args.size)), "cpu", input_size=None,
                                      num_threads=args.threads).load()
    image = frame(tuple(args.size))
    vocabularies = {k: class_vocabulary(k) for k in ks}
    timed, original = TimedTail(), segmentor.segmentation_tail
    pairs = [(name, k) for name in TAILS for k in ks]
    samples: dict = {pair: {"wall": [], "cpu": [], "tail": []} for pair in pairs}
    result: dict = {"classes": ks, "repeats": args.repeats, "backbone": args.backbone, "input": list(args.size),
                    **machine(args), "load": [os.getloadavg()]}
    segmentor.segmentation_tail = timed
    try:
        for r in range(-1, args.repeats):  # round -1: warm-up
            for name, k in pairs[r % len(pairs):] + pairs[: r % len(pairs)]:
                timed.tail = TAILS[name]
                backend.set_vocabulary(vocabularies[k])
                wall, cpu = time.perf_counter(), time.process_time()
                backend.infer(image)
                if r >= 0:
                    samples[(name, k)]["wall"].append(time.perf_counter() - wall)
                    samples[(name, k)]["cpu"].append(time.process_time() - cpu)
                    samples[(name, k)]["tail"].append(timed.last_s)
            result["load"].append(os.getloadavg())
    finally:
        segmentor.segmentation_tail = original
    for name in TAILS:
        medians = {k: {f"{what}_ms": 1e3 * statistics.median(samples[(name, k)][what]) for what in ("wall", "cpu", "tail")}
                   for k in ks}
        result[name] = medians
        result[f"k{ks[-1]}_over_k{ks[0]}_{name}"] = medians[ks[-1]]["wall_ms"] / medians[ks[0]]["wall_ms"]
        result[f"k{ks[-1]}_over_k{ks[0]}_{name}_cpu"] = medians[ks[-1]]["cpu_ms"] / medians[ks[0]]["cpu_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="swin_tiny")
    parser.add_argument("--classes", nargs="+", type=int, default=[19, 150])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"))
    parser.add_argument("--out", default="out/bench/output_tail.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = compare(args)
    atomic_write_text(Path(args.out), json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
