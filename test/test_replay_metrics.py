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
    # abs 1e-6: float32 IoU precision; rounding to 4 decimals is off by 3e-5.
    assert iou["per_class_iou"]["a"] == pytest.approx(1 / 2, abs=1e-6)
    assert iou["per_class_iou"]["b"] == pytest.approx(2 / 3, abs=1e-6)
    assert iou["per_class_iou"]["c"] is None
    assert iou["miou"] == pytest.approx(7 / 12, abs=1e-6)
    latency = percentiles_ms([0.0123456789])
    assert latency["p50"] == pytest.approx(12.3456789, abs=1e-9)

    metrics = {"iou": iou, "latency_ms": {"total": latency}}
    stored = json.loads(write_json(tmp_path / "metrics.json", metrics).read_text())
    assert stored == metrics  # JSON floats round-trip exactly

    report = write_report(tmp_path, "t", metrics, overlays=[], latency_series={}).read_text()
    assert "mIoU **0.583**" in report and "| b | 0.667 |" in report and "| 12.346 |" in report
    assert "0.5833" not in report and "0.6666" not in report
    assert (tmp_path / "figures" / "iou_per_class.png").read_bytes().startswith(b"\x89PNG")
