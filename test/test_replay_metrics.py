"""Replay metrics and report: metrics.json keeps full precision, only report.md rounds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from casseg_ros.replay.metrics import IoUEvaluator, percentiles_ms
from casseg_ros.replay.report import write_json, write_report


def test_iou_and_latency_are_stored_unrounded_and_rounded_only_in_the_report(tmp_path):
    ev = IoUEvaluator(["a", "b", "c"])
    # a: predicted {0}, truth {0, 1} -> 1/2; b: predicted {1, 2, 3}, truth {2, 3} -> 2/3; c: absent.
    ev.update(np.array([[0, 1, 1, 1]]), np.array([[0, 0, 1, 1]]))
    iou = ev.result()
    # In percent, the unit of every output (README, model card); abs 1e-4: float32 IoU precision.
    assert iou["unit"] == "percent"
    assert iou["per_class_iou"]["a"] == pytest.approx(100 / 2, abs=1e-4)
    assert iou["per_class_iou"]["b"] == pytest.approx(200 / 3, abs=1e-4)
    assert iou["per_class_iou"]["c"] is None
    assert iou["miou"] == pytest.approx(700 / 12, abs=1e-4)
    latency = percentiles_ms([0.0123456789])
    assert latency["p50"] == pytest.approx(12.3456789, abs=1e-9)

    metrics = {"iou": iou, "latency_ms": {"total": latency}}
    stored = json.loads(write_json(tmp_path / "metrics.json", metrics).read_text())
    assert stored == metrics  # JSON floats round-trip exactly

    report = write_report(tmp_path, "t", metrics, overlays=[], latency_series={}).read_text()
    assert "mIoU **58.3 %**" in report and "| b | 66.7 |" in report and "| 12.346 |" in report
    assert "58.33" not in report and "66.66" not in report
    assert (tmp_path / "figures" / "iou_per_class.png").read_bytes().startswith(b"\x89PNG")
