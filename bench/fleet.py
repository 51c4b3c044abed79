#!/usr/bin/env python3
"""Fleet replay scaling: N copies of a recording on a local Dask cluster of 1 vs 2 workers.

The total number of cores stays the same (`--threads`, default 2: this machine): 1 worker uses
both, 2 workers one each (`casseg_ros.replay.fleet.dask_cluster.CoreShare`). Wall time is the whole
fleet run as `casseg-replay` does it: cluster start, every bag (model load + frames + outputs),
aggregate report. Per-bag results must be identical whatever the worker count (checked).

    .venv/bin/python bench/fleet.py [--copies 8] [--bag data/demo.mcap] [--model models/casseg_demo.safetensors]
Writes out/bench/fleet.json (atomically) with `speedup_2_workers` (wall 1 worker / wall 2 workers).
Goal >= 1.6: the bags are independent, so less is overhead (start-up, model loading per bag,
memory bandwidth) to explain. Run on a quiet machine: other jobs on the cores distort it.
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
                                                               progress=False))
    start = time.perf_counter()
    fleet = run_fleet(tasks, out, workers=workers, threads=threads, progress=False)
    wall = time.perf_counter() - start
    results = [{k: json.loads((out / "bags" / b["name"] / "task.json").read_text())["summary"][k]
                for k in RESULT_FIELDS} for b in fleet["per_bag"]]
    return {"wall_s": wall, "frames": fleet["frames_processed"], "frames_per_s": fleet["frames_processed"] / wall,
            "bags_ok": fleet["status_counts"]["ok"], "miou": (fleet["iou"] or {}).get("miou"),
            "bag_wall_s": sorted(b["wall_s"] for b in fleet["per_bag"]), "_results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--bag", type=Path, default=REPO / "data" / "demo.mcap")
    p.add_argument("--model", type=Path, default=REPO / "models" / "casseg_demo.safetensors")
    p.add_argument("--threads", type=int, default=2, help="cores shared by the workers (total stays this)")
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "fleet.json")
    a = p.parse_args(argv)
    load_before = os.getloadavg()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="casseg_fleet_bench_") as tmp:
        bags = Path(tmp) / "bags"
        bags.mkdir()
        for i in range(a.copies):
            shutil.copy(a.bag, bags / f"copy{i:02d}{a.bag.suffix}")
        for workers in (1, 2):
            runs[workers] = run_once(bags, a.model, Path(tmp) / f"out_{workers}w", workers, a.threads)
            print(f"{workers} worker(s): {runs[workers]['wall_s']:.1f} s, {runs[workers]['frames_per_s']:.1f} frames/s",
                  flush=True)
    identical = runs[1].pop("_results") == runs[2].pop("_results")
    speedup = runs[1]["wall_s"] / runs[2]["wall_s"]
    report = {
        "bag": str(a.bag), "model": str(a.model), "copies": a.copies, "threads_total": a.threads,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "runs": {f"{w}_workers": r for w, r in runs.items()},
        "speedup_2_workers": speedup, "goal": 1.6, "goal_met": speedup >= 1.6,
        "results_identical": identical,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
    }
    atomic_write_text(a.out, json.dumps(report, indent=2) + "\n")
    print(f"speedup_2_workers {speedup:.2f} (goal 1.6), per-bag results identical: {identical} -> {a.out}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
