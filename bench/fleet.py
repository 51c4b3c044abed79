#!/usr/bin/env python3
"""Fleet replay scaling: N copies of a recording on a local Dask cluster of 1 vs 2 workers.

The cores stay the same (`--cores`, default 2: this machine): one worker running each bag with 2
threads, against 2 workers running a bag each with 1 thread (`--threads` of casseg-replay, each
worker pinned to its own cores by `casseg_ros.replay.fleet.dask_cluster.CoreShare`). Wall time is
the whole fleet run as `casseg-replay` does it: cluster start, every bag (model load + frames +
outputs), aggregate report. The thread count is
part of a bag's results (floating-point sums in another order), so identity is checked where it
must hold — 2 workers x 1 thread against 1 worker x 1 thread (a third run) — and the difference
the thread count makes is reported (`thread_count_effect`: labelled pixels counted differently).

    .venv/bin/python bench/fleet.py [--copies 8] [--bag data/demo.mcap] [--model models/casseg_demo.safetensors]
Writes out/bench/fleet.json (atomically) with `speedup_2_workers` (wall 1 worker x 2 threads /
wall 2 workers x 1 thread). Goal >= 1.6: the bags are independent, so less is overhead
(start-up, model loading per bag, memory bandwidth) to explain. Run on a quiet machine: other
jobs on the cores distort it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from casseg_ros.fileio import atomic_write_text  # noqa: E402
from casseg_ros.replay.fleet.inputs import collect_bags  # noqa: E402
from casseg_ros.replay.fleet.run import plan_tasks, run_fleet  # noqa: E402
from casseg_ros.replay.offline.run import ReplayConfig  # noqa: E402

# Per-bag fields that must not depend on the worker count (timings do).
RESULT_FIELDS = ("name", "status", "frames_processed", "frames_skipped", "miou", "confusion_matrix")


def run_once(bags: Path, model: Path, out: Path, workers: int, threads: int) -> dict:
    tasks = plan_tasks(collect_bags([bags]), out, ReplayConfig(bag=Path(), out_dir=Path(), model_path=model,
                                                               num_threads=threads, progress=False))
    start = time.perf_counter()
    fleet = run_fleet(tasks, out, workers=workers, progress=False)
    wall = time.perf_counter() - start
    results = [{k: json.loads((out / "bags" / b["name"] / "task.json").read_text())["summary"][k]
                for k in RESULT_FIELDS} for b in fleet["per_bag"]]
    return {"workers": workers, "threads_per_task": fleet["run"]["threads_per_task"], "wall_s": wall,
            "frames": fleet["frames_processed"], "frames_per_s": fleet["frames_processed"] / wall,
            "bags_ok": fleet["status_counts"]["ok"], "miou": (fleet["iou"] or {}).get("miou"),
            "bag_wall_s": sorted(b["wall_s"] for b in fleet["per_bag"]), "_results": results}


def pixels_counted_differently(a: list[dict], b: list[dict]) -> int:
    """Labelled pixels whose (ground truth, prediction) cell differs between two runs' bags."""
    return sum(int(np.abs(np.asarray(x["confusion_matrix"]) - np.asarray(y["confusion_matrix"])).sum()) // 2
               for x, y in zip(a, b) if x["confusion_matrix"] is not None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--bag", type=Path, default=REPO / "data" / "demo.mcap")
    p.add_argument("--model", type=Path, default=REPO / "models" / "casseg_demo.safetensors")
    p.add_argument("--cores", type=int, default=2, help="cores of both runs: 1 worker x CORES threads, CORES workers x 1")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "fleet.json")
    a = p.parse_args(argv)
    load_before = os.getloadavg()
    configs = {"1_worker_x_all_threads": (1, a.cores), f"{a.cores}_workers_x_1_thread": (a.cores, 1),
               "1_worker_x_1_thread": (1, 1)}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="casseg_fleet_bench_") as tmp:
        bags = Path(tmp) / "bags"
        bags.mkdir()
        for i in range(a.copies):
            shutil.copy(a.bag, bags / f"copy{i:02d}{a.bag.suffix}")
        for name, (workers, threads) in configs.items():
            runs[name] = run_once(bags, a.model, Path(tmp) / f"out_{name}", workers, threads)
            print(f"{name}: {runs[name]['wall_s']:.1f} s, {runs[name]['frames_per_s']:.1f} frames/s", flush=True)
    results = {name: run.pop("_results") for name, run in runs.items()}
    identical = results[f"{a.cores}_workers_x_1_thread"] == results["1_worker_x_1_thread"]
    speedup = runs["1_worker_x_all_threads"]["wall_s"] / runs[f"{a.cores}_workers_x_1_thread"]["wall_s"]
    report = {
        "bag": str(a.bag), "model": str(a.model), "copies": a.copies, "cores": a.cores,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "runs": runs,
        "speedup_2_workers": speedup, "goal": 1.6, "goal_met": speedup >= 1.6,
        "results_identical": identical,  # same thread count, 1 vs several workers: must be True
        "thread_count_effect": {"pixels_counted_differently": pixels_counted_differently(
            results["1_worker_x_all_threads"], results["1_worker_x_1_thread"]),
            "pixels_labelled": sum(int(np.asarray(r["confusion_matrix"]).sum())
                                   for r in results["1_worker_x_1_thread"] if r["confusion_matrix"] is not None)},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    atomic_write_text(a.out, json.dumps(report, indent=2) + "\n")
    print(f"speedup_2_workers {speedup:.2f} (goal 1.6), per-bag results identical at 1 thread: {identical}, "
          f"{report['thread_count_effect']['pixels_counted_differently']} pixels differ between {a.cores} threads "
          f"and 1 -> {a.out}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
