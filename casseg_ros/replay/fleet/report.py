"""The fleet's aggregate: overall IoU from the summed confusion matrix, per-bag table worst first.

The overall mIoU is the mIoU of all labelled frames of all bags pooled: the bags' confusion
matrices (exact pixel counts, from each bag's metrics.json) are summed and scored by the same
torchmetrics code as one bag (`IoUEvaluator.add_confusion_matrix`), never a mean of per-bag mIoUs
(which would weigh a 10-frame bag like a 10 000-frame one). Frames of an incomplete bag (read
up to its damage) count; a failed bag has none.

OUT/fleet.json (full numbers), OUT/report.md + OUT/figures/*.png, next to OUT/bags/NAME/.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from casseg_ros.fileio import atomic_write_text
from casseg_ros.replay.fleet.inputs import BAGS_FOLDER
from casseg_ros.replay.fleet.task import STATUS_FAILED, STATUS_INCOMPLETE, STATUS_OK
from casseg_ros.replay.metrics import IoUEvaluator
from casseg_ros.replay.report import _fmt, _pct, iou_figure, write_json

_PER_BAG_DROP = ("classes", "confusion_matrix")  # in each bag's own metrics.json


def _worst_first(summary: dict[str, Any]) -> tuple:
    """Failed bags first, then by mIoU ascending; bags without labels last."""
    miou = summary.get("miou")
    return (summary["status"] != STATUS_FAILED, miou is None, miou if miou is not None else math.inf,
            summary["name"])


def pooled_iou(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """IoU of all labelled frames of the bags, from their summed confusion matrices."""
    scored = [s for s in summaries if s.get("confusion_matrix")]
    if not scored:
        return None
    classes = scored[0]["classes"]
    if any(s["classes"] != classes for s in scored):
        raise ValueError("bags were evaluated with different class lists; their IoU cannot be pooled")
    evaluator = IoUEvaluator(classes)
    for s in scored:
        evaluator.add_confusion_matrix(s["confusion_matrix"], s["labelled_frames"])
    return evaluator.result()


def aggregate(summaries: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """fleet.json: totals, pooled IoU, the per-bag summaries worst first; `run` says how it ran."""
    frames = sum(s["frames_processed"] for s in summaries)
    return {
        "bags": len(summaries),
        "status_counts": {st: sum(s["status"] == st for s in summaries)
                          for st in (STATUS_OK, STATUS_INCOMPLETE, STATUS_FAILED)},
        "frames_in_bags_read": sum(s["frames_in_bag_read"] for s in summaries),
        "frames_processed": frames,
        "frames_skipped": sum(s["frames_skipped"] for s in summaries),
        "iou": pooled_iou(summaries),
        "run": {**run, "frames_per_s": frames / run["wall_s"] if run.get("wall_s") else None},
        "per_bag": [{k: v for k, v in s.items() if k not in _PER_BAG_DROP}
                    for s in sorted(summaries, key=_worst_first)],
    }


def write_fleet_report(out_dir: Path, fleet: dict[str, Any]) -> Path:
    """fleet.json + report.md (with figures) in out_dir; returns the report's path."""
    out_dir = Path(out_dir)
    write_json(out_dir / "fleet.json", fleet)
    run, iou, counts = fleet["run"], fleet["iou"] or {}, fleet["status_counts"]
    lines = ["# casseg_ros fleet replay", "",
             f"{fleet['bags']} recordings ({counts[STATUS_OK]} ok, {counts[STATUS_INCOMPLETE]} incomplete, "
             f"{counts[STATUS_FAILED]} failed), {fleet['frames_processed']} frames processed "
             f"({fleet['frames_skipped']} skipped), model `{run.get('model')}`, {run.get('engine')}, "
             f"wall {_fmt(run.get('wall_s'))} s ({_fmt(run['frames_per_s'])} frames/s). "
             f"Each recording's own report: `{BAGS_FOLDER}/NAME/report.md`.", ""]
    problems = [b for b in fleet["per_bag"] if b["status"] != STATUS_OK]
    if problems:
        lines += ["## Recordings that failed or stopped early", "", "| bag | status | reason |", "|---|---|---|"]
        lines += [f"| {b['name']} | {b['status']} | {b['reason']} |" for b in problems] + [""]
    if iou.get("frames"):
        lines += ["## Segmentation quality, all recordings pooled", "",
                  f"mIoU **{_pct(iou['miou'])} %** over {iou['frames']} labelled frames: from the summed "
                  f"confusion matrix of all recordings (the mIoU of all their frames pooled, not a mean of "
                  f"per-recording mIoUs).", "", "| class | IoU (%) | gt pixels |", "|---|---|---|"]
        lines += [f"| {n} | {_pct(v)} | {iou['gt_pixels'][n]} |" for n, v in iou["per_class_iou"].items()] + [""]
        fig = iou_figure(iou["per_class_iou"], out_dir / "figures" / "iou_per_class.png",
                         f"per-class IoU, all recordings (mIoU {_pct(iou['miou'])} %)")
        if fig:
            lines += [f"![per-class IoU](figures/{fig.name})", ""]
    else:
        lines += ["No ground-truth labels were evaluated in any recording.", ""]
    lines += ["## Per recording, worst first", "",
              "| bag | status | frames | skipped | labelled | mIoU (%) | latency p50 ms | p99 ms | wall s |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| [{b['name']}]({BAGS_FOLDER}/{b['name']}/report.md) | {b['status']} | {b['frames_processed']} | "
              f"{b['frames_skipped']} | {b['labelled_frames']} | {_pct(b['miou'])} | {_fmt(b['latency_p50_ms'])} | "
              f"{_fmt(b['latency_p99_ms'])} | {_fmt(b['wall_s'])} |" for b in fleet["per_bag"]] + [""]
    fig = iou_figure({b["name"]: b["miou"] for b in fleet["per_bag"]}, out_dir / "figures" / "miou_per_bag.png",
                     "mIoU (%) per recording, worst first")
    if fig:
        lines += [f"![mIoU per recording](figures/{fig.name})", ""]
    lines += ["Full numbers: `fleet.json`.", ""]
    return atomic_write_text(out_dir / "report.md", "\n".join(lines))
