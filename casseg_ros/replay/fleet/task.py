"""One recording of a fleet replay: a plain function any engine can run (Dask today, Ray later).

    summary = run_bag_task(task)        # in any process that can import casseg_ros

runs the single-bag replay (`casseg_ros.replay.offline.run.run_replay`) into the task's own folder,
which ends up exactly as a single-bag `casseg-replay` run leaves it, plus `task.json`, written
last and atomically: the task's inputs (fingerprint) and its summary (counts, mIoU, latency and
the confusion matrix). A folder is *complete* when its `task.json` says "ok" for the same inputs;
a re-run skips it (`completed_summary`). Every other file is written atomically by the replay, so
a task killed at any point leaves complete files, hidden temp files (removed by
`remove_partial_outputs` before the next attempt) and no `task.json`.

A bag that cannot be evaluated (corrupt, truncated, missing topic) is not an exception here: the
summary says "failed" or "incomplete" with the reason, so it fails alone. The summary is small
(no per-frame data) and picklable; it is the only thing an engine moves back.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from casseg_ros.fileio import atomic_write_text
from casseg_ros.replay.offline.run import ReplayConfig, ReplayError, run_replay

TASK_RECORD = "task.json"
STATUS_OK, STATUS_INCOMPLETE, STATUS_FAILED = "ok", "incomplete", "failed"


@dataclasses.dataclass(frozen=True)
class BagTask:
    """One bag: its replay configuration (bag, output folder, model, options) and its display name."""

    name: str
    config: ReplayConfig


def _file_identity(path: Path) -> list:
    """(name, size, mtime) of a file, or of every file of a rosbag2 directory: a changed recording
    or model makes the task run again, without hashing gigabytes."""
    path = Path(path)
    if path.is_dir():
        return [_file_identity(p) for p in sorted(path.iterdir()) if p.is_file()]
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None]
    return [path.name, stat.st_size, stat.st_mtime_ns]


def fingerprint(task: BagTask) -> dict[str, Any]:
    """What the task's outputs depend on: every replay option, the bag's and the model's files."""
    options = {k: v for k, v in dataclasses.asdict(task.config).items() if k not in ("out_dir", "progress")}
    options = json.loads(json.dumps(options, default=str))  # Paths and tuples as JSON has them
    return {"options": options, "bag_files": _file_identity(task.config.bag),
            "model_files": _file_identity(task.config.model_path)}


def completed_summary(task: BagTask) -> dict[str, Any] | None:
    """The stored summary when the task's folder is complete for these inputs, else None."""
    path = Path(task.config.out_dir) / TASK_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint(task) or record.get("summary", {}).get("status") != STATUS_OK:
        return None
    return record["summary"]


def remove_partial_outputs(out_dir: Path) -> None:
    """Leftovers of an attempt that was killed: temp files/folders of the atomic writers
    (`.NAME.*.tmp`, `.bag.*`), and the record, so an interrupted re-run never looks complete."""
    out_dir = Path(out_dir)
    (out_dir / TASK_RECORD).unlink(missing_ok=True)
    if not out_dir.is_dir():
        return
    for folder in [out_dir, out_dir / "figures"]:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not entry.name.startswith("."):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _latency_ms(metrics: dict[str, Any], key: str) -> float | None:
    return ((metrics.get("latency_ms") or {}).get("total") or {}).get(key)


def summarize(task: BagTask, metrics: dict[str, Any], error: str | None, wall_s: float) -> dict[str, Any]:
    """The task's result: what the aggregate report needs and nothing per frame."""
    iou = metrics.get("iou") or {}
    if error is None:
        status = STATUS_OK
    else:
        status = STATUS_INCOMPLETE if metrics.get("frames_processed") else STATUS_FAILED
    return {
        "name": task.name, "bag": str(task.config.bag), "status": status, "reason": error,
        "frames_in_bag_read": metrics.get("frames_in_bag_read", 0),
        "frames_processed": metrics.get("frames_processed", 0),
        "frames_skipped": metrics.get("frames_skipped", 0),
        "labelled_frames": iou.get("frames", 0), "miou": iou.get("miou"),
        "latency_p50_ms": _latency_ms(metrics, "p50"), "latency_p99_ms": _latency_ms(metrics, "p99"),
        "classes": metrics.get("classes"),
        "confusion_matrix": iou.get("confusion_matrix") if iou.get("frames") else None,
        "wall_s": wall_s,
    }


def failed_summary(task: BagTask, reason: str) -> dict[str, Any]:
    """Summary of a task that never returned one (its worker died twice, an engine error)."""
    return summarize(task, {}, reason, 0.0)


def run_bag_task(task: BagTask) -> dict[str, Any]:
    """Replay one bag into its folder; returns its summary (never raises for a bad bag)."""
    out_dir = Path(task.config.out_dir)
    remove_partial_outputs(out_dir)
    (out_dir / "metrics.json").unlink(missing_ok=True)  # so a metrics.json read below is this run's
    config = dataclasses.replace(task.config, progress=False)  # one progress bar: the fleet's
    start = time.perf_counter()
    try:
        metrics, error = run_replay(config), None
    except ReplayError as exc:  # the replay wrote metrics.json with what it could do
        error = str(exc)
        try:
            metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
    except Exception as exc:  # noqa: BLE001 - a bug on one bag must not end the fleet
        metrics, error = {}, f"{type(exc).__name__}: {exc}"
    summary = summarize(task, metrics, error, time.perf_counter() - start)
    record = {"fingerprint": fingerprint(task), "summary": summary}
    atomic_write_text(out_dir / TASK_RECORD, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return summary
