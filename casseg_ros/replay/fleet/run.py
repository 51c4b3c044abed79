"""Fleet replay: many recordings, one task each, on Dask; one aggregate report.

    tasks = plan_tasks(collect_bags(paths, exclude=out), out, base_config)
    fleet = run_fleet(tasks, out, workers=2)

Bags whose folder is already complete for the same inputs are not run again (their stored
summaries are used), so re-running an interrupted command finishes the rest. The per-bag work
is `task.run_bag_task`, a plain function; `dask_cluster` is the only Dask code.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from casseg_ros.replay.fleet.dask_cluster import run_on_dask
from casseg_ros.replay.fleet.inputs import BAGS_FOLDER, output_names
from casseg_ros.replay.fleet.report import aggregate, write_fleet_report
from casseg_ros.replay.fleet.task import (
    BagTask, completed_summary, failed_summary, remove_partial_outputs, run_bag_task,
)
from casseg_ros.replay.offline.run import ReplayConfig


def plan_tasks(bags: list[Path], out_dir: Path, base: ReplayConfig) -> list[BagTask]:
    """One task per bag: `base`'s options, the bag, and its folder OUT/bags/NAME."""
    return [BagTask(name=name, config=dataclasses.replace(base, bag=bag, out_dir=Path(out_dir) / BAGS_FOLDER / name))
            for bag, name in zip(bags, output_names(bags))]


def run_fleet(tasks: list[BagTask], out_dir: Path, *, workers: int, threads: int | None = None,
              scheduler: str | None = None, progress: bool = True,
              task_fn: Callable[[BagTask], dict[str, Any]] = run_bag_task) -> dict[str, Any]:
    """Run the tasks not yet complete, then write OUT/fleet.json and OUT/report.md; returns the
    fleet dict. Ctrl-C: the cluster stops, the interrupted tasks' leftovers are removed, and
    KeyboardInterrupt propagates (nothing aggregate is written)."""
    start = time.perf_counter()
    stored = [completed_summary(task) for task in tasks]
    todo = [task for task, summary in zip(tasks, stored) if summary is None]
    try:
        fresh = iter(run_on_dask(task_fn, todo, failed_summary, workers=workers, threads=threads,
                                 scheduler=scheduler, progress=progress))
    except KeyboardInterrupt:
        if scheduler is None:  # the local workers have ended: what they left can go
            for task in todo:
                if completed_summary(task) is None:
                    remove_partial_outputs(task.config.out_dir)
        raise
    summaries = [{**summary, "reused": True} if summary is not None else {**next(fresh), "reused": False}
                 for summary in stored]
    engine = f"Dask scheduler {scheduler}" if scheduler else f"local Dask cluster, {workers} worker(s)"
    run = {"engine": engine, "workers": None if scheduler else workers, "threads": threads,
           "model": str(tasks[0].config.model_path) if tasks else None,
           "bags_run": len(todo), "bags_reused": len(tasks) - len(todo), "wall_s": time.perf_counter() - start}
    fleet = aggregate(summaries, run)
    write_fleet_report(out_dir, fleet)
    return fleet
